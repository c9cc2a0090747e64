"""Dirty "good" folders: how much do defective parts hidden in train/good cost?

    python bench/dirty.py                                  # bottle and kolektorsdd, 0 / 5 / 10 / 20 %
    python bench/dirty.py --categories kolektorsdd --fractions 0 0.1
    python bench/dirty.py --quick                          # smoke run on the bundled samples

For each category and fraction f, a copy of the category (symbolic links) gets f of its
defective test images (a seeded random choice, at least one when f > 0) moved into
train/good, and out of the test set with their masks. The default is trained on that
copy and evaluated on what is left of the test set, as bench/accuracy.py does (anything
after `--` goes to `anomaly train`). Each row also says how many of the planted images
the model's suspects list (`summary.suspects` in the model folder's config.json, most
suspect first) names among its first as-many-as-planted entries.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import markdown, measure
from common import DATASETS, QUICK_TRAIN, SAMPLES, machine

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def _link_tree(src: Path, dst: Path) -> None:
    """dst mirrors src with a symbolic link per file (folders are real)."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())


def planted_copy(category: Path, fraction: float, out: Path, seed: int = 0) -> list[str]:
    """A linked copy of `category` with `fraction` of its defect images moved into
    train/good (renamed `planted_<defect>_<name>`); returns the planted file names."""
    if out.exists():
        shutil.rmtree(out)
    _link_tree(category, out)
    defects = sorted(
        p for p in (out / "test").glob("*/*") if p.parent.name != "good" and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if fraction <= 0 or not defects:
        return []
    count = max(1, round(fraction * len(defects)))
    chosen = np.random.default_rng(seed).choice(len(defects), size=count, replace=False)
    planted = []
    for k in sorted(chosen):
        image = defects[k]
        name = f"planted_{image.parent.name}_{image.name}"
        image.rename(out / "train" / "good" / name)
        mask = out / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"
        if mask.exists() or mask.is_symlink():
            mask.unlink()
        planted.append(name)
    return planted


def suspects_found(model_dir: Path, planted: list[str]) -> str:
    """'k of n': planted images among the model's first n suspects."""
    if not planted:
        return "-"
    summary = json.loads((model_dir / "config.json").read_text())["summary"]
    if summary.get("suspects") is None:
        return "not screened"
    suspects = [Path(s["path"]).name for s in summary["suspects"]][: len(planted)]
    return f"{len(set(suspects) & set(planted))} of {len(planted)}"


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", type=Path, default=DATASETS)
    p.add_argument("--categories", nargs="*", default=["mvtec_bottle", "kolektorsdd"])
    p.add_argument("--fractions", nargs="*", type=float, default=[0.0, 0.05, 0.10, 0.20])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-bench/dirty"))
    p.add_argument("--json", type=Path, help="append each row as a JSON line to this file")
    p.add_argument("--quick", action="store_true", help="tiny training on sample_images/washer (smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        folders, fractions, train_args, runs = [SAMPLES], [0.1], QUICK_TRAIN + train_args, 10
    else:
        folders, fractions, runs = [a.datasets / c for c in a.categories], a.fractions, 60
    print(f"machine: {machine()}")
    print(f"command: python bench/dirty.py {shlex.join(sys.argv[1:])}\n")
    print(
        "| category | planted | image AUROC | pixel AUROC | AUPRO | F1 shipped | best F1 | defects caught "
        "| good rejected | train s (epochs) | train peak MB | ms b1 | planted among suspects |"
    )
    print("|---" * 13 + "|", flush=True)
    for category in folders:
        for fraction in fractions:
            copy = a.workdir / "data" / f"{category.name}-{fraction:g}"
            planted = planted_copy(category, fraction, copy)
            row = measure(copy, a.workdir / "models" / f"{fraction:g}", train_args, runs)
            row.update(
                category=category.name,
                fraction=fraction,
                planted=len(planted),
                suspects=suspects_found(a.workdir / "models" / f"{fraction:g}" / copy.name, planted),
            )
            cells = markdown(row).split(" | ")
            print(
                " | ".join([cells[0], f"{len(planted)} ({fraction:.0%})", *cells[1:]])[:-2] + f" | {row['suspects']} |",
                flush=True,
            )
            if a.json:
                with a.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
