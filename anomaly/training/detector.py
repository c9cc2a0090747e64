"""`Detector`: the scikit-learn-style face of training (fit, score, predict, save, load).

Settings (`ModelConfig`, `TrainConfig`) are given at construction; learned state (the
weights, feature statistics, calibration) comes from `fit` and lives in the module's
buffers. A model folder holds `config.json` (settings, calibration, training summary,
readable by a person) and `model.safetensors` (tensors only: nothing is unpickled).
The frozen ImageNet backbone of the feature model is not saved: it is reloaded from its
wheel, which keeps model folders small.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from anomaly import __version__
from anomaly.config import ModelConfig, TrainConfig, from_dict, settle, to_dict
from anomaly.errors import ModelFileError
from anomaly.evaluation.datasets import (
    DatasetError,
    find_dataset,
    find_test_set,
    iter_images,
    load_mask,
    relative_name,
    sample_training,
    split_holdout,
)
from anomaly.inspection.imageio import read_image
from anomaly.inspection.layout import Layout, heatmaps_and_scores, limit_detail, prepare
from anomaly.synthetic.defects import DefectSettings
from anomaly.training import calibration_steps
from anomaly.training.allocator import keep_freed_memory
from anomaly.training.calibrate import Calibration
from anomaly.training.fit import train
from anomaly.training.fit_common import to_tensor
from anomaly.training.model import InspectionModule
from anomaly.training.screening import (
    Suspect,
    find_suspects,
    forget_images,
    labelled_cut,
    memory_owner,
    to_summary,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class Detector:
    def __init__(self, model_config: ModelConfig | None = None, train_config: TrainConfig | None = None) -> None:
        self.model_config, self.train_config = settle(model_config or ModelConfig(), train_config or TrainConfig())
        keep_freed_memory()  # the torch side runs much faster when freed memory is reused (allocator.py)
        torch.manual_seed(self.train_config.seed)  # initial weights are part of what --seed fixes
        self.module = InspectionModule(self.model_config)
        self.calibration: Calibration | None = None
        self.summary: dict[str, Any] = {}

    # ----- learning -----------------------------------------------------------------
    def fit(
        self, data: str | Path, progress: bool = True, defects: str | Path | None = None, fine_tune_head: bool = False
    ) -> Detector:
        """Train on the good images of a folder (plain or MVTec `train/good`), holding
        out part of them to stop early and to calibrate thresholds; an MVTec-style
        folder's `validation/good` images, if there are any, are held out instead. Held-out
        images should be independent of the training ones: overlapping crops of one
        scan make the held-out maps calmer than new parts' and the thresholds too low.
        Of more than `max_train_images` good images, a seeded random subset is used (and
        of validation/good, at most the held-out share of that many).

        `defects`: an MVTec-style folder of labelled images (test/good, test/<defect>,
        ground_truth masks). Its images and the held-out good ones give F1-optimal
        thresholds (offered next to the calibrated ones); with `fine_tune_head` its
        defect images also fine-tune the segmentation head.
        """
        if fine_tune_head and defects is None:
            raise ValueError("fine-tuning the head needs labelled defects (a defects folder)")
        if fine_tune_head and self.module.head is None:
            raise ValueError(
                f"{defects}: fine-tuning on real defects needs the feature model with its segmentation head"
            )
        labelled = self._load_labelled(defects) if defects is not None else None
        real = (
            [
                pair
                for img, defective, mask in labelled
                if defective and mask is not None
                for pair in self._fit_pair(img, mask)
            ]
            or None
            if fine_tune_head and labelled
            else None
        )
        dataset = find_dataset(data)
        tc = self.train_config
        train_paths = sample_training(dataset.train, tc.max_train_images, tc.seed)
        if dataset.validation:  # good images the user set apart: independent of the training ones
            if len(dataset.validation) < tc.min_holdout:
                raise DatasetError(
                    f"{dataset.root / 'validation' / 'good'}: {len(dataset.validation)} images; "
                    f"calibration needs at least {tc.min_holdout}"
                )
            # as many as the held-out share of max_train_images: they are kept at up to 4x detail
            hold_limit = (
                max(tc.min_holdout, round(tc.max_train_images * tc.holdout_fraction)) if tc.max_train_images > 0 else 0
            )
            fit_paths, hold_paths = train_paths, sample_training(dataset.validation, hold_limit, tc.seed)
        else:
            fit_paths, hold_paths = split_holdout(train_paths, tc.holdout_fraction, tc.min_holdout, tc.seed)
        # Training images are brought to the working size as they are read: 400 photos of
        # 2448x2048 would take 24 GB as float images. The held-out ones are kept as images,
        # because synthetic calibration paints its defects on them, but at no more than
        # 4x the detail the model sees (`limit_detail`).
        fit_views: list[np.ndarray] = []
        fit_layouts: list[Layout] = []  # one per training image; its views are consecutive in fit_views
        fit_ok: list[Path] = []
        sizes_seen: set[tuple[int, int]] = set()
        reading = tqdm(fit_paths, desc="reading", unit="img", disable=not progress, leave=False)
        for path, img in iter_images(reading):
            views, layout = self._fit(img)
            fit_views.extend(views)
            fit_layouts.append(layout)
            fit_ok.append(path)
            sizes_seen.add(img.shape[:2])
        hold_raw: list[np.ndarray] = []
        hold_ok: list[Path] = []
        for path, img in iter_images(hold_paths):
            sizes_seen.add(img.shape[:2])
            hold_raw.append(limit_detail(img, *self.model_config.grid))
            hold_ok.append(path)
        if len(fit_ok) < 2 or not hold_raw:
            raise DatasetError(f"{dataset.root}: too few readable images to train ({len(fit_ok) + len(hold_raw)})")
        hold_prepared = [self._fit(img) for img in hold_raw]
        hold_views = [view for views, _ in hold_prepared for view in views]
        history = train(self.module, fit_views, hold_views, tc, progress=progress, real_defects=real)
        self.calibrate(hold_views, [layout for _, layout in hold_prepared])
        hold_scores = self.score(hold_raw)[1]
        # every training image scored out of fold: the threshold's good scores, and the screening's
        screen_start = time.perf_counter()
        train_scores = self.out_of_fold_scores(fit_views, fit_layouts, history.memory_sources)
        suspects: list[Suspect] = []
        left_out_z = tc.suspect_z  # lowered by labelled defects (screening.labelled_cut)
        if tc.screen_training and train_scores.size:
            names = [relative_name(p, dataset.root) for p in fit_ok + hold_ok]
            good_scores = np.concatenate([train_scores, hold_scores])
            if labelled and any(defective for _, defective, _ in labelled) and tc.suspect_z > 0:
                defect_scores = self.score([img for img, defective, _ in labelled if defective])[1]
                left_out_z = labelled_cut(good_scores, defect_scores, tc.suspect_z)
            suspects = find_suspects(names, good_scores, left_out_z)
            left_out = {names.index(s.path) for s in suspects if s.left_out}
            memory = calibration_steps.patch_memory(self)
            assert memory is not None and history.memory_sources is not None
            forget_images(memory, memory_owner(fit_layouts, history.memory_sources), left_out)
            train_scores = np.delete(train_scores, [i for i in left_out if i < len(fit_ok)])
            kept_hold = [k for k in range(len(hold_raw)) if len(fit_ok) + k not in left_out] or list(
                range(len(hold_raw))
            )  # the threshold's painted defects need at least one held-out image
            hold_raw, hold_scores = [hold_raw[k] for k in kept_hold], hold_scores[kept_hold]
        screen_seconds = time.perf_counter() - screen_start
        cal = self.set_decision_threshold(np.concatenate([hold_scores, train_scores]), hold_raw)
        if labelled:
            self.calibrate_with_defects(
                hold_raw + [x[0] for x in labelled],
                [False] * len(hold_raw) + [x[1] for x in labelled],
                [*(np.zeros(img.shape[:2], bool) for img in hold_raw), *(x[2] for x in labelled)],
            )
        else:
            self.calibrate_with_synthetic(hold_raw)
        sizes = sorted({f"{w}x{h}" for h, w in sizes_seen})
        self.summary = {
            "data": Path(data).resolve().name,  # the folder's name: model files carry no path of the training machine
            "train_count": len(fit_ok),
            "holdout_count": len(hold_ok),
            "holdout_from": "validation/good" if dataset.validation else "train/good",
            "train_available": len(dataset.train),  # more than used past max_train_images
            "validation_available": len(dataset.validation),
            # good images left out by max_train_images (train/good and validation/good)
            "not_read": len(dataset.train) + len(dataset.validation) - len(fit_paths) - len(hold_paths),
            "skipped": len(fit_paths) + len(hold_paths) - len(fit_ok) - len(hold_ok),
            "image_sizes": sizes[:5],
            # training images that do not fit the rest, most suspect first (anomaly.training.screening)
            "suspects": to_summary(suspects, cal.threshold_factor) if tc.screen_training else None,
            "left_out": sum(s.left_out for s in suspects),
            "left_out_z": round(left_out_z, 2) if tc.screen_training else None,
            "out_of_fold_seconds": round(screen_seconds, 1),  # scoring training images without their own patches
            "epochs_run": len(history.train_loss),
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
            "train_seconds": round(history.seconds, 1),
            "final_val_loss": history.val_loss[history.best_epoch] if history.val_loss else None,
            # the synthetic defects the feature autoencoder (and head) trained on
            "synthetic_training": (
                DefectSettings(probability=tc.synthetic_fraction).to_dict()
                if self.model_config.kind == "feature_ae"
                else None
            ),
            "perceptual_weight": tc.perceptual_weight if self.model_config.kind in ("ae", "vae") else None,
            "adversarial_weight": tc.adversarial_weight if self.model_config.kind in ("ae", "vae") else None,
            "head_final_loss": history.head_loss[-1] if history.head_loss else None,
            "patch_memory": (
                self.model_config.memory_size
                if self.module.memory is not None or self.model_config.kind == "patch_memory"
                else None
            ),
            "labelled_defects": (
                {
                    "folder": Path(str(defects)).name,  # the folder's name: no path of this machine
                    "images": len(labelled),
                    "defective": sum(x[1] for x in labelled),
                    "head_fine_tuned": bool(real),
                }
                if labelled
                else None
            ),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "project_version": __version__,
        }
        return self

    def _load_labelled(self, folder: str | Path) -> list[tuple[np.ndarray, bool, np.ndarray | None]]:
        """(image, is defective, mask) for every image of a labelled folder, at no more
        than 4x the detail the model sees (`limit_detail`, as the held-out images). A
        shrunk mask keeps every pixel its defect touched, so a hairline crack survives.
        A defect without a mask (a part an inspector confirmed in the dashboard) has mask
        None: it sets the image threshold only, not the pixel threshold or the head."""
        out: list[tuple[np.ndarray, bool, np.ndarray | None]] = []
        for sample in find_test_set(folder):
            image = read_image(sample.path)
            kept = limit_detail(image, *self.model_config.grid)
            if sample.mask_unknown:
                out.append((kept, True, None))
                continue
            mask = load_mask(sample, image.shape[:2])
            if kept is not image:
                mask = (
                    cv2.resize(mask.astype(np.float32), (kept.shape[1], kept.shape[0]), interpolation=cv2.INTER_AREA)
                    > 0
                )
            out.append((kept, sample.is_defective, mask))
        if not any(defective for _, defective, _ in out):
            raise DatasetError(f"{folder}: no defect images (test/<defect>/... or test_public/bad/...)")
        return out

    def _fit_pair(self, image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """An image's model inputs, each with its part of the mask (0 in any padding)."""
        views, layout = self._fit(image)
        return list(zip(views, layout.cut(mask.astype(np.float32))))

    def _fit(self, image: np.ndarray) -> tuple[list[np.ndarray], Layout]:
        return prepare(image, *self.model_config.grid)

    # ----- calibration (the steps themselves are in calibration_steps) ---------------
    def calibrate(self, good_images: list[np.ndarray], layouts: list[Layout]) -> Calibration:
        """Normalisation and thresholds from held-out good images' model inputs and layouts
        (`calibration_steps.calibrate_on_good`)."""
        return calibration_steps.calibrate_on_good(self, good_images, layouts)

    def out_of_fold_scores(
        self,
        fit_views: list[np.ndarray],
        layouts: list[Layout],
        sources: np.ndarray | None,
    ) -> np.ndarray:
        """Leave-one-image-out calibrated scores of every training image, in order, against
        the patch memory (`calibration_steps.out_of_fold_scores`)."""
        return calibration_steps.out_of_fold_scores(self, fit_views, layouts, sources)

    def set_decision_threshold(self, good_scores: np.ndarray, good_images: list[np.ndarray]) -> Calibration:
        """Move the shipped image threshold, the model rescaled to keep it at 1.0
        (`calibration_steps.set_decision_threshold`)."""
        return calibration_steps.set_decision_threshold(self, good_scores, good_images)

    def calibrate_with_synthetic(
        self, good_images: list[np.ndarray], settings: DefectSettings | None = None
    ) -> Calibration:
        """F1-optimal thresholds from painted defects on held-out good images
        (`calibration_steps.calibrate_with_synthetic`)."""
        return calibration_steps.calibrate_with_synthetic(self, good_images, settings)

    def calibrate_with_defects(
        self, images: list[np.ndarray], labels: list[bool], masks: list[np.ndarray | None]
    ) -> Calibration:
        """F1-optimal thresholds from labelled images, next to the false-reject ones
        (`calibration_steps.calibrate_with_defects`)."""
        return calibration_steps.calibrate_with_defects(self, images, labels, masks)

    # ----- inference ----------------------------------------------------------------
    @torch.no_grad()
    def score(self, images: list[np.ndarray], batch_size: int = 8) -> tuple[list[np.ndarray], np.ndarray]:
        """Calibrated heatmaps at each image's own resolution, and image scores."""
        self._require_calibrated()
        self.module.eval()
        maps, scores = [], []
        for i in range(0, len(images), batch_size):
            prepared = [self._fit(img) for img in images[i : i + batch_size]]
            out, _ = self.module(to_tensor([view for views, _ in prepared for view in views]))
            layouts = [layout for _, layout in prepared]
            for heatmap, score in heatmaps_and_scores(out.numpy()[:, 0], layouts):
                maps.append(heatmap)
                scores.append(score)
        return maps, np.array(scores)

    def predict(self, images: list[np.ndarray], image_threshold: float | None = None) -> np.ndarray:
        """True where a part is defective."""
        _, scores = self.score(images)
        return scores >= (self.image_threshold if image_threshold is None else image_threshold)

    @property
    def image_threshold(self) -> float:
        return self.calibration.image_threshold if self.calibration else 1.0

    @property
    def pixel_threshold(self) -> float:
        return float(self.module.pixel_threshold)

    @property
    def is_calibrated(self) -> bool:
        return bool(self.module.calibrated.item() > 0)

    def _require_calibrated(self) -> None:
        if not self.is_calibrated:
            raise ModelFileError("model is not trained and calibrated yet (run fit first)")

    # ----- persistence --------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.module.state_dict().items() if not k.startswith("features.")}
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_file(state, str(tmp))
        tmp.replace(folder / WEIGHTS_FILE)
        meta = {
            "format": "anomaly-model",
            "format_version": 1,
            "model": to_dict(self.model_config),
            "train": to_dict(self.train_config),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "summary": self.summary,
        }
        tmp = folder / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(folder / CONFIG_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Detector:
        folder = Path(folder)
        cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not folder.is_dir():
            raise ModelFileError(
                f"{folder}: not a model folder (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})"
            )
        if not cfg_path.is_file() or not weights.is_file():
            raise ModelFileError(f"{folder}: not a model folder (missing {CONFIG_FILE} or {WEIGHTS_FILE})")
        try:
            meta = json.loads(cfg_path.read_text())
            if meta.get("format") != "anomaly-model":
                raise ValueError("not an anomaly model config")
            det = cls(from_dict(ModelConfig, meta["model"]), from_dict(TrainConfig, meta.get("train", {})))
            state = load_file(str(weights))
            missing, unexpected = det.module.load_state_dict(state, strict=False)
        except Exception as exc:  # several exception types all mean: not a usable file
            raise ModelFileError(f"{folder}: cannot load model ({exc})") from exc
        missing = [k for k in missing if not k.startswith("features.")]
        if missing or unexpected:
            raise ModelFileError(
                f"{folder}: weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        if meta.get("calibration"):
            det.calibration = Calibration(**meta["calibration"])
        det.summary = meta.get("summary", {})
        det.module.eval()
        return det

    def describe(self) -> dict[str, Any]:
        return {
            "model": asdict(self.model_config),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            **self.summary,
        }
