"""The inspection pipeline as one torch module: what is trained is what is exported.

`InspectionModule.forward` takes the model input the runtime builds (float32
(N, 3, S, S), RGB, [0, 1], letterboxed by `anomaly.inspection.layout.fit_to_square`) and
returns the calibrated heatmap and image score. Everything in between lives here:
input normalisation, the network, the residual (L2, multi-scale SSIM, both, a feature
residual, a nearest-normal-patch distance, or the last two added), Gaussian smoothing
and the per-model normalisation set by calibration.
The ONNX export writes exactly this forward, so torch and ONNX cannot drift apart.

Calibrated scale: 0 is a typical normal pixel, 1.0 is the image threshold
(`IMAGE_THRESHOLD`); the pixel threshold (segmentation extent) is below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from anomaly.config import FEATURE_KINDS, ModelConfig
from anomaly.training.networks import (
    ConvAutoencoder,
    FeatureAutoencoder,
    FeatureExtractor,
    PatchMemory,
    SegmentationHead,
    without_margin,
)

IMAGE_THRESHOLD = 1.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def edge_rings(size: int) -> np.ndarray:
    """Each pixel's ring of a size x size frame: its distance to the nearest border."""
    i = np.arange(size)
    d = np.minimum(i, size - 1 - i)
    return np.minimum(d[:, None], d[None, :]).astype(np.int64)


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def separable_blur(x: torch.Tensor, kernel1d: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of every channel, reflect-padded so borders are not darkened."""
    c = x.shape[1]
    r = kernel1d.numel() // 2
    kh = kernel1d.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    kv = kernel1d.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kv, groups=c)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Structural similarity per pixel (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5)
    for images in [0, 1], averaged over channels: (N, 1, H, W)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = separable_blur(a, window), separable_blur(b, window)
    var_a = separable_blur(a * a, window) - mu_a**2
    var_b = separable_blur(b * b, window) - mu_b**2
    cov = separable_blur(a * b, window) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=1, keepdim=True)


def multiscale_ssim_residual(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, levels: int) -> torch.Tensor:
    """Dissimilarity (1 - SSIM) / 2 at `levels` dyadic scales, the largest at each
    pixel: level k compares both images average-pooled by 2^k (its map upsampled
    back), so the same 11-tap window sees ever larger structure. The maximum, not the
    mean, so a defect that shows at one scale only (a pit at the finest, a missing
    chunk at a coarse one) keeps its full weight. (N, 1, H, W), 0 = identical."""
    size = a.shape[-2:]
    worst = ((1.0 - ssim_map(a, b, window)) * 0.5).clamp_min(0.0)
    for k in range(1, levels):
        d = ((1.0 - ssim_map(F.avg_pool2d(a, 2**k), F.avg_pool2d(b, 2**k), window)) * 0.5).clamp_min(0.0)
        worst = torch.maximum(worst, F.interpolate(d, size=size, mode="bilinear", align_corners=False))
    return worst


class InspectionModule(nn.Module):
    """Pre-processing, network, residual, smoothing and calibration in one module."""

    # buffers (register_buffer), declared for the type checker
    input_mean: torch.Tensor
    input_std: torch.Tensor
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    residual_scale: torch.Tensor
    map_center: torch.Tensor
    map_scale: torch.Tensor
    pixel_threshold: torch.Tensor
    calibrated: torch.Tensor
    smooth_kernel: torch.Tensor
    ssim_window: torch.Tensor
    edge_center: torch.Tensor
    edge_scale: torch.Tensor
    edge_ring: torch.Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # mirrored margin cells around the feature grid (see feature_border)
        self.margin = margin = cfg.feature_border // cfg.feature_stride if cfg.kind in FEATURE_KINDS else 0
        if cfg.kind in FEATURE_KINDS:
            self.features: FeatureExtractor | None = FeatureExtractor(cfg)
            nfeat = self.features.channels
            memory = (
                nfeat,
                cfg.memory_size,
                cfg.patch_neighbourhood,
                margin,
                cfg.memory_search_dims,
                cfg.memory_search_blocks,
            )
            self.net: nn.Module = (
                PatchMemory(*memory)
                if cfg.kind == "patch_memory"
                else FeatureAutoencoder(nfeat, cfg.feature_hidden, cfg.feature_latent, cfg.separable_convs)
            )
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            self.head: SegmentationHead | None = (
                SegmentationHead(nfeat, separable=cfg.separable_convs, sees_features=cfg.head_sees_features)
                if cfg.segmentation_head
                else None
            )
            self.memory: PatchMemory | None = (
                PatchMemory(*memory) if cfg.kind == "feature_ae" and cfg.feature_memory else None
            )
        else:
            self.head = None
            self.memory = None
            self.features = None
            self.net = ConvAutoencoder(cfg, variational=cfg.kind == "vae")
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
            nfeat = 1
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1))
        # Learned statistics (set during training and calibration, saved with the weights).
        self.register_buffer("feature_mean", torch.zeros(1, nfeat, 1, 1))
        self.register_buffer("feature_std", torch.ones(1, nfeat, 1, 1))
        self.register_buffer("residual_scale", torch.ones(2))
        self.register_buffer("map_center", torch.zeros(()))
        self.register_buffer("map_scale", torch.ones(()))
        self.register_buffer("pixel_threshold", torch.tensor(0.5))
        self.register_buffer("calibrated", torch.zeros(()))
        self.register_buffer("smooth_kernel", gaussian_kernel1d(float(cfg.smoothing_sigma or 0)))
        self.register_buffer("ssim_window", gaussian_kernel1d(1.5))  # 11 taps
        if cfg.edge_calibration:  # per ring of the frame (see edge_rings): identity until calibrated
            self.register_buffer("edge_center", torch.zeros(cfg.image_size // 2))
            self.register_buffer("edge_scale", torch.ones(cfg.image_size // 2))
            self.register_buffer("edge_ring", torch.from_numpy(edge_rings(cfg.image_size)), persistent=False)

    # ----- pieces -------------------------------------------------------------------
    def inner(self, t: torch.Tensor) -> torch.Tensor:
        """A feature-grid map without the mirrored margin cells (see feature_border):
        on a texture that fills the frame, the edge cells, with half a neighbourhood of
        zero padding, were where good parts scored highest."""
        return without_margin(t, self.margin)

    def standardized_features(self, x: torch.Tensor) -> torch.Tensor:
        assert self.features is not None
        with torch.no_grad():
            f = self.features((x - self.input_mean) / self.input_std)
        return (f - self.feature_mean) / self.feature_std

    def feature_residual(self, f: torch.Tensor) -> torch.Tensor:
        """Squared difference between standardised features and their reconstruction,
        per channel: (N, C, g, g)."""
        return (self.net(f) - f).pow(2)

    def feature_maps(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean feature residual, head's defect probability) at the feature grid; with no
        head, the residual twice. For the patch memory: the nearest-patch distance twice."""
        if isinstance(self.net, PatchMemory):
            d = self.net(f)
            return d, d
        res = self.feature_residual(f)
        r = self.inner(res.mean(dim=1, keepdim=True))
        return r, (self.inner(torch.sigmoid(self.head(res, f))) if self.head is not None else r)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel reconstruction in [0, 1] (pixel autoencoders only)."""
        if self.features is not None:
            raise ValueError("a feature autoencoder reconstructs features, not pixels")
        recon, _ = self.net((x - self.input_mean) / self.input_std)
        return recon * self.input_std + self.input_mean

    def feature_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Feature models' unsmoothed maps at the input size (N,1,S,S): (feature residual,
        head probability, distance to the nearest remembered normal patch). Without a
        head the probability slot repeats the residual; without a memory the distance
        is None. One backbone pass feeds all three."""
        f = self.standardized_features(x)
        r, p = self.feature_maps(f)
        size = x.shape[-2:]

        def up(m: torch.Tensor) -> torch.Tensor:
            return F.interpolate(m, size=size, mode="bilinear", align_corners=False)

        r_up = up(r)
        return (
            r_up,
            (up(p) if self.head is not None else r_up),
            (up(self.memory(f)) if self.memory is not None else None),
        )

    def residual_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsmoothed residual maps (N,1,S,S): (L2, SSIM) for pixel models; for the
        feature models (feature residual, head probability) upsampled to the input size
        (the residual twice when there is no head)."""
        if self.features is not None:
            r, p, _ = self.feature_components(x)
            return r, p
        recon = self.reconstruct(x).clamp(0.0, 1.0)
        l2 = (recon - x).pow(2).mean(dim=1, keepdim=True)
        return l2, multiscale_ssim_residual(recon, x, self.ssim_window, self.cfg.ssim_scales)

    def evidence(self, r: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """The autoencoder's evidence from the residual and the head's probability:
        r * (1 + p), or r alone without a head."""
        return r * (1.0 + p) if self.head is not None else r

    def evidence_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Feature models, unsmoothed: the autoencoder's evidence (see `evidence`) and
        the memory distance (None without a memory)."""
        r, p, d = self.feature_components(x)
        return self.evidence(r, p), d

    def raw_map(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed residual before calibration. L2 and SSIM are each divided by their
        mean on normal images (set by calibration) so that both weigh the same. The
        head's defect probability p scales the feature residual by (1 + p): where the
        head recognises a defect the evidence counts up to twice, but the head alone
        cannot raise an alarm where the features were reconstructed well, so a look
        it learnt from synthetic defects never outvotes the residual on a good part.
        With a patch memory, the autoencoder's evidence and the memory distance are each
        divided by their own alarm level (image threshold minus median, from
        calibration) and added: two detectors that fail differently (one can
        reconstruct a defect, the other can lack a rare normal patch), each voting in
        units of its own threshold."""
        kind = self.cfg.residual_kind
        if kind == "feature":
            evidence, distance = self.evidence_parts(x)
            r = evidence if distance is None else evidence / self.residual_scale[0] + distance / self.residual_scale[1]
            return separable_blur(r, self.smooth_kernel)
        l2, ssim = self.residual_components(x)
        if kind == "l2":
            r = l2
        elif kind == "ssim":
            r = ssim
        else:
            r = 0.5 * (l2 / self.residual_scale[0] + ssim / self.residual_scale[1])
        return separable_blur(r, self.smooth_kernel)

    def training_loss(
        self,
        x: torch.Tensor,
        extra_terms: Mapping[str, tuple[nn.Module, float]] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction loss (plus KL for the VAE). `extra_terms` maps a name to a
        training-only module (reconstruction, input) -> loss and its weight, such as the
        sharpening terms of `anomaly.training.sharpening`; they are not part of the exported
        pipeline."""
        if isinstance(self.net, PatchMemory):
            raise ValueError("a patch memory is filled from training patches, not trained with a loss")
        if self.features is not None:
            loss = self.inner(self.feature_residual(self.standardized_features(x))).mean()
            return loss, {"recon": loss.item()}
        xn = (x - self.input_mean) / self.input_std
        recon_n, kl = self.net(xn)
        recon = recon_n * self.input_std + self.input_mean
        parts: dict[str, torch.Tensor] = {}
        if "l2" in self.cfg.loss:
            parts["l2"] = (recon - x).pow(2).mean()
        if "ssim" in self.cfg.loss:
            parts["ssim"] = (1.0 - ssim_map(recon, x, self.ssim_window)).mean()
        for name, (term, weight) in (extra_terms or {}).items():
            if weight > 0:
                parts[name] = weight * term(recon, x)
        loss = torch.stack(list(parts.values())).sum()
        if self.cfg.kind == "vae":
            parts["kl"] = kl
            loss = loss + self.cfg.kl_weight * kl
        return loss, {k: v.item() for k, v in parts.items()}

    # ----- inference ----------------------------------------------------------------
    def edge_calibrated(self, raw: torch.Tensor) -> torch.Tensor:
        """A raw map with each ring of the frame's outer band damped to the level of the
        band just inside (see ModelConfig.edge_calibration); unchanged without it."""
        if not self.cfg.edge_calibration:
            return raw
        return (raw - self.edge_center[self.edge_ring]) / self.edge_scale[self.edge_ring]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(anomaly_map (N,1,S,S), image_score (N,)) on the calibrated scale; the image
        score is the map's maximum, so a part fails exactly when some pixel of its
        heatmap reaches the image threshold."""
        m = (self.edge_calibrated(self.raw_map(x)) - self.map_center) / self.map_scale
        return m, m.amax(dim=(1, 2, 3))
