"""Fast execution paths of the pipeline: channels-last activations and fixed-shape graph replay.

``as_channels_last`` puts a 4-D activation in NHWC memory order (same values, same shape); every
convolution, GroupNorm and elementwise op of the networks keeps that order, which oneDNN's CPU
convolutions run without reordering. The weights stay as they are, so state dicts do not change.

``StaticShapeCall`` replays a function on fixed-shape inputs the way a CUDA graph does: the inputs
are copied into static buffers, one captured program runs, its static output is copied out. On a
CUDA device the program is a ``torch.cuda.CUDAGraph`` captured once per input signature (shapes,
dtypes, device); elsewhere (and when capture fails) ``buffered_capture`` runs the function eagerly
on the same static buffers, so the replay logic is the same on every device.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["as_channels_last", "StaticShapeCall", "Capture", "buffered_capture", "cuda_graph_capture", "bf16_copy",
           "weights_version", "BF16_PARTS", "CompiledOrEager"]

# A capture turns fn and its static input buffers into ``replay() -> static output``.
Capture = Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], Callable[[], torch.Tensor]]


def as_channels_last(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The same 4-D tensor in channels-last (NHWC) memory order; other tensors and None unchanged."""
    if t is None or t.ndim != 4:
        return t
    return t.contiguous(memory_format=torch.channels_last)


def buffered_capture(fn: Callable[..., torch.Tensor], static: tuple[torch.Tensor, ...]) -> Callable[[], torch.Tensor]:
    """Eager stand-in for a graph: every replay recomputes ``fn(*static)`` into one static output buffer."""
    out: list[torch.Tensor] = []  # the static output, allocated by the first replay

    def replay() -> torch.Tensor:
        result = fn(*static)
        if out:
            return out[0].copy_(result)
        out.append(result)
        return result
    return replay


def cuda_graph_capture(fn: Callable[..., torch.Tensor], static: tuple[torch.Tensor, ...],
                       warmup: int = 2) -> Callable[[], torch.Tensor]:
    """Capture ``fn(*static)`` as a CUDA graph (after ``warmup`` eager calls on a side stream)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):  # lazy initialisation (cuDNN plans, cached masks) happens outside the capture
            fn(*static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*static)

    def replay() -> torch.Tensor:
        graph.replay()
        return out
    return replay


class StaticShapeCall:
    """``fn(*tensors)`` through a program captured once per input signature and replayed after that.

    Each call copies its inputs into the signature's static buffers, replays, and returns a copy of
    the static output (the next replay overwrites the buffer; solvers keep earlier outputs). At most
    ``max_programs`` signatures are kept; one more starts the cache over. ``capture`` defaults to CUDA
    graphs for CUDA inputs and ``buffered_capture`` otherwise; a capture that raises falls back to
    ``buffered_capture`` for that signature, with a warning.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], *, capture: Optional[Capture] = None,
                 max_programs: int = 8) -> None:
        self.fn = fn
        self.capture = capture
        self.max_programs = max_programs
        self.captures = 0  # how many programs were captured (tests, benchmarks)
        self._programs: dict[tuple, tuple[tuple[torch.Tensor, ...], Callable[[], torch.Tensor]]] = {}

    def _capture_for(self, args: tuple[torch.Tensor, ...]) -> Capture:
        if self.capture is not None:
            return self.capture
        return cuda_graph_capture if all(a.device.type == "cuda" for a in args) else buffered_capture

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(a.shape), a.dtype, a.device, a.stride()) for a in args)
        program = self._programs.get(key)
        if program is None:
            if len(self._programs) >= self.max_programs:
                self._programs.clear()
            static = tuple(a.clone() for a in args)
            capture = self._capture_for(args)
            try:
                replay = capture(self.fn, static)
            except RuntimeError as err:
                if capture is buffered_capture:
                    raise
                warnings.warn(f"graph capture failed ({err}); running this shape eagerly", stacklevel=2)
                replay = buffered_capture(self.fn, static)
            self.captures += 1
            program = self._programs[key] = (static, replay)
        static, replay = program
        for buffer, value in zip(static, args):
            buffer.copy_(value)
        return replay().clone()


