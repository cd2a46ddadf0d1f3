"""``cresshift finetune``: the trainer behind a click command (one process or torchrun).

Heavy imports happen inside the command, so ``cresshift --help`` stays instant. Expected
failures (bad folders, crops, resume files, a full disk, NaN) exit with status 2 and one line,
as in every command; ``--debug`` shows the traceback.
"""
from __future__ import annotations

from typing import Optional

import click

from ..commands.common import debug_callback, raise_one_line

__all__ = ["finetune"]

PREDICT_TYPES = ("xstart", "residual", "epsilon", "epsilon_scale")


@click.command("finetune")
@click.option("--data", default="photos", show_default=True,
              help="Folder of HR images (recursive; png/jpg/webp/tiff), 'photos' (the shipped training photographs) "
                   "or 'photos-colour' (their colour ones).")
@click.option("--lr-data", default=None, help="Paired LR folder (same file stems as --data, sf times smaller).")
@click.option("--val", default="photos", show_default=True, help="Validation HR folder, 'photos', or 'none'.")
@click.option("--out", default="runs/finetune", show_default=True, help="Checkpoints, JSONL log and exported models.")
@click.option("--init", default="scratch", show_default=True,
              help="scratch (small pixel model) | a cresshift .safetensors | an official .pth (with --preset).")
@click.option("--preset", default=None, help="Preset of an official --init .pth (realsr-x4-v1 ...).")
@click.option("--autoencoder", default=None, help="autoencoder_vq_f4.pth for official latent models.")
@click.option("--time", "time_mode", type=click.Choice(["discrete", "continuous"]), default="continuous",
              show_default=True, help="discrete: k ~ U{1..T} (official); continuous: t ~ U(1/T, 1) (the paper).")
@click.option("--t-sampler", type=click.Choice(["uniform", "loss-aware"]), default="uniform", show_default=True,
              help="Continuous t: uniform, or loss-aware importance sampling (t drawn by the per-t-bin RMS loss with a "
                   "uniform floor, each loss weighted by the inverse density: the same objective, less variance).")
@click.option("--schedule", type=click.Choice(["exp", "exact", "given"]), default="exp", show_default=True,
              help="Continuous eta(t): exp (exp-alpha fitted to the table), exact, given (--a/--lam).")
@click.option("--trainable", type=click.Choice(["all", "time"]), default="all", show_default=True,
              help="Parameters trained: all, or only the time conditioning (time_embed and every block's emb_layers; "
                   "the bundled continuous model's recipe).")
@click.option("--a", type=float, default=None, help="alpha(t) = a (exp(lam t) - 1): a (with --schedule given).")
@click.option("--lam", type=float, default=None, help="alpha(t) = a (exp(lam t) - 1): lam (with --schedule given).")
@click.option("--kappa", type=click.FloatRange(0, None, min_open=True), default=None,
              help="Override kappa (from-scratch models only).")
@click.option("--min-noise-level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Override the schedule's min_noise_level, the final-step noise (from-scratch models only).")
@click.option("--predict", type=click.Choice(PREDICT_TYPES), default=None,
              help="Network output type (from scratch; default xstart). Checkpoints keep their own.")
@click.option("--loss-weight", type=click.Choice(["none", "bicubic"]), default="none", show_default=True,
              help="none: MSE(x0_hat, x0) (the paper); bicubic: per-crop MSE / (bicubic MSE + 1 grey level^2).")
@click.option("--context-pad", type=click.IntRange(0, None), default=None,
              help="Mirrored context around the image at sampling, in network pixels (stored with the model; "
                   "default: the model's own, 16 for from-scratch models, 0 for official ones).")
@click.option("--crop", type=click.IntRange(8, None), default=64, show_default=True, help="HR crop side (px).")
@click.option("--sf", type=click.IntRange(1, 8), default=4, show_default=True, help="Scale factor.")
@click.option("--degrade", is_flag=True, help="Light second-order LR degradation (blur sigma 0.2-1.2, noise <= 0.02).")
@click.option("--scale-aug", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Scale augmentation: each HR crop is cut at a random scale in [SCALE_AUG, 1] of the photograph "
                   "(a larger square shrunk to --crop, antialiased); 1 = off. HR-only data.")
@click.option("--steps", type=click.IntRange(1, None), default=1000, show_default=True, help="Optimiser steps.")
@click.option("--batch", type=click.IntRange(1, None), default=16, show_default=True, help="Global batch.")
@click.option("--micro-batch", type=click.IntRange(1, None), default=8, show_default=True,
              help="Samples per forward pass (gradient accumulation).")
@click.option("--lr", "lr_", type=click.FloatRange(0, None, min_open=True), default=5e-5, show_default=True,
              help="AdamW learning rate (the paper's 5e-5).")
