"""What every training loop shares: the run's history, seeding, image batches as tensors,
the backbone's feature statistics, the settled epoch limit and early stopping."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from anomaly.config import TrainConfig
from anomaly.training.model import InspectionModule


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    head_loss: list[float] = field(default_factory=list)
    fine_tune_loss: list[float] = field(default_factory=list)
    # which training view each remembered patch came from (memory row -> view index), so
    # calibration can score a training image against the memory without its own patches
    memory_sources: np.ndarray | None = None


class BestWeights:
    """Early stopping, written once for both training loops: keep the weights of the
    epoch with the lowest held-out loss, and say when it has not improved for
    `patience` epochs."""

    def __init__(self, net: torch.nn.Module, patience: int) -> None:
        self.net, self.patience = net, patience
        self.best_val, self.stale = float("inf"), 0
        self.state: dict[str, Any] | None = None

    def update(self, val: float, epoch: int, history: TrainHistory) -> bool:
        """Record an epoch's held-out loss; True when training should stop."""
        if val < self.best_val - 1e-6:
            self.best_val, self.state, self.stale = val, copy.deepcopy(self.net.state_dict()), 0
            history.best_epoch = epoch
            return False
        self.stale += 1
        history.stopped_early = self.stale >= self.patience
        return history.stopped_early

    def restore(self) -> None:
        """Load the best epoch's weights back (if any epoch was measured)."""
        if self.state is not None:
            self.net.load_state_dict(self.state)


def set_seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return np.random.default_rng(seed)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())


@torch.no_grad()
def feature_statistics(module: InspectionModule, images: list[np.ndarray], batch_size: int) -> None:
    """Per-channel mean and std of backbone features on the training images, so each
    feature channel weighs the same in the reconstruction error (or, with
    balance_feature_blocks, each tapped block does, whatever its channel count)."""
    assert module.features is not None
    total: torch.Tensor | None = None
    total_sq: torch.Tensor | None = None
    count = 0
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        f = module.features((x - module.input_mean) / module.input_std).double()
        s, s2 = f.sum(dim=(0, 2, 3)), (f * f).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        count += f.shape[0] * f.shape[2] * f.shape[3]
    assert total is not None and total_sq is not None, "no images"
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-8).sqrt()
    if module.cfg.balance_feature_blocks:  # each block's channels together weigh 1/blocks
        sizes = module.features.block_channels
        std = std * torch.cat([torch.full((c,), (len(sizes) * c / sum(sizes)) ** 0.5, dtype=std.dtype) for c in sizes])
    module.feature_mean.copy_(mean.float().view(1, -1, 1, 1))
    module.feature_std.copy_(std.float().view(1, -1, 1, 1))


def epochs_of(cfg: TrainConfig) -> int:
    """The epoch limit of a settled config (`anomaly.config.settle` fills in the family's)."""
    assert cfg.epochs is not None, "settle() the configs first"
    return cfg.epochs
