"""UNetModelSwin: official key/shape manifest, fractional timesteps, shifted-window attention, padding."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cresshift.models.swin import SwinBlock, shift_mask, window_merge, window_partition
from cresshift.models.unet import UNetModelSwin, count_parameters, small_pixel_config, timestep_embedding

# every official state-dict key and shape, with the configs: a copy of shared/reference/resshift_official_state_dicts.json
MANIFEST = Path(__file__).resolve().parent / "data" / "resshift_official_state_dicts.json"
OFFICIAL_CONFIGS = ["realsr_swinunet_realesrgan256", "realsr_swinunet_realesrgan256_journal"]


def manifest():
    return json.loads(MANIFEST.read_text())


def tiny_config(**overrides):
    """Same class, tiny widths: 32 px, three levels, Swin layers at 32 and 8 px (the middle one at 8 too)."""
    cfg = small_pixel_config(image_size=32, lq_size=32, model_channels=32, swin_embed_dim=32, num_head_channels=16,
                             attention_resolutions=[32, 8], channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1])
    cfg.update(overrides)
    return cfg


def tiny_net(**overrides):
    torch.manual_seed(0)
    net = UNetModelSwin(**tiny_config(**overrides)).eval()
    # The official init zeroes each ResBlock's last conv (the branch the time embedding feeds):
    # give those weights values so that the tests can see the timestep's effect.
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return net


# --- 1. the official parameter tree -------------------------------------------------------
@pytest.mark.parametrize("name", OFFICIAL_CONFIGS)
def test_state_dict_matches_official_manifest(name):
    entry = manifest()[name]
    params = dict(entry["model_params"])
    if isinstance(params["out_channels"], str):  # "${autoencoder.params.embed_dim}"
        params["out_channels"] = entry["autoencoder_params"]["embed_dim"]
    with torch.device("meta"):
        net = UNetModelSwin(**params)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    expected = entry["unet_state_dict"]
    assert len(expected) == 564
    assert set(ours) - set(expected) == set(), "keys the official checkpoints lack"
    assert set(expected) - set(ours) == set(), "official keys we lack"
    assert {k: s for k, s in ours.items() if s != expected[k]} == {}, "shape mismatches"
    assert count_parameters(net) == 118_593_583


def test_lq_feature_extractor_keys_when_lq_is_larger():
    """lq_size = 4 x image_size: two conv/SiLU/stride-2 stages, 16 -> 32 -> 64 channels."""
    net = tiny_net(lq_size=128)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items() if k.startswith("feature_extractor")}
    assert shapes == {"feature_extractor.0.weight": (16, 3, 3, 3), "feature_extractor.0.bias": (16,),
                      "feature_extractor.2.op.weight": (32, 16, 3, 3), "feature_extractor.2.op.bias": (32,),
                      "feature_extractor.3.weight": (32, 32, 3, 3), "feature_extractor.3.bias": (32,),
                      "feature_extractor.5.op.weight": (64, 32, 3, 3), "feature_extractor.5.op.bias": (64,)}
    assert net.state_dict()["input_blocks.0.0.weight"].shape[1] == 3 + 64
    with torch.no_grad():
        out = net(torch.randn(1, 3, 32, 32), torch.tensor([1.0]), lq=torch.randn(1, 3, 128, 128))
    assert out.shape == (1, 3, 32, 32)


# --- 2. forward, fractional time, conditioning errors -------------------------------------
def test_timestep_embedding_takes_fractions():
    emb = timestep_embedding(torch.tensor([3.7, 0.0]), 8)
    freqs = torch.tensor([10000 ** (-i / 4) for i in range(4)])
    torch.testing.assert_close(emb[0], torch.cat([torch.cos(3.7 * freqs), torch.sin(3.7 * freqs)]))
    torch.testing.assert_close(emb[1], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


def test_forward_shape_and_fractional_time():
    net = tiny_net()
    x, lq = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        at3 = net(x, torch.tensor([3.0, 3.0]), lq=lq)
        at37 = net(x, torch.tensor([3.7, 3.7]), lq=lq)
        at4 = net(x, torch.tensor([4.0, 4.0]), lq=lq)
        scalar = net(x, torch.tensor(3.7), lq=lq)
    assert at3.shape == x.shape
    assert (at37 - at3).abs().max() > 1e-4 and (at37 - at4).abs().max() > 1e-4
    # Smooth in time: 3.7 lies nearer 4 than 3.
    assert (at37 - at4).norm() < (at37 - at3).norm()
    torch.testing.assert_close(scalar, at37)  # a scalar timestep is broadcast over the batch


def test_conditioning_errors():
    net = tiny_net()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="pass lq="):
        net(x, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="takes no mask"):
        net(x, torch.tensor([1.0]), lq=x, mask=x[:, :1])
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 3, 30, 32), torch.tensor([1.0]), lq=torch.randn(1, 3, 30, 32))
    masked = tiny_net(cond_mask=True)
    assert masked.state_dict()["input_blocks.0.0.weight"].shape[1] == 3 + 4
    with pytest.raises(ValueError, match="needs mask="):
        masked(x, torch.tensor([1.0]), lq=x)
    with torch.no_grad():
        assert masked(x, torch.tensor([1.0]), lq=x, mask=x[:, :1]).shape == x.shape


# --- 3. shifted windows against a naive reference --------------------------------------------
def test_window_partition_round_trip():
    x = torch.randn(2, 5, 16, 24)
    windows = window_partition(x, 8)
    assert windows.shape == (2, 2 * 3, 64, 5)
    assert torch.equal(window_merge(windows, 8, 16, 24), x)
    # Window 1 of image 0 is the top-middle 8x8 block, tokens row-major.
    assert torch.equal(windows[0, 1], x[0, :, 0:8, 8:16].reshape(5, 64).T)


def test_official_shift_mask_fixtures():
    """The official mask (as its code computes it): bottom window row only, split by column."""
    small = shift_mask(4, 4, 2, 1, "official")  # read off the official calculate_mask(4x4, ws 2, shift 1)
    checker = torch.tensor([[0.0, -100, 0, -100], [-100, 0, -100, 0]] * 2)
    assert torch.equal(small, torch.stack([torch.zeros(4, 4), torch.zeros(4, 4), checker, checker]))
    m = shift_mask(16, 16, 8, 4, "official")
    i = torch.arange(64)
    split = torch.where((i[:, None] % 8 < 4) != (i[None, :] % 8 < 4), -100.0, 0.0)
    assert torch.equal(m[0], torch.zeros(64, 64)) and torch.equal(m[1], torch.zeros(64, 64))
    assert torch.equal(m[2], split) and torch.equal(m[3], split)
    # The textbook mask differs: its bottom-left window is split by rows.
    swin = shift_mask(16, 16, 8, 4, "swin")
    assert torch.equal(swin[2], torch.where((i[:, None] < 32) != (i[None, :] < 32), -100.0, 0.0))


def naive_block(block, x, layout):
    """Reference SW-MSA: attention over the whole padded, rolled map, with an explicit mask from
    window membership, region labels and padding, plus the relative position bias."""
    B, C, H, W = x.shape
    ws, s = block.window, block.shift
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    h = F.pad(block.norm1(x), (0, Wp - W, 0, Hp - H))
    h = torch.roll(h, (-s, -s), dims=(2, 3))
    tokens = h.flatten(2).transpose(1, 2)  # B, Hp*Wp, C
    yy, xx = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()

    def band(v, n):  # which strip of the rolled axis: the bulk, the last window minus shift, the wrapped part
        return torch.where(v < n - ws, 0, torch.where(v < n - s, 1, 2)) if s else torch.zeros_like(v)

    if layout == "swin":
        region = band(yy, Hp) * 3 + band(xx, Wp)
    else:  # official: the row band of (window row start + local column)
        region = band((yy // ws) * ws + xx % ws, Hp)
    same_window = ((yy // ws)[:, None] == (yy // ws)[None, :]) & ((xx // ws)[:, None] == (xx // ws)[None, :])
    padded_key = ((yy + s) % Hp >= H) | ((xx + s) % Wp >= W)
    attn, heads = block.attn, block.attn.heads
    q, k, v = attn.qkv(tokens).reshape(B, Hp * Wp, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(C // heads)
    dy = (yy % ws)[:, None] - (yy % ws)[None, :] + ws - 1
    dx = (xx % ws)[:, None] - (xx % ws)[None, :] + ws - 1
    logits = logits + attn.relative_position_bias_table[dy * (2 * ws - 1) + dx].permute(2, 0, 1)
    logits = logits + torch.where(region[:, None] == region[None, :], 0.0, -100.0)
    logits = logits.masked_fill(~same_window | padded_key[None, :], float("-inf"))
    out = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, Hp * Wp, C))
    out = torch.roll(out.transpose(1, 2).reshape(B, C, Hp, Wp), (s, s), dims=(2, 3))[:, :, :H, :W]
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("layout", ["official", "swin"])
@pytest.mark.parametrize("shift", [0, 4])
def test_swin_block_against_naive_reference(layout, shift):
    torch.manual_seed(1)
    block = SwinBlock(dim=32, resolution=16, heads=2, window=8, shift=shift, mlp_ratio=2, mask_layout=layout).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        # 16x16 (training size), 24x16 (another multiple), 12x20 and 5x9 (padded inside the block).
        for size in [(16, 16), (24, 16), (12, 20), (5, 9)]:
            x = torch.randn(2, 32, *size)
            torch.testing.assert_close(block(x), naive_block(block, x, layout), rtol=1e-5, atol=1e-5)


# --- 4. sizes that are not multiples of the window ---------------------------------------------
def test_unet_pads_inside_swin_for_other_sizes():
    net = tiny_net()
    with torch.no_grad():
        for size in [(40, 40), (36, 20), (64, 96)]:  # 40 px: 10x10 features at the 8-px-window level
            x, lq = torch.randn(1, 3, *size), torch.randn(1, 3, *size)
            out = net(x, torch.tensor([2.0]), lq=lq)
            assert out.shape == x.shape and torch.isfinite(out).all()


def test_loaded_mask_layout_is_adopted():
    """A checkpoint trained with the textbook mask keeps it at every size after loading (and back)."""
    x, lq, t = torch.randn(1, 3, 48, 40), torch.randn(1, 3, 48, 40), torch.tensor([5.5])
    swin_net = tiny_net(shift_mask_layout="swin")
    official_net = tiny_net()
    with torch.no_grad():
        before = official_net(x, t, lq=lq)
        assert (swin_net(x, t, lq=lq) - before).abs().max() > 1e-5  # the layouts really differ
        official_net.load_state_dict(swin_net.state_dict(), strict=True)
        torch.testing.assert_close(official_net(x, t, lq=lq), swin_net(x, t, lq=lq), rtol=0, atol=0)
        swin_net.load_state_dict(tiny_net().state_dict(), strict=True)
        torch.testing.assert_close(swin_net(x, t, lq=lq), before, rtol=0, atol=0)


# --- 5. the small pixel-space configuration ----------------------------------------------
def test_small_pixel_config():
    torch.manual_seed(0)
    net = UNetModelSwin(**small_pixel_config())
    assert 1.0e6 <= count_parameters(net) <= 2.5e6
    x, lq = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x, torch.tensor([0.0, 13.5]), lq=lq)
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    assert small_pixel_config(num_res_blocks=[2, 2, 2])["num_res_blocks"] == [2, 2, 2]


def test_norm_groups_is_a_setting_not_a_weight():
    """norm_groups changes every GroupNorm's grouping and nothing in the state dict; 32 is the official default."""
    torch.manual_seed(0)
    official = UNetModelSwin(**small_pixel_config(norm_groups=32))
    narrow = UNetModelSwin(**small_pixel_config(norm_groups=8))
    norms = [m for m in narrow.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 8 for m in norms)
    default = UNetModelSwin(**{k: v for k, v in small_pixel_config().items() if k != "norm_groups"})
    assert all(m.num_groups == 32 for m in default.modules() if isinstance(m, torch.nn.GroupNorm))
    sd = official.state_dict()
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in narrow.state_dict().items()}
    narrow.load_state_dict(sd, strict=True)
    x, lq = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (official(x, torch.tensor([3.0]), lq=lq) - narrow(x, torch.tensor([3.0]), lq=lq)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="norm_groups 12 must divide"):
        UNetModelSwin(**small_pixel_config(norm_groups=12))
