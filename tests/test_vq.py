"""VQModelTorch: official manifest, quantisation against brute force, round trip."""
import json
from pathlib import Path

import pytest
import torch

from cresshift.models.vq import VectorQuantizer, VQModelTorch

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "resshift_official_state_dicts.json"
TINY = dict(embed_dim=3, n_embed=64, ddconfig=dict(double_z=False, z_channels=3, resolution=32, in_channels=3,
                                                  out_ch=3, ch=32, ch_mult=[1, 2, 2], num_res_blocks=1,
                                                  attn_resolutions=[], dropout=0.0, padding_mode="zeros"))


def test_state_dict_matches_official_manifest():
    if not MANIFEST.is_file():
        pytest.skip(f"official manifest not found at {MANIFEST}")
    entry = json.loads(MANIFEST.read_text())["realsr_swinunet_realesrgan256"]
    with torch.device("meta"):
        vq = VQModelTorch(**entry["autoencoder_params"])
    assert {k: list(v.shape) for k, v in vq.state_dict().items()} == entry["autoencoder_state_dict"]


def tiny():
    torch.manual_seed(0)
    return VQModelTorch(**TINY).eval()


def test_shapes_and_quantised_decode():
    vq = tiny()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = vq.encode(x)
        assert z.shape == (2, 3, 8, 8)
        assert vq.decode(z).shape == (2, 3, 32, 32)
        # decode quantises: a perturbation that keeps every nearest code changes nothing.
        idx = vq.quantize.indices(z)
        z2 = z + 1e-4 * torch.randn_like(z)
        if torch.equal(vq.quantize.indices(z2), idx):
            torch.testing.assert_close(vq.decode(z2), vq.decode(z), rtol=0, atol=0)
        codes = vq.quantize(z)
        torch.testing.assert_close(vq.decode(codes, force_not_quantize=True), vq.decode(z), rtol=0, atol=0)
        assert not torch.allclose(vq.decode(z, force_not_quantize=True), vq.decode(z))


@pytest.mark.parametrize("chunk", [7, 4096])
def test_quantiser_is_nearest_neighbour(chunk):
    torch.manual_seed(1)
    q = VectorQuantizer(100, 3, chunk=chunk)
    z = torch.randn(2, 3, 9, 11)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    ref = torch.cdist(flat, q.embedding.weight).argmin(1).reshape(2, 9, 11)
    assert torch.equal(q.indices(z), ref)


def test_round_trip_bit_for_bit():
    vq = tiny()
    other = VQModelTorch(**TINY).eval()
    other.load_state_dict(vq.state_dict(), strict=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(vq(x), other(x))
