"""Metrics: PSNR/SSIM on Y against hand-computed values and independent references; honest LPIPS."""
import math

import numpy as np
import pytest
import torch

from cresshift.metrics import (LPIPS_BACKBONE_FILES, LPIPSMetric, evaluate_pair, psnr_rgb, psnr_y, quantize,
                               rgb_to_y, ssim_y)


def _from_levels(levels: np.ndarray) -> torch.Tensor:
    """uint8 levels [B, 3, H, W] -> tensor in [-1, 1] that quantises back to exactly those levels."""
    return torch.from_numpy(np.asarray(levels, dtype=np.float64) / 127.5 - 1).float()


def _np_y(img: torch.Tensor) -> np.ndarray:
    """Independent numpy Y: uint8-round, then MATLAB coefficients, [B, H, W] float64."""
    levels = np.clip(np.round((img.double().numpy() + 1) / 2 * 255), 0, 255)
    r, g, b = levels[:, 0], levels[:, 1], levels[:, 2]
    return (65.481 * r + 128.553 * g + 24.966 * b) / 255.0 + 16.0


@pytest.fixture(scope="module")
def photo_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A real 96x128 crop (HR) and a degraded version of it (blur + noise) in [-1, 1]."""
    skimage_data = pytest.importorskip("skimage.data")
    hr = torch.from_numpy(skimage_data.chelsea()[100:196, 150:278].astype(np.float64) / 127.5 - 1)
    hr = hr.permute(2, 0, 1)[None].float()
    g = torch.Generator().manual_seed(1)
    blur = torch.nn.functional.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False)
    sr = (blur + 0.03 * torch.randn(hr.shape, generator=g)).clamp(-1, 1)
    return sr, hr


def test_quantize_matches_uint8_saving():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.2, -3.0])
    assert quantize(x).tolist() == [0, 0, 128, 191, 255, 255, 0]  # round((x+1)/2*255), clipped


def test_y_formula_on_pixels():
    levels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [10, 200, 37]])
    img = _from_levels(levels.T[None, :, :, None])  # [1, 3, 6, 1]
    y = rgb_to_y(img, quantized=True)[0, :, 0]
    expected = [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0,
                16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 37) / 255]
    np.testing.assert_allclose(y.numpy(), expected, rtol=0, atol=1e-9)
    # Without quantisation the formula is applied to the exact values.
    half = torch.zeros(1, 3, 1, 1)  # (0+1)/2 = 0.5 in [0, 1] on every channel
    assert float(rgb_to_y(half)[0, 0, 0]) == pytest.approx(16 + 0.5 * 219, abs=1e-9)


def test_psnr_of_constant_offset_is_exact():
    hr = _from_levels(np.full((2, 3, 16, 20), 100))
    sr = _from_levels(np.full((2, 3, 16, 20), 104))
    # RGB: every difference is 4 levels, MSE = 16.
    np.testing.assert_allclose(psnr_rgb(sr, hr).numpy(), 10 * math.log10(255 ** 2 / 16), rtol=1e-12)
    # Y: the offset is 4 * (65.481 + 128.553 + 24.966) / 255 = 4 * 219 / 255 on every pixel.
    dy = 4 * 219 / 255
    np.testing.assert_allclose(psnr_y(sr, hr).numpy(), 10 * math.log10(255 ** 2 / dy ** 2), rtol=1e-12)
    assert psnr_y(sr, hr).dtype == torch.float64 and psnr_y(sr, hr).shape == (2,)


def test_psnr_identical_is_inf_and_per_image():
    hr = torch.rand(3, 3, 12, 12) * 2 - 1
    sr = hr.clone()
    sr[1] = (sr[1] + 0.1).clamp(-1, 1)
    p = psnr_y(sr, hr)
    assert math.isinf(p[0]) and math.isinf(p[2]) and math.isfinite(p[1])
    # Differences below half a level vanish in the uint8 rounding: still identical.
    tiny = hr + 0.1 / 127.5 * torch.sign(torch.randn_like(hr))
    assert bool(torch.isinf(psnr_rgb(_from_levels(quantize(hr).numpy()), _from_levels(quantize(hr).numpy()))).all())
    assert psnr_rgb(tiny, hr).min() > 40


def test_psnr_and_ssim_match_skimage(photo_pair):
    metrics = pytest.importorskip("skimage.metrics")
    sr, hr = photo_pair
    y_sr, y_hr = _np_y(sr)[0], _np_y(hr)[0]
    ref_psnr = metrics.peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    assert float(psnr_y(sr, hr)[0]) == pytest.approx(ref_psnr, abs=1e-9)
    ref_ssim = metrics.structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    ours = float(ssim_y(sr, hr)[0])
    assert ours == pytest.approx(ref_ssim, abs=1e-3)
    assert 0.2 < ours < 0.99  # a real, non-trivial comparison


def test_psnr_rgb_matches_skimage(photo_pair):
    metrics = pytest.importorskip("skimage.metrics")
    sr, hr = photo_pair
    ref = metrics.peak_signal_noise_ratio(quantize(hr).numpy(), quantize(sr).numpy(), data_range=255)
    assert float(psnr_rgb(sr, hr)[0]) == pytest.approx(ref, abs=1e-9)


def test_ssim_is_one_for_identical_and_decreases_with_noise(photo_pair):
    _, hr = photo_pair
    hr = hr.repeat(4, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(hr.shape, generator=g)
    sr = hr.clone()
    for i, sigma in enumerate([0.0, 0.02, 0.05, 0.15]):
        sr[i] = (hr[i] + sigma * noise[i]).clamp(-1, 1)
    s = ssim_y(sr, hr)
    assert s.shape == (4,) and s.dtype == torch.float64
    assert float(s[0]) == pytest.approx(1.0, abs=1e-6)
    assert bool((s[1:] < s[:-1]).all()), s


def test_crop_border_ignores_exactly_the_border(photo_pair):
    hr, _ = photo_pair
    sr = hr.clone()
    sr[..., :2, :] = -sr[..., :2, :]  # spoil the top two rows and the right column only
    sr[..., :, -1] = 1.0
    assert torch.isfinite(psnr_y(sr, hr)).all() and torch.isfinite(psnr_y(sr, hr, crop_border=1)).all()
    assert torch.isinf(psnr_y(sr, hr, crop_border=2)).all() and torch.isinf(psnr_rgb(sr, hr, crop_border=2)).all()
    assert torch.allclose(ssim_y(sr, hr, crop_border=2), torch.ones(len(hr), dtype=torch.float64))
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr_y(sr, hr, crop_border=hr.shape[-1])


def test_ssim_rejects_images_smaller_than_the_window():
    x = torch.zeros(1, 3, 10, 40)
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(x, x)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))


def test_evaluate_pair_returns_per_image_values(photo_pair):
    sr, hr = photo_pair
    out = evaluate_pair(sr.repeat(2, 1, 1, 1), hr.repeat(2, 1, 1, 1))
    assert set(out) == {"psnr_y", "psnr_rgb", "ssim_y"}
    assert all(v.shape == (2,) for v in out.values())


# --- LPIPS -------------------------------------------------------------------------------------


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, no CRESSHIFT_LPIPS_BACKBONE, and any download attempt fails loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CRESSHIFT_LPIPS_BACKBONE", raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("LPIPSMetric tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_without_backbone_is_unavailable_and_says_how(offline_hub, net):
    m = LPIPSMetric(net)
    assert m.available is False
    assert LPIPS_BACKBONE_FILES[net] in m.reason and str(offline_hub) in m.reason
    assert "\n" not in m.reason
    with pytest.raises(RuntimeError, match=LPIPS_BACKBONE_FILES[net]):
        m(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    x = torch.zeros(1, 3, 16, 16)
    assert "lpips" not in evaluate_pair(x, x, lpips=m)  # no number when it cannot be computed


def test_lpips_explicit_missing_path_is_reported(offline_hub, tmp_path):
    m = LPIPSMetric("alex", backbone=tmp_path / "nowhere.pth")
    assert not m.available and "nowhere.pth" in m.reason


def test_lpips_random_backbone_is_labelled_and_behaves(offline_hub):
    m = LPIPSMetric("alex", backbone="random")
    assert m.available and "random" in m.name
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    same = m(a, a)
    diff = m(a, b)
    assert same.shape == (2,) and same.dtype == torch.float64
    assert torch.equal(same, torch.zeros(2, dtype=torch.float64))
    assert bool((diff > 0).all())


def test_lpips_loads_a_backbone_file_from_the_hub_cache(offline_hub):
    torchvision = pytest.importorskip("torchvision")
    # A (random) torchvision AlexNet `features` state dict stands in for the ImageNet file.
    g = torch.Generator().manual_seed(3)
    sd = {f"features.{k}": torch.randn(v.shape, generator=g)
          for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    offline_hub.mkdir(parents=True)
    torch.save(sd, offline_hub / LPIPS_BACKBONE_FILES["alex"])
    m = LPIPSMetric("alex")
    assert m.available and m.name == "LPIPS-alex" and m.reason == ""
    net = m._model.net  # type: ignore[union-attr]
    torch.testing.assert_close(net.slice1[0].weight, sd["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(getattr(net.slice5, "10").bias, sd["features.10.bias"], rtol=0, atol=0)
    x = torch.zeros(1, 3, 32, 32)
    assert "lpips" in evaluate_pair(x, x, lpips=m)


def test_lpips_unusable_file_is_reported_not_raised(offline_hub, monkeypatch, tmp_path):
    bad = tmp_path / "alexnet-owt-7be5be79.pth"
    bad.write_text("not a checkpoint")
    monkeypatch.setenv("CRESSHIFT_LPIPS_BACKBONE", str(tmp_path))  # a folder holding the file
    m = LPIPSMetric("alex")
    assert not m.available and str(bad) in m.reason
