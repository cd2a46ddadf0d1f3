"""Official ResShift presets: network config, autoencoder config and discrete schedule together."""
from __future__ import annotations

import copy
from typing import Any

from ..schedules import PRESETS

__all__ = ["OFFICIAL_PRESETS", "get_preset", "official_config", "AUTOENCODER_FACTOR"]

_SWINUNET = {
    "image_size": 64, "in_channels": 3, "model_channels": 160, "out_channels": 3,
    "attention_resolutions": [64, 32, 16, 8], "dropout": 0, "channel_mult": [1, 2, 2, 4],
    "num_res_blocks": [2, 2, 2, 2], "conv_resample": True, "dims": 2, "use_fp16": False,
    "num_head_channels": 32, "use_scale_shift_norm": True, "resblock_updown": False, "swin_depth": 2,
    "swin_embed_dim": 192, "window_size": 8, "mlp_ratio": 4, "cond_lq": True, "lq_size": 64,
}
_VQ_F4 = {
    "embed_dim": 3, "n_embed": 8192,
    "ddconfig": {"double_z": False, "z_channels": 3, "resolution": 256, "in_channels": 3, "out_ch": 3,
                 "ch": 128, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [],
                 "dropout": 0.0, "padding_mode": "zeros"},
}
#: image pixels per latent pixel along each side of the VQ-f4 autoencoder (one 2x downsampling per extra level)
AUTOENCODER_FACTOR = 2 ** (len(_VQ_F4["ddconfig"]["ch_mult"]) - 1)


def _diffusion(name: str) -> dict[str, Any]:
    """The official ``diffusion.params``: the preset's eta table (``schedules.PRESETS``) and the x4 latent setting."""
    return {"sf": 4, "schedule_name": "exponential", **PRESETS[name], "predict_type": "xstart",
            "normalize_input": True, "latent_flag": True}


# name -> (official files it fits, configs). bicsr-x4's network config is assumed equal to v3's
# (the journal configuration); its checkpoint is checked key by key on load.
OFFICIAL_PRESETS: dict[str, dict[str, Any]] = {
    "realsr-x4-v1": {"files": "resshift_realsrx4_s15_v1.pth + autoencoder_vq_f4.pth",
                     "model": _SWINUNET, "autoencoder": _VQ_F4, "diffusion": _diffusion("realsr-x4-v1")},
    "realsr-x4-v2": {"files": "resshift_realsrx4_s15_v2.pth + autoencoder_vq_f4.pth",
                     "model": _SWINUNET, "autoencoder": _VQ_F4, "diffusion": _diffusion("realsr-x4-v2")},
    "realsr-x4-v3": {"files": "resshift_realsrx4_s4_v3.pth + autoencoder_vq_f4.pth",
                     "model": _SWINUNET, "autoencoder": _VQ_F4, "diffusion": _diffusion("realsr-x4-v3")},
    "bicsr-x4": {"files": "resshift_bicsrx4_s4.pth + autoencoder_vq_f4.pth",
                 "model": _SWINUNET, "autoencoder": _VQ_F4, "diffusion": _diffusion("bicsr-x4")},
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of an official preset's configs (``model``, ``autoencoder``, ``diffusion``)."""
    if name not in OFFICIAL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(OFFICIAL_PRESETS)}")
    return copy.deepcopy(OFFICIAL_PRESETS[name])


def official_config(name: str) -> dict[str, Any]:
    """The cresshift config of an official preset: its network, autoencoder and diffusion, tagged with ``preset``."""
    preset = get_preset(name)
    return {"model": {"class": "UNetModelSwin", "params": preset["model"]}, "autoencoder": preset["autoencoder"],
            "diffusion": preset["diffusion"], "preset": name}
