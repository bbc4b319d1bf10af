"""Lossless compression with pixelmodels against PNG, WebP and JPEG-XL, on the same images in one run.

    python benchmarks/compression.py                                        # the shipped model, whole test set
    python benchmarks/compression.py --pretrained fashion-mnist-gated-small-v1 --run runs/demo --run runs/vqvae/prior
    python benchmarks/compression.py --limit 200 --no-whole                 # a quick look

For every model (``--pretrained NAME``, ``--run RUN_DIR``; a prior over codes reads its run's arrays
dataset) it takes the test split's first ``--limit`` images (all by default), with their labels and
conditions, and prints:

* the model's NLL in bits per dimension (``pixelmodels.score``);
* pixelmodels: the stream's bits per dimension (file bytes x 8 / dimensions, header included) and its
  gap to the NLL; encode and decode images/s (``compress`` / ``decompress`` with ``--workers``, each
  chunk of ``--chunk-size`` images on one thread), the decoded images checked equal to the originals;
* PNG (zlib level 9), WebP lossless (level 100, method 6) and JPEG-XL lossless (effort 9), through
  ``imagecodecs`` (``pip install imagecodecs``): bits per dimension when each image is its own file,
  and when the whole set is one image (the images tiled in a grid without gaps; a last row that is not
  full is padded with zeros, which count as dimensions of the tiled image only), each decoded and checked;
  encode and decode images/s of the per-image files on one thread. Grayscale goes to WebP as RGB (three
  equal channels: WebP has no grayscale mode); images of fewer than 8 bits are coded as their values
  (0..2**n_bits - 1), code maps as 8-bit images of their codes (K <= 256);
* the ratio of the best codec's bits to pixelmodels' (per image and whole set): above 1, pixelmodels'
  file is smaller.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pixelmodels  # noqa: E402
from pixelmodels.devices import describe_machine
from pixelmodels.app.runs import load_model_data, open_model  # noqa: E402


def codecs():
    """name -> (encode(uint8 (H, W) or (H, W, 3)) -> bytes, decode(bytes) -> array, wants RGB)."""
    try:
        import imagecodecs
    except ImportError:
        sys.exit("benchmarks/compression.py needs imagecodecs: pip install imagecodecs")
    return {
        "PNG": (lambda a: imagecodecs.png_encode(a, level=9), imagecodecs.png_decode, False),
        "WebP lossless": (lambda a: imagecodecs.webp_encode(a, lossless=True, level=100, method=6),
                          imagecodecs.webp_decode, True),
        "JPEG-XL lossless": (lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=9),
                             imagecodecs.jpegxl_decode, False),
    }


def as_planes(images: torch.Tensor, rgb: bool) -> list[np.ndarray]:
    """(N, C, H, W) values -> N uint8 arrays a codec takes: (H, W) for one channel (or (H, W, 3) with
    ``rgb``), (H, W, 3) for three."""
    x = images.numpy().astype(np.uint8).transpose(0, 2, 3, 1)
    if x.shape[3] == 1:
        return list(np.repeat(x, 3, axis=3)) if rgb else list(x[..., 0])
    return list(x)


def tiled(images: torch.Tensor) -> torch.Tensor:
    """The images as one (1, C, rows * H, cols * W) image, near square, zeros after the last image."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros((rows * cols, c, h, w), dtype=images.dtype)
    grid[:n] = images
    return grid.view(rows, cols, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, rows * h, cols * w)


def codec_figures(name, encode, decode, rgb, images: torch.Tensor, whole: bool) -> dict:
    arrays = as_planes(images, rgb)
    start = time.perf_counter()
    files = [encode(a) for a in arrays]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = [decode(f) for f in files]
    decode_s = time.perf_counter() - start
    if not all(np.array_equal(a, d) for a, d in zip(arrays, decoded)):
        raise SystemExit(f"{name}: a decoded image differs from its source (not lossless)")
    dims = images.numel()
    out = dict(per_image=8 * sum(map(len, files)) / dims, encode=len(arrays) / encode_s, decode=len(arrays) / decode_s)
    if whole:
        (one,) = as_planes(tiled(images), rgb)
        data = encode(one)
        if not np.array_equal(decode(data), one):
            raise SystemExit(f"{name}: the decoded tiled image differs from its source (not lossless)")
        out["whole"] = 8 * len(data) / dims
    return out


