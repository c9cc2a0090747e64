"""`anomaly score` (anomaly.scoring.local): rows, exit codes, resume/repair, restart, overlays, torch-free."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly.cli import main
from anomaly.inspection.inspector import Inspector
from anomaly.scoring import local as batch
from anomaly.scoring.local import score_inputs
from anomaly.scoring.schema import CSV_COLUMNS, csv_row, result_row
from anomaly.scoring.store import file_sha256
from anomaly.scoring.summary import EXIT_DEFECTS, EXIT_ERRORS, EXIT_OK

JSONL_KEYS = ["path", "score", "verdict", "image_threshold", "pixel_threshold", "width", "height", "regions", "error"]
FAST = dict(progress=False, threads=1)


def _read_csv(out: Path) -> list[list[str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _read_jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _csv_matches_jsonl(out: Path) -> None:
    rows = _read_csv(out)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1:] == [csv_row(r) for r in _read_jsonl(out)]


@pytest.fixture()
def mixed_folder(tmp_path: Path, tiny_dataset: Path) -> Path:
    """Good and defective images (one nested), plus files that cannot be scored."""
    src = tmp_path / "in"
    (src / "defects").mkdir(parents=True)
    for p in sorted((tiny_dataset / "test" / "good").glob("*.png")):
        shutil.copy(p, src / p.name)
    shutil.copy(tiny_dataset / "test" / "crack" / "000.png", src / "defects" / "crack.png")
    (src / "bad.png").write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    (src / "empty.png").write_bytes(b"")
    (src / "notes.jpg").write_text("this is not an image\n")
    cv2.imwrite(str(src / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    return src


def test_mixed_folder_rows_errors_and_exit_code(tiny_onnx: Path, mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = score_inputs(mixed_folder, tiny_onnx, out, batch_size=3, **FAST)

    rows = _read_csv(out)
    assert rows[0] == list(CSV_COLUMNS)
    assert len(rows) == 1 + 7
    by_path = {r[0]: dict(zip(CSV_COLUMNS, r)) for r in rows[1:]}
    assert set(by_path) == {"000.png", "001.png", "defects/crack.png", "bad.png", "empty.png", "notes.jpg", "tiny.png"}
    for name in ("bad.png", "empty.png", "notes.jpg", "tiny.png"):
        row = by_path[name]
        assert row["verdict"] == "ERROR" and row["score"] == ""
        assert name in row["error"]
    assert "too small" in by_path["tiny.png"]["error"]
    for name in ("000.png", "001.png", "defects/crack.png"):
        row = by_path[name]
        assert row["verdict"] in ("PASS", "FAIL") and row["error"] == ""
        assert len(row["score"].split(".")[1]) == 6
        assert int(row["regions"]) >= 0 and int(row["largest_region_area"]) >= 0

    records = _read_jsonl(out)
    assert all(list(r) == JSONL_KEYS for r in records)
    good = next(r for r in records if r["path"] == "000.png")
    assert (good["width"], good["height"]) == (64, 64)
    info = Inspector(tiny_onnx).info
    assert good["image_threshold"] == info.image_threshold and good["pixel_threshold"] == info.pixel_threshold
    _csv_matches_jsonl(out)

    run = json.loads((out / "run.json").read_text())
    assert run["model_sha256"] == file_sha256(tiny_onnx) and run["input"] == str(mixed_folder.resolve())
    assert run["image_threshold"] == info.image_threshold and run["started"]

    assert (summary.total, summary.scored, summary.resumed, summary.errors) == (7, 7, 0, 4)
    assert summary.passed + summary.failed == 3
    assert summary.exit_code == EXIT_ERRORS == 3
    assert "4 ERROR" in summary.describe()


def test_exit_codes_for_good_images(tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    good = tiny_dataset / "test" / "good"
    lenient = score_inputs(good, tiny_onnx, tmp_path / "a", image_threshold=1e6, **FAST)
    assert (lenient.passed, lenient.failed, lenient.errors) == (2, 0, 0)
    assert lenient.exit_code == EXIT_OK == 0
    strict = score_inputs(good, tiny_onnx, tmp_path / "b", image_threshold=0.0, **FAST)
    assert (strict.passed, strict.failed) == (0, 2)
    assert strict.exit_code == EXIT_DEFECTS == 1
    assert all(r["regions"] for r in _read_jsonl(tmp_path / "b"))  # a FAIL always shows where


def test_file_list_input(tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted((tiny_dataset / "test" / "good").glob("*.png")):
        shutil.copy(p, imgs / p.name)
    lists = tmp_path / "lists"
    lists.mkdir()
    absolute = tiny_dataset / "test" / "dent" / "000.png"
    listing = lists / "todo.txt"
    listing.write_text(
        f"# parts from line 3\n../imgs/000.png\n\n   ../imgs/001.png  \n{absolute}\n../imgs/missing.png\n"
    )
    out = tmp_path / "out"
    summary = score_inputs(listing, tiny_onnx, out, **FAST)
    records = _read_jsonl(out)
    assert [r["path"] for r in records] == ["../imgs/000.png", "../imgs/001.png", str(absolute), "../imgs/missing.png"]
    assert [r["verdict"] == "ERROR" for r in records] == [False, False, False, True]
    assert "missing.png" in records[-1]["error"]
    assert summary.total == 4 and summary.exit_code == EXIT_ERRORS


def test_missing_and_empty_input(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        score_inputs(tmp_path / "nope", tiny_onnx, tmp_path / "out", **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        score_inputs(tmp_path / "empty", tiny_onnx, tmp_path / "out", **FAST)


def test_resume_after_crash_mid_write(tiny_onnx: Path, mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = score_inputs(mixed_folder, tiny_onnx, out, batch_size=2, **FAST)
    full = _read_jsonl(out)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    # Crash: the last two rows never made it, and a third was cut off mid-line.
    (out / "results.jsonl").write_text("".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2])

    again = score_inputs(mixed_folder, tiny_onnx, out, batch_size=2, **FAST)
    records = _read_jsonl(out)
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)) == first.total
    assert sorted(paths) == sorted(r["path"] for r in full)
    assert {r["path"]: r for r in records} == {r["path"]: r for r in full}  # same rows, same values
    _csv_matches_jsonl(out)
    assert (again.resumed, again.scored, again.total) == (first.total - 2, 2, first.total)
    assert (again.passed, again.failed, again.errors) == (first.passed, first.failed, first.errors)
    assert len(json.loads((out / "run.json").read_text())["resumed"]) == 1

    third = score_inputs(mixed_folder, tiny_onnx, out, **FAST)  # nothing left to do
    assert (third.scored, third.resumed) == (0, first.total) and len(_read_jsonl(out)) == first.total


def test_changed_run_refuses_and_restart_moves_aside(tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    good, out = tiny_dataset / "test" / "good", tmp_path / "out"
    score_inputs(good, tiny_onnx, out, overlays=True, **FAST)
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(ValueError, match="--restart"):
        score_inputs(good, tiny_onnx, out, image_threshold=0.123, **FAST)
    with pytest.raises(ValueError, match="input"):
        score_inputs(tiny_dataset / "test" / "crack", tiny_onnx, out, **FAST)
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "model_sha256": "0" * 64}))  # as if another model wrote them
    with pytest.raises(ValueError, match="model"):
        score_inputs(good, tiny_onnx, out, **FAST)
    assert (out / "results.jsonl").read_bytes() == before  # refused runs touch nothing

    summary = score_inputs(good, tiny_onnx, out, image_threshold=0.123, restart=True, **FAST)
    assert summary.scored == 2 and summary.resumed == 0
    old = list(out.glob("results.*.jsonl"))
    assert len(old) == 1 and old[0].read_bytes() == before
    assert len(list(out.glob("results.*.csv"))) == 1 and len(list(out.glob("run.*.json"))) == 1
    assert len(list(out.glob("overlays.*"))) == 1 and not (out / "overlays").exists()
    assert all(r["image_threshold"] == 0.123 for r in _read_jsonl(out))


def test_overlays_mirror_nested_tree(tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    for rel in ("a/b/part.png", "a/other.png", "top.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dataset / "test" / "scratch" / "000.png", src / rel)
    shutil.copy(tiny_dataset / "test" / "good" / "000.png", src / "a" / "b" / "jpeg.jpg")  # PNG bytes, .jpg name
    out = tmp_path / "out"
    summary = score_inputs(src, tiny_onnx, out, overlays=True, image_threshold=0.0, **FAST)
    assert summary.errors == 0
    for rel, ov_rel in (
        ("a/b/part.png", "a/b/part.png.jpg"),
        ("a/other.png", "a/other.png.jpg"),
        ("top.png", "top.png.jpg"),
        ("a/b/jpeg.jpg.png", "a/b/jpeg.jpg"),
    ):
        ov = cv2.imread(str(out / "overlays" / ov_rel), cv2.IMREAD_UNCHANGED)
        mk = cv2.imread(str(out / "masks" / rel), cv2.IMREAD_UNCHANGED)
        assert ov.shape == (64, 64, 3) and mk.shape == (64, 64)
        assert set(np.unique(mk)) <= {0, 255} and (mk == 255).any()  # threshold 0: every part fails somewhere
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_cli_returns_documented_exit_code(
    tiny_onnx: Path, mixed_folder: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = ["--model", str(tiny_onnx), "--threads", "1", "--quiet"]
    assert main(["score", str(mixed_folder), "--out", str(tmp_path / "a"), *base]) == EXIT_ERRORS
    assert "ERROR" in capsys.readouterr().out
    good = str(tiny_dataset / "test" / "good")
    assert main(["score", good, "--out", str(tmp_path / "b"), "--threshold", "1e6", *base]) == EXIT_OK
    assert main(["score", good, "--out", str(tmp_path / "c"), "--threshold", "0", "--overlays", *base]) == EXIT_DEFECTS
    assert (tmp_path / "c" / "overlays" / "000.png.jpg").is_file()
    assert main(["score", str(tmp_path / "nope"), "--out", str(tmp_path / "d"), *base]) == 2
    assert "nope" in capsys.readouterr().err


def test_rows_equal_inspector(tiny_onnx: Path, mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    score_inputs(mixed_folder, tiny_onnx, out, batch_size=2, **FAST)
    inspector = Inspector(tiny_onnx, threads=1)
    for rec in _read_jsonl(out):
        if rec["verdict"] == "ERROR":
            continue
        ref = inspector.inspect(mixed_folder / rec["path"])
        assert abs(rec["score"] - ref.score) <= 1e-6
        assert rec["verdict"] == ref.verdict
        expected = result_row(rec["path"], ref)
        assert rec["regions"] == [r | {"peak": pytest.approx(r["peak"], abs=1e-6)} for r in expected["regions"]]
        assert {k: v for k, v in rec.items() if k not in ("score", "regions")} == {
            k: v for k, v in expected.items() if k not in ("score", "regions")
        }


def test_interrupt_keeps_finished_rows(
    tiny_onnx: Path, mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = batch.chunk_outputs, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "chunk_outputs", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        score_inputs(mixed_folder, tiny_onnx, out, batch_size=2, overlays=True, **FAST)
    kept = _read_jsonl(out)
    assert 1 <= len(kept) < 7
    _csv_matches_jsonl(out)
    monkeypatch.setattr(batch, "chunk_outputs", real)
    summary = score_inputs(mixed_folder, tiny_onnx, out, batch_size=2, overlays=True, **FAST)
    assert summary.resumed == len(kept) and summary.scored == 7 - len(kept)
    paths = [r["path"] for r in _read_jsonl(out)]
    assert len(paths) == len(set(paths)) == 7


def test_runs_without_torch(tiny_onnx: Path, mixed_folder: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from pathlib import Path
        import anomaly.inspection.inspector, anomaly.scoring.local
        s = anomaly.scoring.local.score_inputs(Path({str(mixed_folder)!r}), Path({str(tiny_onnx)!r}),
                                       Path({str(tmp_path / "out")!r}), overlays=True, progress=False, threads=1)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
        rows = Path({str(tmp_path / "out" / "results.jsonl")!r}).read_text().splitlines()
        print(len(rows), s.exit_code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", str(EXIT_ERRORS)]


def _csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_overlays_for_failing_parts_only(
    tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tiny_dataset / "test"
    probe = score_inputs(src, tiny_onnx, tmp_path / "probe", **FAST)
    scores = sorted(float(r["score"]) for r in _csv_rows(tmp_path / "probe"))
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # some parts pass, some fail
    assert probe.scored == len(scores)
    out = tmp_path / "fails"
    code = main(
        [
            "score",
            str(src),
            "--model",
            str(tiny_onnx),
            "--out",
            str(out),
            "--threshold",
            str(middle),
            "--overlays",
            "fails",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    assert code == EXIT_DEFECTS
    rows = _csv_rows(out)
    failing = {r["path"] for r in rows if r["verdict"] == "FAIL"}
    assert 0 < len(failing) < len(rows)
    written = {str(p.relative_to(out / "masks")) for p in (out / "masks").rglob("*.png")}
    assert written == failing  # masks keep the input name (PNG inputs): exactly the failing parts
    assert len(list((out / "overlays").rglob("*.jpg"))) == len(failing)
    with pytest.raises(ValueError, match="all or fails"):
        score_inputs(src, tiny_onnx, tmp_path / "bad", overlays="some", **FAST)
