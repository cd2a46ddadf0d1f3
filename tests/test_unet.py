"""UNetModelSwin: official key/shape manifest, fractional timesteps, shifted-window attention."""
import json
from pathlib import Path

import pytest
import torch

from cresshift.models.swin import SwinBlock, shift_mask, window_merge, window_partition
from cresshift.models.unet import UNetModelSwin, count_parameters, small_pixel_config

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "resshift_official_state_dicts.json"


def manifest():
    if not MANIFEST.is_file():
        pytest.skip(f"official manifest not found at {MANIFEST}")
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("name", ["realsr_swinunet_realesrgan256", "realsr_swinunet_realesrgan256_journal"])
def test_state_dict_matches_official_manifest(name):
    entry = manifest()[name]
    params = dict(entry["model_params"])
    if isinstance(params["out_channels"], str):  # "${autoencoder.params.embed_dim}"
        params["out_channels"] = entry["autoencoder_params"]["embed_dim"]
    with torch.device("meta"):
        net = UNetModelSwin(**params)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == entry["unet_state_dict"]
    assert len(ours) == 564


def tiny(**kw):
    cfg = small_pixel_config(model_channels=32, swin_embed_dim=32, num_head_channels=16, image_size=32, lq_size=32,
                             attention_resolutions=[32, 8], channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1])
    cfg.update(kw)
    torch.manual_seed(0)
    net = UNetModelSwin(**cfg).eval()
    # Official init zeroes every residual branch's last conv; give them weights so the test sees them.
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return net


def test_forward_shapes_and_fractional_time():
    net = tiny()
    x, lq = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = net(x, torch.tensor([3.0, 3.0]), lq=lq)
        b = net(x, torch.tensor([3.7, 3.7]), lq=lq)
        c = net(x, torch.tensor([4.0, 4.0]), lq=lq)
    assert a.shape == x.shape
    assert (a - b).abs().max() > 1e-6 and (b - c).abs().max() > 1e-6
    # The embedding is continuous in time: 3.7 lies between 3 and 4, close to neither exactly.
    assert float((b - a).norm()) < float((c - a).norm()) * 1.5
    with pytest.raises(ValueError, match="pass lq"):
        net(x, torch.tensor([1.0, 1.0]))


def test_other_sizes_recompute_the_shift_mask():
    net = tiny()
    x, lq = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert net(x, torch.tensor([2.0]), lq=lq).shape == (1, 3, 64, 96)
    with pytest.raises(ValueError, match="multiple of the window size"):
        net(torch.randn(1, 3, 36, 36), torch.tensor([2.0]), lq=torch.randn(1, 3, 36, 36))


def test_window_partition_round_trip():
    x = torch.randn(2, 5, 16, 24)
    w = window_partition(x, 8)
    assert w.shape == (2 * 2 * 3, 64, 5)
    torch.testing.assert_close(window_merge(w, 8, 16, 24), x, rtol=0, atol=0)
    # Window 1 of batch 0 is the top-middle 8x8 block, row-major tokens.
    torch.testing.assert_close(w[1], x[0, :, 0:8, 8:16].reshape(5, 64).T)


def naive_block(block, x):
    """Reference SW-MSA: full attention over the rolled map, restricted to pairs that share a
    window and a region of the roll, plus the relative position bias of their offset."""
    B, C, H, W = x.shape
    ws, s = block.window, block.shift
    h = block.norm1(x)
    h = torch.roll(h, (-s, -s), dims=(2, 3))
    tokens = h.flatten(2).transpose(1, 2)  # B, HW, C
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    win = (yy // ws) * (W // ws) + xx // ws

    def region(v, n):  # which of the three roll regions a rolled coordinate belongs to
        return torch.where(v < n - ws, 0, torch.where(v < n - s, 1, 2)) if s else torch.zeros_like(v)
    reg = region(yy, H) * 3 + region(xx, W)
    same_window = win[:, None] == win[None, :]
    same_region = reg[:, None] == reg[None, :]
    attn = block.attn
    heads = attn.heads
    qkv = attn.qkv(tokens).reshape(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    logits = q @ k.transpose(-1, -2) / (C // heads) ** 0.5
    dy = (yy % ws)[:, None] - (yy % ws)[None, :] + ws - 1
    dx = (xx % ws)[:, None] - (xx % ws)[None, :] + ws - 1
    bias = attn.relative_position_bias_table[dy * (2 * ws - 1) + dx].permute(2, 0, 1)
    logits = logits + bias + torch.where(same_region, 0.0, -100.0)
    logits = logits.masked_fill(~same_window, float("-inf"))
    out = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, H * W, C))
    out = torch.roll(out.transpose(1, 2).reshape(B, C, H, W), (s, s), dims=(2, 3))
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 4])
def test_swin_block_against_naive_reference(shift):
    torch.manual_seed(1)
    block = SwinBlock(dim=64, resolution=16, heads=4, window=8, shift=shift, mlp_ratio=2).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        x = torch.randn(2, 64, 16, 16)
        torch.testing.assert_close(block(x), naive_block(block, x), rtol=1e-4, atol=1e-4)
        x = torch.randn(1, 64, 24, 16)  # another size: the mask is recomputed
        torch.testing.assert_close(block(x), naive_block(block, x), rtol=1e-4, atol=1e-4)


def test_shift_mask_blocks_across_regions():
    m = shift_mask(16, 16, 8, 4)
    assert m.shape == (4, 64, 64)
    assert float(m[0].abs().max()) == 0  # the top-left window holds one region only
    assert float(m[3].min()) == -100.0  # the bottom-right window mixes four regions


def test_small_pixel_config():
    net = UNetModelSwin(**small_pixel_config())
    assert 1.0e6 <= count_parameters(net) <= 2.5e6
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), torch.tensor([0.0, 13.5]), lq=torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64)
