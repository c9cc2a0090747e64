"""Inspect images with an exported ONNX model: numpy, OpenCV and onnxruntime only.

One `Inspector` holds one onnxruntime session and may be shared by threads
(onnxruntime's `run` is thread-safe and this class keeps no per-call state).
Images of any size and format are prepared exactly as in training
(`anomaly.inspection.layout.prepare`: a letterboxed square or tiles), and heatmaps are mapped back
to the original pixels.
Thresholds come from the file's metadata and can be overridden per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from anomaly.contract import OUTPUT_NAMES, ModelInfo, check_seal
from anomaly.errors import ModelFileError
from anomaly.inspection.imageio import read_image, to_internal
from anomaly.inspection.layout import call_groups, heatmaps_and_scores, prepare, stack
from anomaly.inspection.overlays import overlay
from anomaly.inspection.regions import Region, mask_and_regions


def chosen_thresholds(
    defaults: tuple[float, float], image_threshold: float | None = None, pixel_threshold: float | None = None
) -> tuple[float, float]:
    """(image, pixel) thresholds to decide with: each one given, else its default (a
    model's calibrated one). The one rule for every caller, so a run, its records and the
    dashboard never disagree about which threshold applied."""
    return (
        defaults[0] if image_threshold is None else float(image_threshold),
        defaults[1] if pixel_threshold is None else float(pixel_threshold),
    )


@dataclass
class Inspection:
    """The result for one image. Heatmap and mask are at the image's own resolution."""

    score: float
    image_threshold: float
    pixel_threshold: float
    heatmap: np.ndarray
    mask: np.ndarray
    regions: list[Region] = field(default_factory=list)
    name: str = ""

    @property
    def is_defective(self) -> bool:
        # written so that a NaN score or threshold FAILs: NaN compares false both ways
        return not self.score < self.image_threshold

    @property
    def verdict(self) -> str:
        return "FAIL" if self.is_defective else "PASS"

    def with_thresholds(self, image_threshold: float | None = None, pixel_threshold: float | None = None) -> Inspection:
        """Re-decide with other thresholds without running the model again."""
        it, pt = chosen_thresholds((self.image_threshold, self.pixel_threshold), image_threshold, pixel_threshold)
        mask, regions = mask_and_regions(self.heatmap, it, pt)
        return replace(self, image_threshold=it, pixel_threshold=pt, mask=mask, regions=regions)

    def overlay(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB: the image with heatmap and defect outlines."""
        return overlay(image, self.heatmap, self.mask, self.pixel_threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": round(self.score, 6),
            "verdict": self.verdict,
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.pixel_threshold,
            "regions": [r.to_dict() for r in self.regions],
        }


def session_options(threads: int | None, spin: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The memory-pattern planner re-allocates (and page-faults) all activations on the
    # second call of each batch shape, a second slow call; without it only the first is
    # slow, and steady-state latency is the same.
    opts.enable_mem_pattern = False
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


SHRINK_ARENA_AFTER_VIEWS = 8  # the scorer's default batch size
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

BACKENDS = ("onnxruntime", "openvino")
Backend = Literal["onnxruntime", "openvino"]


class _OpenVINO:
    """The same file compiled by OpenVINO's CPU plugin (the optional 'openvino' extra).

    float32 inference precision: on CPUs with bf16 units OpenVINO would otherwise
    compute in bf16 and move the scores away from the thresholds the file was
    calibrated for (an INT8 file still runs its quantised parts in int8). One infer
    request per thread, as a request is not thread-safe and an Inspector may be shared.
    """

    def __init__(self, data: bytes, threads: int | None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise ModuleNotFoundError(
                "backend 'openvino' needs the 'openvino' extra: pip install 'anomaly[openvino]'", name="openvino"
            ) from exc
        import io

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(io.BytesIO(data)), "CPU", config)
        self._local = threading.local()

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: batch})
        # a request reuses its output buffers on the next call: copy
        return np.array(out[self.compiled.outputs[0]]), np.array(out[self.compiled.outputs[1]])


class Inspector:
    def __init__(
        self, model_path: str | Path, threads: int | None = None, spin: bool = True, backend: Backend = "onnxruntime"
    ) -> None:
        """threads: ORT intra-op threads (None: one per core). spin=False makes idle
        inference threads sleep instead of busy-waiting: slightly slower alone, faster
        when other threads of the process (decoding, drawing) need the same cores.
        backend: "onnxruntime" or "openvino" (needs the 'openvino' extra); the file's
        metadata, seal and signature are checked the same way for both."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        data = path.read_bytes()  # one read: what is checked is what is loaded
        # what a run records as its model (run.json): the bytes in use, even if the file
        # is replaced while this Inspector is alive
        self.sha256 = hashlib.sha256(data).hexdigest()
        opts = session_options(threads, spin)
        if backend != "onnxruntime":  # this session only reads the contract: no optimisation work
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # several exception types all mean: not a usable file
            raise ModelFileError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
        self.info = ModelInfo.from_metadata(path, self.session.get_modelmeta().custom_metadata_map)
        check_seal(path, data)
        self._check_signature(path)
        self.input_name = self.session.get_inputs()[0].name
        self.backend = backend
        self._openvino = _OpenVINO(data, threads) if backend == "openvino" else None

    def _check_signature(self, path: Path) -> None:
        """One image input and the contract's two outputs, or the file is refused at load."""
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or outputs != list(OUTPUT_NAMES):
            raise ModelFileError(
                f"{path}: the model has inputs {[i.name for i in inputs]} and outputs {outputs}; "
                f"an inspection model has one input and the outputs {list(OUTPUT_NAMES)}"
            )

    @property
    def image_threshold(self) -> float:
        return self.info.image_threshold

    @property
    def pixel_threshold(self) -> float:
        return self.info.pixel_threshold

    def thresholds(
        self, image_threshold: float | None = None, pixel_threshold: float | None = None
    ) -> tuple[float, float]:
        """The thresholds a call decides with: the given ones, else the model's calibrated ones."""
        return chosen_thresholds((self.image_threshold, self.pixel_threshold), image_threshold, pixel_threshold)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model call on a prepared batch (N,3,S,S): (maps (N,S,S), scores (N,))."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self._openvino is not None:
            maps, scores = self._openvino.run(x)
        else:
            # A call of many views (tiles of a long strip) grows onnxruntime's memory arena by
            # hundreds of MB that it would keep for the whole run; give that back after such a
            # call. Calls of up to the default batch reuse the arena as before.
            shrink = x.shape[0] > SHRINK_ARENA_AFTER_VIEWS
            maps, scores = self.session.run(None, {self.input_name: x}, _SHRINK_ARENA if shrink else None)
        return maps[:, 0], scores

    def score(self, images: Sequence[np.ndarray], batch_size: int = 8) -> tuple[list[np.ndarray], np.ndarray]:
        """Calibrated heatmaps at each image's resolution, and image scores (max of the
        heatmap over the image itself, padding excluded). Images as `inspect` takes them."""
        maps, scores = [], []
        for i in range(0, len(images), batch_size):
            prepared = [
                prepare(to_internal(img, f"image {i + k}"), *self.info.grid)
                for k, img in enumerate(images[i : i + batch_size])
            ]
            for group in call_groups([layout.views for _, layout in prepared], batch_size):
                batch, layouts = stack([prepared[k] for k in group], self.info.input_size)
                out, _ = self.run(batch)
                for heatmap, score in heatmaps_and_scores(list(out), layouts):
                    maps.append(heatmap)
                    scores.append(score)
        return maps, np.asarray(scores, dtype=np.float64)

    def inspect_batch(
        self,
        images: Sequence[np.ndarray],
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Inspection]:
        it, pt = self.thresholds(image_threshold, pixel_threshold)
        maps, scores = self.score(images)
        out = []
        for k, (m, s) in enumerate(zip(maps, scores)):
            mask, regions = mask_and_regions(m, it, pt)
            out.append(Inspection(float(s), it, pt, m, mask, regions, names[k] if names else ""))
        return out

    def inspect(
        self,
        image: np.ndarray | str | os.PathLike,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
    ) -> Inspection:
        """One image: a path to an image file, or an array (`imageio.to_internal`):

        - shape (H, W) gray, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, channels last
          (RGB order: convert `cv2.imread`'s BGR with cv2.COLOR_BGR2RGB, or pass the path);
        - dtype uint8 (0-255) or uint16 (0-65535), scaled as files are, or float32/float64
          in [0, 1] (clipped to it; NaN or infinite values are refused);
        - each side at least 8 pixels and at most 50 megapixels, as for files; a tiled
          image at most `layout.MAX_VIEWS` tiles.

        Anything else (None, bytes, CHW, an empty array...) raises ImageReadError saying
        what is accepted."""
        name = ""
        if isinstance(image, (str, os.PathLike)):
            name, image = str(image), read_image(Path(image))
        return self.inspect_batch([image], image_threshold, pixel_threshold, [name])[0]


def describe(model_path: str | Path) -> str:
    """Human-readable metadata of a model file."""
    return json.dumps(Inspector(model_path).info.summary(), indent=2)
