"""The patch memory's training: a greedy coreset of the training images' patch features,
remembered by the patch memory family or by the feature model's memory."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from anomaly.config import TrainConfig
from anomaly.training.augment import augment
from anomaly.training.fit_common import TrainHistory, feature_statistics, set_seed, to_tensor
from anomaly.training.model import InspectionModule
from anomaly.training.networks import PatchMemory

MAX_MEMORY_CANDIDATES = 300_000  # patches the coreset is chosen from (a random subset beyond this)


@torch.no_grad()
def greedy_coreset(patches: torch.Tensor, size: int, seed: int, projection_dim: int = 128) -> torch.Tensor:
    """Indices of `size` rows picked by greedy farthest-point (k-center) selection: each
    pick is the patch farthest from all picked so far, so rare normal patterns (an
    edge, a thread, a highlight) are kept and the bulk of near-identical background
    patches is thinned out. Distances are taken after a random projection to
    `projection_dim` dimensions (approximately preserved, Johnson-Lindenstrauss), as in
    PatchCore, to keep the selection fast."""
    n, c = patches.shape
    if n <= size:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    z = patches.float()
    if c > projection_dim:
        z = z @ (torch.randn(c, projection_dim, generator=gen) / math.sqrt(projection_dim))
    sq = z.pow(2).sum(dim=1)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    nearest = torch.full((n,), float("inf"))
    dist = torch.empty(n)
    for _ in range(size - 1):
        i = chosen[-1]
        # squared distance of every patch to the newest pick, in place: |z|^2 - 2 z.zi + |zi|^2
        torch.addmv(sq, z, z[i], alpha=-2.0, out=dist)
        torch.minimum(nearest, dist.add_(sq[i]).clamp_min_(0.0), out=nearest)
        chosen.append(int(nearest.argmax()))
    return torch.tensor(chosen)


@torch.no_grad()
def fill_patch_memory(
    module: InspectionModule,
    memory: PatchMemory,
    fit_images: list[np.ndarray],
    cfg: TrainConfig,
    rng: np.random.Generator,
    progress: bool = True,
) -> np.ndarray:
    """Remember a greedy coreset of the neighbourhood-averaged patch features of every
    training image and, with augmentation on, of feature_copies - 1 augmented views of
    each (default 1), so a part placed a little differently is still normal. The
    feature statistics must already be set. Returns the index of the training view
    each memory row came from (see memory_sources)."""
    copies = cfg.feature_copies if cfg.feature_copies > 0 else 2
    jobs = [(j, c > 0) for c in range(copies) for j in range(len(fit_images))]
    grid = module.cfg.image_size // module.cfg.feature_stride
    keep = min(1.0, MAX_MEMORY_CANDIDATES / (len(jobs) * grid * grid))
    chunks: list[torch.Tensor] = []
    sources: list[np.ndarray] = []
    bar = tqdm(total=len(jobs), desc="patch memory", unit="img", disable=not progress)
    for i in range(0, len(jobs), cfg.batch_size):
        views = [
            augment(fit_images[j], cfg.augment, rng) if augmented else fit_images[j]
            for j, augmented in jobs[i : i + cfg.batch_size]
        ]
        p = module.inner(memory.patches(module.standardized_features(to_tensor(views))))
        cells = p.shape[2] * p.shape[3]
        p = p.permute(0, 2, 3, 1).reshape(-1, p.shape[1])
        source = np.repeat([j for j, _ in jobs[i : i + cfg.batch_size]], cells)
        if keep < 1.0:
            kept = rng.random(p.shape[0]) < keep
            p, source = p[torch.from_numpy(kept)], source[kept]
        chunks.append(p)
        sources.append(source)
        bar.update(len(views))
    bar.close()
    candidates = torch.cat(chunks)
    chosen = greedy_coreset(candidates, memory.memory.shape[0], cfg.seed)
    memory.remember(candidates[chosen])
    # remember() repeats rows when there are fewer candidates than memory rows
    return np.concatenate(sources)[chosen.numpy()][np.arange(memory.memory.shape[0]) % len(chosen)]


def train_patch_memory(
    module: InspectionModule, fit_images: list[np.ndarray], cfg: TrainConfig, progress: bool = True
) -> TrainHistory:
    """The patch memory family's "training": feature statistics, then the memory."""
    assert isinstance(module.net, PatchMemory)
    rng = set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    feature_statistics(module, fit_images, cfg.batch_size)
    sources = fill_patch_memory(module, module.net, fit_images, cfg, rng, progress)
    module.eval()
    history = TrainHistory(memory_sources=sources)
    history.seconds = time.perf_counter() - start
    return history
