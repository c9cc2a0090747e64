"""What training costs: wall time and peak resident memory of `anomaly train`.

    python bench/train_cost.py                                   # the default on bottle
    python bench/train_cost.py --data FOLDER --repeat 4          # a set 4x larger (links)
    python bench/train_cost.py --allocator both                  # with and without the kept heap
    python bench/train_cost.py -- --image-size 320               # flags after -- go to anomaly train
    python bench/train_cost.py --quick                           # smoke run on the bundled samples

Each run is one `anomaly train` child process: its wall time (start-up included), its peak
resident memory (the kernel's count for that process), and from the model's config.json
the images trained on, the epochs run and the seconds of the training loop itself.
`--repeat K` links each good image K times into a scratch folder, to time a set K times
larger (a time, not an accuracy: repeats add no information; `--max-train-images` caps
what is used). `--allocator both` runs once with `THP_MEM_ALLOC_ENABLE=0` (no 2 MB pages,
freed memory not kept; anomaly/training/allocator.py) and once with the default.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATASETS, QUICK_TRAIN, SAMPLES, anomaly_cli, machine


def repeated(data: Path, times: int, workdir: Path) -> Path:
    """A folder linking each good training image of `data` `times` times."""
    train = data / "train" / "good" if (data / "train" / "good").is_dir() else data
    out = workdir / f"{data.name}-x{times}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for k in range(times):
        for path in sorted(train.iterdir()):
            if path.is_file():
                (out / f"{k}_{path.name}").symlink_to(path.resolve())
    return out


def main() -> None:
    argv = sys.argv[1:]
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATASETS / "mvtec_bottle", help="good images or MVTec-style folder")
    p.add_argument("--repeat", type=int, default=1, help="use each good image this many times")
    p.add_argument(
        "--allocator",
        choices=["default", "off", "both"],
        default="default",
        help="THP_MEM_ALLOC_ENABLE unset (default), =0 (off), or one run of each",
    )
    p.add_argument("--workdir", type=Path, default=Path("/tmp/anomaly-bench/train-cost"))
    p.add_argument("--quick", action="store_true", help="tiny training on sample_images/washer (smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.data, train_args = SAMPLES, QUICK_TRAIN + train_args
    if not a.data.is_dir():
        sys.exit(f"error: {a.data}: no such folder (see ../shared/datasets/README.md)")
    data = repeated(a.data, a.repeat, a.workdir) if a.repeat > 1 else a.data
    print(f"machine: {machine()}")
    print(f"command: python bench/train_cost.py {shlex.join(sys.argv[1:])}\n")
    print(
        "| data | allocator | images trained (held out) | epochs | train loop s | wall s | peak RSS MB |\n"
        "|---|---|---|---|---|---|---|"
    )
    settings = {"default": [{}], "off": [{"THP_MEM_ALLOC_ENABLE": "0"}], "both": [{"THP_MEM_ALLOC_ENABLE": "0"}, {}]}[
        a.allocator
    ]
    for env in settings:
        out = a.workdir / "model"
        _, wall, peak = anomaly_cli("train", data, "--out", out, "--quiet", *train_args, env=env)
        s = json.loads((out / "config.json").read_text())["summary"]
        label = "off (THP_MEM_ALLOC_ENABLE=0)" if env else "default"
        print(
            f"| {a.data.name} x{a.repeat} | {label} | {s['train_count']} ({s['holdout_count']}) | {s['epochs_run']} | "
            f"{s['train_seconds']:.0f} | {wall:.0f} | {peak:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
