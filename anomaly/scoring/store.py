"""The output folder of a scoring run: written once here for both engines.

Nothing is lost: rows are appended, flushed and fsynced after every batch; a re-run with
the same model file, thresholds and input resumes and skips what is done; a different
model, thresholds or input raises ValueError (``restart=True`` moves old results aside to
``results.<timestamp>.jsonl`` etc., nothing is deleted). A crash mid-line leaves a
partial last line in results.jsonl, which the next run drops (and scores that image
again). ``.score.lock`` is held while a run writes, so two runs never write one folder
at once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anomaly import __version__
from anomaly.scoring.schema import (
    CSV_COLUMNS,
    LOCK_FILE,
    MASKS_DIR,
    OVERLAYS_DIR,
    RESULTS_CSV,
    RESULTS_JSONL,
    RUN_JSON,
    Record,
    csv_row,
    csv_text,
    jsonl_text,
)

RUN_FORMAT = "anomaly-score-run/1"
RESTART_HINT = "use --restart (earlier results are moved aside, not deleted) or another --out"


# ----- durable files ------------------------------------------------------------------
def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def utc_stamp() -> str:
    """A timestamp for file names (no characters that some filesystems refuse)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` survive a power cut (where the OS allows it)."""
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


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a file so that a reader (or a crash) sees the old text or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves the old file and no half-written one
        raise
    fsync_dir(path.parent)


def complete_files(folder: Path, pattern: str) -> list[Path]:
    """The files of `folder` matching `pattern`, without temporaries of an interrupted write."""
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith(".")) if folder.is_dir() else []


# ----- run.json -----------------------------------------------------------------------
@dataclass
class RunInfo:
    """What run.json records; a resume needs the same model_sha256, thresholds and input."""

    model: str
    model_sha256: str
    image_threshold: float
    pixel_threshold: float
    input: str
    started: str = field(default_factory=utc_now)
    resumed: list[str] = field(default_factory=list)
    anomaly_version: str = __version__
    format: str = RUN_FORMAT

    @classmethod
    def of(cls, model: Path, input: Path, thresholds: tuple[float, float], model_sha256: str | None = None) -> RunInfo:
        """The run of `model` over `input` at (image, pixel) thresholds; the sha256 is read
        from the file unless the caller already has it."""
        image_threshold, pixel_threshold = thresholds
        return cls(
            model=str(model.resolve()),
            model_sha256=model_sha256 or file_sha256(model),
            image_threshold=image_threshold,
            pixel_threshold=pixel_threshold,
            input=str(input.resolve()),
        )

    def mismatches(self, previous: Mapping[str, Any], *, partial: bool = False) -> list[str]:
        """How an earlier run's record differs in what matters for resuming. partial: the
        record holds only some keys (a shard's metadata), and a key it lacks is no difference."""
        out = []
        sha = previous.get("model_sha256")
        if not (partial and sha is None) and sha != self.model_sha256:
            if partial:
                out.append(f"model sha256 {str(sha)[:12]} vs now {self.model_sha256[:12]}")
            else:
                out.append(
                    f"model {previous.get('model')} (sha256 {str(sha)[:12]}) "
                    f"vs now {self.model} (sha256 {self.model_sha256[:12]})"
                )
        for key in ("image_threshold", "pixel_threshold"):
            old = previous.get(key)
            if partial and old is None:
                continue
            if not isinstance(old, (int, float)) or not math.isclose(
                old, getattr(self, key), rel_tol=1e-9, abs_tol=1e-12
            ):
                out.append(f"{key.replace('_', ' ')} {old} vs now {getattr(self, key)}")
        if not partial and previous.get("input") != self.input:
            out.append(f"input {previous.get('input')} vs now {self.input}")
        return out


def read_run_json(path: Path) -> dict[str, Any] | None:
    """An earlier run.json, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def move_aside(out_dir: str | Path, extra_dirs: Iterable[str] = ()) -> list[Path]:
    """Rename earlier results (results.jsonl/csv, run.json, overlays/, masks/ and an
    engine's `extra_dirs`) to <name>.<UTC timestamp><suffix>, all with one timestamp;
    nothing is deleted. Returns the new paths."""
    out_dir = Path(out_dir)
    stamp = utc_stamp()
    names = [(RESULTS_JSONL, ".jsonl"), (RESULTS_CSV, ".csv"), (RUN_JSON, ".json"), (OVERLAYS_DIR, ""), (MASKS_DIR, "")]
    names += [(d, "") for d in extra_dirs]
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
    fsync_dir(out_dir)
    return moved


def in_input_order(records: Mapping[str, Record], order: Sequence[str]) -> list[Record]:
    """Rows in input order, then rows of paths no longer in the input (kept, never dropped)."""
    seen = set(order)
    return [records[p] for p in order if p in records] + [r for p, r in records.items() if p not in seen]


# ----- results.jsonl + results.csv ----------------------------------------------------
class ResultsWriteError(OSError):
    """The results files could not be written (disk full, folder gone...); the message
    says that the rows written before are kept and a re-run resumes."""


class ResultsWriter:
    """results.jsonl + results.csv in one folder: repair on open, append + fsync per batch.

    `repair()` drops a partial last line (and any unparsable line, and repeated paths),
    rewrites results.jsonl atomically if anything was dropped, and rebuilds results.csv
    from it atomically; it returns the records kept. Then `append(records)` writes both
    files and makes them durable before returning; a path already written is skipped.
    `rewrite(records)` replaces both files. Rows may come in any order.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.jsonl_path = self.out_dir / RESULTS_JSONL
        self.csv_path = self.out_dir / RESULTS_CSV
        self.records: dict[str, Record] = {}
        self._jsonl: io.TextIOWrapper | None = None
        self._csv: io.TextIOWrapper | None = None
        self._lock_fd: int | None = None
        self.failed: ResultsWriteError | None = None  # set once a write failed (disk full...)

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
            raise ValueError(
                f"{self.out_dir}: another `anomaly score` is writing here; wait for it or use another --out"
            ) from exc
        self._lock_fd = fd

    def repair(self) -> list[Record]:
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
        self._write_files(records, jsonl=changed)
        return records

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace both files (atomically) with `records`, one row per path (the first wins)."""
        reopen = self._jsonl is not None
        self._close_files()  # appending handles would point at the replaced files
        self.records = {}
        for r in records:
            self.records.setdefault(r["path"], r)
        self._write_files(list(self.records.values()), jsonl=True)
        if reopen:
            self.open()

    def _write_files(self, records: Sequence[Record], jsonl: bool) -> None:
        if jsonl:
            write_text_atomic(self.jsonl_path, jsonl_text(records))
        write_text_atomic(self.csv_path, csv_text([CSV_COLUMNS] + [csv_row(r) for r in records]))

    def open(self) -> ResultsWriter:
        """Open both files for appending; they stay open across batches until close()."""
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = open(self.csv_path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        return self

    def append(self, records: Sequence[Record]) -> None:
        records = [r for r in records if r["path"] not in self.records]
        if not records:
            return
        assert self._jsonl is not None and self._csv is not None, "call open() first"
        if self.failed is not None:  # a half-written line may end the file: only a repair may go on
            raise self.failed
        # both texts made before either file is touched: a row that cannot be written
        # fails without leaving its line in one file only
        jsonl, table = jsonl_text(records), csv_text(csv_row(r) for r in records)
        try:
            self._write(self._jsonl, jsonl)
            for r in records:  # in results.jsonl, the record of truth: never appended twice
                self.records[r["path"]] = r
            self._write(self._csv, table)  # results.csv is rebuilt from results.jsonl on the next open
        except OSError as exc:
            self.failed = ResultsWriteError(
                f"{self.out_dir}: cannot write results ({exc.strerror or exc}); every row written before is "
                "kept: make room and run the same command again to resume"
            )
            raise self.failed from exc

    @staticmethod
    def _write(f: io.TextIOWrapper, text: str) -> None:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())

    def _close_files(self) -> None:
        for f in (self._jsonl, self._csv):
            if f is not None:
                try:
                    f.close()
                except OSError:  # text that failed to write once fails again in the final flush
                    if self.failed is None:
                        raise
        self._jsonl = self._csv = None

    def close(self) -> None:
        self._close_files()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_results(
    out_dir: str | Path, run: RunInfo, restart: bool = False, extra_row_dirs: Mapping[str, str] | None = None
) -> ResultsWriter:
    """Lock OUT_DIR for `run`, write its run.json and return an open writer whose
    `records` are the rows already done. restart=True moves earlier results aside first;
    otherwise earlier rows from another model, thresholds or input raise ValueError
    (nothing is overwritten). extra_row_dirs: folders where an engine keeps rows of its
    own ({folder: glob of its complete files}); they count as earlier rows too and are
    moved aside with the rest."""
    out_dir = Path(out_dir)
    extra = dict(extra_row_dirs or {})
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            f"{out_dir}: is a file, not a folder; give --out a folder (new or from an earlier run)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(out_dir)
    writer.lock()
    try:
        if restart:
            move_aside(out_dir, extra)
        holding = [f"{d}/" for d, pattern in extra.items() if complete_files(out_dir / d, pattern)]
        if writer.jsonl_path.is_file() and writer.jsonl_path.stat().st_size > 0:
            holding.append(RESULTS_JSONL)
        previous = read_run_json(out_dir / RUN_JSON)
        if holding:
            if previous is None:
                raise ValueError(
                    f"{out_dir}: holds {holding[0]} but no readable {RUN_JSON}, so the model and "
                    f"thresholds behind them are unknown; {RESTART_HINT}"
                )
            diffs = run.mismatches(previous)
            if diffs:
                raise ValueError(f"{out_dir}: holds results of a different run ({'; '.join(diffs)}); {RESTART_HINT}")
        records = writer.repair()
        if records and previous is not None:
            run.started = str(previous.get("started", run.started))
            run.resumed = [*previous.get("resumed", []), utc_now()]
        write_text_atomic(out_dir / RUN_JSON, json.dumps(asdict(run), indent=2) + "\n")
        return writer.open()
    except BaseException:
        writer.close()
        raise