# --- bf16 copies for the CPU fast path -------------------------------------------------------
BF16_PARTS = ("network", "encoder", "decoder")
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d)


def _inputs_to_float32(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _output_to_bf16(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return out.to(torch.bfloat16)


def _inputs_to_bf16(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def bf16_copy(module: nn.Module, keep_float32: Sequence[str] = (), float32_tail: Sequence[str] = (),
              bf16_inputs: Sequence[str] = ()) -> nn.Module:
    """An inference copy of ``module`` with bfloat16 weights in channels-last order.

    Normalisation layers keep float32 parameters (PyTorch's CPU GroupNorm then takes bfloat16
    activations and accumulates its statistics in float32); the submodules named in
    ``keep_float32`` keep float32 weights and run on float32 inputs, their outputs cast back to
    bfloat16; those named in ``float32_tail`` do the same and return float32 (the last layers, or float32
    stretches whose activations stay float32 up to the next bfloat16 submodule); those named in ``bf16_inputs``
    cast their floating-point inputs to bfloat16 (bfloat16 submodules after such a stretch). Kept float32
    weights are the original values, not bfloat16-rounded ones. The original module is not touched.
    """
    copy_ = copy.deepcopy(module).eval()
    for p in copy_.parameters():
        p.requires_grad_(False)
    copy_.to(torch.bfloat16)
    originals = dict(module.named_modules())
    for name, sub in copy_.named_modules():  # float32 again, with the original (not bfloat16-rounded) values
        if isinstance(sub, _NORMS):
            sub.float().load_state_dict(originals[name].state_dict())
    for name in (*keep_float32, *float32_tail):
        kept = copy_.get_submodule(name).float()
        kept.load_state_dict(module.get_submodule(name).state_dict())
        kept.register_forward_pre_hook(_inputs_to_float32)
        if name not in float32_tail:
            kept.register_forward_hook(_output_to_bf16)
    for name in bf16_inputs:
        copy_.get_submodule(name).register_forward_pre_hook(_inputs_to_bf16)
    for sub in copy_.modules():
        if isinstance(sub, nn.Conv2d):
            sub.weight.data = sub.weight.data.contiguous(memory_format=torch.channels_last)
    return copy_


def weights_version(module: nn.Module) -> tuple:
    """Changes whenever a parameter of ``module`` is replaced or written in place (cache key of its copies)."""
    params = list(module.parameters())
    return (len(params), sum(p._version for p in params), tuple(p.data_ptr() for p in params[:1] + params[-1:]))


class CompiledOrEager:
    """``torch.compile(module, **kwargs)`` that falls back to the eager module when compiling fails.

    Compilation happens on the first call of each input shape; if ``torch.compile`` itself or a
    compiled call raises (no C++ compiler, an unsupported operation ...), a warning says so and this
    call and every later one run ``module`` eagerly (``failed`` holds the error).
    """

    def __init__(self, module: Callable[..., torch.Tensor], **kwargs) -> None:
        self.module, self.kwargs = module, kwargs
        self.failed: Optional[BaseException] = None
        try:
            self.compiled: Optional[Callable[..., torch.Tensor]] = torch.compile(module, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
            self._fall_back(err)

    def _fall_back(self, err: BaseException) -> None:
        self.compiled, self.failed = None, err
        warnings.warn(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly", stacklevel=3)

    def __getattr__(self, name: str):  # hooks, attributes: those of the compiled module (or the eager one)
        if name in ("module", "compiled", "kwargs", "failed"):
            raise AttributeError(name)
        target = self.__dict__.get("compiled")
        target = self.__dict__.get("module") if target is None else target
        if target is None:
            raise AttributeError(name)
        return getattr(target, name)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001
                self._fall_back(err)
        return self.module(*args, **kwargs)
