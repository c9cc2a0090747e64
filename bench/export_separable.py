"""Export a model folder with its feature-autoencoder and head 3x3 layers swapped for
depthwise-separable ones (untrained: a timing twin, its scores mean nothing), to time the
`--separable-convs` graph against the shipped model on the same memory and backbone:

    python bench/export_separable.py models/default /tmp/default-separable.onnx
    python bench/compare_onnx.py models/default.onnx /tmp/default-separable.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anomaly.training.detector import Detector  # noqa: E402
from anomaly.training.export import export_onnx  # noqa: E402
from anomaly.training.networks import conv3x3  # noqa: E402


def make_separable(seq: nn.Sequential) -> None:
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (3, 3):
            seq[i] = conv3x3(layer.in_channels, layer.out_channels, layer.stride[0], separable=True)


if __name__ == "__main__":
    model_dir, out = sys.argv[1], Path(sys.argv[2])
    det = Detector.load(model_dir)
    m = det.module
    for seq in (m.net.encoder, m.net.decoder) + ((m.head.net,) if m.head is not None else ()):
        make_separable(seq)
    export_onnx(det, out)
    print(f"exported {out} (separable 3x3 layers, untrained: for timing only)")
