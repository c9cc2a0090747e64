"""Training-only terms that ask a pixel autoencoder for sharp reconstructions.

Squared pixel error and SSIM both forgive a blurred edge: the average of the two sides is
close to either. Blur then shows up in the residual of every good part's edges and hides
small defects there. Two remedies from the literature, each a callable
(reconstruction, input) -> loss that `InspectionModule.training_loss` adds with a weight:

- `PerceptualLoss`: match what a frozen ImageNet network sees in both images.
- `PatchAdversary`: a small patch discriminator (as in pix2pix and VAE-GAN) learns to tell
  reconstructions from inputs; the autoencoder is rewarded for fooling it.

Neither is part of the exported pipeline: the trained autoencoder's tensors are the same
with or without them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from anomaly.config import ModelConfig
from anomaly.training.model import IMAGENET_MEAN, IMAGENET_STD
from anomaly.training.networks import FeatureExtractor


class PerceptualLoss(nn.Module):
    """How differently a frozen ImageNet network sees the reconstruction and the input.

    Early EfficientNet-Lite0 blocks (2 and 4: strides 4 and 8) respond to edges and
    texture, so matching their outputs asks for sharp reconstructions. Each channel's
    error is divided by that channel's energy on the input, so no block dominates.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, image_size: int) -> None:
        super().__init__()
        cfg = ModelConfig(
            kind="feature_ae", image_size=image_size, feature_blocks=(2, 4), feature_stride=4, feature_border=0
        )
        self.features = FeatureExtractor(cfg)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fr = self.features((recon - self.mean) / self.std)
        with torch.no_grad():
            ft = self.features((target - self.mean) / self.std)
            energy = ft.pow(2).mean(dim=(0, 2, 3), keepdim=True) + 1e-6
        return ((fr - ft).pow(2) / energy).mean()


def patch_discriminator(width: int = 32) -> nn.Sequential:
    """Three stride-2 4x4 convolutions and a 3x3 scorer: one realism score per cell of a
    1/8 grid, each from a ~46-px window, so the judgement is about local sharpness and
    texture rather than the whole part. Spectral normalisation keeps the critic smooth,
    which is what keeps the game stable without tuning (Miyato et al. 2018)."""
    layers: list[nn.Module] = []
    channels = 3
    for out in (width, 2 * width, 4 * width):
        layers += [spectral_norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        channels = out
    layers.append(spectral_norm(nn.Conv2d(channels, 1, 3, padding=1)))
    return nn.Sequential(*layers)


class PatchAdversary(nn.Module):
    """The autoencoder's adversary, with its own optimizer.

    Each call in training mode first takes one discriminator step (hinge loss: inputs
    should score >= 1, detached reconstructions <= -1), then returns the autoencoder's
    term, the discriminator's mean score on the reconstruction, negated. The
    discriminator's weights get no gradient from that term. In eval mode (validation) it
    only returns the term. `last_discriminator_loss` is kept for logging.
    """

    def __init__(self, width: int = 32, learning_rate: float = 2e-4) -> None:
        super().__init__()
        self.discriminator = patch_discriminator(width)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
        self.last_discriminator_loss = float("nan")

    def discriminator_step(self, recon: torch.Tensor, target: torch.Tensor) -> float:
        real = self.discriminator(target)
        fake = self.discriminator(recon.detach())
        loss = F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # free them; the autoencoder's term must add none
        return float(loss.detach())

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.last_discriminator_loss = self.discriminator_step(recon, target)
        self.discriminator.requires_grad_(False)
        try:
            return -self.discriminator(recon).mean()
        finally:
            self.discriminator.requires_grad_(True)
