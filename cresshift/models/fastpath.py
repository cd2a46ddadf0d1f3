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

import warnings
from typing import Callable, Optional

import torch

__all__ = ["as_channels_last", "StaticShapeCall", "Capture", "buffered_capture", "cuda_graph_capture"]

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
