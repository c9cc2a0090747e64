"""`anomaly train` and `anomaly export`: their options and commands.

The train options are generated from the config dataclasses (`anomaly.config`), which are
the only place a default lives: an option sets its field only when given. Training and
export import torch lazily, inside the commands.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from anomaly.config import FIT_MODES, MODEL_KINDS, PIXEL_LOSSES, AugmentConfig, ModelConfig, TrainConfig

# Fewer held-out good images than this and `anomaly train` says the threshold is uncertain:
# the prediction bound (anomaly.training.calibrate) is right on average, but one small set
# can put it well off.
FEW_HOLDOUT = 20


def _default_of(cls: type, name: str) -> Any:
    """A dataclass field's default: the config classes are the only place defaults live."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is MISSING and f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _config_option(p: argparse.ArgumentParser, flag: str, cls: type, name: str, help: str, **kwargs: Any) -> None:
    """An option that sets the field `name` of `cls` (dest "<cls>.<name>") only when given;
    its help shows the dataclass's default."""
    default = _default_of(cls, name)
    if isinstance(default, bool):
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
        shown = "on" if default else "off"
    else:
        kwargs.setdefault("type", type(default) if default is not None else int)
        shown = "the family's" if default is None else default
    p.add_argument(
        flag,
        dest=f"{cls.__name__}.{name}",
        default=argparse.SUPPRESS,
        metavar=kwargs.pop("metavar", name.upper()),
        help=f"{help} (default {shown})".replace("%", "%%"),
        **kwargs,
    )


