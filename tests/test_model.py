"""The torch pipeline: shapes, residual maths, determinism, persistence."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anomaly.config import ModelConfig
from anomaly.training.model import InspectionModule, gaussian_kernel1d, separable_blur, ssim_map


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ae", "vae", "feature_ae", "patch_memory"])
def test_forward_shapes_and_score_is_map_max(kind):
    m = InspectionModule(ModelConfig(kind=kind, image_size=64, base_channels=8, latent_channels=4)).eval()
    x = torch.rand(2, 3, 64, 64)
    amap, score = m(x)
    assert amap.shape == (2, 1, 64, 64) and score.shape == (2,)
    assert torch.allclose(score, amap.amax(dim=(1, 2, 3)))
    if kind == "patch_memory":  # filled, not trained: tests/test_patch_memory.py
        return
    loss, parts = m.train().training_loss(x)
    assert loss.requires_grad and all(np.isfinite(v) for v in parts.values())


def test_ssim_identical_is_one_and_differs_for_noise():
    w = gaussian_kernel1d(1.5)
    assert w.numel() == 11 and torch.isclose(w.sum(), torch.tensor(1.0))
    a = torch.rand(1, 3, 32, 32)
    assert torch.allclose(ssim_map(a, a, w), torch.ones(1, 1, 32, 32), atol=1e-4)
    assert ssim_map(a, torch.rand(1, 3, 32, 32), w).mean() < 0.5


def test_blur_keeps_constants_and_spreads_a_peak():
    k = gaussian_kernel1d(2.0)
    const = torch.full((1, 1, 20, 20), 3.0)
    assert torch.allclose(separable_blur(const, k), const, atol=1e-5)
    peak = torch.zeros(1, 1, 21, 21)
    peak[0, 0, 10, 10] = 1.0
    out = separable_blur(peak, k)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-4) and out.max() < 0.1


@pytest.mark.slow
def test_vae_is_deterministic_in_eval_and_random_in_training():
    m = InspectionModule(ModelConfig(kind="vae", image_size=64, base_channels=8, latent_channels=4))
    x = torch.rand(2, 3, 64, 64)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    r1, _ = m.net(x)
    r2, _ = m.net(x)
    assert not torch.equal(r1, r2)


def test_feature_backbone_is_frozen_and_stays_in_eval_mode():
    m = InspectionModule(ModelConfig(kind="feature_ae", image_size=64))
    m.train()
    assert not m.features.training
    assert all(not p.requires_grad for p in m.features.parameters())
    assert any(p.requires_grad for p in m.net.parameters())


def test_multiscale_ssim_sees_large_smooth_changes_that_one_window_misses():
    from anomaly.training.model import gaussian_kernel1d, multiscale_ssim_residual

    window = gaussian_kernel1d(1.5)
    yy, xx = np.mgrid[0:128, 0:128] / 128.0
    texture = (0.5 + 0.2 * np.sin(xx * 60) * np.sin(yy * 60)).astype(np.float32)
    a = torch.from_numpy(np.repeat(texture[None, None], 3, axis=1))
    # a broad, smooth dent: brightness falls gently over a 60 px disc
    dent = np.exp(-(((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / (2 * 0.12**2))).astype(np.float32)
    b = a * torch.from_numpy(1 - 0.5 * dent)[None, None]
    single = multiscale_ssim_residual(a, b, window, 1)
    multi = multiscale_ssim_residual(a, b, window, 4)
    assert float(multiscale_ssim_residual(a, a, window, 4).abs().max()) < 1e-5
    centre = (slice(None), slice(None), slice(48, 80), slice(48, 80))
    assert float(multi[centre].mean()) > 2 * float(single[centre].mean())
    assert torch.all(multi >= single - 1e-6)  # the finest scale is one of those compared


def test_old_pixel_model_configs_keep_single_scale_ssim():
    from anomaly.config import ModelConfig, from_dict

    assert from_dict(ModelConfig, {"kind": "ae"}).ssim_levels == 1  # saved before multi-scale SSIM
    assert from_dict(ModelConfig, {"kind": "ae", "ssim_levels": 5}).ssim_levels == 5
    assert ModelConfig(kind="ae", image_size=64).ssim_scales == 3  # coarsest scale kept >= 16 px
    assert ModelConfig(kind="ae", image_size=256).ssim_scales == 5


def test_old_configs_keep_their_image_fitting_and_feature_border():
    from anomaly.config import ModelConfig, from_dict

    old = from_dict(ModelConfig, {"kind": "feature_ae"})
    assert (old.fit_mode, old.feature_border, old.edge_calibration) == ("letterbox", 0, False)
    new = ModelConfig()
    assert (new.fit_mode, new.feature_border, new.edge_calibration) == ("auto", 16, True)
    for bad in (8, -16, 256):
        with pytest.raises(ValueError, match="feature border"):
            ModelConfig(feature_border=bad)


@pytest.mark.slow
def test_mirrored_border_makes_edge_features_look_like_the_inside():
    """On a uniform part every feature should be the same; the convolutions' zero padding
    makes the edge cells differ, the mirrored margin removes most of that."""
    from anomaly.config import ModelConfig
    from anomaly.training.networks import FeatureExtractor

    x = torch.full((1, 3, 128, 128), 0.5)
    spread = {}
    for border in (0, 16):
        f = FeatureExtractor(ModelConfig(image_size=128, feature_border=border))(x)[0]
        m = border // 8  # margin cells around the image's 16 x 16 grid
        assert f.shape[-1] == 16 + 2 * m
        image_cells = f[:, m : m + 16, m : m + 16]
        centre = image_cells[:, 8, 8][:, None, None]
        spread[border] = float((image_cells - centre).pow(2).sum(0).sqrt()[0].mean())  # top row of cells
    assert spread[16] < 0.5 * spread[0]


def test_separable_convs_keep_the_pipeline_and_cut_its_work() -> None:
    import torch
    from torch import nn

    def work(m: InspectionModule) -> int:  # weights of the autoencoder and head: their multiply-adds per cell
        return sum(p.numel() for part in (m.net, m.head) for p in part.parameters())

    dense = InspectionModule(ModelConfig(image_size=64)).eval()
    light = InspectionModule(ModelConfig(image_size=64, separable_convs=True)).eval()
    ours = [c for part in (light.net, light.head) for c in part.modules() if isinstance(c, nn.Conv2d)]
    depthwise = [c for c in ours if c.groups > 1 and c.groups == c.in_channels]
    assert len(depthwise) == 4  # encoder, decoder, and the head's two 3x3 layers
    assert not [c for c in ours if c.kernel_size == (3, 3) and c.groups == 1]
    assert work(light) < 0.5 * work(dense)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        m_dense, s_dense = dense(x)
        m_light, s_light = light(x)
    assert m_light.shape == m_dense.shape and s_light.shape == s_dense.shape
    assert torch.isfinite(m_light).all()


def test_smoothing_defaults_by_family_and_old_configs_keep_theirs():
    from anomaly.config import ModelConfig, from_dict, to_dict

    assert ModelConfig().smoothing_sigma == 2.0  # feature maps: already upsampled from an 8-px grid
    assert ModelConfig(kind="patch_memory").smoothing_sigma == 2.0
    assert ModelConfig(kind="ae").smoothing_sigma == 4.0  # per-pixel residuals are noisier
    assert ModelConfig(smoothing_sigma=3.0).smoothing_sigma == 3.0
    assert from_dict(ModelConfig, {"kind": "feature_ae"}).smoothing_sigma == 4.0  # saved before the change
    assert from_dict(ModelConfig, to_dict(ModelConfig())).smoothing_sigma == 2.0  # the resolved value is saved
    with pytest.raises(ValueError, match="smoothing sigma"):
        ModelConfig(smoothing_sigma=0.0)
