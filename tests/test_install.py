"""What an install carries: the line-PC dependencies, the extras the CLI names, the
wheel's dashboard, and the install benchmark (bench/install.py) in its quick mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _table_row(out: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith("|") and not line.startswith("|---")]
    assert len(lines) == 2, out
    return [cell.strip() for cell in lines[1].strip("|").split("|")]


def test_line_pc_install_is_three_libraries() -> None:
    assert {_name(r) for r in _project()["dependencies"]} == {"numpy", "opencv-python-headless", "onnxruntime", "tqdm"}


def test_every_extra_the_cli_names_exists() -> None:
    from anomaly.cli import EXTRA_OF_MODULE

    extras = _project()["optional-dependencies"]
    assert set(EXTRA_OF_MODULE.values()) <= set(extras)
    assert "scikit-image" in {_name(r) for r in extras["eval"]} and "scipy" in {_name(r) for r in extras["train"]}


def test_packaged_streamlit_config_is_the_repository_one() -> None:
    def settings(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]

    assert settings(ROOT / "anomaly" / "ui" / ".streamlit" / "config.toml") == settings(
        ROOT / ".streamlit" / "config.toml"
    )


def test_wheel_ships_the_dashboard_and_license(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("anomaly-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"anomaly/ui/app.py", "anomaly/ui/logic.py", "anomaly/ui/.streamlit/config.toml"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("ui/", "tests/", "bench/")) for n in names)


def test_install_bench_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "install.py"), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = _table_row(proc.stdout)
    assert float(row[1]) > 0 and float(row[4]) > 0
    assert row[8] == "FAIL"  # the sample crack
    assert row[9] == "-", "the runtime imported torch, scipy, scikit-image, matplotlib or pandas"


@pytest.mark.slow
def test_line_pc_venv(tmp_path: Path) -> None:
    """A fresh `EXTRAS= ./setup.sh` venv: within the size target, no package the runtime does
    not need, scores, and `anomaly train` / `evaluate` name the extra to install (exit 2)."""
    venv = tmp_path / "slim"
    env = dict(os.environ, EXTRAS="", VENV=str(venv))
    subprocess.run([str(ROOT / "setup.sh")], env=env, check=True, capture_output=True, timeout=900)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "install.py"), "--venv", str(venv), "--runs", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = _table_row(proc.stdout)
    assert float(row[1]) <= 360, row
    assert row[3] == "-", row  # no torch, scipy, scikit-image, CUDA wheels ...
    anomaly = str(venv / "bin" / "anomaly")
    score = subprocess.run(
        [
            anomaly,
            "score",
            str(ROOT / "sample_images" / "washer" / "test"),
            "--model",
            str(ROOT / "models" / "default.onnx"),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert score.returncode == 1 and (tmp_path / "run" / "results.csv").is_file(), score.stderr
    train = subprocess.run(
        [anomaly, "train", str(ROOT / "sample_images" / "washer"), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
    )
    assert train.returncode == 2 and "'train' extra" in train.stderr, train.stderr
    evaluate = subprocess.run(
        [anomaly, "evaluate", str(ROOT / "models" / "default.onnx"), str(ROOT / "sample_images" / "washer")],
        capture_output=True,
        text=True,
    )
    assert evaluate.returncode == 2 and "'eval' extra" in evaluate.stderr, evaluate.stderr
