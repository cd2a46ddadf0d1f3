"""VQModelTorch: official keys/shapes, shapes and quantised decoding, nearest-code search, round trips."""
from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cresshift.models.vq as vq_module
from cresshift.models.vq import AttnBlock, VectorQuantizer, VQModelTorch

_HERE = Path(__file__).resolve()
# every official state-dict key and shape, with the configs: a copy of shared/reference/resshift_official_state_dicts.json
MANIFEST = _HERE.parent / "data" / "resshift_official_state_dicts.json"

# The official autoencoder_vq_f4.pth configuration (identical for the v1-v3 and journal models).
OFFICIAL = dict(embed_dim=3, n_embed=8192, ddconfig=dict(
    double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4],
    num_res_blocks=2, attn_resolutions=[], dropout=0.0, padding_mode="zeros"))

# A tiny f4 model for compute tests (ch 32 keeps GroupNorm(32) valid).
TINY = dict(embed_dim=3, n_embed=64, ddconfig=dict(
    double_z=False, z_channels=3, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2, 2],
    num_res_blocks=1, attn_resolutions=[], dropout=0.0, padding_mode="zeros"))


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _official_on_meta() -> VQModelTorch:
    with torch.device("meta"):
        return VQModelTorch(**copy.deepcopy(OFFICIAL))


def _tiny(seed: int = 0, **overrides) -> VQModelTorch:
    torch.manual_seed(seed)
    cfg = copy.deepcopy(TINY)
    cfg["ddconfig"].update(overrides)
    return VQModelTorch(**cfg).eval()


