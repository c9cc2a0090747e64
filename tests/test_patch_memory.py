"""The patch memory family: coreset selection, nearest-neighbour scoring, training."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anomaly.config import ModelConfig, TrainConfig, from_dict
from anomaly.training.fit import train
from anomaly.training.fit_patch_memory import greedy_coreset
from anomaly.training.model import InspectionModule
from anomaly.training.networks import PatchMemory

pytestmark = pytest.mark.slow  # trains models


def test_coreset_keeps_rare_patterns_and_thins_the_bulk():
    gen = torch.Generator().manual_seed(0)
    bulk = torch.randn(2000, 16, generator=gen) * 0.01
    rare = torch.eye(16)[:5] * 10.0  # five patterns far from the bulk and from each other
    points = torch.cat([bulk, rare])
    picked = greedy_coreset(points, 6, seed=0, projection_dim=8)
    assert len(set(picked.tolist())) == 6
    assert set(range(2000, 2005)) <= set(picked.tolist())  # every rare pattern kept, one bulk point
    assert torch.equal(greedy_coreset(points[:5], 6, seed=0), torch.arange(5))


def test_nearest_distance_matches_brute_force():
    torch.manual_seed(0)
    mem = PatchMemory(channels=8, size=50, neighbourhood=3)
    bank = torch.randn(50, 8)
    mem.remember(bank)
    f = torch.randn(2, 8, 6, 6)
    got = mem(f)
    patches = mem.patches(f).permute(0, 2, 3, 1).reshape(-1, 8)
    want = torch.cdist(patches, bank).amin(dim=1).view(2, 1, 6, 6)
    assert got.shape == (2, 1, 6, 6) and torch.allclose(got, want, atol=1e-4)
    # a remembered patch itself is at distance 0; fewer patches than the size are repeated
    mem1 = PatchMemory(channels=8, size=10, neighbourhood=1)
    mem1.remember(bank[:3])
    assert torch.equal(mem1.memory[3], bank[0])
    assert float(mem1(bank[1].view(1, 8, 1, 1))) == pytest.approx(0.0, abs=1e-3)


def test_reduced_search_measures_its_candidates_exactly_and_mostly_finds_the_nearest():
    """Patch features lie near a low-dimensional subspace (as real ones do): ranking on
    the memory's leading axes, one candidate per block, and measuring the candidates on
    all channels must return the exact nearest distance for nearly every cell, and
    never a distance shorter than the true nearest (each answer is a real patch)."""
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 32, generator=gen)

    def sample(n: int) -> torch.Tensor:
        return torch.randn(n, 6, generator=gen) @ mixing + 0.05 * torch.randn(n, 32, generator=gen)

    bank = sample(256)
    reduced = PatchMemory(channels=32, size=256, neighbourhood=1, search_dims=8, search_blocks=8)
    exact = PatchMemory(channels=32, size=256, neighbourhood=1)
    reduced.remember(bank)
    exact.remember(bank)
    basis = reduced.search_basis
    assert basis.shape == (32, 8) and torch.allclose(basis.t() @ basis, torch.eye(8), atol=1e-5)
    f = sample(400).t().reshape(1, 32, 20, 20)
    got, want = reduced(f).flatten(), exact(f).flatten()
    assert torch.allclose(want, torch.cdist(f.flatten(2)[0].t(), bank).amin(dim=1), atol=1e-4)
    assert bool((got >= want - 1e-4).all())
    assert float((got - want).abs().lt(1e-4).float().mean()) >= 0.95
    # the remembered patches themselves are found at distance 0
    assert float(reduced(bank[:64].t().reshape(1, 32, 8, 8)).max()) == pytest.approx(0.0, abs=1e-3)


def test_search_settings_are_checked_and_old_models_keep_the_exact_search():
    with pytest.raises(ValueError, match="multiple of the memory search blocks"):
        ModelConfig(kind="patch_memory", memory_size=1001)
    assert ModelConfig(kind="patch_memory", memory_size=1001, memory_search_dims=0).memory_size == 1001
    assert from_dict(ModelConfig, {"kind": "patch_memory"}).memory_search_dims == 0  # written before the setting
    # fewer remembered patches or channels than search axes: the search is exact
    assert PatchMemory(channels=8, size=64, neighbourhood=1, search_dims=48, search_blocks=8).search_blocks == 1


def _images(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = np.zeros((size, size, 3), np.float32)
    base[:, ::8] = 0.8  # vertical stripes: a regular normal pattern
    return [np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1).astype(np.float32) for _ in range(n)]


def test_filled_memory_flags_a_foreign_patch_only_where_it_is():
    module = InspectionModule(ModelConfig(kind="patch_memory", image_size=64, memory_size=64))
    assert module.head is None and not module.cfg.segmentation_head
    history = train(module, _images(6), _images(2), TrainConfig(batch_size=4, seed=0), progress=False)
    assert history.seconds > 0 and float(module.net.memory.abs().sum()) > 0
    good = _images(1)[0]
    bad = good.copy()
    bad[24:40, 24:40] = [0.9, 0.1, 0.1]  # a red square where stripes should be
    with torch.no_grad():
        r, _ = module.residual_components(torch.from_numpy(np.stack([good, bad]).transpose(0, 3, 1, 2).copy()))
    inside, outside = r[1, 0, 28:36, 28:36].mean(), r[1, 0, :12, :12].mean()
    assert float(inside) > 3 * float(outside)
    assert float(inside) > 3 * float(r[0, 0, 28:36, 28:36].mean())  # the good part is calm there


def test_patch_memory_has_no_loss_and_refuses_training_extras():
    module = InspectionModule(ModelConfig(kind="patch_memory", image_size=64, memory_size=16))
    with pytest.raises(ValueError, match="not trained with a loss"):
        module.training_loss(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="perceptual"):
        train(module, _images(2), _images(1), TrainConfig(perceptual_weight=1.0), progress=False)
    with pytest.raises(ValueError, match="patch neighbourhood"):
        ModelConfig(kind="patch_memory", patch_neighbourhood=2)
