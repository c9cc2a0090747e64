"""Inspector decisions: confirm or overrule a verdict (defect / good / unsure) with a note,
saved as they are made and exported as a labelled folder the trainer reads.

One `decisions.jsonl` per run: in a scored folder beside results.csv, or for uploads in
FEEDBACK_DIR/inspect-<model digest>/ with a copy of each decided image (an upload exists
only in the browser). Appending one line per decision means a crash loses at most the
last click, two tabs never overwrite each other, and the history stays readable; the
latest line of a part wins, so re-opening the run resumes where it was left.

The export is an MVTec-style folder: test/good/ (confirmed good) and test/defect/
(confirmed defects). No ground_truth/ masks: an inspector confirms a part, not its
pixels, and the model's own outline would teach the model its own mistakes. The trainer
(`anomaly train --defects`) uses mask-less defects for the image threshold only.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

Decision = Literal["defect", "good", "unsure"]
DECISIONS: tuple[Decision, ...] = ("defect", "good", "unsure")
DECISIONS_FILE = "decisions.jsonl"
FEEDBACK_DIR = Path(os.environ.get("ANOMALY_FEEDBACK_DIR", "feedback"))
DEFECT_TYPE = "defect"  # test/<defect>/ of the export


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def agrees(decision: str, verdict: str) -> bool | None:
    """Whether a decision confirms the model's verdict (None: unsure or no verdict)."""
    if decision == "unsure" or verdict not in ("PASS", "FAIL"):
        return None
    return (decision == "defect") == (verdict == "FAIL")


def model_verdict_decision(verdict: str) -> Decision | None:
    """The decision that confirms a verdict (FAIL -> defect, PASS -> good)."""
    return {"FAIL": "defect", "PASS": "good"}.get(verdict)  # type: ignore[return-value]


@dataclass
class DecisionStore:
    """The decisions of one run, in `folder`/decisions.jsonl."""

    folder: Path

    @property
    def path(self) -> Path:
        return self.folder / DECISIONS_FILE

    @property
    def images(self) -> Path:
        return self.folder / "images"

    def load(self) -> dict[str, dict[str, Any]]:
        """The latest decision of each part (by key); a half-written last line is skipped."""
        out: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("key") and rec.get("decision") in (*DECISIONS, None):
                if rec.get("decision") is None:
                    out.pop(rec["key"], None)  # an undo
                else:
                    out[rec["key"]] = rec
        return out

    def record(
        self,
        key: str,
        path: str,
        decision: Decision | None,
        *,
        verdict: str,
        score: float | None,
        threshold: float | None,
        model: str,
        model_digest: str,
        note: str = "",
        operator: str = "",
        image: bytes | None = None,
        suffix: str = ".png",
    ) -> dict[str, Any]:
        """Append one decision (None undoes the part's decision). `image`: the part's bytes,
        kept beside the decisions when the run has no folder of originals (uploads)."""
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        rec: dict[str, Any] = {
            "key": key,
            "path": path,
            "decision": decision,
            "note": note.strip(),
            "verdict": verdict,
            "score": None if score is None or score != score else round(float(score), 6),
            "threshold": None if threshold is None else round(float(threshold), 6),
            "model": model,
            "model_digest": model_digest,
            "operator": operator.strip(),
            "time": now(),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        if image is not None and decision is not None:
            stored = self.images / f"{key}{suffix.lower()}"
            if not stored.is_file():
                self.images.mkdir(exist_ok=True)
                stored.write_bytes(image)
            rec["image"] = str(PurePosixPath("images") / stored.name)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return rec


def upload_store(model_digest: str, root: Path | None = None) -> DecisionStore:
    """Where decisions on uploads go: one folder per model, so they resume across sessions."""
    return DecisionStore((root or FEEDBACK_DIR) / f"inspect-{(model_digest or 'unsealed')[:16]}")


def counts(decisions: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Decisions by kind, and how many overrule the model ("overruled")."""
    out = {d: 0 for d in DECISIONS} | {"overruled": 0}
    for rec in decisions.values():
        out[rec["decision"]] += 1
        out["overruled"] += agrees(rec["decision"], rec.get("verdict", "")) is False
    return out


def flat_name(path: str) -> str:
    """A part's path as one file name (crack/001.png -> crack__001.png), so parts from
    different folders keep distinct names in the export."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    return "__".join(p.replace(":", "_") for p in parts) or "image.png"


def labelled_zip(
    decisions: Mapping[str, Mapping[str, Any]], image_bytes: Mapping[str, bytes], name: str = "labelled"
) -> bytes:
    """The MVTec-style folder as a ZIP: <name>/test/good/, <name>/test/defect/, and the
    decisions they came from. `image_bytes` maps a decision's key to the part's bytes;
    unsure parts and parts whose image is gone are listed in the manifest, not exported."""
    buf = io.BytesIO()
    manifest = ["path,decision,verdict,score,exported_as,note"]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        used: set[str] = set()
        for key, rec in decisions.items():
            folder = {"good": "good", "defect": DEFECT_TYPE}.get(rec["decision"])
            data = image_bytes.get(key)
            member = ""
            if folder and data is not None:
                stem = flat_name(str(rec["path"]))
                member, k = f"{name}/test/{folder}/{stem}", 2
                while member in used:
                    member, k = f"{name}/test/{folder}/{k}_{stem}", k + 1
                used.add(member)
                zf.writestr(member, data)
            note = str(rec.get("note", "")).replace('"', "'")
            manifest.append(
                f'"{rec["path"]}",{rec["decision"]},{rec.get("verdict", "")},{rec.get("score") or ""},'
                f'"{member.removeprefix(name + "/")}","{note}"'
            )
        zf.writestr(f"{name}/{DECISIONS_FILE}", "".join(json.dumps(dict(r)) + "\n" for r in decisions.values()))
        zf.writestr(f"{name}/manifest.csv", "\n".join(manifest) + "\n")
    return buf.getvalue()


def suggest_threshold(defect_scores: Iterable[float], good_scores: Iterable[float], current: float) -> float:
    """An image threshold from confirmed parts: the current one if it catches every
    confirmed defect; else the highest threshold that catches the most confirmed defects
    net of confirmed good parts it would reject (a score at or above the threshold fails)."""
    defects = sorted(float(s) for s in defect_scores if s == s)
    goods = [float(s) for s in good_scores if s == s]
    if not defects or defects[0] >= current:
        return float(current)
    best, best_gain = float(current), sum(s >= current for s in defects) - sum(s >= current for s in goods)
    for t in reversed([t for t in defects if t < current]):  # from the top: on a tie the higher one wins
        gain = sum(s >= t for s in defects) - sum(s >= t for s in goods)
        if gain > best_gain:
            best, best_gain = t, gain
    return best


def recall_and_false_rejects(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> tuple[float, float]:
    """(share of defects failed, share of good parts failed) at a threshold."""
    d = [s for s, lab in zip(scores, labels) if lab]
    g = [s for s, lab in zip(scores, labels) if not lab]
    return (sum(s >= threshold for s in d) / max(1, len(d)), sum(s >= threshold for s in g) / max(1, len(g)))
