"""The sharpening terms for pixel autoencoders (perceptual, adversarial): they see blur,
they train, they are not exported."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anomaly.config import ModelConfig, TrainConfig
from anomaly.training.fit import train
from anomaly.training.model import InspectionModule, gaussian_kernel1d, separable_blur
from anomaly.training.sharpening import PatchAdversary, PerceptualLoss

pytestmark = pytest.mark.slow  # trains models


def _edges(size: int = 64) -> torch.Tensor:
    """A bright square and stripes on grey: plenty of edges to blur."""
    img = np.full((3, size, size), 0.4, np.float32)
    img[:, 16:48, 16:48] = 0.9
    img[:, :, ::8] = 0.1
    return torch.from_numpy(img)[None]


def test_perceptual_loss_is_zero_for_a_perfect_copy_and_punishes_blur_more_than_a_shift():
    loss = PerceptualLoss(64)
    x = _edges()
    blurred = separable_blur(x, gaussian_kernel1d(1.5))
    # a uniform brightness shift with the same pixel L2 error as the blur
    shift = float((blurred - x).pow(2).mean().sqrt())
    shifted = (x + shift).clamp(0, 1)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-8)
    assert float(loss(blurred, x)) > 2 * float(loss(shifted, x)) > 0


def test_perceptual_loss_passes_gradients_to_the_reconstruction_only():
    loss = PerceptualLoss(64)
    recon = _edges().clone().mul_(0.9).requires_grad_(True)
    loss(recon, _edges()).backward()
    assert recon.grad is not None and float(recon.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.parameters())


@pytest.mark.parametrize("term", ["perceptual_weight", "adversarial_weight"])
def test_feature_models_refuse_the_terms(term: str):
    module = InspectionModule(ModelConfig(image_size=64))
    with pytest.raises(ValueError, match="pixel autoencoders"):
        train(
            module,
            [np.zeros((64, 64, 3), np.float32)] * 2,
            [np.zeros((64, 64, 3), np.float32)],
            TrainConfig(epochs=1, **{term: 1.0}),
            progress=False,
        )


def _sharp_and_blurred(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge images with a little noise, and the same images blurred (what a pixel
    autoencoder tends to return)."""
    gen = torch.Generator().manual_seed(seed)
    sharp = (_edges().repeat(n, 1, 1, 1) + 0.03 * torch.randn(n, 3, 64, 64, generator=gen)).clamp(0, 1)
    return sharp, separable_blur(sharp, gaussian_kernel1d(1.5))


def test_the_discriminator_learns_to_tell_blurred_reconstructions_from_inputs():
    torch.manual_seed(0)
    adversary = PatchAdversary(width=8, learning_rate=1e-3)
    sharp, blurred = _sharp_and_blurred(4, 0)
    with torch.no_grad():
        gap_before = float(adversary.discriminator(sharp).mean() - adversary.discriminator(blurred).mean())
    first = adversary.discriminator_step(blurred, sharp)
    for _ in range(60):
        last = adversary.discriminator_step(blurred, sharp)
    sharp, blurred = _sharp_and_blurred(4, 1)  # new noise: it learned blur, not these pixels
    with torch.no_grad():
        gap_after = float(adversary.discriminator(sharp).mean() - adversary.discriminator(blurred).mean())
    assert last < first
    assert gap_after > 0.5 and gap_after > gap_before + 0.5


def test_the_adversarial_term_steps_the_discriminator_and_passes_gradients_to_the_reconstruction_only():
    torch.manual_seed(0)
    adversary = PatchAdversary(width=8)
    sharp, blurred = _sharp_and_blurred(2, 0)
    before = [p.detach().clone() for p in adversary.discriminator.parameters()]
    recon = blurred.clone().requires_grad_(True)
    adversary(recon, sharp).backward()
    assert recon.grad is not None and float(recon.grad.abs().sum()) > 0
    assert all(p.grad is None for p in adversary.discriminator.parameters())  # the step cleared its own
    assert any(not torch.equal(b, p) for b, p in zip(before, adversary.discriminator.parameters()))
    assert adversary.last_discriminator_loss == adversary.last_discriminator_loss  # not NaN: a step ran
    # validation (eval mode, no grad) only scores: the discriminator stays as it is
    adversary.eval()
    frozen = [p.detach().clone() for p in adversary.discriminator.parameters()]
    with torch.no_grad():
        adversary(blurred, sharp)
    assert all(torch.equal(f, p) for f, p in zip(frozen, adversary.discriminator.parameters()))


@pytest.mark.parametrize("name", ["perceptual", "adversarial"])
def test_training_with_a_term_keeps_the_exported_module_unchanged(name: str):
    rng = np.random.default_rng(0)
    images = [
        np.clip(_edges()[0].numpy().transpose(1, 2, 0) + rng.normal(0, 0.02, (64, 64, 3)), 0, 1).astype(np.float32)
        for _ in range(6)
    ]
    mc = ModelConfig(kind="ae", image_size=64, base_channels=8, latent_channels=4)
    module = InspectionModule(mc)
    history = train(
        module, images[:4], images[4:], TrainConfig(epochs=2, batch_size=4, **{f"{name}_weight": 0.1}), progress=False
    )
    assert len(history.train_loss) == 2 and all(np.isfinite(history.train_loss))
    # the backbone and the discriminator are training aids: the module (and so the ONNX
    # graph) holds the same tensors as an untrained one
    assert module.state_dict().keys() == InspectionModule(mc).state_dict().keys()
    x = torch.from_numpy(np.stack(images[:2]).transpose(0, 3, 1, 2).copy())
    term = PerceptualLoss(64) if name == "perceptual" else PatchAdversary(width=8)
    _, parts = module.training_loss(x, {name: (term, 0.1)})
    assert name in parts and name not in module.training_loss(x)[1]
    if name == "perceptual":
        assert parts[name] > 0