# ------------------------------------------------------------------------------------------------
# 1. Official keys and shapes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["realsr_swinunet_realesrgan256", "realsr_swinunet_realesrgan256_journal"])
def test_state_dict_matches_official_manifest(entry):
    official = _manifest()[entry]
    with torch.device("meta"):
        model = VQModelTorch(**official["autoencoder_params"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = official["autoencoder_state_dict"]
    assert sorted(set(ours) - set(expected)) == [] and sorted(set(expected) - set(ours)) == []
    assert ours == expected
    assert len(ours) == 205


def test_official_config_size_and_spot_shapes():
    # Independent of the manifest file: the official tensor count, parameter count and a few shapes.
    sd = _official_on_meta().state_dict()
    assert len(sd) == 205
    assert sum(math.prod(v.shape) for v in sd.values()) == 55_322_782
    spots = {"encoder.conv_in.weight": (128, 3, 3, 3), "encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
             "encoder.down.1.downsample.conv.weight": (256, 256, 3, 3), "encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
             "encoder.conv_out.weight": (3, 512, 3, 3), "quantize.embedding.weight": (8192, 3),
             "quant_conv.weight": (3, 3, 1, 1), "post_quant_conv.weight": (3, 3, 1, 1),
             "decoder.conv_in.weight": (512, 3, 3, 3), "decoder.up.0.block.0.conv1.weight": (128, 256, 3, 3),
             "decoder.up.2.upsample.conv.weight": (512, 512, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3)}
    for key, shape in spots.items():
        assert tuple(sd[key].shape) == shape, key
    # The coarsest encoder level and the finest decoder level have no resampler; no attention at any level.
    assert not any(k.startswith(("encoder.down.2.downsample", "decoder.up.0.upsample")) for k in sd)
    assert not any(".attn." in k for k in sd)


def test_attention_levels_follow_attn_resolutions():
    model = _tiny(attn_resolutions=[16])
    keys = set(model.state_dict())
    # Resolution 16 is encoder level 1 (one block) and decoder level 1 (two blocks).
    assert {"encoder.down.1.attn.0.q.weight", "decoder.up.1.attn.0.k.weight", "decoder.up.1.attn.1.v.weight"} <= keys
    assert not any(k.startswith(("encoder.down.0.attn", "encoder.down.2.attn", "decoder.up.0.attn",
                                 "decoder.up.2.attn")) for k in keys)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_bad_padding_mode_is_rejected():
    with pytest.raises(ValueError, match="padding_mode"):
        _tiny(padding_mode="mirror")


# ------------------------------------------------------------------------------------------------
# 2. Shapes and quantised decoding
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,latent", [((32, 32), (8, 8)), ((36, 28), (9, 7))])
def test_encode_decode_shapes(size, latent):
    model = _tiny()
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (2, 3, *latent)
        assert model.decode(z).shape == (2, 3, *size)
        assert model(x).shape == (2, 3, *size)
    assert model.downsample_factor == 4


def test_decode_quantises_first():
    model = _tiny()
    with torch.no_grad():
        z = model.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
        codes = model.quantize(z)
        idx = model.quantize.indices(z)
        # Moving every vector half-way towards its nearest code keeps that code the nearest one.
        z_moved = z + 0.5 * (codes - z)
        assert not torch.equal(z_moved, z)
        assert torch.equal(model.quantize.indices(z_moved), idx)
        assert torch.equal(model.decode(z_moved), model.decode(z))
        # ... whereas without quantisation the move does change the output.
        assert not torch.allclose(model.decode(z_moved, force_not_quantize=True),
                                  model.decode(z, force_not_quantize=True))
        # An exact codebook field decodes identically with and without quantisation.
        assert torch.equal(model.decode(codes), model.decode(codes, force_not_quantize=True))
        assert torch.equal(model.decode(z), model.decode_code(idx))
        assert not torch.allclose(model.decode(z), model.decode(z, force_not_quantize=True))
        # Random code fields, not just those the encoder produces.
        field = model.quantize.embed_code(torch.randint(0, 64, (1, 5, 6)))
        assert torch.equal(model.decode(field), model.decode(field, force_not_quantize=True))


def test_quantiser_values_are_codebook_entries_with_straight_through_gradient():
    q = VectorQuantizer(50, 3)
    z = torch.randn(1, 3, 4, 5, requires_grad=True)
    out = q(z)
    expected = q.embedding.weight[q.indices(z)].movedim(-1, 1)
    assert torch.equal(out.detach(), expected.detach())
    out.mul(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    assert torch.equal(z.grad, torch.arange(z.numel(), dtype=z.dtype).reshape(z.shape))
    assert q.embedding.weight.grad is None


# ------------------------------------------------------------------------------------------------
# 3. Nearest-code search against brute force
# ------------------------------------------------------------------------------------------------
def _brute_force(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    flat = z.movedim(1, -1).reshape(-1, z.shape[1])
    dist = torch.cdist(flat, codebook, compute_mode="donot_use_mm_for_euclid_dist")
    return dist.argmin(dim=1).reshape(z.shape[0], *z.shape[2:])


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantiser_is_nearest_neighbour(chunk_size, dtype):
    torch.manual_seed(1)
    q = VectorQuantizer(300, 3, chunk_size=chunk_size).to(dtype)
    with torch.no_grad():
        q.embedding.weight.normal_()
    z = torch.randn(2, 3, 9, 11, dtype=dtype)
    assert torch.equal(q.indices(z), _brute_force(z, q.embedding.weight.detach()))


def test_default_chunking_splits_large_latents(monkeypatch):
    # Shrink the distance budget so the default chunking cuts 99 positions into 2-position blocks.
    monkeypatch.setattr(vq_module, "_DISTANCE_CHUNK_ELEMENTS", 2 * 300 + 1)
    torch.manual_seed(2)
    q = VectorQuantizer(300, 4)
    assert q._positions_per_chunk() == 2
    with torch.no_grad():
        q.embedding.weight.normal_()
    seen = []
    real_argmin = torch.Tensor.argmin
    monkeypatch.setattr(torch.Tensor, "argmin", lambda self, *a, **k: seen.append(self.shape) or
                        real_argmin(self, *a, **k))
    z = torch.randn(1, 4, 9, 11)
    got = q.indices(z)
    monkeypatch.undo()
    assert max(s[0] for s in seen) == 2 and all(s[1] == 300 for s in seen)
    assert torch.equal(got, _brute_force(z, q.embedding.weight.detach()))


def test_attention_matches_explicit_softmax():
    torch.manual_seed(3)
    block = AttnBlock(32)
    x = torch.randn(2, 32, 5, 3, dtype=torch.float64)
    block = block.double()
    h = block.norm(x)
    q, k, v = (m(h).flatten(2) for m in (block.q, block.k, block.v))  # [B, C, N]
    weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(32), dim=-1)
    ref = x + block.proj_out(torch.einsum("bij,bcj->bci", weights, v).reshape(x.shape))
    torch.testing.assert_close(block(x), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# 4. Save / load round trip
# ------------------------------------------------------------------------------------------------
def test_round_trip_bit_for_bit():
    source, target = _tiny(seed=0), _tiny(seed=1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert not torch.equal(source(x), target(x))
        buffer = io.BytesIO()
        torch.save(source.state_dict(), buffer)
        buffer.seek(0)
        result = target.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(source(x), target(x))
        assert torch.equal(source.encode(x), target.encode(x))
        z = source.encode(x)
        assert torch.equal(source.decode(z, force_not_quantize=True), target.decode(z, force_not_quantize=True))


def test_matches_functional_reference_of_the_resampling_layers():
    # Downsample pads only right/bottom (asymmetric); Upsample is nearest x2 then a 3x3 conv.
    model = _tiny()
    down = model.encoder.down[0].downsample
    up = model.decoder.up[1].upsample
    x = torch.randn(1, 32, 7, 6)
    with torch.no_grad():
        ref_down = F.conv2d(F.pad(x, (0, 1, 0, 1)), down.conv.weight, down.conv.bias, stride=2)
        assert torch.equal(down(x), ref_down)
        assert down(x).shape == (1, 32, 3, 3)
        y = torch.randn(1, 64, 3, 4)
        ref_up = F.conv2d(y.repeat_interleave(2, 2).repeat_interleave(2, 3), up.conv.weight, up.conv.bias, padding=1)
        torch.testing.assert_close(up(y), ref_up, rtol=0, atol=1e-6)
