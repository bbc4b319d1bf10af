"""How fast oneDNN runs the convolutions of the issue-15 reference models, one at a time, against a matmul.

For each convolution shape of gated PixelCNN 64x5 and PixelCNN++ 32x2 at 1x28x28, batch 16 (and the
stride-1 ones of PixelCNN++'s coarser levels), in fp32: the forward, the input gradient and the weight
gradient alone, and both gradients in one ``convolution_backward`` call, as GFLOP/s beside a 2048^3
matmul measured in the same run. Also a weight gradient of one matrix product per kernel tap (the input
and the output gradient laid out channel-major over a padded grid, so that each tap is a contiguous
shifted window), and the weight gradient as one forward convolution (images and channels swapped,
``pixelmodels.nn.shifted.weight_grad_by_forward``, what training uses for kernels of 2x3 and more),
timed alternately with oneDNN's weight gradient so that both see the same machine: the last column is
oneDNN's time over the forward convolution's. This is the ceiling of those models' training steps: no
step runs its convolutions faster than they run alone.

    python benchmarks/conv_shapes.py                # 2 threads
    python benchmarks/conv_shapes.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pixelmodels.nn.shifted import weight_grad_by_forward

# (label, in, out, kh, kw, height, width) at batch 16
SHAPES = [
    ("gated 64x5 vertical 3x5", 64, 128, 3, 5, 28, 28),
    ("gated 64x5 horizontal 1x3", 64, 128, 1, 3, 28, 28),
    ("pixelcnn++ 32x2 conv1 2x3", 64, 32, 2, 3, 28, 28),
    ("pixelcnn++ 32x2 conv2 2x3", 64, 64, 2, 3, 28, 28),
    ("pixelcnn++ 32x2 conv1 2x2", 64, 32, 2, 2, 28, 28),
    ("pixelcnn++ 32x2 conv2 2x3, 14x14", 64, 64, 2, 3, 14, 14),
    ("pixelcnn++ 32x2 conv2 2x3, 7x7", 64, 64, 2, 3, 7, 7),
    ("pixelsnail 64 2x2 v128 2x2", 128, 128, 2, 2, 28, 28),
]


def timed(f, repeats: int, fastest: bool = False) -> float:
    """The median (or the fastest) of ``repeats`` calls after one untimed."""
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times) if fastest else sorted(times)[len(times) // 2]


def timed_pair(f, g, repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` calls of f and of g, alternating (f g, g f, ...), after one untimed each."""
    f(), g()
    times = ([], [])
    for k in range(repeats):
        for which in ((0, 1) if k % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            (f, g)[which]()
            times[which].append(time.perf_counter() - start)
    return tuple(sorted(t)[len(t) // 2] for t in times)


def per_tap_weight_grad(g, x, kh, kw):
    """dW (out, in, kh, kw) as kh * kw matrix products over a channel-major padded grid."""
    n, c_in, hp, wp = x.shape
    c_out, h, w = g.shape[1], g.shape[2], g.shape[3]
    cols = x.transpose(0, 1).reshape(c_in, -1)  # (in, N * Hp * Wp)
    grads = F.pad(g.transpose(0, 1), (0, kw - 1, 0, kh - 1)).reshape(c_out, -1)  # zeros off the real outputs
    length = grads.shape[1] - ((kh - 1) * wp + kw - 1)
    out = g.new_empty(kh, kw, c_out, c_in)
    for a in range(kh):
        for b in range(kw):
            offset = a * wp + b
            torch.mm(grads[:, :length], cols[:, offset: offset + length].t(), out=out[a, b])
    return out.permute(2, 3, 0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peak = 2 * 2048**3 / timed(lambda: a @ b, 10, fastest=True) / 1e9  # the machine's best
    print(f"{args.threads} thread(s), batch {args.batch}, fp32, medians of {args.repeats}; 2048^3 matmul "
          f"(fastest of 10): {peak:.0f} GFLOP/s\n")
    print("| convolution | GFLOP (forward) | forward GFLOP/s | input grad GFLOP/s | weight grad GFLOP/s | "
          "both grads, one call, GFLOP/s | both, two calls, GFLOP/s | per-tap weight grad GFLOP/s | "
          "forward, of the matmul | weight grad as a forward convolution GFLOP/s | oneDNN weight grad / forward "
          "convolution (alternating) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, c_in, c_out, kh, kw, h, w in SHAPES:
        x = torch.randn(args.batch, c_in, h + kh - 1, w + kw - 1)  # already padded: a valid convolution
        weight = torch.randn(c_out, c_in, kh, kw) * 0.05
        g = torch.randn(args.batch, c_out, h, w)
        flops = 2 * args.batch * h * w * c_in * c_out * kh * kw / 1e9

        def backward(mask):
            return torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                       mask)

        reference = backward([False, True, False])[1]
        for name, alternative in (("per-tap", per_tap_weight_grad(g, x, kh, kw)),
                                  ("forward-convolution", weight_grad_by_forward(x, g))):
            error = (alternative - reference).abs().max() / reference.abs().max()
            if error > 1e-4:
                raise SystemExit(f"{label}: the {name} weight gradient is off by {error:.1e}")
        forward = timed(lambda: F.conv2d(x, weight), args.repeats)
        gx = timed(lambda: backward([True, False, False]), args.repeats)
        gw = timed(lambda: backward([False, True, False]), args.repeats)
        both = timed(lambda: backward([True, True, False]), args.repeats)
        tap = timed(lambda: per_tap_weight_grad(g, x, kh, kw), args.repeats)
        gw_pair, by_forward = timed_pair(lambda: backward([False, True, False]), lambda: weight_grad_by_forward(x, g),
                                         args.repeats)
        cells = [label, f"{flops:.2f}", *(f"{flops / s:.0f}" for s in (forward, gx, gw)),
                 f"{2 * flops / both:.0f}", f"{2 * flops / (gx + gw):.0f}", f"{flops / tap:.0f}",
                 f"{flops / forward / peak:.0%}", f"{flops / by_forward:.0f}", f"{gw_pair / by_forward:.2f}x"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
