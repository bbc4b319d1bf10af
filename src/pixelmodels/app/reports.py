"""What ``pixelmodels score`` writes: per-pixel NLL heat maps and the CSV of scores."""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pixelmodels.app.inputs import Inputs
from pixelmodels.checkpoint import atomic_write
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import display_scale, enlarge
from pixelmodels.scoring import Scores

def heat_colors(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> uint8 RGB (..., 3) along black, red, yellow, white."""
    ramp = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[..., None] * 3.0 - np.arange(3)
    return np.rint(np.clip(ramp, 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap(pixel_nll, max_bits: float) -> np.ndarray:
    """Per-pixel NLL (H, W) in nats -> uint8 RGB (H, W, 3): black at 0 bits, white at ``max_bits`` or more.

    With ``max_bits = C * n_bits``, white is what a uniform guess costs, so maps of
    different images (and models of the same depth) share one scale.
    """
    return heat_colors(np.asarray(pixel_nll, dtype=np.float64) / (math.log(2) * max_bits))


def heatmap_png(pixel_nll, max_bits: float, scale: int | None = None) -> bytes:
    """A PNG file (bytes) of :func:`heatmap`, each image pixel a square of ``scale`` x ``scale``
    (default: ``imageio.display_scale``, so small images are readable)."""
    scale = display_scale(*np.shape(pixel_nll)) if scale is None else scale
    png = io.BytesIO()
    enlarge(Image.fromarray(heatmap(pixel_nll, max_bits)), scale).save(png, format="PNG")
    return png.getvalue()


def uniform_bits(model) -> float:
    """What a uniform guess costs a pixel of ``model``'s data, in bits: the white of its heat maps."""
    return math.log2(model.n_codes) if model.n_codes else model.image_shape[0] * model.n_bits


def refuse_replacing(paths, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, to write results over files that exist (``--out``, ``--heatmap``)."""
    taken = [p for p in paths if Path(p).exists()]
    if taken and not overwrite:
        raise PixelModelsError(f"--out / --heatmap: {taken[0]} already exists ({len(taken)} files would be "
                               "replaced); use --overwrite to replace them")


def write_heatmaps(folder: str | Path, names: list[str], pixel_nll, model) -> None:
    """One heat-map PNG per image (:func:`heatmap_png`) in ``folder``, named ``names``, each written atomically."""
    for name, nll in zip(names, pixel_nll):
        atomic_write(Path(folder) / name, heatmap_png(nll, uniform_bits(model)))


def heatmap_names(inputs: Inputs) -> list[str]:
    """One distinct PNG file name per image: ``DATASET-SPLIT-INDEX.png`` or the file's path flattened."""
    names, seen = [], set()
    for source, index in zip(inputs.sources, inputs.indices):
        stem = source.replace(":", "-") + f"-{index:05d}" if index is not None else str(Path(source).with_suffix(""))
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
        name, k = f"{stem}.png", 1
        while name in seen:
            k += 1
            name = f"{stem}-{k}.png"
        seen.add(name)
        names.append(name)
    return names


def scores_csv(inputs: Inputs, scores: Scores) -> str:
    """CSV text, one row per image: source,index,label,bits_per_dim,nll_nats (blank index / label: none)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["source", "index", "label", "bits_per_dim", "nll_nats"])
    for source, index, label, bpd, nll in zip(inputs.sources, inputs.indices, inputs.labels.tolist(),
                                              scores.bits_per_dim.tolist(), scores.nll.tolist()):
        writer.writerow([source, "" if index is None else index, "" if label < 0 else label,
                         f"{bpd:.6f}", f"{nll:.4f}"])
    return text.getvalue()


def write_scores(inputs: Inputs, scores: Scores, model, out: Path | None = None, heatmap: Path | None = None,
                 names: list[str] = ()) -> str:
    """Write what ``pixelmodels score`` writes: the CSV rows to ``out`` (atomically; standard output when
    None) and, with ``heatmap``, a heat map per image named ``names`` there. Returns the summary line."""
    table = scores_csv(inputs, scores)
    if out is None:
        sys.stdout.write(table)
    else:
        atomic_write(out, table.encode())
    if heatmap:
        write_heatmaps(heatmap, names, scores.pixel_nll, model)
    n = len(inputs.sources)
    wrote = ([str(out)] if out else []) + ([f"{n} heat maps in {heatmap}"] if heatmap else [])
    mean = scores.bits_per_dim.double().mean().item() if n else float("nan")
    return f"scored {n} images: mean bits/dim {mean:.4f}" + (f"; wrote {', '.join(wrote)}" if wrote else "")
