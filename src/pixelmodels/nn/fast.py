"""The library's speed code for the CPU, in one place, behind one switch.

Every model is written in plain PyTorch; the two kernels here replace a plain computation with
one that gives the same values (up to float rounding) faster on the CPU. Each stays only while
it makes a whole training or sampling step at least 5% faster at a default or reference preset,
measured side by side with the switch off (BENCHMARKS.md, "speed code"). The switch:

* ``PIXELMODELS_FAST_KERNELS=0`` in the environment turns them off for the process;
* ``set_fast_kernels(False)`` and the context manager ``fast_kernels(False)`` do it from Python.

With the switch off (or on another device, under autocast or ``torch.compile``) every call here is
the plain PyTorch expression it names, which is the tested reference: the model tests run both.

* ``conv2d``: the weight gradient of a stride-1 convolution as a forward convolution (oneDNN's
  backward-weights kernel is slow on the CPU), for the kernel shapes where that pays.
* ``StepMatrix``: a cached sampling step's product with a large weight, in the layout MKL runs
  faster at a few rows.
"""

from __future__ import annotations

import contextlib
import os

import torch
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


# -- weight gradients by forward convolution -------------------------------------------------------

def weight_grad_by_forward(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The weight gradient (out, in, kh, kw) of a stride-1 unpadded convolution of x (B, in, H + kh - 1,
    W + kw - 1) whose output gradient is ``grad`` (B, out, H, W), as one forward convolution.

    dW[o, c, i, j] = sum over (n, h, w) of grad[n, o, h, w] * x[n, c, h + i, w + j]: x with its channels as
    the batch and its images as the channels, convolved with the gradient (likewise swapped) as the kernel.
    """
    return F.conv2d(x.transpose(0, 1).contiguous(), grad.transpose(0, 1).contiguous()).transpose(0, 1).contiguous()


class _Conv2dWeightGradByForward(torch.autograd.Function):
    """``F.conv2d(x, weight, bias)`` (stride 1, no padding) whose weight gradient is a forward convolution."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1,
                                                     (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            gw = weight_grad_by_forward(x, grad)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb


def _weight_grad_pays(weight: torch.Tensor) -> bool:
    """Kernels of at least 2 x 3, and one-row kernels at least 3 wide over 16 input channels or more: the
    shapes where the forward convolution was faster than oneDNN's backward-weights kernel (BENCHMARKS.md)."""
    rows, columns = weight.shape[-2:]
    return columns >= 3 and (rows >= 2 or weight.shape[1] >= 16)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` of stride 1 without padding (the shifted and masked convolutions pad
    their input themselves); in CPU training, with the weight gradient computed as a forward convolution
    where that pays (the same sums in another order)."""
    if (weight.requires_grad and torch.is_grad_enabled() and x.dim() == 4 and _on_cpu(x)
            and _weight_grad_pays(weight)):
        return _Conv2dWeightGradByForward.apply(x, weight, bias)
    return F.conv2d(x, weight, bias)


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
