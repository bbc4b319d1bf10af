"""Training-step variants tried for issue 15, against the step as it is, interleaved in one process.

For the issue-15 reference configurations of ``benchmarks/train.py`` (fp32, 1x28x28, batch 16), two
models with the same initial weights take alternating steps on the same data, one as the library runs
it and one under a variant, each step seeded alike (the same dropout masks), so that the losses can be
compared as well as the medians of the step times. The process keeps its freed memory as ``pixelmodels
train`` does on the CPU (``pixelmodels.evaluation.keep_freed_memory``):

* ``split-backward``: every ``F.conv2d`` through an autograd function whose backward asks oneDNN for
  the input gradient and the weight gradient in two calls instead of one (at some of these shapes the
  combined call is slower than the two);
* ``channels-last``: the model and its input in ``torch.channels_last``, 1x1 products as ``F.linear``
  over the channel dimension;
* ``bmm-weight-grad``: stride-1 convolutions without padding (the shifted ones: their input comes
  padded) take the input gradient from oneDNN and the weight gradient as one batched matrix product of
  the output gradient with the input's kh * kw shifted windows stacked (im2col), where oneDNN's weight
  gradient runs at 40-60% of the matmul (``conv_shapes.py``);
* ``onednn-weight-grad``: the library's faster weight gradient (a forward convolution, for kernels of
  at least 2x3 and one-row ones over 16 channels or more: ``pixelmodels.nn.shifted.conv2d``) turned
  off, every weight gradient oneDNN's; and ``weight-grad-by-forward-2x2`` / ``-1-row``: that path for
  2x2 kernels and for every one-row kernel too (the speed-up below 1 of the first says what the library
  gains; the other two why its thresholds are where they are);
* ``torch-tanh-gate``: the gated PixelCNN's gate as ``torch.tanh(a) * torch.sigmoid(b)`` (the library's
  is one autograd step with tanh = 2 sigmoid(2x) - 1, ``pixelmodels.nn.activations``).

    python benchmarks/train_variants.py                       # both variants, the three configurations
    python benchmarks/train_variants.py --variants split-backward --threads 1 --steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import train_labels  # noqa: E402
from train import REFERENCES  # noqa: E402

LABELS = ("ref gated 64x5", "ref pixelcnn++ 32x2", "ref pixelsnail 64 2x2")


def split_backward():
    """A context in which ``F.conv2d`` computes its backward in two oneDNN calls."""
    import torch
    import torch.nn.functional as F

    plain = F.conv2d

    def pair(v):
        return list(v) if isinstance(v, (tuple, list)) else [v, v]

    class SplitConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b, stride, padding, dilation, groups):
            ctx.save_for_backward(x, w)
            ctx.conf = (pair(stride), pair(padding), pair(dilation), groups, b is not None)
            return plain(x, w, b, stride, padding, dilation, groups)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            stride, padding, dilation, groups, has_bias = ctx.conf

            def part(mask):
                return torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, dilation, False, [0, 0],
                                                           groups, mask)

            gx = part([True, False, False])[0] if ctx.needs_input_grad[0] else None
            gw = part([False, True, False])[1] if ctx.needs_input_grad[1] else None
            gb = g.sum((0, 2, 3)) if has_bias and ctx.needs_input_grad[2] else None
            return gx, gw, gb, None, None, None, None

    @contextlib.contextmanager
    def active():
        F.conv2d = lambda x, w, b=None, stride=1, padding=0, dilation=1, groups=1: SplitConv.apply(
            x, w, b, stride, padding, dilation, groups)
        try:
            yield
        finally:
            F.conv2d = plain

    return active


def channels_last():
    """A context in which 1x1 products of channels-last tensors are ``F.linear`` (the model is converted
    by the caller, the input by ``prepare``)."""
    import torch
    import torch.nn.functional as F

    import pixelmodels.nn.masked as masked
    import pixelmodels.nn.shifted as shifted

    plain = shifted.pointwise_conv

    def pointwise(x, weight, bias):
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return F.linear(x.permute(0, 2, 3, 1), weight.reshape(weight.shape[0], -1), bias).permute(0, 3, 1, 2)
        return plain(x, weight, bias)

    @contextlib.contextmanager
    def active():
        shifted.pointwise_conv = masked.pointwise_conv = pointwise
        try:
            yield
        finally:
            shifted.pointwise_conv = masked.pointwise_conv = plain

    return active


def bmm_weight_grad():
    """A context in which ``F.conv2d`` of stride 1, no padding, computes its weight gradient by im2col + bmm."""
    import torch
    import torch.nn.functional as F

    plain = F.conv2d

    class ColsConv(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            ctx.has_bias = b is not None
            return plain(x, w, b)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            n, c_in, _, _ = x.shape
            c_out, _, kh, kw = w.shape
            h, wd = g.shape[2], g.shape[3]
            gx = gw = gb = None
            if ctx.needs_input_grad[0]:
                gx = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                         [True, False, False])[0]
            if ctx.needs_input_grad[1]:
                cols = torch.stack([x[:, :, a:a + h, b:b + wd] for a in range(kh) for b in range(kw)], 2)
                gw = torch.bmm(g.reshape(n, c_out, h * wd), cols.view(n, c_in * kh * kw, h * wd).transpose(1, 2))
                gw = gw.sum(0).view(c_out, c_in, kh, kw)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                gb = g.sum((0, 2, 3))
            return gx, gw, gb

    def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        simple = stride in (1, (1, 1)) and padding in (0, (0, 0)) and dilation in (1, (1, 1)) and groups == 1
        if simple and w.shape[2] * w.shape[3] > 1 and x.dim() == 4:
            return ColsConv.apply(x, w, b)
        return plain(x, w, b, stride, padding, dilation, groups)

    @contextlib.contextmanager
    def active():
        F.conv2d = conv
        try:
            yield
        finally:
            F.conv2d = plain

    return active


def setting(module: str, name: str, value):
    """A context in which ``module.name`` is ``value`` (read at call time by the library)."""
    import importlib

    target = importlib.import_module(module)

    @contextlib.contextmanager
    def active():
        before = getattr(target, name)
        setattr(target, name, value)
        try:
            yield
        finally:
            setattr(target, name, before)

    return lambda: active


def _torch_tanh_gate(x):
    import torch

    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="split-backward,channels-last")
    p.add_argument("--labels", default=",".join(LABELS), help="comma-separated configurations of train.py")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="steps per model (the first 2 are not timed)")
    args = p.parse_args()
    import torch

    from pixelmodels import create_model
    from pixelmodels.evaluation import keep_freed_memory

    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as pixelmodels train does on the CPU (and benchmarks/train.py's step)
    never = (1 << 30, 1 << 30)
    makers = {"split-backward": split_backward, "channels-last": channels_last, "bmm-weight-grad": bmm_weight_grad,
              "onednn-weight-grad": setting("pixelmodels.nn.shifted", "WEIGHT_GRAD_BY_FORWARD_AT", never),
              "weight-grad-by-forward-2x2": setting("pixelmodels.nn.shifted", "WEIGHT_GRAD_BY_FORWARD_AT", (2, 2)),
              "weight-grad-by-forward-1-row": setting("pixelmodels.nn.shifted", "WEIGHT_GRAD_BY_FORWARD_AT", (1, 3)),
              "torch-tanh-gate": setting("pixelmodels.models.gated_pixelcnn", "gate", _torch_tanh_gate)}
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in makers]
    labels = train_labels(p, args.labels)
    if unknown or args.steps < 3:
        p.error(f"--variants: expected some of {', '.join(makers)}, found {args.variants!r}" if unknown
                else "--steps: expected at least 3")
    start = time.perf_counter()
    rows = []
    for variant in variants:
        active = makers[variant]()
        for label in labels:
            cfg = next(c for c in REFERENCES if c.label == label and c.shape == "1x28x28")
            runs = {}
            for kind in ("as is", variant):
                torch.manual_seed(0)
                model = create_model(cfg.model, image_shape=(1, 28, 28), n_bits=8, preset=cfg.preset,
                                     **cfg.overrides).train()
                if kind == "channels-last":
                    model = model.to(memory_format=torch.channels_last)
                runs[kind] = (model, torch.optim.Adam(model.parameters(), lr=1e-4), [], [])
            x = torch.randint(0, 256, (cfg.batch, 1, 28, 28), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(1))
            scale = math.log(2) * 784 * cfg.batch
            for step in range(args.steps):
                for kind, (model, optimizer, times, losses) in runs.items():
                    context = contextlib.nullcontext() if kind == "as is" else active()
                    torch.manual_seed(100 + step)
                    began = time.perf_counter()
                    with context:
                        optimizer.zero_grad(set_to_none=True)
                        params = model(x)  # one channel: channels-last already; the weights make the rest so
                        loss = model.head.nll(params, x).sum() / scale
                        loss.backward()
                        optimizer.step()
                    times.append(time.perf_counter() - began)
                    losses.append(loss.item())
            base, new = (statistics.median(runs[k][2][2:]) for k in ("as is", variant))
            diff = max(abs(a - b) for a, b in zip(runs["as is"][3], runs[variant][3]))
            print(f"{variant} {label}: {base * 1e3:.0f} -> {new * 1e3:.0f} ms", flush=True)
            rows.append((variant, label, base, new, diff))
    print(f"\n{args.threads} thread(s), median of {args.steps - 2} interleaved steps after 2, wall "
          f"{time.perf_counter() - start:.0f} s:\n")
    print("| variant | configuration | as is ms/step | variant ms/step | speed-up | largest loss difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant, label, base, new, diff in rows:
        print(f"| {variant} | {label.removeprefix('ref ')} | {base * 1e3:.0f} | {new * 1e3:.0f} | {base / new:.3f}x "
              f"| {diff:.1e} |")


if __name__ == "__main__":
    main()
