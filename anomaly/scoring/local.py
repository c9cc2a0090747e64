"""`anomaly score`: inspect a folder (or a list) of images with an exported ONNX model.

numpy, OpenCV, onnxruntime and tqdm only: this module imports no torch, directly or
indirectly, so it runs on a line PC without the training extra.

What a run writes to OUT_DIR:

- ``results.jsonl``: one JSON object per image (path, score, verdict, image_threshold,
  pixel_threshold, width, height, regions, error). This is the record of truth.
- ``results.csv``: the same rows for spreadsheets, columns
  ``path,score,verdict,regions,largest_region_area,error``. Always rebuildable from
  results.jsonl, and rebuilt from it (atomically) at the start of every run.
- ``run.json``: the model file's sha256, the thresholds used, the input and the start time
  (plus the times of later resumes).
- ``.score.lock``: held while a run writes, so two runs never write one folder at once.
- with ``overlays=True`` (or ``"all"``; ``"fails"``: only for parts that fail, what a
  line usually keeps): ``overlays/<relative path>.jpg`` (heatmap + defect outlines,
  JPEG quality 90: a picture for people, and 20x cheaper to encode than PNG, which
  kept folder scoring far below the model's own speed) and ``masks/<relative path>.png``
  (0/255, lossless), mirroring the input tree. A name already ending in the suffix keeps
  it; any other gets it appended (``a.png`` -> overlay ``a.png.jpg``, mask ``a.png``;
  ``a.jpg`` -> overlay ``a.jpg``, mask ``a.jpg.png``), so ``a.jpg`` and ``a.png`` side by
  side never overwrite each other.

Nothing is lost: rows are appended, flushed and fsynced after every batch; a re-run
with the same model file, thresholds and input resumes and skips what is done; a
different model, thresholds or input raises ValueError (use ``restart=True`` /
``--restart``, which moves old results aside to ``results.<timestamp>.jsonl`` etc.,
or another output folder). A crash mid-line leaves a partial last line in
results.jsonl, which the next run drops (and scores that image again). An unreadable
image (corrupt, empty, too small, not an image) becomes an ERROR row naming the file
and the run goes on. Ctrl-C keeps every row finished so far.

Exit codes (``ScoreSummary.exit_code``, returned by ``anomaly score``):

- ``EXIT_OK = 0``: every image was read and passed.
- ``EXIT_DEFECTS = 1``: at least one image FAILed (a defect was found).
- ``EXIT_ERRORS = 3``: at least one image could not be read; takes precedence over 1.

(``anomaly`` itself exits 2 for usage errors: missing input, no images, bad model
file, results from another model in OUT_DIR.)

The pieces another engine (e.g. a Ray cluster) reuses to produce identical rows and
files: `collect_inputs`, `load_input`, `result_row`, `csv_row`, `write_overlays`,
`RunInfo`, `open_results` / `ResultsWriter`, `summarize`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import cv2
import numpy as np

from anomaly import __version__
from anomaly.inspection.imageio import IMAGE_EXTENSIONS, Layout, heatmap_and_score, list_images, per_image, prepare, read_image, stack
from anomaly.inspection.regions import mask_and_regions
from anomaly.inspection.inspector import Inspection, Inspector

EXIT_OK = 0
EXIT_DEFECTS = 1
EXIT_ERRORS = 3

CSV_COLUMNS = ("path", "score", "verdict", "regions", "largest_region_area", "error")
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
RUN_JSON = "run.json"
OVERLAYS_DIR = "overlays"
MASKS_DIR = "masks"
LOCK_FILE = ".score.lock"
RUN_FORMAT = "anomaly-score-run/1"


# ----- inputs -------------------------------------------------------------------------
class InputItem(NamedTuple):
    """One image to score: `label` is what the results call it (relative to the input
    folder, or the line as written in a list file); `path` is where to read it."""

    label: str
    path: Path


def collect_inputs(input: str | Path) -> list[InputItem]:
    """The images named by INPUT: a folder (recursive), a text file with one path per
    line (relative paths against the list file's folder; blank lines and # comments
    ignored), or a single image file. Duplicates are listed once."""
    src = Path(input)
    if src.is_dir():
        items = [InputItem(p.relative_to(src).as_posix(), p) for p in list_images(src)]
    elif src.is_file() and src.suffix.lower() in IMAGE_EXTENSIONS:
        items = [InputItem(src.name, src)]
    elif src.is_file():
        try:
            text = src.read_text(encoding="utf-8-sig")
        except (UnicodeDecodeError, OSError) as exc:
            raise ValueError(f"{src}: not a text file listing image paths ({exc})") from exc
        items = []
        for line in text.splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            p = Path(entry).expanduser()
            items.append(InputItem(entry, p if p.is_absolute() else src.parent / p))
    else:
        raise FileNotFoundError(f"{src}: no such folder or image list")
    seen: set[str] = set()
    unique = [it for it in items if not (it.label in seen or seen.add(it.label))]
    if not unique:
        raise ValueError(f"{src}: no images found")
    return unique


Prepared = tuple[list[np.ndarray], Layout]  # an image's model inputs and how to map them back


class Loaded(NamedTuple):
    item: InputItem
    image: np.ndarray | None
    error: str | None
    prepared: Prepared | None = None


def load_input(item: InputItem, fit: tuple[int, str, int] | None = None) -> Loaded:
    """Decode one image and, given fit = (working size, fit mode, tiles), prepare its
    model inputs too; never raises for a bad file (the error names the file)."""
    try:
        image = read_image(item.path)
        return Loaded(item, image, None, None if fit is None else prepare(image, *fit))
    except Exception as exc:  # noqa: BLE001 - any decode failure becomes an ERROR row
        msg = str(exc) or type(exc).__name__
        if str(item.path) not in msg and item.label not in msg:
            msg = f"{item.path}: {msg}"
        return Loaded(item, None, msg)


# ----- rows ---------------------------------------------------------------------------
def result_row(
    path_label: str,
    inspection_or_error: Inspection | BaseException | str,
    width: int | None = None,
    height: int | None = None,
    *,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
) -> dict[str, Any]:
    """The results.jsonl record for one image. An Inspection gives a PASS/FAIL row
    (width/height default to its heatmap's); an exception or message an ERROR row, which
    carries the thresholds given as keywords."""
    if isinstance(inspection_or_error, Inspection):
        insp = inspection_or_error
        h, w = insp.heatmap.shape[:2]
        return {
            "path": path_label,
            "score": round(float(insp.score), 6),
            "verdict": insp.verdict,
            "image_threshold": float(insp.image_threshold),
            "pixel_threshold": float(insp.pixel_threshold),
            "width": int(width if width is not None else w),
            "height": int(height if height is not None else h),
            "regions": [r.to_dict() for r in insp.regions],
            "error": None,
        }
    err = inspection_or_error
    msg = (str(err) or type(err).__name__) if isinstance(err, BaseException) else str(err)
    return {
        "path": path_label,
        "score": None,
        "verdict": "ERROR",
        "image_threshold": None if image_threshold is None else float(image_threshold),
        "pixel_threshold": None if pixel_threshold is None else float(pixel_threshold),
        "width": None if width is None else int(width),
        "height": None if height is None else int(height),
        "regions": [],
        "error": msg,
    }


def csv_row(record: dict[str, Any]) -> list[str]:
    """A results.jsonl record as a results.csv row (CSV_COLUMNS order)."""
    score = record.get("score")
    error_row = record.get("verdict") == "ERROR"
    regions = record.get("regions") or []
    return [
        str(record["path"]),
        "" if score is None else f"{float(score):.6f}",
        str(record.get("verdict", "")),
        "" if error_row else str(len(regions)),
        "" if error_row else str(max((int(r["area"]) for r in regions), default=0)),
        record.get("error") or "",
    ]


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()


# ----- overlays -----------------------------------------------------------------------
OVERLAY_SUFFIX = ".jpg"
MASK_SUFFIX = ".png"
_OVERLAY_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 90]
_MASK_PARAMS = [cv2.IMWRITE_PNG_BILEVEL, 1]  # 1-bit PNG: 5x faster to encode; reads back as 0/255


def overlay_relpath(path_label: str, suffix: str = MASK_SUFFIX) -> PurePosixPath:
    """Where a label's mask (suffix '.png') or overlay (OVERLAY_SUFFIX) goes below
    masks/ or overlays/: the label made relative and safe (no absolute anchor, no
    '..'), with the suffix appended unless it already ends so."""
    parts = [p for p in PurePosixPath(path_label.replace("\\", "/")).parts if p not in ("/", "", ".")]
    parts = ["__" if p == ".." else p.replace(":", "_") for p in parts] or ["image"]
    if not parts[-1].lower().endswith(suffix):
        parts[-1] += suffix
    return PurePosixPath(*parts)


def _write_atomic_image(path: Path, image: np.ndarray, params: list[int]) -> None:
    """uint8 RGB or gray -> file, via a temporary name renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        if not cv2.imwrite(str(tmp), pixels, params):
            raise OSError(f"{path}: could not write image")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def overlay_mode(overlays: bool | str | None) -> str | None:
    """None (no overlays), "all" or "fails" from what a caller passed (True means "all")."""
    mode = "all" if overlays is True else (overlays or None)
    if mode not in (None, "all", "fails"):
        raise ValueError(f"overlays must be all or fails, got {overlays!r}")
    return mode  # type: ignore[return-value]


def wants_overlay(mode: str | None, inspection: Inspection) -> bool:
    return mode == "all" or (mode == "fails" and inspection.verdict == "FAIL")


def write_overlays(out_dir: str | Path, path_label: str, image: np.ndarray, inspection: Inspection) -> tuple[Path, Path]:
    """Write overlays/<label>.jpg (Inspection.overlay) and masks/<label>.png (0/255),
    each to a temporary name first, then renamed into place."""
    out_dir = Path(out_dir)
    ov = out_dir / OVERLAYS_DIR / overlay_relpath(path_label, OVERLAY_SUFFIX)
    mk = out_dir / MASKS_DIR / overlay_relpath(path_label, MASK_SUFFIX)
    _write_atomic_image(ov, inspection.overlay(image), _OVERLAY_PARAMS)
    _write_atomic_image(mk, inspection.mask.astype(np.uint8) * 255, _MASK_PARAMS)
    return ov, mk


# ----- the output folder --------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@dataclass
class RunInfo:
    """What run.json records; a resume needs the same model_sha256, thresholds and input."""

    model: str
    model_sha256: str
    image_threshold: float
    pixel_threshold: float
    input: str
    started: str = field(default_factory=_now)
    resumed: list[str] = field(default_factory=list)
    anomaly_version: str = __version__
    format: str = RUN_FORMAT

    def mismatches(self, previous: dict[str, Any]) -> list[str]:
        """How an earlier run.json differs in what matters for resuming."""
        out = []
        if previous.get("model_sha256") != self.model_sha256:
            out.append(f"model {previous.get('model')} (sha256 {str(previous.get('model_sha256'))[:12]}) "
                       f"vs now {self.model} (sha256 {self.model_sha256[:12]})")
        for key in ("image_threshold", "pixel_threshold"):
            old = previous.get(key)
            if not isinstance(old, (int, float)) or not math.isclose(old, getattr(self, key), rel_tol=1e-9, abs_tol=1e-12):
                out.append(f"{key.replace('_', ' ')} {old} vs now {getattr(self, key)}")
        if previous.get("input") != self.input:
            out.append(f"input {previous.get('input')} vs now {self.input}")
        return out


def move_aside(out_dir: str | Path) -> list[Path]:
    """Rename earlier results (results.jsonl/csv, run.json, overlays/, masks/) to
    <name>.<UTC timestamp><suffix>; nothing is deleted. Returns the new paths."""
    out_dir = Path(out_dir)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    names = [(RESULTS_JSONL, ".jsonl"), (RESULTS_CSV, ".csv"), (RUN_JSON, ".json"), (OVERLAYS_DIR, ""), (MASKS_DIR, "")]
    present = [(n, s) for n, s in names if (out_dir / n).exists()]
    if not present:
        return []
    tag, k = stamp, 1
    while any((out_dir / f"{n[: len(n) - len(s)] if s else n}.{tag}{s}").exists() for n, s in names):
        tag, k = f"{stamp}-{k}", k + 1
    moved = []
    for name, suffix in present:
        stem = name[: len(name) - len(suffix)] if suffix else name
        target = out_dir / f"{stem}.{tag}{suffix}"
        os.replace(out_dir / name, target)
        moved.append(target)
    _fsync_dir(out_dir)
    return moved


class ResultsWriter:
    """results.jsonl + results.csv in one folder: repair on open, append + fsync per batch.

    `repair()` drops a partial last line (and any unparsable line, and repeated paths),
    rewrites results.jsonl atomically if anything was dropped, and rebuilds results.csv
    from it atomically; it returns the records kept. Then `append(records)` writes both
    files and makes them durable before returning. Rows may come in any order.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.jsonl_path = self.out_dir / RESULTS_JSONL
        self.csv_path = self.out_dir / RESULTS_CSV
        self.records: dict[str, dict[str, Any]] = {}
        self._jsonl: io.TextIOWrapper | None = None
        self._csv: io.TextIOWrapper | None = None
        self._lock_fd: int | None = None

    @property
    def done(self) -> set[str]:
        return set(self.records)

    def lock(self) -> None:
        """Refuse a second writer on the same folder (POSIX advisory lock)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        fd = os.open(self.out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ValueError(f"{self.out_dir}: another `anomaly score` is writing here; "
                             "wait for it or use another --out") from exc
        self._lock_fd = fd

    def repair(self) -> list[dict[str, Any]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = self.jsonl_path.read_bytes() if self.jsonl_path.is_file() else b""
        complete = raw[: raw.rfind(b"\n") + 1]  # a crash mid-write leaves no final newline
        changed = len(complete) != len(raw)
        self.records = {}
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                changed = True
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or rec["path"] in self.records:
                changed = True
                continue
            self.records[rec["path"]] = rec
        records = list(self.records.values())
        if changed:
            _write_text_atomic(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in records))
        _write_text_atomic(self.csv_path, _csv_text([CSV_COLUMNS] + [csv_row(r) for r in records]))
        return records

    def open(self) -> ResultsWriter:
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8", newline="")
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")
        return self

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        records = [r for r in records if r["path"] not in self.records]
        if not records:
            return
        assert self._jsonl is not None and self._csv is not None, "call open() first"
        self._jsonl.write("".join(json.dumps(r) + "\n" for r in records))
        self._jsonl.flush()
        os.fsync(self._jsonl.fileno())
        self._csv.write(_csv_text(csv_row(r) for r in records))
        self._csv.flush()
        os.fsync(self._csv.fileno())
        for r in records:
            self.records[r["path"]] = r

    def close(self) -> None:
        for f in (self._jsonl, self._csv):
            if f is not None:
                f.close()
        self._jsonl = self._csv = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_run_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def open_results(out_dir: str | Path, run: RunInfo, restart: bool = False) -> ResultsWriter:
    """Prepare OUT_DIR for `run` and return an open writer whose `records` are the rows
    already done. restart=True moves earlier results aside first; otherwise earlier rows
    from another model, thresholds or input raise ValueError (nothing is overwritten)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(out_dir)
    writer.lock()
    try:
        if restart:
            move_aside(out_dir)
        has_rows = writer.jsonl_path.is_file() and writer.jsonl_path.stat().st_size > 0
        previous = _read_run_json(out_dir / RUN_JSON)
        if has_rows:
            hint = "use --restart (earlier results are moved aside, not deleted) or another --out"
            if previous is None:
                raise ValueError(f"{out_dir}: holds {RESULTS_JSONL} but no readable {RUN_JSON}, so the model and thresholds "
                                 f"behind them are unknown; {hint}")
            diffs = run.mismatches(previous)
            if diffs:
                raise ValueError(f"{out_dir}: holds results of a different run ({'; '.join(diffs)}); {hint}")
        records = writer.repair()
        if records and previous is not None:
            run.started = str(previous.get("started", run.started))
            run.resumed = [*previous.get("resumed", []), _now()]
        _write_text_atomic(out_dir / RUN_JSON, json.dumps(asdict(run), indent=2) + "\n")
        return writer.open()
    except BaseException:
        writer.close()
        raise


# ----- summary ------------------------------------------------------------------------
@dataclass
class ScoreSummary:
    """Counts over all `total` images of the input: `scored` this run plus `resumed`
    (done by an earlier run). seconds and images_per_second are this run's."""

    total: int
    scored: int
    resumed: int
    passed: int
    failed: int
    errors: int
    seconds: float
    images_per_second: float
    out_dir: Path | None = None

    @property
    def exit_code(self) -> int:
        if self.errors:
            return EXIT_ERRORS
        if self.failed:
            return EXIT_DEFECTS
        return EXIT_OK

    def describe(self) -> str:
        done = self.passed + self.failed + self.errors
        head = f"{done}/{self.total} images: {self.passed} PASS, {self.failed} FAIL, {self.errors} ERROR"
        run = f"scored {self.scored} in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s)"
        if self.resumed:
            run += f", {self.resumed} done earlier"
        where = f" -> {self.out_dir / RESULTS_CSV}" if self.out_dir is not None else ""
        return f"{head}; {run}{where}"


def summarize(records: Iterable[dict[str, Any]], total: int, scored: int, resumed: int, seconds: float,
              out_dir: Path | None = None) -> ScoreSummary:
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0}
    for r in records:
        counts[r.get("verdict", "ERROR") if r.get("verdict") in counts else "ERROR"] += 1
    rate = scored / seconds if seconds > 0 else 0.0
    return ScoreSummary(total, scored, resumed, counts["PASS"], counts["FAIL"], counts["ERROR"],
                        round(seconds, 3), round(rate, 2), out_dir)


# ----- the local engine ---------------------------------------------------------------
def _run_model(inspector: Inspector, images: list[np.ndarray], batch_size: int) -> list[tuple[np.ndarray, Layout] | str]:
    """The model's square maps for a chunk, each image's views with their layout; if a
    batch call fails, its images are retried one by one so only the culprit errs."""
    return _run_prepared(inspector, [prepare(img, *inspector.info.grid) for img in images], batch_size)


def _run_prepared(inspector: Inspector, prepared: list[Prepared], batch_size: int) -> list[tuple[np.ndarray, Layout] | str]:
    """`_run_model` for images already prepared (views and layout)."""
    out: list[tuple[np.ndarray, Layout] | str] = []
    size = inspector.info.input_size
    for i in range(0, len(prepared), batch_size):
        part = prepared[i : i + batch_size]
        try:
            batch, layouts = stack(part, size)
            maps, _ = inspector.run(batch)
            out.extend(zip(per_image(maps, layouts), layouts))
        except Exception:  # noqa: BLE001
            for one in part:
                try:
                    batch, layouts = stack([one], size)
                    out.append((inspector.run(batch)[0], layouts[0]))
                except Exception as exc:  # noqa: BLE001
                    out.append(f"inference failed ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})")
    return out


def _finish(raw: tuple[np.ndarray, Layout] | str, it: float, pt: float) -> Inspection | str:
    """A model output made an Inspection at the image's own resolution (as
    Inspector.inspect_batch does), or the error it already was."""
    if isinstance(raw, str):
        return raw
    heatmap, score = heatmap_and_score(*raw)
    if not math.isfinite(score):
        return "model returned a non-finite score"
    mask, regions = mask_and_regions(heatmap, it, pt)
    return Inspection(score, it, pt, heatmap, mask, regions)


def _inspect_chunk(inspector: Inspector, images: list[np.ndarray], it: float, pt: float,
                   batch_size: int) -> list[Inspection | str]:
    """Inspect a chunk; if the model call fails, retry one by one so only the culprit errs."""
    return [_finish(raw, it, pt) for raw in _run_model(inspector, images, batch_size)]


def _records_for(chunk: list[Loaded], raw: list[tuple[np.ndarray, Layout] | str], it: float, pt: float,
                 overlays_to: Path | None, mode: str | None = "all") -> list[dict[str, Any]]:
    """The results rows of a decoded chunk from its model outputs (and its overlays
    written, when asked): the work after inference, done off the inference thread."""
    outputs = iter(raw)
    records = []
    for x in chunk:
        res = x.error if x.image is None else _finish(next(outputs), it, pt)
        if isinstance(res, Inspection):
            res.name = x.item.label
            if overlays_to is not None and wants_overlay(mode, res):
                write_overlays(overlays_to, x.item.label, x.image, res)
            records.append(result_row(x.item.label, res))
        else:
            hw = x.image.shape[:2] if x.image is not None else (None, None)
            msg = res if x.image is None else f"{x.item.path}: {res}"
            records.append(result_row(x.item.label, str(msg), hw[1], hw[0], image_threshold=it, pixel_threshold=pt))
    return records


def _lower_priority() -> None:
    """Decode and overlay threads yield the CPU to inference: a preempted ORT thread
    stalls the whole parallel op, while decoding can wait for ORT's idle moments
    (Linux: per-thread nice; elsewhere nothing happens)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _prefetch(items: Sequence[InputItem], pool: ThreadPoolExecutor, lookahead: int,
              fit: tuple[int, str, int] | None = None) -> Iterator[Loaded]:
    """Decode (and prepare, given fit) in the pool, keeping `lookahead` images in flight
    ahead of the consumer."""
    queue: deque[Future] = deque()
    source = iter(items)
    try:
        for item in source:
            queue.append(pool.submit(load_input, item, fit))
            if len(queue) >= lookahead:
                break
        while queue:
            fut = queue.popleft()
            nxt = next(source, None)
            if nxt is not None:
                queue.append(pool.submit(load_input, nxt, fit))
            yield fut.result()
    finally:
        for fut in queue:
            fut.cancel()


def _chunks(it: Iterator[Loaded], size: int) -> Iterator[list[Loaded]]:
    chunk: list[Loaded] = []
    for x in it:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_inputs(
    input: Path,
    model: Path,
    out_dir: Path,
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    overlays: bool | str = False,
    batch_size: int = 8,
    threads: int | None = None,
    restart: bool = False,
    progress: bool = True,
) -> ScoreSummary:
    """Score every image of INPUT with the ONNX model into OUT_DIR (see the module doc).

    Decoding and fitting to the working size run in a thread pool ahead of inference
    (OpenCV releases the GIL), the model is called `batch_size` images at a time, and
    another thread turns its outputs into rows, regions and overlays; each batch's rows are appended and
    fsynced, in input order, once its overlays are on disk.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    mode = overlay_mode(overlays)
    input, model, out_dir = Path(input), Path(model), Path(out_dir)
    items = collect_inputs(input)
    # Decode and overlay threads share the cores with inference: idle ORT threads must
    # sleep, not spin, or they take the CPU those threads need (+10% images/s measured).
    inspector = Inspector(model, threads=threads, spin=False)
    it = inspector.image_threshold if image_threshold is None else float(image_threshold)
    pt = inspector.pixel_threshold if pixel_threshold is None else float(pixel_threshold)
    run = RunInfo(model=str(model.resolve()), model_sha256=file_sha256(model), image_threshold=it,
                  pixel_threshold=pt, input=str(input.resolve()))

    start = time.perf_counter()
    scored = 0
    writer = open_results(out_dir, run, restart=restart)
    done = writer.done
    todo = [x for x in items if x.label not in done]
    resumed = len(items) - len(todo)
    decode_workers = max(1, min(4, os.cpu_count() or 1))
    decoder = ThreadPoolExecutor(decode_workers, thread_name_prefix="anomaly-decode", initializer=_lower_priority)
    # Heatmaps back to image size, masks, regions and overlays happen in this thread, so
    # the inference thread goes straight on to the next batch.
    finisher = ThreadPoolExecutor(1, thread_name_prefix="anomaly-finish", initializer=_lower_priority)
    pending: deque[Future] = deque()  # each chunk's rows, in input order

    def flush(block: bool) -> None:
        nonlocal scored
        while pending and (block or pending[0].done()):
            records = pending[0].result()  # an overlay that could not be written (disk full...) stops the run
            writer.append(records)
            scored += len(records)
            pending.popleft()

    bar = tqdm(total=len(items), initial=resumed, unit="img", desc="scoring", disable=not progress,
               dynamic_ncols=True, smoothing=0.1)
    try:
        for chunk in _chunks(_prefetch(todo, decoder, lookahead=2 * batch_size, fit=inspector.info.grid), batch_size):
            prepared = [x.prepared for x in chunk if x.prepared is not None]
            raw = _run_prepared(inspector, prepared, batch_size) if prepared else []
            pending.append(finisher.submit(_records_for, chunk, raw, it, pt, out_dir if mode else None, mode))
            if len(pending) > 2:  # bound the images held in memory waiting for their rows
                pending[0].result()
            flush(block=False)
            bar.update(len(chunk))
        flush(block=True)
    finally:
        try:
            finisher.shutdown(wait=True)
            decoder.shutdown(wait=False, cancel_futures=True)
            # Keep every batch whose rows (and overlays) were finished, even on Ctrl-C or an error.
            while pending and pending[0].done() and not pending[0].cancelled() and pending[0].exception() is None:
                records = pending.popleft().result()
                writer.append(records)
                scored += len(records)
        finally:
            writer.close()
            bar.close()
    seconds = time.perf_counter() - start
    mine = {x.label for x in items}
    return summarize((r for p, r in writer.records.items() if p in mine), len(items), scored, resumed, seconds, out_dir)
