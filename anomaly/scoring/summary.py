"""What a scoring run reports: counts, speed and the exit code of `anomaly score`.

Exit codes (``ScoreSummary.exit_code``):

- ``EXIT_OK = 0``: every image was read and passed.
- ``EXIT_DEFECTS = 1``: at least one image FAILed (a defect was found).
- ``EXIT_ERRORS = 3``: at least one image could not be read; takes precedence over 1,
  because a line must not take "defect found" for "everything was looked at".

(``anomaly`` itself exits 2 for usage errors: missing input, no images, bad model
file, results from another model in OUT_DIR.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from anomaly.scoring.schema import RESULTS_CSV, Record

EXIT_OK = 0
EXIT_DEFECTS = 1
EXIT_ERRORS = 3


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


def summarize(
    records: Mapping[str, Record],
    labels: Sequence[str],
    scored: int,
    resumed: int,
    seconds: float,
    out_dir: Path | None = None,
) -> ScoreSummary:
    """The summary over this input's images (`labels`); rows the folder holds for images
    no longer in the input are kept in the files but not counted."""
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0}
    mine = set(labels)
    for path, r in records.items():
        if path in mine:
            counts[r.get("verdict", "ERROR") if r.get("verdict") in counts else "ERROR"] += 1
    rate = scored / seconds if seconds > 0 else 0.0
    return ScoreSummary(
        len(labels),
        scored,
        resumed,
        counts["PASS"],
        counts["FAIL"],
        counts["ERROR"],
        round(seconds, 3),
        round(rate, 2),
        out_dir,
    )