def _given(a: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` set on the command line."""
    prefix = f"{cls.__name__}."
    return {k[len(prefix) :]: v for k, v in vars(a).items() if k.startswith(prefix)}


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on good images",
        description=(
            "Train on normal (good) images only. DATA is a folder of good images, or an MVTec-style "
            "category folder (its train/good is used). Part of the images is held out to stop "
            "training early and to calibrate thresholds; in an MVTec-style folder, the images of "
            "validation/good are held out instead, if it exists."
        ),
    )
    p.add_argument("data", type=Path, help="folder of good images, or MVTec-style category folder")
    p.add_argument("--out", type=Path, required=True, help="model folder to write (config.json + model.safetensors)")
    m, tr, au = ModelConfig, TrainConfig, AugmentConfig
    _config_option(
        p,
        "--model",
        m,
        "kind",
        "feature_ae: autoencoder on frozen ImageNet EfficientNet-Lite0 features; "
        "patch_memory: PatchCore-style memory of normal patch features on the same backbone (no epochs); "
        "ae: convolutional pixel autoencoder; vae: variational pixel autoencoder",
        choices=MODEL_KINDS,
        type=str,
    )
    _config_option(p, "--image-size", m, "image_size", "square working size in pixels, a multiple of 32")
    _config_option(
        p,
        "--fit-mode",
        m,
        "fit_mode",
        "how images reach the square working size: letterbox (keep the "
        "aspect ratio and pad), stretch, tile (overlapping squares, --tiles across the short side), or auto "
        "(letterbox, but tile long strips and, with --tiles > 1, every image)",
        choices=FIT_MODES,
        type=str,
    )
    _config_option(
        p,
        "--tiles",
        m,
        "tiles",
        "tiles across an image's short side in tile/auto mode; more finds "
        "smaller defects on large images for proportionally more inference time",
    )
    _config_option(p, "--epochs", tr, "epochs", "maximum epochs; training stops early when validation stalls")
    _config_option(p, "--batch-size", tr, "batch_size", "images per training step")
    _config_option(p, "--lr", tr, "learning_rate", "learning rate", type=float)
    _config_option(p, "--seed", tr, "seed", "random seed: same data + seed = same model")
    _config_option(p, "--loss", m, "loss", "pixel models: reconstruction loss", choices=PIXEL_LOSSES, type=str)
    _config_option(
        p, "--residual", m, "residual", "pixel models: residual used for the heatmap", choices=PIXEL_LOSSES, type=str
    )
    _config_option(
        p, "--depth", m, "depth", "pixel models: down-sampling stages; the latent map is 1/2^depth of the working size"
    )
    _config_option(
        p,
        "--ssim-levels",
        m,
        "ssim_levels",
        "pixel models: the SSIM residual takes the worst of this many "
        "dyadic scales (1 = the classic single 11-px window)",
    )
    _config_option(
        p,
        "--memory",
        m,
        "feature_memory",
        "feature_ae: also keep a memory of normal patch features and add "
        "its nearest-patch distance to the autoencoder's evidence",
    )
    _config_option(
        p,
        "--memory-size",
        m,
        "memory_size",
        "patch memory: normal patch features kept (greedy coreset); more is slower per image",
    )
    _config_option(
        p,
        "--search-dims",
        m,
        "memory_search_dims",
        "patch memory search: rank candidates on this many "
        "principal axes, then measure the best few on all channels; 0 = exact search, slower",
    )
    _config_option(
        p,
        "--edge-calibration",
        m,
        "edge_calibration",
        "calibrate the frame's outer band ring by ring on "
        "held-out good images, so textures that fill the frame are not failed for their edges",
    )
    _config_option(
        p,
        "--separable-convs",
        m,
        "separable_convs",
        "feature_ae: depthwise-separable 3x3 layers: faster, slightly coarser localisation",
    )
    _config_option(
        p,
        "--head",
        m,
        "segmentation_head",
        "feature_ae: a small segmentation head trained on synthetic "
        "defects raises the residual where it recognises a defect",
    )
    _config_option(
        p,
        "--head-epochs",
        tr,
        "head_epochs",
        "feature_ae: passes of the head over the painted views; more can help colour textures, for longer training",
    )
    _config_option(
        p,
        "--synthetic-fraction",
        tr,
        "synthetic_fraction",
        "feature_ae: share of augmented training views that get a painted defect (0 = none, and no head)",
    )
    _config_option(
        p,
        "--perceptual-weight",
        tr,
        "perceptual_weight",
        "ae/vae: weight of a perceptual loss for sharper edges (0 = off)",
    )
    _config_option(
        p,
        "--adversarial-weight",
        tr,
        "adversarial_weight",
        "ae/vae: weight of an adversarial term (patch discriminator) for sharper edges (0 = off)",
    )
    _config_option(
        p,
        "--holdout",
        tr,
        "holdout_fraction",
        "share of good images held out for early stopping and calibration, unless the folder has validation/good",
    )
    _config_option(
        p,
        "--screen",
        tr,
        "screen_training",
        "models with a patch memory: score each training image as a new part would be scored and leave out "
        "of the memory and the threshold those that stand out (defective parts in the good folder); "
        "they are listed in suspects.html in the model folder",
    )
    _config_option(
        p,
        "--suspect-z",
        tr,
        "suspect_z",
        "--screen: robust z-score of a training image's score above which it is left out (0 = only list them)",
        type=float,
    )
    _config_option(
        p,
        "--max-train-images",
        tr,
        "max_train_images",
        "use a random subset of this many good images when there are more (0 = all)",
    )
    _config_option(
        p,
        "--false-reject",
        tr,
        "target_false_reject",
        "target share of good parts rejected at the calibrated threshold",
    )
    _config_option(p, "--patience", tr, "patience", "epochs without validation improvement before stopping")
    _config_option(
        p,
        "--hflip",
        au,
        "hflip",
        "mirror left-right when augmenting (for parts that look the same "
        "mirrored; a mirrored chiral part would be learnt as good)",
    )
    _config_option(p, "--vflip", au, "vflip", "flip top-bottom when augmenting (for parts without an up side)")
    p.add_argument(
        "--no-augment",
        action="store_true",
        help="turn off all augmentation (rotations, shifts, brightness/contrast jitter, flips)",
    )
    p.add_argument(
        "--defects",
        type=Path,
        default=None,
        help="optional MVTec-style folder with labelled defects (test/<defect>, ground_truth/<defect>): "
        "adds F1-optimal thresholds next to the calibrated ones, and its defects' scores "
        "sharpen which training images are left out (--screen)",
    )
    p.add_argument(
        "--fine-tune-head",
        action="store_true",
        help="feature_ae with --defects: also fine-tune the segmentation head on those defects (keep "
        "others aside to measure it: thresholds from the same images are optimistic)",
    )
    p.add_argument("--export", type=Path, default=None, help="also export the trained model to this .onnx file")
    _add_int8(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model folder to one self-describing ONNX file",
        description=(
            "Write the whole inspection pipeline (normalisation, network, residual, smoothing, calibration) "
            "into ONE .onnx file with a dynamic batch axis and its thresholds in the metadata."
        ),
    )
    p.add_argument("model", type=Path, help="trained model folder")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument(
        "--no-check", action="store_true", help="skip the torch vs onnxruntime parity check on sample inputs"
    )
    _add_int8(p)


def _add_int8(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--int8",
        action="store_true",
        help="write an INT8 file instead: the learnt convolutions "
        "quantised (static, onnxruntime QDQ) with ranges from training images, thresholds re-fitted on "
        "the held-out good images so 1.0 still means the threshold",
    )
    p.add_argument(
        "--calibration-images",
        type=Path,
        default=None,
        metavar="DIR",
        help="--int8: the folder the model was trained on (default: the folder it names, if found "
        "from the current directory)",
    )


# ----- commands ---------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    from anomaly.training.detector import Detector
    from anomaly.training.screening import SUSPECTS_REPORT, suspects_report

    augment = AugmentConfig(**_given(a, AugmentConfig))
    if a.no_augment:
        augment = AugmentConfig(hflip=False, vflip=False, rotate_degrees=0, shift_fraction=0, brightness=0, contrast=0)
    mc = ModelConfig(**_given(a, ModelConfig))
    tc = TrainConfig(**_given(a, TrainConfig), augment=augment)
    if a.fine_tune_head and a.defects is None:
        raise ValueError("--fine-tune-head needs --defects DIR (labelled defect images with masks)")
    det = Detector(mc, tc).fit(a.data, progress=not a.quiet, defects=a.defects, fine_tune_head=a.fine_tune_head)
    if a.defects is not None and (cal := det.calibration) is not None:
        print(
            f"F1-optimal thresholds from {det.summary['labelled_defects']['images']} labelled images and the "
            f"held-out good ones: image {cal.image_threshold_f1:.3f}, pixel {cal.pixel_threshold_f1}"
        )
    det.save(a.out)
    s = det.summary
    print(
        f"trained {det.model_config.kind} on {s['train_count']} images ({s['holdout_count']} held out{' from validation/good' if s.get('holdout_from') == 'validation/good' else ''}) in {s['train_seconds']} s, "
        f"{s['epochs_run']} epochs; pixel threshold {det.pixel_threshold:.3f}, image threshold 1.0 -> {a.out}"
    )
    if s["not_read"]:
        available = s["train_available"] + s["validation_available"]
        print(
            f"note: used a random {available - s['not_read']} of the {available} good images "
            "(--max-train-images; 0 uses all)",
            file=sys.stderr,
        )
    cal = det.calibration
    assert cal is not None  # fit calibrates
    if cal.threshold_from:
        print(
            f"image threshold set by {cal.threshold_from}, from {cal.good_count} good scores "
            f"({s['holdout_count']} held out, the rest training images scored without their own memory patches)"
        )
    if max(s["holdout_count"], cal.good_count) < FEW_HOLDOUT:
        print(
            f"note: the image threshold was calibrated on only {max(s['holdout_count'], cal.good_count)} good images; it rejects "
            f"{det.train_config.target_false_reject:.0%} of good parts on average, but for one such small set the rate is uncertain. "
            "Check it on more good parts (anomaly evaluate), or train with more images, a larger --holdout, "
            "or a validation/good folder.",
            file=sys.stderr,
        )
    if s.get("suspects"):
        report = suspects_report(det, a.data, a.out / SUSPECTS_REPORT)
        print(
            f"{len(s['suspects'])} training image(s) stand out from the rest, {s['left_out']} left out of the model: "
            f"look at {report} and move defective parts out of the good folder",
            file=sys.stderr,
        )
    if a.export is not None:
        _export(det, a.export, a.int8, a.calibration_images if a.calibration_images is not None else a.data)
    elif a.int8:
        raise ValueError("--int8 needs --export FILE")
    return 0


def _export(det: Any, out: Path, int8: bool, calibration_images: Path | None) -> Path:
    """Write the float or the INT8 file and say what was written."""
    if not int8:
        from anomaly.training.export import export_onnx

        path = export_onnx(det, out)
        print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")
        return path
    from anomaly.training.quantize import export_int8

    r = export_int8(det, out, calibration_images)
    print(
        f"exported INT8 {r.path} ({r.path.stat().st_size / 1e6:.1f} MB): int8 ranges from {r.calibration_images} "
        f"training images and a painted-defect copy of each; calibration re-fitted on {r.holdout_images} "
        f"held-out good images (pixel threshold {r.fp32.pixel_threshold:.3f} -> {r.int8.pixel_threshold:.3f}); "
        f"float and INT8 verdicts agree on {r.verdicts_agree:.0%} of {r.compared} held-out and painted images"
    )
    return r.path


def cmd_export(a: argparse.Namespace) -> int:
    from anomaly.training.detector import Detector
    from anomaly.training.export import export_onnx

    det = Detector.load(a.model)
    if a.int8:  # its own check: float and INT8 verdicts compared on held-out and painted images
        _export(det, a.out, True, a.calibration_images)
        return 0
    if a.calibration_images is not None:
        raise ValueError("--calibration-images is for --int8")
    path = export_onnx(det, a.out)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB)")
    if not a.no_check:
        from anomaly.training.parity import check_parity

        diff, same = check_parity(det, path)
        print(f"parity torch vs onnxruntime: max abs map difference {diff:.2e}, verdicts identical: {same}")
        if diff > 1e-4 or not same:
            print(f"error: {path}: onnxruntime output differs from torch", file=sys.stderr)
            return 1
    return 0
