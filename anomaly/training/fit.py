"""`train`, every model family's entry point, and the pixel autoencoders' loop, plain: shuffle,
augment, step, validate, stop when validation stalls. Feature models train in
`fit_features`, the patch memory family in `fit_patch_memory`.

Input images are already fitted to the working size (float32 (S, S, 3) in [0, 1]).
The held-out images are never trained on: their loss decides early stopping, and the
weights of the best epoch are the ones kept.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from anomaly.config import TrainConfig, settle
from anomaly.synthetic.defects import DefectSettings
from anomaly.training.allocator import keep_freed_memory
from anomaly.training.augment import augment
from anomaly.training.fit_common import BestWeights, TrainHistory, epochs_of, set_seed, to_tensor
from anomaly.training.fit_features import train_feature_model
from anomaly.training.fit_patch_memory import train_patch_memory
from anomaly.training.model import InspectionModule
from anomaly.training.sharpening import PatchAdversary, PerceptualLoss


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
    best = BestWeights(module, cfg.patience)
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
        if best.update(val, epoch, history):
            break
    best.restore()
    module.eval()
    history.seconds = time.perf_counter() - start
    return history
