"""Fine-tuning ResShift with discrete or continuous time (the paper's §3.1), one process or DDP.

Loss: ``NetworkDenoiser.loss``, the MSE between x0_hat and x0, where x0_hat comes from the same
call sampling uses, at the denoiser's forward marginal x_t = x0 + eta (y - x0) + kappa sqrt(eta) z.
``time="discrete"`` draws the chain index k uniformly (t = k/T, the official recipe);
``time="continuous"`` draws t ~ U(1/T, 1) and takes eta(t) from a continuous schedule (the
paper's recipe); the network is fed s = T t - 1 either way. ``t_sampler="loss-aware"``
(continuous only) draws t by importance sampling and weights each sample's loss by its inverse
density (``t_sampler.py``).

Diagnostics: every ``log.jsonl`` training line carries the mean loss per t bin (15 bins over
(1/T, 1]) and the gradient norm; ``tensorboard=True`` writes the same and validation metrics
and images under ``OUT/tensorboard`` (``board.py``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..data.io import atomic_write, lock_folder, remove_stale_temps, strict_json
from ..models.denoiser import NetworkDenoiser
from ..models.pipeline import SRPipeline, build_pipeline, read_cresshift_file, read_official_files, upsample_lr
from ..models.presets import AUTOENCODER_FACTOR, official_config
from ..models.unet import small_pixel_config
from ..runtime import Distributed, versions
from ..schedules import ExactSchedule, ExpAlphaSchedule, ResShiftSchedule
from .board import Board, tensorboard_available
from .checkpoint import (InterruptGuard, NonFiniteTrainingError, check_resumable, first_nonfinite, nonfinite_weights,
                         read_state, write_state)
from .data import CropSampler, Degradation, load_folder, load_paired
from .t_sampler import T_SAMPLERS, LossAwareTSampler, TBinLoss

__all__ = ["TrainSettings", "Trainer", "train", "NonFiniteTrainingError"]

_GREY_LEVEL_SQ = (2 / 255) ** 2  # one 8-bit grey level, squared, on the [-1, 1] scale


# Network pixels of mirrored context around the image at sampling for from-scratch pixel models
# (SRPipeline's context_pad): half the small network's size multiple (32), so sizes stay valid.
SCRATCH_CONTEXT_PAD = 16


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run (stored with every checkpoint)."""

    out: str = "runs/finetune"
    data: str = "photos"                 # a folder of HR images, "photos" (all shipped training photographs) or "photos-colour"
    lr_data: Optional[str] = None        # paired LR folder (optional)
    val: Optional[str] = "photos"        # a folder of HR validation images, "photos" or None
    init: str = "scratch"                # "scratch", a cresshift .safetensors, or an official .pth (+ preset)
    preset: Optional[str] = None
    autoencoder: Optional[str] = None
    model_overrides: dict[str, Any] = field(default_factory=dict)   # for init="scratch"
    schedule_preset: str = "realsr-x4-v1"
    kappa: Optional[float] = None        # override the preset's kappa (pixel-space models)
    min_noise_level: Optional[float] = None  # override the preset's min_noise_level (from scratch)
    predict: Optional[str] = None        # output type; None: the model's own ("xstart" from scratch)
    loss_weight: str = "none"            # "none": MSE (the paper); "bicubic": per-crop MSE / (bicubic MSE + 1 grey level^2)
    context_pad: Optional[int] = None    # mirrored border context at sampling (network px); None: the model's own (scratch: 16)
    time: str = "discrete"               # "discrete" | "continuous"
    t_sampler: str = "uniform"           # "uniform" | "loss-aware" (continuous time: importance sampling of t)
    trainable: str = "all"               # "all" | "time": only the time conditioning (time_embed, every emb_layers)
    schedule: str = "exp"                # continuous schedule: "exp" (fitted), "exact", "given" (a, lam)
    a: Optional[float] = None
    lam: Optional[float] = None
    crop: int = 64
    sf: int = 4
    degrade: bool = False
    scale_aug: float = 1.0               # smallest random rescale of the HR photographs before cropping (1 = off)
    steps: int = 1000
    batch: int = 16
    micro_batch: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup: int = 0
    cosine: bool = False
    ema: float = 0.999
    grad_clip: float = 1.0
    amp: Optional[str] = None            # "bf16" | "fp16" (GPU)
    seed: int = 0
    device: str = "cpu"
    val_every: int = 250
    val_solver: str = "markov"
    val_nfe: int = 15
    save_every: int = 250
    keep_last: int = 2
    threads: Optional[int] = None
    tensorboard: bool = False            # also log to OUT/tensorboard (needs the tensorboard package)

    def check(self) -> None:
        """Raise ValueError for impossible settings before anything starts."""
        if self.loss_weight not in ("none", "bicubic"):
            raise ValueError(f"--loss-weight must be none or bicubic, got {self.loss_weight!r}")
        if self.time not in ("discrete", "continuous"):
            raise ValueError(f"--time must be discrete or continuous, got {self.time!r}")
        if self.t_sampler not in T_SAMPLERS:
            raise ValueError(f"--t-sampler must be one of {', '.join(T_SAMPLERS)}, got {self.t_sampler!r}")
        if self.t_sampler == "loss-aware" and self.time != "continuous":
            raise ValueError("--t-sampler loss-aware samples continuous t: it needs --time continuous")
        if self.tensorboard and not tensorboard_available():
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
        if self.trainable not in ("all", "time"):
            raise ValueError(f"--trainable must be all or time, got {self.trainable!r}")
        if self.schedule not in ("exp", "exact", "given"):
            raise ValueError(f"--schedule must be exp, exact or given, got {self.schedule!r}")
        if self.schedule == "given" and (self.a is None or self.lam is None):
            raise ValueError("--schedule given needs --a and --lam")
        if self.crop % self.sf:
            raise ValueError(f"--crop {self.crop} is not divisible by the scale factor {self.sf}")
        if self.batch % self.micro_batch:
            raise ValueError(f"--batch {self.batch} is not a multiple of --micro-batch {self.micro_batch}")
        if self.context_pad is not None and self.context_pad < 0:
            raise ValueError(f"--context-pad must be >= 0, got {self.context_pad}")
        if self.min_noise_level is not None and not 0 < self.min_noise_level < 1:
            raise ValueError(f"--min-noise-level must be in (0, 1), got {self.min_noise_level}")
        if not 0 < self.scale_aug <= 1:
            raise ValueError(f"--scale-aug must be in (0, 1] (1 = off), got {self.scale_aug}")
        if self.scale_aug < 1 and self.lr_data:
            raise ValueError("--scale-aug needs HR-only data: it cannot rescale paired LR images (--lr-data)")
        if self.steps < 1 or self.lr <= 0:
            raise ValueError("--steps and --lr must be positive")
        if self.init.endswith(".pth") and not self.preset:
            raise ValueError(f"{self.init} is an official checkpoint: pass --preset")
        self._check_device()

    def _check_device(self) -> None:
        """The device exists here, and --amp only with a GPU (autocast is CUDA-only in the trainer)."""
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"--device {self.device!r} is not a device (cpu, cuda, cuda:1 ...)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {self.device}: no CUDA GPU is available to this process; use --device cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {self.device}: this machine has {torch.cuda.device_count()} GPU(s)")
        if self.amp is not None and device.type != "cuda":
            raise ValueError(f"--amp {self.amp} needs a GPU (--device cuda); on the {device.type} drop --amp "
                             f"(training runs in float32)")


