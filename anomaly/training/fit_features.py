"""The feature autoencoder's training: a bank of augmented (and painted) backbone features,
epochs over it, then its segmentation head (on synthetic, optionally real defects) and memory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from anomaly.config import TrainConfig
from anomaly.synthetic.defects import DefectSettings, random_defect
from anomaly.training.allocator import release_freed_memory
from anomaly.training.augment import augment, augment_pair
from anomaly.training.fit_common import (
    BestWeights,
    TrainHistory,
    epochs_of,
    feature_statistics,
    set_seed,
    to_tensor,
)
from anomaly.training.fit_patch_memory import fill_patch_memory
from anomaly.training.model import InspectionModule


@dataclass
class FeatureBank:
    """Standardised backbone features of augmented training images, computed once.

    Row i of `inputs` is what the autoencoder sees, row `targets[i]` what it should
    give back: the same augmented image without the painted defect (itself when no
    defect was painted). `masks` holds each row's defect share per feature cell.
    Stored as float16, which halves the bank's memory.
    """

    inputs: torch.Tensor  # (M, C, g, g) float16
    targets: torch.Tensor  # (M,) int64
    masks: torch.Tensor  # (M, 1, g, g) float16

    def painted_and_clean(self) -> tuple[np.ndarray, np.ndarray]:
        """Row indices with a painted defect, and those without."""
        painted = np.flatnonzero((self.targets != torch.arange(len(self.targets))).numpy())
        return painted, np.setdiff1d(np.arange(len(self.targets)), painted)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(rows)
        return self.inputs[idx].float(), self.inputs[self.targets[idx]].float(), self.masks[idx].float()


def feature_copies(cfg: TrainConfig, n_images: int) -> int:
    """Augmented copies per training image: enough that a small set still shows the
    autoencoder ~1500 distinct views, never more than the epochs could use."""
    if cfg.feature_copies > 0:
        return cfg.feature_copies
    return int(np.clip(math.ceil(1500 / max(n_images, 1)), 2, max(2, epochs_of(cfg))))


@torch.no_grad()
def build_feature_bank(
    module: InspectionModule,
    images: list[np.ndarray],
    cfg: TrainConfig,
    defects: DefectSettings,
    rng: np.random.Generator,
    progress: bool = True,
) -> FeatureBank:
    copies = feature_copies(cfg, len(images))
    grid = module.cfg.image_size // module.cfg.feature_stride
    inputs: list[torch.Tensor] = []
    targets: list[int] = []
    masks: list[torch.Tensor] = []
    jobs = [j for _ in range(copies) for j in range(len(images))]
    bar = tqdm(total=len(jobs), desc="features", unit="img", disable=not progress)
    for i in range(0, len(jobs), cfg.batch_size):
        views, painted, cells = [], [], []
        for j in jobs[i : i + cfg.batch_size]:
            view = augment(images[j], cfg.augment, rng)
            views.append(view)
            if defects.probability > 0 and rng.random() < defects.probability:
                img, mask, _ = random_defect(view, rng, defects.kinds, defects.scale_range)
                painted.append((len(views) - 1, img))
                cells.append(cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA))
        f = module.standardized_features(to_tensor(views + [p[1] for p in painted])).half()
        n_clean = len(views)
        # clean rows first (their own targets), then the painted rows pointing at them
        base = sum(t.shape[0] for t in inputs)
        inputs.append(f)
        targets.extend(range(base, base + n_clean))
        masks.append(torch.zeros(n_clean, 1, grid, grid, dtype=torch.float16))
        targets.extend(base + k for k, _ in painted)
        if cells:
            masks.append(torch.from_numpy(np.stack(cells)[:, None]).half())
        bar.update(len(views))
    bar.close()
    release_freed_memory()  # the backbone's kept activations: room for the concatenation
    bank = FeatureBank(torch.cat(inputs), torch.tensor(targets, dtype=torch.int64), torch.cat(masks))
    del inputs, masks
    release_freed_memory()  # and the per-batch pieces, now copied
    return bank


def _features_of(module: InspectionModule, images: list[np.ndarray], batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                module.standardized_features(to_tensor(images[i : i + batch_size]))
                for i in range(0, len(images), batch_size)
            ]
        )


def train_segmentation_head(
    module: InspectionModule, bank: FeatureBank, cfg: TrainConfig, rng: np.random.Generator, progress: bool = True
) -> list[float]:
    """Train the head (autoencoder frozen) to predict each bank row's defect mask from
    the residual the autoencoder leaves on it: cross-entropy plus soft Dice, because
    defect cells are a small minority. An epoch is every painted row plus as many
    clean ones (balanced, and cheaper than the whole bank)."""
    assert module.head is not None
    module.eval()
    module.head.train()
    painted, clean = bank.painted_and_clean()
    per_epoch = 2 * min(len(painted), len(clean))
    if per_epoch == 0:
        raise ValueError(
            "the segmentation head needs both painted and clean views; raise synthetic_fraction "
            f"(now {cfg.synthetic_fraction}) or train without the head"
        )
    optimizer = torch.optim.AdamW(module.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.head_epochs * math.ceil(per_epoch / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    losses: list[float] = []
    bar = tqdm(range(cfg.head_epochs), desc="segmentation head", unit="epoch", disable=not progress)
    for _ in bar:
        half = per_epoch // 2
        order = rng.permutation(
            np.concatenate([rng.choice(painted, half, replace=False), rng.choice(clean, half, replace=False)])
        )
        running = 0.0
        for i in range(0, len(order), cfg.batch_size):
            f, _, mask = bank.batch(order[i : i + cfg.batch_size])
            running += _head_step(module, optimizer, f, mask) * len(f)
            schedule.step()
        losses.append(running / len(order))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    module.head.eval()
    return losses


def _head_step(
    module: InspectionModule, optimizer: torch.optim.Optimizer, f: torch.Tensor, mask: torch.Tensor
) -> float:
    """One optimiser step of the head on features and their defect masks (grid cells)."""
    assert module.head is not None
    with torch.no_grad():
        res = module.feature_residual(f)
    logits = module.inner(module.head(res, f))
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, mask)
    dice = 1.0 - (2 * (prob * mask).sum() + 1.0) / (prob.sum() + mask.sum() + 1.0)
    loss = bce + dice
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


REAL_DEFECT_VIEWS = 16  # augmented views of each labelled real defect for fine-tuning


def fine_tune_head(
    module: InspectionModule,
    bank: FeatureBank,
    real: list[tuple[np.ndarray, np.ndarray]],
    cfg: TrainConfig,
    rng: np.random.Generator,
    progress: bool = True,
) -> list[float]:
    """A handful of labelled real defects (image, mask at the working size) teach the
    head their look. Each becomes REAL_DEFECT_VIEWS augmented views (the mask moves
    with the image), and every epoch mixes them with as many painted and clean bank
    rows at a third of the learning rate, so the head keeps what the synthetic
    defects taught it and does not learn that everything real is a defect."""
    assert module.head is not None
    grid = module.cfg.image_size // module.cfg.feature_stride
    views: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    for image, mask in real:
        for _ in range(REAL_DEFECT_VIEWS):
            v, m = augment_pair(image, mask.astype(np.float32), cfg.augment, rng)
            assert m is not None  # a mask in, a mask out
            views.append(v)
            cells.append(cv2.resize(m, (grid, grid), interpolation=cv2.INTER_AREA))
    real_f = _features_of(module, views, cfg.batch_size)
    real_m = torch.from_numpy(np.stack(cells)[:, None])
    painted, clean = bank.painted_and_clean()
    n = len(views)
    module.eval()
    module.head.train()
    optimizer = torch.optim.AdamW(module.head.parameters(), lr=cfg.learning_rate / 3, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    # an epoch here is a few steps (the real views plus twice as many bank rows): 3x the passes
    bar = tqdm(range(3 * cfg.head_epochs), desc="fine-tuning head on real defects", unit="epoch", disable=not progress)
    for _ in bar:
        bank_rows = np.concatenate(
            [
                rng.choice(painted, min(n, len(painted)), replace=False),
                rng.choice(clean, min(n, len(clean)), replace=False),
            ]
        )
        # rows >= 0 are bank rows, rows < 0 are real views (-1 - k)
        order = rng.permutation(np.concatenate([bank_rows, -1 - np.arange(n)]))
        running = 0.0
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            f_b, _, m_b = bank.batch(rows[rows >= 0])
            real_rows = torch.from_numpy(-1 - rows[rows < 0])
            f = torch.cat([f_b, real_f[real_rows]])
            cell_masks = torch.cat([m_b, real_m[real_rows]])
            running += _head_step(module, optimizer, f, cell_masks) * len(f)
        losses.append(running / len(order))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    module.head.eval()
    return losses


def train_feature_model(
    module: InspectionModule,
    fit_images: list[np.ndarray],
    holdout_images: list[np.ndarray],
    cfg: TrainConfig,
    defects: DefectSettings,
    progress: bool = True,
    real_defects: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> TrainHistory:
    """The feature autoencoder's loop: features once (FeatureBank), then epochs over
    them; every epoch draws as many rows as there are training images, at most
    cfg.max_epoch_rows. Painted rows teach the autoencoder to give back the good
    features; then the head and the patch memory, if any."""
    rng = set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    feature_statistics(module, fit_images, cfg.batch_size)
    bank = build_feature_bank(module, fit_images, cfg, defects, rng, progress)
    val_features = _features_of(module, holdout_images, cfg.batch_size)
    params = [p for p in module.net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs_of(cfg)))
    history = TrainHistory()
    best = BestWeights(module.net, cfg.patience)
    epoch_rows = min(len(fit_images), len(bank.targets))
    if cfg.max_epoch_rows > 0:
        epoch_rows = min(epoch_rows, cfg.max_epoch_rows)
    bar = tqdm(range(epochs_of(cfg)), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        module.net.train()
        rows = rng.choice(len(bank.targets), size=epoch_rows, replace=False)
        running = 0.0
        for i in range(0, len(rows), cfg.batch_size):
            idx = rows[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            f, target, _ = bank.batch(idx)
            loss = module.inner(module.net(f) - target).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
        schedule.step()
        module.net.eval()
        with torch.no_grad():
            val = float(module.inner(module.feature_residual(val_features)).mean())
        history.train_loss.append(running / max(len(rows), 1))
        history.val_loss.append(val)
        bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", val=f"{val:.4f}")
        if best.update(val, epoch, history):
            break
    best.restore()
    if module.head is not None:
        history.head_loss = train_segmentation_head(module, bank, cfg, rng, progress)
        if real_defects:
            history.fine_tune_loss = fine_tune_head(module, bank, real_defects, cfg, rng, progress)
    del bank  # the memory's candidates need the room
    release_freed_memory()
    if module.memory is not None:
        history.memory_sources = fill_patch_memory(module, module.memory, fit_images, cfg, rng, progress)
    module.eval()
    history.seconds = time.perf_counter() - start
    return history
