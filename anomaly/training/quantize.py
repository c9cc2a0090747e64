"""INT8 export: the same single sealed file, its heavy convolutions in 8-bit integers.

What is quantised: every convolution that has learnt weights over more than one channel
(the EfficientNet-Lite0 backbone, the feature autoencoder, the segmentation head and a
pixel autoencoder), with the ReLU/ReLU6 and residual additions between them, as
onnxruntime's static QDQ format (per-channel symmetric int8 weights, asymmetric uint8
activations, MinMax ranges from training images and a painted-defect copy of each:
ranges seen on good parts alone would clip the very activations by which a defect stands
out). What stays float32: input normalisation, the patch-memory search (a minimum over
distances: int8 rounding would change which remembered patch is nearest), the residuals,
the smoothing blur and the calibration arithmetic. The heatmap is a small difference of
large numbers; keeping that end in float keeps its rounding where it was.

Quantisation moves the raw heatmap's level, so a threshold fitted on the float model
would no longer mean the same false-reject rate. The calibration is therefore re-fitted
on the quantised graph's own raw maps of the held-out good images (the same split that
training used: same folder, same seed), with the same functions training uses
(`anomaly.training.calibrate`): edge profile, centre and scale, pixel threshold, and
the synthetic-defect F1 thresholds. The new constants replace the calibration
initializers at the end of the graph, so 1.0 still means the image threshold. The two
detectors' relative weights (`residual_scale`) stay as trained: re-weighting would be
a different model, and the re-fitted scale absorbs any overall shift.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from anomaly.contract import OUTPUT_NAMES, seal_file, seal_placeholder
from anomaly.errors import ModelFileError
from anomaly.evaluation.datasets import DatasetError, find_dataset, iter_images, sample_training, split_holdout
from anomaly.evaluation.metrics import f1_operating_threshold
from anomaly.evaluation.pixel_metrics import pixel_f1_threshold
from anomaly.inspection.layout import Layout, heatmaps_and_scores, limit_detail, per_image, prepare
from anomaly.synthetic.defects import DefectSettings, random_defect
from anomaly.training.calibrate import Calibration, calibrate, edge_profile
from anomaly.training.detector import Detector
from anomaly.training.export import export_onnx
from anomaly.training.model import edge_rings

QUANTIZATION_KEY = "quantization"
QUANTIZATION_TEXT = (
    "int8 static QDQ (onnxruntime.quantization): learnt multi-channel convolutions with their "
    "activations and residual additions; per-channel symmetric int8 weights, uint8 activations "
    "(MinMax on training images and painted-defect copies of them); normalisation, memory search, "
    "residuals, smoothing and calibration in float32; calibration re-fitted on the quantised "
    "model's held-out scores"
)
RAW_OUTPUT = "raw_map_for_calibration"
# Images whose activation ranges set the int8 scales; more adds calibration time for
# ranges that MinMax has already seen.
DEFAULT_CALIBRATION_COUNT = 48
_BATCH = 4


@dataclass
class Int8Report:
    """What quantisation changed, for the command line to print."""

    path: Path
    calibration_images: int
    holdout_images: int
    fp32: Calibration
    int8: Calibration
    verdicts_agree: float  # share of held-out and painted images with the same verdict in both files
    compared: int


def calibration_folder(det: Detector, given: str | Path | None) -> Path:
    """The folder of good images to quantise and re-calibrate with: `given`, else the
    training folder the model names, when it is found from here. The model folder
    records only the folder's name (no paths of the training machine), so elsewhere
    the folder must be given."""
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: no such folder of calibration images")
        return folder
    name = str(det.summary.get("data", "") or "")
    if name and Path(name).is_dir():
        return Path(name)
    raise DatasetError(
        f"INT8 export needs the good images the model was trained on, to set the int8 ranges and "
        f"re-fit the thresholds; the model names its training folder '{name or '?'}', which is not "
        "found from here: pass --calibration-images DIR"
    )


def split_like_training(det: Detector, folder: Path) -> tuple[list[Path], list[Path]]:
    """(training paths, held-out paths) chosen as `Detector.fit` chose them: given the
    same folder, the held-out images are the ones training calibrated on."""
    tc = det.train_config
    dataset = find_dataset(folder)
    train_paths = sample_training(dataset.train, tc.max_train_images, tc.seed)
    if dataset.validation:
        hold_limit = (
            max(tc.min_holdout, round(tc.max_train_images * tc.holdout_fraction)) if tc.max_train_images > 0 else 0
        )
        return train_paths, sample_training(dataset.validation, hold_limit, tc.seed)
    return split_holdout(train_paths, tc.holdout_fraction, tc.min_holdout, tc.seed)


def heavy_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes to quantise: convolutions with learnt weights over more than one
    channel (not the 1-channel smoothing blur, whose output is the heatmap itself), and
    the ReLU/ReLU6 after them and additions of two of them (residual connections), so
    their activations stay int8 between convolutions instead of going back to float."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    chosen: set[str] = set()
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits:
            dims = inits[n.input[1]].dims
            if dims[0] * dims[1] > 1:
                chosen.add(n.name)
    grown = True
    while grown:
        grown = False
        for n in model.graph.node:
            if n.name in chosen:
                continue
            sources = [producer.get(i) for i in n.input if i and i not in inits]
            from_chosen = [s is not None and s.name in chosen for s in sources]
            if (n.op_type in ("Clip", "Relu") and from_chosen[:1] == [True]) or (
                n.op_type == "Add" and len(sources) == 2 and all(from_chosen)
            ):
                chosen.add(n.name)
                grown = True
    return sorted(chosen)


@dataclass
class _Tail:
    """The calibration arithmetic at the end of the graph: raw -> (raw - edge centre) /
    edge scale -> (. - centre) / scale = anomaly_map. Initializer names; edge ones are
    None without edge calibration."""

    raw: str
    edge_center: str | None
    edge_scale: str | None
    center: str
    scale: str


def _tail(model: onnx.ModelProto) -> _Tail:
    """Walk back from anomaly_map through Sub/Div nodes with a constant operand."""
    inits = {t.name for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    chain: list[tuple[str, str]] = []
    tensor = OUTPUT_NAMES[0]
    while (node := producer.get(tensor)) is not None and node.op_type in ("Sub", "Div") and node.input[1] in inits:
        chain.append((node.op_type, node.input[1]))
        tensor = node.input[0]
    ops = [op for op, _ in chain]
    if ops == ["Div", "Sub", "Div", "Sub"]:
        return _Tail(tensor, chain[3][1], chain[2][1], chain[1][1], chain[0][1])
    if ops[:2] == ["Div", "Sub"] and len(ops) == 2:
        return _Tail(tensor, None, None, chain[1][1], chain[0][1])
    raise ModelFileError(
        f"cannot find the calibration at the end of the graph (found {ops}); "
        "INT8 export supports graphs written by `anomaly export`"
    )


def _set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            old = numpy_helper.to_array(t)
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(np.asarray(value, old.dtype).reshape(old.shape), name)
            )
            return
    raise ModelFileError(f"no initializer {name}")


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, views: Sequence[np.ndarray], output: str) -> np.ndarray:
    """One output of the model for a list of HxWxC views, (N, S, S)."""
    out = []
    for i in range(0, len(views), _BATCH):
        batch = np.stack([v.transpose(2, 0, 1) for v in views[i : i + _BATCH]]).astype(np.float32)
        out.append(session.run([output], {session.get_inputs()[0].name: batch})[0][:, 0])
    return np.concatenate(out)


class _Reader:
    """onnxruntime CalibrationDataReader over prepared training views, a few at a time."""

    def __init__(self, views: Sequence[np.ndarray], input_name: str) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [
                {input_name: np.stack([v.transpose(2, 0, 1) for v in views[i : i + _BATCH]]).astype(np.float32)}
                for i in range(0, len(views), _BATCH)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _views(det: Detector, paths: Sequence[Path]) -> tuple[list[np.ndarray], list[np.ndarray], list[Layout]]:
    """(images at limited detail, all their model views, each image's layout)."""
    images, views, layouts = [], [], []
    for _, img in iter_images(paths):
        kept = limit_detail(img, *det.model_config.grid)
        v, layout = prepare(kept, *det.model_config.grid)
        images.append(kept)
        views.extend(v)
        layouts.append(layout)
    return images, views, layouts


def calibration_defect_views(det: Detector, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The model views of one painted-defect copy of each image (the training seed), so
    that the int8 ranges also span what a defect does to the activations."""
    rng = np.random.default_rng(det.train_config.seed)
    return [v for img in images for v in prepare(random_defect(img, rng)[0], *det.model_config.grid)[0]]


def _scores(
    session: ort.InferenceSession, det: Detector, images: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Calibrated heatmaps at working detail and image scores, as `Detector.score` gives them."""
    prepared = [prepare(img, *det.model_config.grid) for img in images]
    maps = _run(session, [v for views, _ in prepared for v in views], OUTPUT_NAMES[0])
    pairs = heatmaps_and_scores(list(maps), [layout for _, layout in prepared])
    return [m for m, _ in pairs], np.array([s for _, s in pairs])


def refit_calibration(
    model: onnx.ModelProto,
    det: Detector,
    hold_images: Sequence[np.ndarray],
    hold_views: Sequence[np.ndarray],
    hold_layouts: Sequence[Layout],
) -> Calibration:
    """Re-fit the graph's calibration constants (in place) on its own raw maps of the
    held-out good images, as `Detector.calibrate` and `calibrate_with_synthetic` do on
    the float model; returns the new calibration."""
    tail = _tail(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(tail.raw, onnx.TensorProto.FLOAT, None))
    raw = _run(_session(probe), hold_views, tail.raw)
    size = det.model_config.image_size
    if tail.edge_center is not None and tail.edge_scale is not None:
        valid = (
            np.concatenate(
                [
                    np.stack(layout.cut(np.ones((layout.original_h, layout.original_w), np.float32)))
                    for layout in hold_layouts
                ]
            )
            > 0.5
        )
        rings = edge_rings(size)
        centre, scale = edge_profile(raw, valid, rings, band=size // 8)
        raw = (raw - centre[rings]) / scale[rings]
        _set_initializer(model, tail.edge_center, centre[rings])
        _set_initializer(model, tail.edge_scale, scale[rings])
    crops = [layout.content(views) for views, layout in zip(per_image(list(raw), list(hold_layouts)), hold_layouts)]
    cal = calibrate(
        np.array([c.max() for c in crops]),
        np.concatenate([c.ravel() for c in crops]),
        det.train_config.target_false_reject,
    )
    old = det.calibration
    if old is not None and old.threshold_factor != 1.0:
        # the shipped-threshold rule's move (Detector.set_decision_threshold), relative to
        # the good-only bound, carries over: this graph's good scores set only that bound
        cal.map_scale *= old.threshold_factor
        cal.pixel_threshold = float(np.clip(cal.pixel_threshold / old.threshold_factor, 0.05, 1.0))
        cal.threshold_factor, cal.good_count = old.threshold_factor, old.good_count
        cal.threshold_from, cal.threshold_levels = old.threshold_from, old.threshold_levels
    _set_initializer(model, tail.center, np.float32(cal.map_center))
    _set_initializer(model, tail.scale, np.float32(cal.map_scale))
    if old is not None and old.f1_source == "synthetic":
        # the same painted defects as training's synthetic F1 thresholds (same seed and settings)
        settings = (
            DefectSettings(**old.synthetic_defects)
            if old.synthetic_defects
            else DefectSettings(scale_range=(0.01, 0.1), probability=1.0)
        )
        rng = np.random.default_rng(det.train_config.seed)
        painted = [
            random_defect(img, rng, kinds=settings.kinds, scale_range=settings.scale_range)[:2] for img in hold_images
        ]
        maps, scores = _scores(_session(model), det, list(hold_images) + [p[0] for p in painted])
        labels = np.array([False] * len(hold_images) + [True] * len(painted))
        cal.image_threshold_f1 = float(f1_operating_threshold(labels, scores)[0])
        cal.pixel_threshold_f1 = float(pixel_f1_threshold([p[1] for p in painted], maps[len(hold_images) :])[0])
        cal.f1_source, cal.synthetic_defects = "synthetic", settings.to_dict()
    # labelled F1 thresholds (--defects) cannot be re-fitted without those images: dropped, not left stale
    return cal


def _metadata(fp32: onnx.ModelProto, det: Detector, cal: Calibration) -> dict[str, str]:
    meta = {p.key: p.value for p in fp32.metadata_props}
    for key in ("image_threshold_f1", "pixel_threshold_f1", "f1_source"):
        meta.pop(key, None)
    meta.update(
        {
            "image_threshold": repr(float(cal.image_threshold)),
            "pixel_threshold": repr(float(cal.pixel_threshold)),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": json.dumps({"model": det.describe()["model"], "calibration": cal.to_dict()}),
            QUANTIZATION_KEY: QUANTIZATION_TEXT,
        }
    )
    if cal.image_threshold_f1 is not None:
        meta["image_threshold_f1"] = repr(float(cal.image_threshold_f1))
        if cal.f1_source:
            meta["f1_source"] = cal.f1_source
    if cal.pixel_threshold_f1 is not None:
        meta["pixel_threshold_f1"] = repr(float(cal.pixel_threshold_f1))
    key, placeholder = seal_placeholder()
    meta[key] = placeholder
    return meta


def export_int8(
    det: Detector,
    out_path: str | Path,
    data: str | Path | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_COUNT,
) -> Int8Report:
    """Write the model as one sealed INT8 ONNX file (see the module doc). `data`: the
    folder of good images it was trained on (default: the one the model names)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not det.is_calibrated or det.calibration is None:
        raise ModelFileError("model is not trained and calibrated: run `anomaly train` first, then export")
    folder = calibration_folder(det, data)
    fit_paths, hold_paths = split_like_training(det, folder)
    rng = np.random.default_rng(det.train_config.seed)
    chosen = sorted(rng.choice(len(fit_paths), min(calibration_count, len(fit_paths)), replace=False))
    fit_images, fit_views, _ = _views(det, [fit_paths[i] for i in chosen])
    fit_views += calibration_defect_views(det, fit_images)
    hold_images, hold_views, hold_layouts = _views(det, hold_paths)
    if not fit_views or not hold_images:
        raise DatasetError(f"{folder}: no readable training or held-out images to calibrate the INT8 model on")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anomaly-int8-") as work:
        fp32_path, pre_path, q_path = (Path(work) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        export_onnx(det, fp32_path)
        fp32 = onnx.load(str(fp32_path))
        # shape inference and basic (platform-independent) folding, as the quantiser expects
        quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
        pre = onnx.load(str(pre_path))
        quantize_static(
            str(pre_path),
            str(q_path),
            _Reader(fit_views, pre.graph.input[0].name),
            quant_format=QuantFormat.QDQ,
            nodes_to_quantize=heavy_nodes(pre),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        model = onnx.load(str(q_path))
        cal = refit_calibration(model, det, hold_images, hold_views, hold_layouts)
        del model.metadata_props[:]
        for key, value in _metadata(fp32, det, cal).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.doc_string = fp32.doc_string
        onnx.checker.check_model(model, full_check=True)
        # verdicts of both files on the held-out images and painted copies of them
        probe_rng = np.random.default_rng(det.train_config.seed + 1)
        probe = list(hold_images) + [random_defect(img, probe_rng)[0] for img in hold_images]
        _, s32 = _scores(_session(fp32), det, probe)
        _, s8 = _scores(_session(model), det, probe)
        agree = float(np.mean((s32 >= 1.0) == (s8 >= 1.0)))
        tmp = out_path.with_name(out_path.name + ".tmp")
        onnx.save_model(model, str(tmp), save_as_external_data=False)
    seal_file(tmp)
    os.replace(tmp, out_path)
    assert det.calibration is not None
    return Int8Report(out_path, len(chosen), len(hold_images), det.calibration, cal, agree, len(probe))
