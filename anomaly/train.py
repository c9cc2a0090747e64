"""The training loop, plain: shuffle, augment, step, validate, stop when validation stalls.

Input images are already fitted to the working size (float32 (S, S, 3) in [0, 1]).
The held-out images are never trained on: their loss decides early stopping, and the
weights of the best epoch are the ones kept.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .augment import augment
from .config import TrainConfig
from .model import InspectionModule


@dataclass
class TrainHistory:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def set_seed(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    return np.random.default_rng(seed)


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images).transpose(0, 3, 1, 2).copy())


@torch.no_grad()
def feature_statistics(module: InspectionModule, images: list[np.ndarray], batch_size: int) -> None:
    """Per-channel mean and std of backbone features on the training images, so each
    feature channel weighs the same in the reconstruction error."""
    assert module.features is not None
    total = total_sq = None
    count = 0
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size])
        f = module.features((x - module.input_mean) / module.input_std).double()
        s, s2 = f.sum(dim=(0, 2, 3)), (f * f).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        count += f.shape[0] * f.shape[2] * f.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-8).sqrt()
    module.feature_mean.copy_(mean.float().view(1, -1, 1, 1))
    module.feature_std.copy_(std.float().view(1, -1, 1, 1))


@torch.no_grad()
def validation_loss(module: InspectionModule, images: list[np.ndarray], batch_size: int) -> float:
    module.eval()
    losses, weights = [], []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        loss, _ = module.training_loss(to_tensor(batch))
        losses.append(float(loss) * len(batch))
        weights.append(len(batch))
    return sum(losses) / sum(weights)


def train(
    module: InspectionModule,
    fit_images: list[np.ndarray],
    holdout_images: list[np.ndarray],
    cfg: TrainConfig,
    progress: bool = True,
) -> TrainHistory:
    rng = set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    if module.features is not None:
        feature_statistics(module, fit_images, cfg.batch_size)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    history = TrainHistory()
    best_val, best_state, stale = float("inf"), None, 0
    bar = tqdm(range(cfg.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        module.train()
        order = rng.permutation(len(fit_images))
        running, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            x = to_tensor([augment(fit_images[j], cfg.augment, rng) for j in idx])
            loss, _ = module.training_loss(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            seen += len(idx)
        schedule.step()
        train_loss = running / max(seen, 1)
        val = validation_loss(module, holdout_images, cfg.batch_size)
        history.train_loss.append(train_loss)
        history.val_loss.append(val)
        bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{val:.4f}")
        if val < best_val - 1e-6:
            best_val, best_state, stale = val, copy.deepcopy(module.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                history.stopped_early = True
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    history.seconds = time.perf_counter() - start
    return history