@click.option("--weight-decay", type=click.FloatRange(0, None), default=0.0, show_default=True)
@click.option("--warmup", type=click.IntRange(0, None), default=0, show_default=True, help="Linear warm-up steps.")
@click.option("--cosine", is_flag=True, help="Cosine decay to 0.1 x lr after warm-up.")
@click.option("--ema", type=click.FloatRange(0, 1), default=0.999, show_default=True, help="EMA decay of the weights.")
@click.option("--grad-clip", type=click.FloatRange(0, None), default=1.0, show_default=True, help="0 disables.")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]), default=None, help="Mixed precision (GPU only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda (torchrun: one GPU per process).")
@click.option("--threads", type=click.IntRange(1, None), default=None, help="CPU threads per process.")
@click.option("--val-every", type=click.IntRange(1, None), default=250, show_default=True)
@click.option("--val-solver", default="markov", show_default=True, help="Solver for validation sampling.")
@click.option("--val-nfe", type=click.IntRange(1, None), default=15, show_default=True)
@click.option("--save-every", type=click.IntRange(1, None), default=250, show_default=True)
@click.option("--keep-last", type=click.IntRange(1, None), default=2, show_default=True,
              help="Resumable checkpoints kept (best.safetensors is kept besides).")
@click.option("--resume", default=None, help="A ckpt-*.pt to continue from, or 'auto' (the newest in --out).")
@click.option("--tensorboard", is_flag=True,
              help="Also log loss, lr, grad norm, per-t loss, validation metrics and images to OUT/tensorboard.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
@click.option("--debug", is_flag=True, expose_value=False, callback=debug_callback,
              help="Show tracebacks instead of one-line errors.")
@click.pass_context
def finetune(ctx: click.Context, data: str, lr_data: Optional[str], val: str, out: str, init: str, preset: Optional[str],
             autoencoder: Optional[str], time_mode: str, t_sampler: str, schedule: str, trainable: str, a: Optional[float], lam: Optional[float],
             kappa: Optional[float], min_noise_level: Optional[float], predict: Optional[str], loss_weight: str,
             context_pad: Optional[int], crop: int, sf: int, degrade: bool, scale_aug: float,
             steps: int, batch: int, micro_batch: int, lr_: float, weight_decay: float, warmup: int, cosine: bool,
             ema: float, grad_clip: float, amp: Optional[str], seed: int, device: str, threads: Optional[int],
             val_every: int, val_solver: str, val_nfe: int, save_every: int, keep_last: int, resume: Optional[str],
             tensorboard: bool, quiet: bool) -> None:
    """Fine-tune (or train) a ResShift model with discrete or continuous time (the paper's §3.1).

    \b
    One process:  cresshift finetune --init model.safetensors --data hr/ --time continuous
    Several:      torchrun --nproc_per_node N -m cresshift.cli finetune ...
                  (gloo on CPU, NCCL on GPU; each rank draws its own crops; rank 0 writes)
    """
    from .trainer import TrainSettings, train

    settings = TrainSettings(out=out, data=data, lr_data=lr_data, val=None if val == "none" else val, init=init,
                             preset=preset, autoencoder=autoencoder, time=time_mode, t_sampler=t_sampler,
                             schedule=schedule, trainable=trainable,
                             a=a, lam=lam,
                             kappa=kappa, min_noise_level=min_noise_level, predict=predict, loss_weight=loss_weight,
                             context_pad=context_pad, crop=crop, sf=sf, degrade=degrade, scale_aug=scale_aug,
                             steps=steps, batch=batch, micro_batch=micro_batch, lr=lr_, weight_decay=weight_decay,
                             warmup=warmup, cosine=cosine, ema=ema, grad_clip=grad_clip, amp=amp, seed=seed,
                             device=device, threads=threads, val_every=val_every, val_solver=val_solver,
                             val_nfe=val_nfe, save_every=save_every, keep_last=keep_last, tensorboard=tensorboard)
    try:
        result = train(settings, resume=resume, progress=not quiet)
    except click.ClickException:
        raise
    except Exception as err:  # expected failures: one line, exit 2 (--debug: the traceback)
        raise_one_line(ctx, err)
    best = result["best_val_psnr_y"]
    models = [f"{out}/best.safetensors"] if settings.val is not None else []
    click.echo(f"finished at step {result['step']} in {result['seconds'] / 60:.1f} min"
               + (f"; best validation PSNR-Y {best:.3f} dB" if best is not None else "")
               + f"; models in {' and '.join(models + [f'{out}/last.safetensors'])}", err=True)
    if result["interrupted"]:
        raise click.exceptions.Exit(130)
