"""Experiment: does texture energy find same-gray contamination on grass and gravel?

    python bench/energy_features.py [bench/textures.py arguments]

The finest tapped block (block 2, 1/4 of the working size) is averaged onto the 1/8 grid,
and its features are signed: a fine stochastic texture and a smooth blob can average to
similar values. This script adds the local mean of |f| of that block (24 more channels:
texture energy, which a smooth blob lacks) by patching anomaly.training.networks.FeatureExtractor,
then runs bench/textures.py with the given arguments; the patched extractor is trained,
exported and evaluated like the default. An experiment, kept to reproduce its row in
BENCHMARKS.md 1b; anomaly/ is unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def patch_extractor() -> None:
    """FeatureExtractor with the finest tap's local mean of |f| added after its mean."""
    import torch
    import torch.nn.functional as F

    from anomaly.training import networks

    original_init = networks.FeatureExtractor.__init__

    def init(self, cfg) -> None:
        original_init(self, cfg)
        channels = list(self.block_channels)
        channels[0] *= 2  # the finest block: its mean and its energy
        self.block_channels = tuple(channels)
        self.channels = sum(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.tapped_outputs(x)
        finest = taps[0]
        energy = F.avg_pool2d(finest.abs(), kernel_size=finest.shape[-1] // self.grid)
        return torch.cat([self.to_grid(finest), energy] + [self.to_grid(t) for t in taps[1:]], dim=1)

    networks.FeatureExtractor.__init__ = init
    networks.FeatureExtractor.forward = forward


def main() -> None:
    patch_extractor()
    import textures

    sys.argv = ["bench/textures.py"] + sys.argv[1:]
    textures.main()


if __name__ == "__main__":
    main()
