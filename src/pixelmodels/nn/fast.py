"""The library's speed code for the CPU, in one place, behind one switch.

Every model is written in plain PyTorch; the kernels here replace a plain computation with one
that gives the same values (up to float rounding) faster on the CPU. Each stays only while
it makes a whole training or sampling step at least 5% faster at a default or reference preset,
measured side by side with the switch off (BENCHMARKS.md, "speed code"). The switch:

* ``PIXELMODELS_FAST_KERNELS=0`` in the environment turns them off for the process;
* ``set_fast_kernels(False)`` and the context manager ``fast_kernels(False)`` do it from Python.

With the switch off (or on another device, under autocast or ``torch.compile``) every call here is
the plain PyTorch expression it names, which is the tested reference: the model tests run both.

* ``conv2d`` (and ``Conv2d``, the module that calls it): in CPU training, a 1x1 convolution as one
  batched matrix product (oneDNN's backward of a 1x1 convolution is slow).
* ``dropout``: inverted dropout as a product with a mask drawn by ``torch.rand`` (``F.dropout``'s CPU
  kernel is slower).
* ``StepMatrix``: a cached sampling step's product with a large weight, in the layout MKL runs
  faster at a few rows.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

_enabled = os.environ.get("PIXELMODELS_FAST_KERNELS", "1") != "0"


def fast_kernels_enabled() -> bool:
    """Whether the CPU kernels of this module are switched on."""
    return _enabled


def set_fast_kernels(enabled: bool) -> None:
    """Switch the CPU kernels of this module on or off (for this process)."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def fast_kernels(enabled: bool):
    """Run a block with the CPU kernels switched on or off, then restore the previous setting."""
    previous = _enabled
    set_fast_kernels(enabled)
    try:
        yield
    finally:
        set_fast_kernels(previous)


def _on_cpu(x: torch.Tensor) -> bool:
    return (_enabled and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


# -- 1x1 convolutions in training ----------------------------------------------------------------

def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 ``weight`` (out, in, 1, 1), as one batched matrix product."""
    b, c, h, w = x.shape
    x3 = x.reshape(b, c, h * w)  # (B, in, HW)
    w3 = weight.reshape(1, weight.shape[0], c).expand(b, -1, -1)  # (B, out, in), no copy
    out = torch.bmm(w3, x3) if bias is None else torch.baddbmm(bias.reshape(1, -1, 1), w3, x3)
    return out.view(b, -1, h, w)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` of stride 1 without padding (the shifted and masked convolutions pad
    their input themselves); in CPU training, a 1x1 kernel as one batched matrix product."""
    if (weight.shape[-2:] == (1, 1) and weight.requires_grad and torch.is_grad_enabled() and x.dim() == 4
            and _on_cpu(x)):
        return pointwise(x, weight, bias)
    return F.conv2d(x, weight, bias)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``: in training, zero each value with probability p and scale the others
    by 1 / (1 - p); on the CPU the mask is ``torch.rand(x.shape) >= p``."""
    if not training or p == 0.0 or not _on_cpu(x):
        return F.dropout(x, p, training)
    return x * (torch.rand_like(x) >= p) * (1.0 / (1.0 - p))


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (the same parameters and state-dict keys) whose stride-1 unpadded calls go through
    ``conv2d``."""

    def _conv_forward(self, x, weight, bias):
        if self.stride == (1, 1) and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1:
            return conv2d(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


# -- the cached step's products --------------------------------------------------------------------

class StepMatrix:
    """A weight that multiplies the n rows of one sampling step, ``x (n, in) -> bias + x @ W (n, out)``.

    At a few rows the product's speed depends on the layout: with the switch on, weights of at least
    ``TRANSPOSE_AT`` elements multiplied into at most ``TRANSPOSE_ROWS`` rows are stored (out, in) and
    computed as (W^T x^T)^T; otherwise it is ``torch.addmm(bias, x, W)``. The layout is chosen when the
    cache is built.
    """

    TRANSPOSE_AT = 2**18  # elements (1 MiB of float32)
    TRANSPOSE_ROWS = 32

    def __init__(self, weight: torch.Tensor, rows: int):
        """``weight``: (in, out); ``rows``: the rows n of every ``x``."""
        self.shape = tuple(weight.shape)
        self.transposed = (_on_cpu(weight) and weight.numel() >= self.TRANSPOSE_AT
                           and rows <= self.TRANSPOSE_ROWS)
        self.weight = weight.t().contiguous() if self.transposed else weight

    def addmm(self, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``bias + x @ W``: bias (n, out), x (n, in) -> (n, out) (a transposed view when transposed)."""
        if self.transposed:
            return torch.addmm(bias.t(), self.weight, x.t()).t()
        return torch.addmm(bias, x, self.weight)