def measure(label: str, model, data, args) -> list[str]:
    n = len(data) if args.limit is None else min(args.limit, len(data))
    images = torch.as_tensor(data.images[:n])
    labels = data.labels[:n] if model.n_classes else None
    cond = data.cond[:n] if model.cond_shape is not None else None
    dims = images.numel()
    nll = pixelmodels.score(model, images, labels, cond=cond).bits_per_dim.double().mean().item()
    start = time.perf_counter()
    stream = pixelmodels.compress(model, images, labels, cond, chunk_size=args.chunk_size, workers=args.workers,
                                  progress=True)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = pixelmodels.decompress(model, stream, cond, workers=args.workers, progress=True)
    decode_s = time.perf_counter() - start
    if not torch.equal(decoded[0] if model.n_classes else decoded, images.to(decoded[0].dtype if model.n_classes
                                                                              else decoded.dtype)):
        raise SystemExit(f"{label}: the decoded images differ from the originals")
    ours = 8 * len(stream) / dims
    what = f"{model.n_codes} codes" if model.n_codes else f"{model.n_bits}-bit"
    print(f"{label}: {n} images {tuple(images.shape[1:])} {what}; NLL {nll:.4f} bits/dim; pixelmodels "
          f"{ours:.4f} bits/dim ({100 * (ours / nll - 1):+.2f}%), encode {n / encode_s:.1f} images/s, decode "
          f"{n / decode_s:.1f} images/s", flush=True)
    rows = [f"| {label} | pixelmodels | {ours:.4f} ({100 * (ours / nll - 1):+.2f}% over NLL {nll:.4f}) | - | "
            f"{n / encode_s:.1f} | {n / decode_s:.1f} |"]
    best = {}
    if model.n_codes and model.n_codes > 256:
        print(f"{label}: codes above 255 do not fit 8-bit images; no codec rows")
        return rows
    for name, (encode, decode, rgb) in codecs().items():
        f = codec_figures(name, encode, decode, rgb, images, args.whole)
        print(f"{label}: {name}: {f}", flush=True)
        for key in ("per_image", "whole"):
            if key in f:
                best[key] = min(best.get(key, math.inf), f[key])
        whole = f"{f['whole']:.4f}" if "whole" in f else "-"
        rows.append(f"| {label} | {name} | {f['per_image']:.4f} | {whole} | {f['encode']:.0f} | {f['decode']:.0f} |")
    ratios = ", ".join(f"{key.replace('_', ' ')}: {best[key] / ours:.2f}x" for key in best)
    rows.append(f"| {label} | best codec / pixelmodels | {ratios} | | | |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", action="append", default=[], help="a shipped model (repeatable)")
    p.add_argument("--run", action="append", default=[], type=Path, help="a run directory (repeatable)")
    p.add_argument("--limit", type=int, help="the first N test images (default: all)")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--workers", type=int, help="chunks coded at the same time (default: torch's threads)")
    p.add_argument("--no-whole", dest="whole", action="store_false", help="skip the whole-set-as-one-image rows")
    args = p.parse_args()
    sources = [(name, None, name) for name in args.pretrained] + [(str(r), r, None) for r in args.run]
    sources = sources or [("fashion-mnist", None, "fashion-mnist")]
    print(describe_machine("cpu"))
    rows = ["| model | codec | bits/dim, one file per image | bits/dim, the set as one image | encode images/s | "
            "decode images/s |", "| --- | --- | --- | --- | --- | --- |"]
    for label, run_dir, pretrained in sources:
        model, run_data, _ = open_model(run_dir, pretrained, "cpu")
        rows += measure(label, model.eval(), load_model_data(model, run_data, "test"), args)
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
