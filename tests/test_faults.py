"""Faults during a scoring run (issue 30): a kill at any moment (in both engines), a full
disk, a model file replaced mid-run. Each leaves a folder that a re-run completes to exactly what a
clean run writes, or is refused with a message that says what happened.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anomaly.cli import main
from anomaly.scoring import local
from anomaly.scoring.local import score_inputs
from anomaly.scoring.store import ResultsWriteError, ResultsWriter, file_sha256

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "default.onnx"
SAMPLES = ROOT / "sample_images" / "washer" / "test"
FAST = dict(progress=False, threads=1)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MODEL.is_file(), reason="models/default.onnx is missing")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled test images (good and defective, nested) plus two unreadable files."""
    src = tmp_path_factory.mktemp("faults") / "in"
    shutil.copytree(SAMPLES, src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    (src / "notes.jpg").write_text("not an image\n")
    return src


@pytest.fixture(scope="module")
def clean(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run with overlays: what every interrupted run must end as."""
    out = tmp_path_factory.mktemp("clean") / "out"
    score_inputs(folder, MODEL, out, overlays=True, **FAST)
    return out


def _rows(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert len({r["path"] for r in rows}) == len(rows), "a row written twice"
    return {r["path"]: r for r in rows}


def _same_as_clean(out: Path, clean: Path) -> None:
    assert _rows(out) == _rows(clean)
    assert sorted((out / "results.csv").read_text().splitlines()) == sorted(
        (clean / "results.csv").read_text().splitlines()
    )
    for sub in ("overlays", "masks"):
        files = sorted(p.relative_to(clean / sub) for p in (clean / sub).rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(out / sub) for p in (out / sub).rglob("*") if p.is_file())
        _, mismatch, errors = filecmp.cmpfiles(clean / sub, out / sub, [str(f) for f in files], shallow=False)
        assert not mismatch and not errors


def _score_command(folder: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "anomaly",
        "score",
        str(folder),
        "--model",
        str(MODEL),
        "--out",
        str(out),
        "--overlays",
        "--quiet",
        "--threads",
        "1",
        "--batch-size",
        "4",
    ]


# ----- kill -9 at random moments -----------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_killed_at_a_random_moment_then_resumed_equals_a_clean_run(
    folder: Path, clean: Path, tmp_path: Path, seed: int
) -> None:
    out = tmp_path / "out"
    rng = random.Random(seed)
    for _ in range(2):  # two kills in a row, each at a random moment of a run
        proc = subprocess.Popen(
            _score_command(folder, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.5, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(_score_command(folder, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr  # unreadable files: exit 3, as the clean run
    _same_as_clean(out, clean)


# ----- kill -9 of the Ray engine (driver, Ray's own processes, the actors) -------------------------
def _ray_command(folder: Path, out: Path) -> list[str]:
    return [*_score_command(folder, out), "--engine", "ray", "--workers", "1"]


def _session(sid: int) -> list[int]:
    """The live (not zombie) processes of a session: Ray puts its workers in process
    groups of their own, inside the session of the driver that started them."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL to the driver's whole process group, then to every process left in its
    session (the actors), as a power cut would: nothing of the run may go on writing."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while (left := _session(proc.pid)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    assert not _session(proc.pid), "processes of the killed run still alive"


@pytest.mark.parametrize("seed", [0, 1])
def test_ray_engine_killed_at_a_random_moment_then_resumed_equals_a_clean_run(
    folder: Path, clean: Path, tmp_path: Path, seed: int
) -> None:
    pytest.importorskip("ray.data")
    pytest.importorskip("pyarrow")
    out = tmp_path / "out"
    rng = random.Random(seed)
    # The first kill at any moment from the launch (Ray starting up, the actor loading the
    # model, the first batches); the second once the run has written a random number of
    # its 4 shards (one per block of chunks), so the resumed run starts from shards and
    # a partial JSONL, whatever the speed of the machine.
    for shards_first in (0, rng.randint(1, 3)):
        before = len(list((out / "shards").glob("*.parquet")))
        proc = subprocess.Popen(
            _ray_command(folder, out),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while shards_first and proc.poll() is None and time.monotonic() < deadline:
                if len(list((out / "shards").glob("*.parquet"))) >= before + shards_first:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.2) if shards_first else rng.uniform(0.5, 8.0))
        finally:
            _kill_all(proc)
    done = subprocess.run(
        _ray_command(folder, out), cwd=ROOT, capture_output=True, text=True, timeout=300, start_new_session=True
    )
    assert done.returncode == 3, done.stderr  # unreadable files: exit 3, as the clean run
    _same_as_clean(out, clean)
    assert len(list((out / "shards").glob("*.parquet"))) >= 1


# ----- a full disk ---------------------------------------------------------------------------
def test_disk_full_while_writing_rows_is_one_message_and_resumes(
    folder: Path, clean: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    real_write = ResultsWriter._write
    calls = {"n": 0}

    def write_until_full(f, text: str) -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # a batch's rows (JSONL + CSV), then half of the next one
            f.write(text[: len(text) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, text)

    monkeypatch.setattr(ResultsWriter, "_write", staticmethod(write_until_full))
    args = [
        "score",
        str(folder),
        "--model",
        str(MODEL),
        "--out",
        str(out),
        "--overlays",
        "--quiet",
        "--threads",
        "1",
        "--batch-size",
        "4",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "resume" in err
    with pytest.raises(ResultsWriteError):
        score_inputs(folder, MODEL, tmp_path / "again", overlays=True, batch_size=4, **FAST)
    monkeypatch.undo()
    assert main(args) == 3
    _same_as_clean(out, clean)


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 512 KB tmpfs (root only); its size can be raised to let a run finish."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_then_more_room_resumes(folder: Path, clean: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    full = subprocess.run(_score_command(folder, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stderr
    assert "No space left on device" in full.stderr and "Traceback" not in full.stderr
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    done = subprocess.run(_score_command(folder, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    _same_as_clean(out, clean)


# ----- the model file replaced mid-run --------------------------------------------------------
def _other_model(path: Path) -> Path:
    """A valid, sealed model that is not the bundled one (its metadata differs)."""
    onnx = pytest.importorskip("onnx")
    from anomaly.contract import SEAL_KEY, seal_file

    model = onnx.load(str(MODEL))
    for entry in model.metadata_props:
        if entry.key == SEAL_KEY:
            entry.value = "0" * 64
        elif entry.key == "train_data":
            entry.value = "another line"
    onnx.save_model(model, str(path))
    seal_file(path)
    return path


def test_model_replaced_while_scoring_is_detected(folder: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    model, out = tmp_path / "model.onnx", tmp_path / "out"
    shutil.copy(MODEL, model)
    original = file_sha256(model)
    replacement = _other_model(tmp_path / "other.onnx")
    real = local.chunk_outputs

    def replace_after_first_chunk(inspector, chunk, batch_size):
        os.replace(replacement, model) if replacement.exists() else None
        return real(inspector, chunk, batch_size)

    monkeypatch.setattr(local, "chunk_outputs", replace_after_first_chunk)
    with caplog.at_level(logging.WARNING):
        summary = score_inputs(folder, model, out, **FAST)
    assert summary.total == len(_rows(out))
    run = json.loads((out / "run.json").read_text())
    assert run["model_sha256"] == original != file_sha256(model)  # the bytes that scored, not the new file
    assert "changed while scoring" in caplog.text
    monkeypatch.undo()
    with pytest.raises(ValueError, match="different run"):
        score_inputs(folder, model, out, **FAST)
