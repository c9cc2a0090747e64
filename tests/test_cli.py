"""Bad input gets one line naming the path and the problem, and a non-zero exit."""

import subprocess
import sys

import numpy as np
import pytest

from anomaly.cli import build_parser, main
from anomaly.inspection.imageio import save_image


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def test_missing_folder(capsys, tmp_path):
    code, err = _run(capsys, "train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"))
    assert code == 2 and err.count("\n") == 0 and "nowhere: no such folder" in err


def test_folder_without_images(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = _run(capsys, "train", str(tmp_path / "empty"), "--out", str(tmp_path / "m"))
    assert code == 2 and "empty: no images found" in err


def test_wrong_model_folder_and_file(capsys, tmp_path):
    (tmp_path / "notamodel").mkdir()
    code, err = _run(capsys, "evaluate", str(tmp_path / "notamodel"), str(tmp_path))
    assert code == 2 and "notamodel: not a model folder" in err
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not onnx")
    code, err = _run(capsys, "info", str(fake))
    assert code == 2 and "fake.onnx: not a loadable ONNX model" in err


def test_too_few_images_to_calibrate(capsys, tmp_path):
    for i in range(3):
        save_image(tmp_path / "few" / f"{i}.png", np.zeros((16, 16, 3), np.float32))
    code, err = _run(capsys, "train", str(tmp_path / "few"), "--out", str(tmp_path / "m"))
    assert code == 2 and "need at least 6 good images" in err


def test_help_explains_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"
    out = subprocess.run([sys.executable, "-m", "anomaly.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--out", "--model", "--image-size", "--epochs", "--seed"):
        assert flag in out.stdout


@pytest.mark.parametrize("kind", ["nonsense"])
def test_unknown_model_kind_is_rejected(kind, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "anomaly.cli", "train", str(tmp_path), "--out", "x", "--model", kind],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.slow
def test_labelled_defects_give_f1_thresholds_and_fine_tune_the_head(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("torch")
    import json

    out = tmp_path / "m"
    args = [
        "train",
        str(tiny_dataset),
        "--out",
        str(out),
        "--image-size",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--defects",
        str(tiny_dataset),
        "--fine-tune-head",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "F1-optimal thresholds from" in captured.out
    assert "calibrated on only 8 good images" in captured.err  # 8 training images: 4 held out, 4 scored out of fold
    meta = json.loads((out / "config.json").read_text())
    assert meta["calibration"]["f1_source"] == "labelled"
    labelled = meta["summary"]["labelled_defects"]
    assert labelled["head_fine_tuned"] and labelled["defective"] >= 5 and labelled["images"] > labelled["defective"]


def test_fine_tuning_without_defects_or_head_is_refused(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("torch")
    base = ["train", str(tiny_dataset), "--out", str(tmp_path / "m"), "--image-size", "64", "--epochs", "1", "--quiet"]
    assert main(base + ["--fine-tune-head"]) == 2
    assert "--fine-tune-head needs --defects" in capsys.readouterr().err
    assert main(base + ["--model", "ae", "--defects", str(tiny_dataset), "--fine-tune-head"]) == 2
    assert "segmentation head" in capsys.readouterr().err


@pytest.mark.slow
def test_sharpening_terms_reach_training_and_are_recorded(tiny_dataset, tmp_path, capsys):
    pytest.importorskip("torch")
    import json

    out = tmp_path / "m"
    args = [
        "train",
        str(tiny_dataset),
        "--out",
        str(out),
        "--image-size",
        "64",
        "--epochs",
        "1",
        "--quiet",
        "--model",
        "ae",
        "--adversarial-weight",
        "0.05",
        "--perceptual-weight",
        "0.5",
    ]
    assert main(args) == 0
    summary = json.loads((out / "config.json").read_text())["summary"]
    assert summary["adversarial_weight"] == 0.05 and summary["perceptual_weight"] == 0.5
    assert (
        main(
            [
                "train",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "f"),
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--quiet",
                "--adversarial-weight",
                "0.05",
            ]
        )
        == 2
    )
    assert "pixel autoencoders" in capsys.readouterr().err


def _train_configs(monkeypatch, tmp_path, option_sets: list[list[str]]) -> list:
    """The TrainConfig `anomaly train` builds for each set of options (nothing is trained)."""
    seen = []

    class Stop(Exception):
        pass

    class RecordingDetector:
        def __init__(self, model_config, train_config):
            seen.append(train_config)

        def fit(self, *args, **kwargs):
            raise Stop

    monkeypatch.setattr("anomaly.training.detector.Detector", RecordingDetector)
    for extra in option_sets:
        with pytest.raises(Stop):
            main(["train", str(tmp_path), "--out", str(tmp_path / "m"), *extra])
    return seen


def test_train_mirrors_images_only_when_asked(monkeypatch, tmp_path):
    """Flips teach a model that a mirrored (flipped, reversed-print) part is good: opt-in."""
    seen = [
        c.augment
        for c in _train_configs(monkeypatch, tmp_path, [[], ["--hflip"], ["--vflip"], ["--hflip", "--no-augment"]])
    ]
    assert [(a.hflip, a.vflip) for a in seen] == [(False, False), (True, False), (False, True), (False, False)]
    assert seen[0].rotate_degrees > 0 and seen[-1].rotate_degrees == 0  # the rest of augmentation stays on by default


def test_train_options_reach_the_training_config(monkeypatch, tmp_path):
    """--head-epochs and --max-train-images are per-dataset knobs: they must reach TrainConfig."""
    seen = _train_configs(monkeypatch, tmp_path, [[], ["--head-epochs", "16", "--max-train-images", "0"]])
    assert [(c.head_epochs, c.max_train_images) for c in seen] == [(4, 1000), (16, 0)]


def test_family_epochs_apply_from_python_as_from_the_cli():
    """The epochs rule lives in the config: a pixel autoencoder built from Python gets its
    family's epochs, and an explicit count wins."""
    from anomaly.config import FAMILY_EPOCHS, ModelConfig, TrainConfig, settle

    assert settle(ModelConfig(kind="ae"), TrainConfig())[1].epochs == FAMILY_EPOCHS["ae"] != FAMILY_EPOCHS["feature_ae"]
    assert settle(ModelConfig(kind="feature_ae"), TrainConfig())[1].epochs == FAMILY_EPOCHS["feature_ae"]
    assert settle(ModelConfig(kind="ae"), TrainConfig(epochs=3))[1].epochs == 3
    assert settle(ModelConfig(), TrainConfig(synthetic_fraction=0))[0].segmentation_head is False


def test_cli_defaults_are_the_config_defaults(monkeypatch, tmp_path):
    """No option given: the configs the CLI builds equal the dataclasses' own defaults."""
    from anomaly.config import ModelConfig, TrainConfig

    seen_models = []

    class RecordingDetector:
        def __init__(self, model_config, train_config):
            seen_models.append((model_config, train_config))

        def fit(self, *args, **kwargs):
            raise KeyboardInterrupt

    monkeypatch.setattr("anomaly.training.detector.Detector", RecordingDetector)
    main(["train", str(tmp_path), "--out", str(tmp_path / "m")])
    assert seen_models == [(ModelConfig(), TrainConfig())]


def test_importing_anomaly_changes_nothing_in_the_process():
    """`import anomaly` (and the CLI module) load no torch and set no environment variable:
    line PCs and Ray workers import it too."""
    import subprocess
    import sys

    # (OpenCV's own import sets LD_LIBRARY_PATH, so the inspection side is checked for our variable only)
    code = (
        "import os, sys; os.environ.pop('THP_MEM_ALLOC_ENABLE', None); before = dict(os.environ); "
        "import anomaly, anomaly.cli; assert dict(os.environ) == before; "
        "import anomaly.inspection.inspector, anomaly.scoring.local; assert 'THP_MEM_ALLOC_ENABLE' not in os.environ; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'skimage')], 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "anomaly", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("anomaly ")
