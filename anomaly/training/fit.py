"""The training loop, plain: shuffle, augment, step, validate, stop when validation stalls.

Input images are already fitted to the working size (float32 (S, S, 3) in [0, 1]).
The held-out images are never trained on: their loss decides early stopping, and the
weights of the best epoch are the ones kept.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from anomaly.config import TrainConfig, settle
from anomaly.synthetic.defects import DefectSettings, random_defect
from anomaly.training.allocator import keep_freed_memory, release_freed_memory
from anomaly.training.augment import augment, augment_pair
from anomaly.training.model import InspectionModule
from anomaly.training.networks import PatchMemory
from anomaly.training.sharpening import PatchAdversary, PerceptualLoss


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


def epochs_of(cfg: TrainConfig) -> int:
    """The epoch limit of a settled config (`anomaly.config.settle` fills in the family's)."""
    assert cfg.epochs is not None, "settle() the configs first"
    return cfg.epochs


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
    best_val, best_state, stale = float("inf"), None, 0
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
        if val < best_val - 1e-6:
            best_val, best_state, stale = val, copy.deepcopy(module.net.state_dict()), 0
            history.best_epoch = epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                history.stopped_early = True
                break
    if best_state is not None:
        module.net.load_state_dict(best_state)
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


def train(
    module: InspectionModule,
    fit_images: list[np.ndarray],
    holdout_images: list[np.ndarray],
    cfg: TrainConfig,
    progress: bool = True,
    real_defects: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> TrainHistory:
    """Train in place and keep the best epoch's weights. Pixel autoencoders: this loop,
    augmenting every batch afresh (early stopping watches the reconstruction loss
    alone, so runs with and without the sharpening terms stop alike); feature
    autoencoders: `train_feature_model`. `real_defects` (labelled images with masks, at
    the working size) fine-tune the feature model's segmentation head."""
    if real_defects and module.head is None:
        raise ValueError("fine-tuning on real defects needs a feature model with a segmentation head")
    _, cfg = settle(module.cfg, cfg)
    keep_freed_memory()  # reuse activations' memory instead of faulting in new pages each batch
    if module.features is not None:
        if cfg.perceptual_weight > 0 or cfg.adversarial_weight > 0:
            raise ValueError(
                "the perceptual and adversarial terms are for pixel autoencoders (ae, vae); the "
                "feature models already compare ImageNet features"
            )
        if module.cfg.kind == "patch_memory":
            return train_patch_memory(module, fit_images, cfg, progress)
        if module.head is not None and cfg.synthetic_fraction <= 0:
            raise ValueError("a segmentation head needs synthetic defects to learn from (synthetic_fraction > 0)")
        defects = DefectSettings(probability=cfg.synthetic_fraction)
        return train_feature_model(module, fit_images, holdout_images, cfg, defects, progress, real_defects)
    rng = set_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    extra_terms: dict[str, tuple[torch.nn.Module, float]] = {}
    if cfg.perceptual_weight > 0:
        extra_terms["perceptual"] = (PerceptualLoss(module.cfg.image_size), cfg.perceptual_weight)
    if cfg.adversarial_weight > 0:
        extra_terms["adversarial"] = (PatchAdversary(), cfg.adversarial_weight)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs_of(cfg)))
    history = TrainHistory()
    best_val, best_state, stale = float("inf"), None, 0
    bar = tqdm(range(epochs_of(cfg)), desc="training", unit="epoch", disable=not progress)
    for epoch in bar:
        module.train()
        order = rng.permutation(len(fit_images))
        running, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            x = to_tensor([augment(fit_images[j], cfg.augment, rng) for j in idx])
            loss, _ = module.training_loss(x, extra_terms)
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
