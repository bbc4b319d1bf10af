"""The matrix products of one cached sampling step: 16 rows times a frozen weight, in two layouts.

A cached step multiplies the n rows of a batch (16 here) by every layer's weight. At so few rows the
product does 8 FLOP per 4-byte weight, and its speed depends on the layout. For the weight shapes of the
default presets' caches (PixelSNAIL: 256 features, 2x2 taps, one row of them per step; PixelCNN++: 160
features), each form below multiplies a stream of different weights of that shape (about 300 MB, more
than the caches hold) and prints the weights' bytes per second:

* ``x @ W``: the window (16, in), a strided view like the caches' row buffers, times W stored (in, out);
* ``(W^T x^T)^T``: W stored (out, in), the product computed transposed (``StepMatrix`` for large weights).

Beside them: the machine's read bandwidth (a sum over the same bytes) and ``torch.mv`` (one row).

    python benchmarks/step_products.py             # 1 and 2 threads
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = [(1024, 256), (1024, 512), (2048, 256), (2048, 512), (640, 160), (640, 320), (320, 320)]  # (in, out)


def fastest(f, repeats: int = 7) -> float:
    f()
    out = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - start)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rows", type=int, default=16)
    args = p.parse_args()
    torch.manual_seed(0)
    m = args.rows
    print("| threads | in x out | weights MB | read bandwidth GB/s | mv GB/s | x @ W GB/s | (W^T x^T)^T GB/s | "
          "transposed / plain | x @ W GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for k, n in SHAPES:
            count = max(8, int(300e6 / (k * n * 4)))
            plain = [torch.randn(k, n) * 0.02 for _ in range(count)]  # (in, out)
            flipped = [w.t().contiguous() for w in plain]  # (out, in)
            window = torch.randn(m, 30, k // 2)[:, 3:5].reshape(m, k)  # (m, in), rows 15 * in apart
            bias = torch.randn(n).expand(m, n)
            flat = torch.cat([w.flatten() for w in plain])
            gb = flat.numel() * 4 / 1e9
            read = gb / fastest(lambda: flat.sum())
            mv = gb / fastest(lambda: [torch.mv(w, window[0]) for w in flipped])
            a = gb / fastest(lambda: [torch.addmm(bias, window, w) for w in plain])
            b = gb / fastest(lambda: [torch.addmm(bias.t(), w, window.t()).t() for w in flipped])
            cells = [str(threads), f"{k} x {n}", f"{k * n * 4 / 1e6:.1f}", f"{read:.1f}", f"{mv:.1f}", f"{a:.2f}",
                     f"{b:.2f}", f"{b / a:.2f}x", f"{a * 2 * m / 4:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
