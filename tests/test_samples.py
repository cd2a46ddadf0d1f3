"""The bundled photographs of the first run and the demo: exact crops of held-out test photographs."""
import pytest
import torch

from cresshift.demo.samples import BUNDLED_PHOTOS, EXAMPLE_PHOTO, comparison_panels, find_photo, side_by_side


def test_bundled_photos_are_crops_of_test_photographs():
    pytest.importorskip("skimage", reason="the photographs' sources ship in scikit-image / scikit-learn")
    pytest.importorskip("sklearn", reason="the photographs' sources ship in scikit-image / scikit-learn")
    from cresshift.data.photos import photo_catalog

    catalog = {p.name: p for p in photo_catalog()}
    for photo in BUNDLED_PHOTOS:
        source = catalog[photo.source]
        assert source.split == "test", photo
        hr = photo.hr()
        whole = source.tensor()
        crop = whole[:, photo.top: photo.top + hr.shape[1], photo.left: photo.left + hr.shape[2]]
        assert crop.shape == hr.shape and float((crop - hr).abs().max()) < 1e-6, photo.name
    assert min(find_photo(EXAMPLE_PHOTO).hr().shape[1:]) >= 512  # the first run: at least 128x128 LR


def test_find_photo_names_the_valid_ones():
    with pytest.raises(ValueError, match="astronaut"):
        find_photo("nope")


def test_comparison_captions_are_the_psnr_of_each_panel():
    from cresshift.metrics import psnr_y

    torch.manual_seed(0)
    hr = torch.rand(3, 32, 32) * 2 - 1
    lr = torch.nn.functional.avg_pool2d(hr[None], 4)[0]
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(-1, 1)
    panels = comparison_panels(lr, sr, hr, sf=4)
    assert [p.title for p in panels][2:] == ["cresshift", "HR"] and panels[3].captions == ()
    assert panels[2].captions == (f"PSNR-Y {float(psnr_y(sr[None], hr[None])):.2f} dB",)
    assert torch.equal(panels[0].image, lr.repeat_interleave(4, 1).repeat_interleave(4, 2))
    figure = side_by_side(panels, pad=5, font_size=10)
    assert figure.size == (5 + 4 * (32 + 5), 5 + 16 + 32 + 16 + 5)
