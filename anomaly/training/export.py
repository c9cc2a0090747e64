"""Export a trained model folder to ONE self-describing ONNX file.

The graph is exactly `InspectionModule.forward` in eval mode (input normalisation,
network, residual, smoothing, calibration), with a dynamic batch axis. Everything an
integrator needs (input size and layout, thresholds, what it was trained on) is in
the file's `metadata_props`, documented in docs/onnx.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import onnx
import torch

from anomaly import __version__
from anomaly.contract import FORMAT, FORMAT_KEY, INPUT_NAME, OUTPUT_NAMES, RESIZE_TEXT, seal_file, seal_placeholder
from anomaly.errors import ModelFileError
from anomaly.training.detector import Detector


def metadata_for(det: Detector) -> dict[str, str]:
    """All metadata values are strings (ONNX requires it); numbers as decimal text."""
    cfg, cal, summary = det.model_config, det.calibration, det.summary
    assert cal is not None
    meta = {
        FORMAT_KEY: FORMAT,
        "input_name": INPUT_NAME,
        "input_shape": f"N,3,{cfg.image_size},{cfg.image_size}",
        "input_size": str(cfg.image_size),
        "layout": "NCHW",
        "channel_order": "RGB",
        "value_range": "0..1",
        "dtype": "float32",
        "fit_mode": cfg.fit_mode,
        "tiles": str(cfg.tiles),
        "resize": RESIZE_TEXT[cfg.fit_mode],
        "outputs": "anomaly_map: float32 N,1,S,S calibrated heatmap; image_score: float32 N, max of anomaly_map",
        "score_scale": "0 = typical normal pixel; image_threshold (1.0 unless recalibrated) = defect",
        "image_threshold": repr(float(cal.image_threshold)),
        "pixel_threshold": repr(float(det.pixel_threshold)),
        "target_false_reject": repr(float(cal.target_false_reject)),
        "model_kind": cfg.kind,
        "train_count": str(summary.get("train_count", "")),
        "holdout_count": str(summary.get("holdout_count", "")),
        "train_image_sizes": ",".join(summary.get("image_sizes", [])),
        "train_data": Path(str(summary.get("data", ""))).name,  # the folder's name: no path of the training machine
        "trained": str(summary.get("created", "")),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "project_version": __version__,
        "config": json.dumps({"model": det.describe()["model"], "calibration": cal.to_dict()}),
    }
    if summary.get("suspects") is not None:  # training images that stood out (anomaly.training.screening)
        meta["train_suspects"] = json.dumps(
            [{k: e[k] for k in ("path", "score", "left_out")} for e in summary["suspects"]]
        )
    if cal.image_threshold_f1 is not None:
        meta["image_threshold_f1"] = repr(float(cal.image_threshold_f1))
    if cal.pixel_threshold_f1 is not None:
        meta["pixel_threshold_f1"] = repr(float(cal.pixel_threshold_f1))
    if cal.image_threshold_f1 is not None and cal.f1_source:
        meta["f1_source"] = cal.f1_source  # "labelled" or "synthetic"
    key, placeholder = seal_placeholder()
    meta[key] = placeholder
    return meta


def export_onnx(det: Detector, out_path: str | Path, opset: int = 18) -> Path:
    """Write the model to `out_path` atomically; refuses untrained or uncalibrated models."""
    if not det.is_calibrated or det.calibration is None:
        raise ModelFileError("model is not trained and calibrated: run `anomaly train` first, then export")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    module = det.module.eval()
    size = det.model_config.image_size
    example = torch.rand(2, 3, size, size)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    for key, value in metadata_for(det).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.doc_string = "anomaly inspection model: see metadata_props and docs/onnx.md"
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(tmp), save_as_external_data=False)
    seal_file(tmp)
    os.replace(tmp, out_path)
    return out_path


def export_folder(model_dir: str | Path, out_path: str | Path) -> Path:
    return export_onnx(Detector.load(model_dir), out_path)
