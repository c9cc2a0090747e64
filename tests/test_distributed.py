"""`anomaly score --engine ray` (anomaly.scoring.ray_engine) on a local 2-CPU Ray instance:
same rows as the local scorer, error rows, resume from shards, a killed worker, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

# Imported after the importorskip calls above, which skip this file without Ray.
from anomaly.cli import main  # noqa: E402
from anomaly.scoring.local import score_inputs  # noqa: E402
from anomaly.scoring.ray_actor import score_chunk  # noqa: E402
from anomaly.scoring.ray_engine import CRASH_ENV, score_with_ray  # noqa: E402
from anomaly.scoring.schema import CSV_COLUMNS  # noqa: E402
from anomaly.scoring.shards import read_shards, write_shard  # noqa: E402
from anomaly.scoring.store import RunInfo  # noqa: E402
from anomaly.scoring.summary import EXIT_ERRORS  # noqa: E402

pytestmark = pytest.mark.slow
QUIET = dict(progress=False)
BAD_FILES = ("bad.png", "empty.png", "notes.jpg", "tiny.png")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance with 2 CPUs for the whole module; score_with_ray reuses it."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        logging_level="WARNING",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture()
def folder(tmp_path: Path, tiny_dataset: Path) -> Path:
    """Every test image of the tiny data set (good and defective, nested) plus 4 unreadable files."""
    import cv2

    src = tmp_path / "in"
    for p in sorted((tiny_dataset / "test").rglob("*.png")):
        dst = src / p.relative_to(tiny_dataset / "test")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    (src / "bad.png").write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
    (src / "empty.png").write_bytes(b"")
    (src / "notes.jpg").write_text("this is not an image\n")
    cv2.imwrite(str(src / "tiny.png"), np.zeros((4, 4, 3), np.uint8))
    return src


def _jsonl(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def _csv(out: Path) -> list[list[str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _shard_paths(out: Path) -> list[str]:
    return [
        p
        for f in sorted((out / "shards").glob("*.parquet"))
        for p in pq.read_table(f, columns=["path"])["path"].to_pylist()
    ]


def _assert_complete(out: Path, expected: set[str]) -> None:
    """Every path exactly once in results.jsonl, results.csv and across the shards."""
    jsonl_paths = [r["path"] for r in _jsonl(out)]
    csv_rows = _csv(out)
    assert tuple(csv_rows[0]) == CSV_COLUMNS
    csv_paths = [r[0] for r in csv_rows[1:]]
    shard_paths = _shard_paths(out)
    for paths in (jsonl_paths, csv_paths, shard_paths):
        assert sorted(paths) == sorted(expected)  # nothing lost, nothing duplicated


def _assert_same_rows(ray_out: Path, local_out: Path) -> None:
    ray_rows = {r["path"]: r for r in _jsonl(ray_out)}
    local_rows = {r["path"]: r for r in _jsonl(local_out)}
    assert set(ray_rows) == set(local_rows)
    for path, want in local_rows.items():
        got = ray_rows[path]
        assert got["verdict"] == want["verdict"], path
        assert got["regions"] == want["regions"], path
        assert got["error"] == want["error"], path
        assert (got["width"], got["height"]) == (want["width"], want["height"]), path
        assert (got["image_threshold"], got["pixel_threshold"]) == (want["image_threshold"], want["pixel_threshold"])
        if want["score"] is None:
            assert got["score"] is None, path
        else:
            assert abs(got["score"] - want["score"]) <= 1e-5, path


def test_ray_rows_identical_to_local(ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path) -> None:
    local = score_inputs(folder, tiny_onnx, tmp_path / "local", batch_size=3, threads=1, overlays=True, **QUIET)
    summary = score_with_ray(folder, tiny_onnx, tmp_path / "ray", batch_size=3, workers=2, overlays=True, **QUIET)

    _assert_same_rows(tmp_path / "ray", tmp_path / "local")
    # same chunks through the same model: the files are byte for byte the local scorer's
    assert (tmp_path / "ray" / "results.csv").read_bytes() == (tmp_path / "local" / "results.csv").read_bytes()
    assert (tmp_path / "ray" / "results.jsonl").read_bytes() == (tmp_path / "local" / "results.jsonl").read_bytes()
    _assert_complete(tmp_path / "ray", {r["path"] for r in _jsonl(tmp_path / "local")})
    assert len(list((tmp_path / "ray" / "shards").glob("*.parquet"))) >= 2
    assert (summary.total, summary.scored, summary.resumed) == (local.total, local.total, 0)
    assert (summary.passed, summary.failed, summary.errors) == (local.passed, local.failed, local.errors)
    assert summary.exit_code == local.exit_code == EXIT_ERRORS
    assert summary.workers == 2
    for sub in ("overlays", "masks"):  # written by the actors, same names and pixels
        files = sorted(p.relative_to(tmp_path / "local" / sub) for p in (tmp_path / "local" / sub).rglob("*.*g"))
        assert files and files == sorted(
            p.relative_to(tmp_path / "ray" / sub) for p in (tmp_path / "ray" / sub).rglob("*.*g")
        )
        for f in files:
            assert (tmp_path / "ray" / sub / f).read_bytes() == (tmp_path / "local" / sub / f).read_bytes(), f
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["model_sha256"] == json.loads((tmp_path / "local" / "run.json").read_text())["model_sha256"]


def test_unreadable_files_become_error_rows(ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = score_with_ray(folder, tiny_onnx, out, batch_size=4, workers=1, **QUIET)
    rows = {r[0]: dict(zip(CSV_COLUMNS, r)) for r in _csv(out)[1:]}
    for name in BAD_FILES:
        assert rows[name]["verdict"] == "ERROR" and rows[name]["score"] == ""
        assert name in rows[name]["error"]
    assert "too small" in rows["tiny.png"]["error"]
    scored = [r for p, r in rows.items() if p not in BAD_FILES]
    assert scored and all(r["verdict"] in ("PASS", "FAIL") and r["error"] == "" for r in scored)
    assert summary.errors == len(BAD_FILES) and summary.exit_code == EXIT_ERRORS
    table = pq.read_table(sorted((out / "shards").glob("*.parquet")))
    errors = [r for r in table.to_pylist() if r["verdict"] == "ERROR"]
    assert sorted(r["path"] for r in errors) == sorted(BAD_FILES)
    assert all(r["score"] is None for r in errors)


def test_resume_from_shards(ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = score_with_ray(folder, tiny_onnx, out, batch_size=2, workers=2, **QUIET)
    before = {r["path"]: r for r in _jsonl(out)}
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) >= 2 and first.scored == len(before)
    lost = pq.read_table(shards[0], columns=["path"])["path"].to_pylist()
    shards[0].unlink()

    again = score_with_ray(folder, tiny_onnx, out, batch_size=2, workers=2, **QUIET)
    assert again.scored == len(lost)  # only the images of the deleted shard were scored again
    assert again.resumed == len(before) - len(lost)
    _assert_complete(out, set(before))
    assert {r["path"]: r for r in _jsonl(out)} == before
    assert [r["path"] for r in _jsonl(out)] == list(before)  # input order, as the local scorer writes

    # nothing left to do: no Ray job at all, same files
    third = score_with_ray(folder, tiny_onnx, out, batch_size=2, workers=2, **QUIET)
    assert (third.scored, third.resumed, third.workers) == (0, len(before), 0)
    _assert_complete(out, set(before))

    # other thresholds: refused like the local scorer; restart moves the shards aside
    with pytest.raises(ValueError, match="different run"):
        score_with_ray(folder, tiny_onnx, out, image_threshold=123.0, **QUIET)
    assert json.loads((out / "run.json").read_text())["image_threshold"] != 123.0
    moved = score_with_ray(folder, tiny_onnx, out, image_threshold=123.0, restart=True, workers=2, **QUIET)
    assert moved.scored == len(before) and moved.failed == 0
    assert len(list(out.glob("shards.*"))) == 1 and len(list(out.glob("results.*.jsonl"))) == 1
    _assert_complete(out, set(before))


def test_shards_without_results_jsonl_still_checked(ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    score_with_ray(folder, tiny_onnx, out, workers=2, **QUIET)
    (out / "results.jsonl").unlink()
    with pytest.raises(ValueError, match="different run"):
        score_with_ray(folder, tiny_onnx, out, pixel_threshold=0.01, **QUIET)
    # same run: everything comes back from the shards, nothing is scored again
    again = score_with_ray(folder, tiny_onnx, out, **QUIET)
    assert again.scored == 0 and again.resumed == again.total
    _assert_complete(out, {r[0] for r in _csv(out)[1:]})


def test_adopts_a_folder_started_by_the_local_engine(tiny_onnx: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    score_inputs(folder, tiny_onnx, out, threads=1, **QUIET)
    before = (out / "results.csv").read_bytes()
    summary = score_with_ray(folder, tiny_onnx, out, **QUIET)  # nothing to score: Ray is not even started
    assert summary.scored == 0 and summary.resumed == summary.total and summary.workers == 0
    assert [p.name for p in (out / "shards").glob("*.parquet")] == ["adopted-results-jsonl.parquet"]
    assert (out / "results.csv").read_bytes() == before


def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    score_inputs(folder, tiny_onnx, tmp_path / "local", batch_size=2, threads=1, **QUIET)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, str(marker))
    out = tmp_path / "ray"
    summary = score_with_ray(folder, tiny_onnx, out, batch_size=2, workers=2, **QUIET)

    assert marker.is_file() and marker.read_text().startswith("killed pid")  # an actor did die mid-batch
    assert summary.scored == summary.total
    _assert_complete(out, {r["path"] for r in _jsonl(tmp_path / "local")})
    _assert_same_rows(out, tmp_path / "local")


def test_cli_engine_ray_exit_code(
    ray_local, tiny_onnx: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "score",
            str(folder),
            "--model",
            str(tiny_onnx),
            "--out",
            str(out),
            "--engine",
            "ray",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert code == EXIT_ERRORS
    printed = capsys.readouterr().out
    assert "4 ERROR" in printed and "ray: 1 workers" in printed
    assert len(_csv(out)) == 1 + len(list(p for p in folder.rglob("*") if p.is_file()))

    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(next(p for p in sorted(folder.rglob("*.png")) if p.name not in BAD_FILES), good / "a.png")
    want = score_inputs(good, tiny_onnx, tmp_path / "good_local", threads=1, **QUIET).exit_code
    assert (
        main(
            [
                "score",
                str(good),
                "--model",
                str(tiny_onnx),
                "--out",
                str(tmp_path / "good_ray"),
                "--engine",
                "ray",
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == want
    )


def test_module_imports_neither_torch_nor_ray() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        import anomaly.scoring.ray_engine as d
        assert "ray" not in sys.modules, "ray is imported lazily"
        assert sys.modules["torch"] is None
        assert callable(d.score_with_ray)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_missing_ray_is_a_one_line_usage_error(
    tiny_onnx: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["score", str(folder), "--model", str(tiny_onnx), "--out", str(tmp_path / "o"), "--engine", "ray"])
    assert code == 2
    assert "anomaly[ray]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shard_round_trip_is_exact(tmp_path: Path) -> None:
    records = [
        {
            "path": "a/b.png",
            "score": 1.234567,
            "verdict": "FAIL",
            "image_threshold": 1.0,
            "pixel_threshold": 0.42,
            "width": 64,
            "height": 48,
            "regions": [{"x": 1, "y": 2, "w": 3, "h": 4, "area": 9, "peak": 2.5}],
            "error": None,
        },
        {
            "path": "bad.png",
            "score": None,
            "verdict": "ERROR",
            "image_threshold": 1.0,
            "pixel_threshold": 0.42,
            "width": None,
            "height": None,
            "regions": [],
            "error": "bad.png: not a readable image",
        },
    ]
    run = RunInfo(model="m.onnx", model_sha256="0" * 64, image_threshold=1.0, pixel_threshold=0.42, input="/in")
    write_shard(tmp_path / "shards", records, run)
    write_shard(tmp_path / "shards", records[:1], run)  # a duplicate path: the first shard wins
    assert not list((tmp_path / "shards").glob(".*"))  # no temporary file left behind
    assert list(read_shards(tmp_path, run).values()) == records
    other = RunInfo(model="m.onnx", model_sha256="1" * 64, image_threshold=1.0, pixel_threshold=0.42, input="/in")
    with pytest.raises(ValueError, match="different run"):
        read_shards(tmp_path, other)


def test_ray_chunks_write_overlays_for_failing_parts_only(tiny_onnx: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """The actors' chunk function honours overlays="fails" as the local scorer does."""
    from anomaly.inspection.inspector import Inspector
    from anomaly.scoring.inputs import collect_inputs

    items = collect_inputs(tiny_dataset / "test")
    inspector = Inspector(tiny_onnx, threads=1)
    everything = score_chunk(inspector, items, [str(x.path) for x in items], 1.0, 0.5, 4)
    scores = sorted(r["score"] for r in everything)
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    rows = score_chunk(
        inspector,
        items,
        [str(x.path) for x in items],
        threshold,
        0.5 * threshold,
        4,
        overlays_dir=str(tmp_path),
        overlays_mode="fails",
    )
    failing = {r["path"] for r in rows if r["verdict"] == "FAIL"}
    assert 0 < len(failing) < len(rows)
    assert {str(p.relative_to(tmp_path / "masks")) for p in (tmp_path / "masks").rglob("*.png")} == failing