def is_time_parameter(name: str) -> bool:
    """Whether a UNetModelSwin parameter belongs to the time conditioning (``time_embed``, ``emb_layers``)."""
    parts = name.split(".")
    return parts[0] == "time_embed" or "emb_layers" in parts


class Trainer:
    """Owns the model, EMA, optimiser, data sampler and RNG; ``run()`` trains, saves, validates."""

    def __init__(self, settings: TrainSettings, *, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> None:
        settings.check()
        self.s = settings
        self.log = log
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.device = torch.device(settings.device)
        self.dist = Distributed(self.device.type)
        self.rank, self.world = self.dist.rank, self.dist.world
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        per_rank = settings.batch // self.world
        if per_rank < 1 or settings.batch % self.world:
            raise ValueError(f"--batch {settings.batch} must be a multiple of the {self.world} processes")
        self.per_rank_batch = per_rank
        self.micro = min(settings.micro_batch, per_rank)

        self.pipe = self._build_model()
        bad = first_nonfinite(self.pipe.net.state_dict())
        if bad is not None:
            raise NonFiniteTrainingError(f"the initial weights hold NaN or inf ({bad}); --init {settings.init} is "
                                         f"damaged: start from a healthy checkpoint")
        self.net: nn.Module = self.pipe.net.to(self.device).train()
        self._freeze(settings.trainable)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.autoencoder = self.pipe.autoencoder
        self.discrete = ResShiftSchedule.from_config(self.pipe.config["diffusion"])
        self.schedule = self._train_schedule()
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if self.world > 1 else None)
        self.opt = torch.optim.AdamW(self.trainable_parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=settings.amp == "fp16" and self.device.type == "cuda")
        self.sampler = self._build_data()
        self.noise = torch.Generator().manual_seed(settings.seed * 1000 + 17 + self.rank)
        T = self.discrete.T
        self.t_sampler = LossAwareTSampler(T) if settings.t_sampler == "loss-aware" else None
        self.t_loss = TBinLoss(T)
        self.grad_norm: Optional[float] = None
        self.step = 0
        self.best: Optional[float] = None
        self.val_tiles = self._build_val() if self.rank == 0 else None
        self._lpips: Any = None
        self._val_sr: Optional[torch.Tensor] = None
        self.board = Board(None)
        self._guard = InterruptGuard()
        self._saved: Optional[Path] = None
        self._saved_step = -1
        self.out = Path(settings.out)

    # --- construction --------------------------------------------------------------------
    def _freeze(self, trainable: str) -> None:
        """``time``: train only the time conditioning (the embedding MLP and each block's projection of it).

        Continuous-t fine-tuning has to teach the network the times between the trained grid
        points; the rest of the network keeps the discrete model's weights, so a small dataset
        cannot pull the image layers away from them (cresshift/bundled/README.md).
        """
        if trainable == "all":
            return
        for name, p in self.net.named_parameters():
            p.requires_grad_(is_time_parameter(name))
        if not self.trainable_parameters():
            raise ValueError(f"--trainable {trainable}: this network has no time-conditioning parameters "
                             "(time_embed / emb_layers); use --trainable all")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def _build_model(self) -> SRPipeline:
        """The pipeline to train: a small pixel model from scratch, or a checkpoint read by the pipeline's loader."""
        s = self.s
        if s.init == "scratch":
            return self._scratch_model()
        if s.init.endswith(".safetensors"):
            weights = read_cresshift_file(s.init)
            self._refuse_diffusion_overrides(weights.config["diffusion"], "a cresshift model")
            config = {**weights.config, "schedule": None}  # the training schedule is decided by the settings
        else:
            if not Path(s.init).is_file():
                raise ValueError(f"--init {s.init!r} is neither 'scratch' nor an existing checkpoint file")
            official = official_config(s.preset)  # type: ignore[arg-type]
            self._refuse_diffusion_overrides(official["diffusion"], f"the official {s.preset}")
            if official["autoencoder"] and not s.autoencoder:
                raise ValueError(f"preset {s.preset} is a latent model: pass --autoencoder autoencoder_vq_f4.pth")
            weights = read_official_files(s.init, s.preset, s.autoencoder)
            config = dict(weights.config)
        if s.context_pad is not None:
            config["sampling"] = {**config.get("sampling", {}), "context_pad": s.context_pad}
        return replace(weights, config=config).build()

    def _scratch_model(self) -> SRPipeline:
        """The small pixel-space network with random weights (seeded), on the settings' diffusion."""
        s = self.s
        diffusion = {**ResShiftSchedule.from_config(s.schedule_preset).to_config(), "sf": s.sf,
                     "predict_type": s.predict or "xstart", "normalize_input": True}
        if s.kappa is not None:
            diffusion["kappa"] = float(s.kappa)
        if s.min_noise_level is not None:
            diffusion["min_noise_level"] = float(s.min_noise_level)
        params = small_pixel_config(image_size=s.crop, lq_size=s.crop, **s.model_overrides)
        config = {"model": {"class": "UNetModelSwin", "params": params}, "autoencoder": None,
                  "diffusion": {**diffusion, "latent_flag": False},
                  "sampling": {"context_pad": SCRATCH_CONTEXT_PAD if s.context_pad is None else s.context_pad}}
        torch.manual_seed(s.seed)
        pipe = build_pipeline(config)
        if diffusion["predict_type"] == "residual":
            # Zero output layer: the untrained model returns x0_hat = y (bicubic) exactly.
            nn.init.zeros_(pipe.net.out[2].weight)
            nn.init.zeros_(pipe.net.out[2].bias)
        return pipe

    def _refuse_diffusion_overrides(self, diffusion: dict[str, Any], what: str) -> None:
        """A model being fine-tuned keeps its schedule and output type: --kappa etc. are for scratch models."""
        s = self.s
        if (s.kappa is not None or s.min_noise_level is not None
                or s.predict not in (None, diffusion.get("predict_type", "xstart"))):
            raise ValueError(f"fine-tuning {what} keeps its schedule and predict type; "
                             "drop --kappa/--min-noise-level/--predict")

    def _train_schedule(self) -> Any:
        s = self.s
        if s.time == "discrete":
            return self.discrete
        if s.schedule == "exact":
            return ExactSchedule(self.discrete)
        if s.schedule == "given":
            return ExpAlphaSchedule(a=float(s.a), lam=float(s.lam), kappa=self.discrete.kappa, T=self.discrete.T)  # type: ignore[arg-type]
        return ExpAlphaSchedule.fit(self.discrete)

    def _build_data(self) -> CropSampler:
        s = self.s
        lrs = None
        if s.data in ("photos", "photos-colour"):
            from ..data.photos import training_photos
            images = [im for _, im in training_photos(include_grayscale=s.data == "photos")]
        elif s.lr_data:
            images, lrs = load_paired(s.data, s.lr_data, s.sf)
        else:
            images = load_folder(s.data)
        return CropSampler(images, crop=s.crop, sf=s.sf, lrs=lrs, degradation=Degradation() if s.degrade else None,
                           seed=s.seed * 1000 + self.rank, min_scale=s.scale_aug)

    def _build_val(self) -> Optional[torch.Tensor]:
        s = self.s
        if s.val is None:
            return None
        from ..data.photos import validation_tiles
        if s.val == "photos":
            tiles = validation_tiles(s.crop)
        else:
            tiles = validation_tiles(s.crop, photos=[(str(i), im) for i, im in enumerate(load_folder(s.val))])
        if not tiles:
            raise ValueError(f"no validation tiles of {s.crop} px could be cut from {s.val}")
        return torch.stack(tiles)

    # --- one optimisation step -------------------------------------------------------------
    def sample_t(self, n: int) -> torch.Tensor:
        """Training times: k/T with k uniform (discrete), t ~ U(1/T, 1) (continuous) or the loss-aware sampler's, float64 [n]."""
        T = self.discrete.T
        if self.s.time == "discrete":
            return torch.randint(1, T + 1, (n,), generator=self.noise).double() / T
        if self.t_sampler is not None:
            return self.t_sampler.sample(n, self.noise)
        return 1 / T + (1 - 1 / T) * torch.rand(n, generator=self.noise, dtype=torch.float64)

    def loss_on(self, net: nn.Module, hr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """The training objective on one micro-batch: the mean per-crop loss (importance-weighted under loss-aware t)."""
        t, err = self.sample_losses(net, hr, lr)
        return self._weighted_mean(t, err)

    def _weighted_mean(self, t: torch.Tensor, err: torch.Tensor) -> torch.Tensor:
        if self.t_sampler is None:
            return err.mean()
        return (err * self.t_sampler.weights(t).to(err.device, err.dtype)).mean()

    def sample_losses(self, net: nn.Module, hr: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, per-crop MSE(x0_hat, x0)) on one micro-batch, x0_hat from NetworkDenoiser (the sampling convention, design §5)."""
        n = hr.shape[0]
        t = self.sample_t(n)
        z = torch.randn(hr.shape if self.autoencoder is None else (n, *self._latent_shape(hr)), generator=self.noise)
        hr, lr, z = hr.to(self.device), lr.to(self.device), z.to(self.device)
        y_pix = upsample_lr(lr, self.s.sf)  # exactly what SRPipeline.run uses as the shift target
        if self.autoencoder is not None:
            with torch.no_grad():
                x0, y = self.autoencoder.encode(hr), self.autoencoder.encode(y_pix)
            lq = lr
        else:
            x0, y, lq = hr, y_pix, y_pix
        denoiser = NetworkDenoiser(net, self.schedule, lq=lq, latent=self.autoencoder is not None,
                                   normalize_input=bool(self.pipe.config["diffusion"].get("normalize_input", True)),
                                   predict=self.pipe.predict, y=y, clip_denoised=False)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.s.amp or "", None)
        err = denoiser.loss(x0, t, z, autocast_dtype=amp)  # per-crop MSE at the forward marginal
        if self.s.loss_weight == "bicubic":
            # Relative to the bicubic shift target's own error: the mean ratio tracks mean PSNR over crops,
            # so flat crops (where any invented texture costs PSNR) weigh as much as textured ones.
            ref = (y.float() - x0.float()).pow(2).flatten(1).mean(1)
            err = err / (ref + _GREY_LEVEL_SQ)
        return t, err

    def _latent_shape(self, hr: torch.Tensor) -> tuple[int, int, int]:
        f = AUTOENCODER_FACTOR
        return (self.autoencoder.quant_conv.out_channels, hr.shape[-2] // f, hr.shape[-1] // f)  # type: ignore[union-attr]

    def lr_at(self, step: int) -> float:
        s = self.s
        base = s.lr * min(1.0, (step + 1) / s.warmup) if s.warmup else s.lr
        if s.cosine and step >= s.warmup:
            frac = (step - s.warmup) / max(1, s.steps - s.warmup)
            base = s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        return base

    def train_step(self) -> float:
        """One optimiser step over ``batch`` samples (micro-batches accumulate). Returns the mean loss."""
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        model = self.ddp if self.ddp is not None else self.net
        hr, lr = self.sampler.batch(self.per_rank_batch)
        chunks = list(zip(hr.split(self.micro), lr.split(self.micro)))
        total = 0.0
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        for j, (h, low) in enumerate(chunks):
            sync = self.ddp is None or j == len(chunks) - 1
            ctx = model.no_sync() if (self.ddp is not None and not sync) else _null()
            with ctx:
                t, err = self.sample_losses(model, h, low)
                loss = self._weighted_mean(t, err) * (h.shape[0] / hr.shape[0])
                self.scaler.scale(loss).backward()
            total += float(loss.detach())
            seen.append((t, err.detach().float().cpu()))
        if not math.isfinite(total):
            raise NonFiniteTrainingError(f"the loss is {total} at step {self.step + 1}")
        self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), self.s.grad_clip or math.inf)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):  # fp16: the scaler skips such steps
            raise NonFiniteTrainingError(f"the gradient norm is {float(norm)} at step {self.step + 1}")
        self.grad_norm = float(norm)
        t_all, err_all = torch.cat([t for t, _ in seen]), torch.cat([e for _, e in seen])
        self.t_loss.add(t_all, err_all)
        if self.t_sampler is not None:
            self.t_sampler.update(t_all, err_all)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        # EMA of the weights.
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1 - self.s.ema)
        self.step += 1
        return total

    # --- validation, checkpoints -----------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR-Y / SSIM-Y (and LPIPS-alex when its weights are on disk) of the EMA model on the validation tiles."""
        from ..data.io import bicubic_down
        from ..metrics import LPIPSMetric, psnr_y, ssim_y

        assert self.val_tiles is not None
        pipe = self.export_pipeline()
        hr = self.val_tiles
        lr = bicubic_down(hr, self.s.sf)
        sr = torch.cat([pipe(lr[i:i + 8], solver=self.s.val_solver, nfe=self.s.val_nfe, seed=0).cpu()
                        for i in range(0, len(lr), 8)])
        bic = upsample_lr(lr, self.s.sf).clamp(-1, 1)
        self._val_sr = sr[:4]
        out = {"psnr_y": float(psnr_y(sr, hr).mean()), "ssim_y": float(ssim_y(sr, hr).mean()),
               "bicubic_psnr_y": float(psnr_y(bic, hr).mean())}
        if self._lpips is None:
            self._lpips = LPIPSMetric("alex")
            if not self._lpips.available:
                self.log(f"validation without LPIPS: {self._lpips.reason}")
        if self._lpips.available:
            out["lpips_alex"] = float(self._lpips(sr, hr).mean())
        return out

    def export_pipeline(self) -> SRPipeline:
        """An SRPipeline over the EMA weights, with the training schedule (continuous: stored in the file);
        float32 on the CPU (``cpu_bf16=()``), so validation does not depend on the CPU's bfloat16 support."""
        config = dict(self.pipe.config)
        config["schedule"] = None if self.s.time == "discrete" else self.schedule.to_config()
        config["fitted_schedule"] = ExpAlphaSchedule.fit(self.discrete, warn=False).to_config()
        return SRPipeline(self.ema, self.schedule if self.s.time == "continuous" else self.discrete,
                          autoencoder=self.autoencoder, sf=self.pipe.sf, predict=self.pipe.predict,
                          normalize_input=self.pipe.normalize_input, config=config, device=self.device, cpu_bf16=())

    def _rng_states(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Any]]:
        """Every rank's (data order, noise, t-sampler) states, gathered (a collective under DDP)."""
        mine = (self.sampler.generator.get_state(), self.noise.get_state(),
                self.t_sampler.state_dict() if self.t_sampler is not None else None)
        gathered: list[Any] = [mine]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
        return [g[0] for g in gathered], [g[1] for g in gathered], [g[2] for g in gathered]

    def state(self) -> dict[str, Any]:
        """The whole resumable state: plain tensors, numbers and strings (``torch.load(weights_only=True)``)."""
        data_rng, noise_rng, t_sampler = self._rng_states()
        return {"step": self.step, "net": self.net.state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
                "data_rng": data_rng, "noise_rng": noise_rng, "world_size": self.world,
                **({"t_sampler": t_sampler} if self.t_sampler is not None else {}),
                "best": self.best if self.best is not None else float("nan"),
                "settings": json.dumps(asdict(self.s), sort_keys=True),
                "model_config": json.dumps(self.pipe.config["model"], sort_keys=True),
                "diffusion_config": json.dumps(self.pipe.config["diffusion"], sort_keys=True)}

    def save(self, tag: Optional[str] = None) -> Optional[Path]:
        """Write a resumable checkpoint atomically (rank 0), prune to the last K, export last.safetensors.

        Under DDP every rank must call it (the RNG states are gathered); only rank 0 writes.
        """
        state = self.state()
        if self.rank != 0:
            return None
        bad = nonfinite_weights(state)
        if bad is not None:  # never written, so it can never push a finite checkpoint out
            raise NonFiniteTrainingError(f"the weights hold NaN or inf ({bad}) at step {self.step}")
        path = write_state(state, self.out, tag or f"ckpt-{self.step:07d}.pt", self.s.keep_last)
        self.export_pipeline().save(self.out / "last.safetensors", training=self.metadata())
        return path

    def metadata(self) -> dict[str, Any]:
        return {"settings": asdict(self.s), "step": self.step, "best_val_psnr_y": self.best, "versions": versions(),
                "world_size": self.world}

    def resume(self, path: str | Path) -> None:
        """Restore model, EMA, optimiser, scaler, RNG and step: training continues exactly."""
        path = Path(path)
        st = read_state(path)
        check_resumable(st, path, settings=self.s, config=self.pipe.config, world=self.world)
        self.net.load_state_dict(st["net"])
        self.ema.load_state_dict(st["ema"])
        self.opt.load_state_dict(st["opt"])
        self.scaler.load_state_dict(st["scaler"])
        self.sampler.generator.set_state(st["data_rng"][self.rank])
        self.noise.set_state(st["noise_rng"][self.rank])
        if self.t_sampler is not None:
            self.t_sampler.load_state_dict(st["t_sampler"][self.rank])
        self.step = int(st["step"])
        self.best = None if math.isnan(st["best"]) else float(st["best"])

    def run(self, *, progress: bool = True) -> dict[str, Any]:
        """Train to ``steps``, validating and saving periodically; Ctrl-C saves and returns.

        A non-finite loss, gradient or weight raises NonFiniteTrainingError naming the step;
        that state is never saved, so the last checkpoint on disk stays the last finite one.
        """
        s = self.s
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            atomic_write(self.out / "settings.json", json.dumps({**asdict(s), "versions": versions()}, indent=1))
        logf = open(self.out / "log.jsonl", "a") if self.rank == 0 else None
        self.board = Board(self.out / "tensorboard" if s.tensorboard and self.rank == 0 else None)
        interrupted = False
        t0 = time.perf_counter()
        bar = _Progress(total=s.steps, start=self.step, enabled=progress and self.rank == 0)
        guard = InterruptGuard()
        self._guard = guard
        try:
            with guard.installed():
                if self.rank == 0 and self.val_tiles is not None and self.step == 0:
                    self._validate_and_log(logf, bar)
                while self.step < s.steps:
                    if self._should_stop():
                        raise KeyboardInterrupt
                    with guard.critical():  # a step and its log line are never cut in half
                        loss = self.train_step()
                        if logf and (self.step % 10 == 0 or self.step == s.steps):
                            self._log_train(logf, loss, time.perf_counter() - t0)
                    bar.update(self.step, loss, self.lr_at(self.step - 1))
                    if self.rank == 0 and self.val_tiles is not None and (self.step % s.val_every == 0 or self.step == s.steps):
                        self._validate_and_log(logf, bar)
                    if self.step % s.save_every == 0 or self.step == s.steps:
                        self._save_guarded()
                        if self.world > 1:
                            torch.distributed.barrier()
        except KeyboardInterrupt:
            interrupted = True
            with guard.installed():  # further Ctrl-C wait for this save
                p = self._save_guarded(final=True)
            if self.rank == 0:
                self.log(f"interrupted at step {self.step}: saved {p}; resume with --resume {p}")
        except NonFiniteTrainingError as err:
            last = sorted(self.out.glob("ckpt-*.pt"))
            where = f"the last checkpoint, {last[-1]}, is finite" if last else "no checkpoint was written"
            raise NonFiniteTrainingError(f"training stopped: {err}; {where}; lower --lr or check the data "
                                         f"and --init weights") from None
        finally:
            bar.close()
            self.board.close()
            if logf:
                logf.close()
        return {"step": self.step, "best_val_psnr_y": self.best, "seconds": time.perf_counter() - t0,
                "interrupted": interrupted}

    def _save_guarded(self, *, final: bool = False) -> Optional[Path]:
        """``save()`` with Ctrl-C deferred to its end (the final save after an interrupt swallows it)."""
        with self._guard.critical(raise_pending=not final):
            if self._saved_step == self.step:  # every rank alike: save() is a collective under DDP
                return self._saved
            self._saved = self.save()
            self._saved_step = self.step
        return self._saved

    def _should_stop(self) -> bool:
        """Whether any rank was interrupted (all ranks stop at the same step under DDP)."""
        if self.world == 1:
            return self._guard.requested > 0
        flag = torch.tensor([1.0 if self._guard.requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def _log_train(self, logf: Any, loss: float, seconds: float) -> None:
        """A log.jsonl training line (loss, lr, grad norm, mean loss per t bin since the last line) and its TensorBoard scalars."""
        line = {"step": self.step, "loss": loss, "lr": self.lr_at(self.step - 1), "seconds": seconds,
                "grad_norm": self.grad_norm, "loss_per_t": self.t_loss.pop()}
        if self.t_sampler is not None:
            line["t_sampler_p"] = [round(float(v), 6) for v in self.t_sampler.probabilities()]
            self.board.series(self.step, "t_sampler/p", line["t_sampler_p"])
        logf.write(strict_json(line) + "\n")
        logf.flush()
        self.board.scalars(self.step, {"train/loss": loss, "train/lr": line["lr"], "train/grad_norm": self.grad_norm})
        self.board.series(self.step, "loss_per_t", line["loss_per_t"])

    def _validate_and_log(self, logf: Any, bar: "_Progress") -> None:
        m = self.validate()
        line = {"step": self.step, "val": m}
        if logf:
            logf.write(strict_json(line) + "\n")
            logf.flush()
        self.board.scalars(self.step, {f"val/{k}": v for k, v in m.items()})
        if self._val_sr is not None and self.val_tiles is not None:
            self.board.images(self.step, "val/images", self._val_sr, self.val_tiles[:len(self._val_sr)])
        bar.note(f"step {self.step}: val PSNR-Y {m['psnr_y']:.3f} dB (bicubic {m['bicubic_psnr_y']:.3f}), "
                 f"SSIM-Y {m['ssim_y']:.4f}")
        with self._guard.critical():  # the best score and its model change together
            if self.best is None or m["psnr_y"] > self.best:
                self.best = m["psnr_y"]
                self.export_pipeline().save(self.out / "best.safetensors", training={**self.metadata(), "val": m})


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


class _Progress:
    """A rich progress bar on stderr (loss, lr, it/s, ETA), or plain lines when not a terminal."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.last_print = 0.0
        self.t0 = time.perf_counter()
        self.start = start
        self.total = total
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("[bold]finetune"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        rate = (step - self.start) / max(1e-9, time.perf_counter() - self.t0)
        info = f"loss {loss:.5f} lr {lr:.2e} {rate:.2f} it/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        elif time.perf_counter() - self.last_print > 30 or step == self.total:
            eta = (self.total - step) / max(rate, 1e-9)
            print(f"step {step}/{self.total} {info} ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
            self.last_print = time.perf_counter()

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(settings: TrainSettings, *, resume: Optional[str] = None, progress: bool = True) -> dict[str, Any]:
    """Build a Trainer, optionally resume, run. ``resume="auto"`` picks the newest checkpoint in ``out``.

    Rank 0 holds a lock on ``out`` for the whole run (a second run into it is refused) and first
    deletes the temp files of killed runs there.
    """
    settings.check()  # before the lock creates --out
    out = Path(settings.out)
    lock = lock_folder(out) if int(os.environ.get("RANK", 0)) == 0 else contextlib.nullcontext()
    with lock:
        remove_stale_temps(out)
        if resume is None and list(out.glob("ckpt-*.pt")):
            raise ValueError(f"{settings.out} already holds checkpoints of a run: pass --resume auto to continue it, "
                             f"or choose another --out")
        trainer = Trainer(settings)
        if resume == "auto":
            found = sorted(out.glob("ckpt-*.pt"))
            if found:
                trainer.resume(found[-1])
        elif resume:
            trainer.resume(resume)
        try:
            return trainer.run(progress=progress)
        finally:
            if trainer.world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
