"""Count the floating-point operations of a forward pass from the shapes of its matrix products.

``count_flops(fn)`` runs ``fn()`` once under a ``TorchDispatchMode`` that sees
every ATen operation (so functional calls such as ``F.conv2d(x, weight * mask)``
and ``F.scaled_dot_product_attention`` are counted as well as modules) and adds
2 * multiply-accumulates for

* convolutions and transposed convolutions (any stride, groups, 1-3 spatial dims):
  2 * (output positions) * out_channels * (in_channels / groups) * kernel taps for a
  convolution; 2 * (input positions) * in_channels * (out_channels / groups) * taps
  for a transposed one (each input element is scattered through the kernel once);
* matrix products ``mm``, ``addmm``, ``bmm``, ``baddbmm`` (``F.linear``, ``@``);
* fused attention kernels: 2 * B * heads * Tq * Tk * (key_size + value_size), halved
  under ``is_causal`` (the kernels skip the blocks above the diagonal, and that half
  is no useful work). A materialized attention shows up as its ``bmm`` calls instead.

Element-wise work (activations, normalization, the likelihood's arithmetic) is not
counted: the figure is the matrix-multiply work, to compare with a matmul peak.
A training step is counted as 3x the forward pass (the backward of a product
costs two products of the same size: the gradients of its input and its weight).
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

TRAIN_STEP_FACTOR = 3  # forward + backward (2x forward)


def _conv_flops(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, transposed: bool, groups: int) -> int:
    taps = math.prod(weight.shape[2:])
    if transposed:  # weight (in, out / groups, *kernel): every input element meets out / groups * taps weights
        return 2 * x.numel() * weight.shape[1] * taps
    return 2 * out.numel() * weight.shape[1] * taps  # weight (out, in / groups, *kernel)


def _attention_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> int:
    """q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv): q k^T and weights @ v."""
    batch = math.prod(q.shape[:-2])
    flops = 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return flops // 2 if causal else flops


def _attention_args(func, args, kwargs):
    """(q, k, v, is_causal) of a fused attention op, positional or keyword."""
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args), **kwargs)
    return bound["query"], bound["key"], bound["value"], bool(bound.get("is_causal", False))


_ATTENTION_OPS = {"_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                  "_scaled_dot_product_fused_attention_overrideable"}


class FlopCounter(TorchDispatchMode):
    """Counts matrix-multiply FLOPs of the ATen ops run inside it; ``total`` and ``by_op`` after the block."""

    def __init__(self):
        super().__init__()
        self.by_op: dict[str, int] = defaultdict(int)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        flops = 0
        if packet in (aten.convolution, aten._convolution):
            x, weight = args[0], args[1]
            flops = _conv_flops(x, weight, out, bool(args[6]), int(args[8]))
        elif packet is aten.mm:
            flops = 2 * args[0].shape[0] * args[0].shape[1] * args[1].shape[1]
        elif packet is aten.addmm:
            flops = 2 * args[1].shape[0] * args[1].shape[1] * args[2].shape[1]
        elif packet is aten.bmm:
            flops = 2 * args[0].shape[0] * args[0].shape[1] * args[0].shape[2] * args[1].shape[2]
        elif packet is aten.baddbmm:
            flops = 2 * args[1].shape[0] * args[1].shape[1] * args[1].shape[2] * args[2].shape[2]
        elif packet.__name__ in _ATTENTION_OPS:
            flops = _attention_flops(*_attention_args(func, args, kwargs))
        if flops:
            self.by_op[packet.__name__] += flops
        return out


def count_flops(fn, *args, **kwargs) -> int:
    """Matrix-multiply FLOPs of one call ``fn(*args, **kwargs)`` (run under ``torch.no_grad``)."""
    with torch.no_grad(), FlopCounter() as counter:
        fn(*args, **kwargs)
    return counter.total


def training_step_flops(model, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """FLOPs of one training step (forward, loss, backward) of ``model`` on the batch ``x``: 3x the forward."""
    return TRAIN_STEP_FACTOR * count_flops(model.log_prob, x, y)
