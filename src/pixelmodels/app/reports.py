"""What ``pixelmodels score`` writes: the CSV of scores and, per image, a figure of its per-pixel NLL heat
map beside the image, with a colour scale in bits (:func:`heatmap_figure`); through the one writer
(:mod:`pixelmodels.app.outputs`)."""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pixelmodels.app.inputs import Inputs
from pixelmodels.app.outputs import Target, listed, made_note, plural, refuse_format, target, write_files
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import display_scale, enlarge, to_uint8_range
from pixelmodels.scoring import Scores

GAP = 4  # pixels: the white margin around and between the parts of a heat-map figure
BAR = 10  # pixels: the width of its colour bar


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


def heatmap_figure(image, pixel_nll, max_bits: float, n_bits: int | None = None,
                   scale: int | None = None) -> Image.Image:
    """One image's heat map as a figure, RGB on white, each image pixel a square of ``scale`` x ``scale``
    (default: ``imageio.display_scale``, so small images are readable).

    Left to right, ``GAP`` pixels from the top and apart: the image (C, H, W) of ``n_bits`` values (left
    out when ``image`` is None, as for code maps), its :func:`heatmap` (H, W) of ``pixel_nll`` in nats, and
    a colour bar ``BAR`` pixels wide (outlined in the margin) from white (``max_bits`` or more, top) to black
    (0 bits, bottom), its ends (and, when it is tall enough, its middle) ticked and labelled in bits.
    """
    h, w = np.shape(pixel_nll)
    scale = display_scale(h, w) if scale is None else scale
    parts = [Image.fromarray(heatmap(pixel_nll, max_bits))]
    if image is not None:
        array = to_uint8_range(torch.as_tensor(image)[None], n_bits)[0]  # (H, W, C) in 0..255
        parts.insert(0, Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).convert("RGB"))
    side = h * scale
    bar = Image.fromarray(np.repeat(heat_colors(np.linspace(1.0, 0.0, side))[:, None], BAR, axis=1))  # (side, BAR)
    font = ImageFont.load_default()
    ticks = [(0, f"{max_bits:g} bits", "lt"), (side - 1, "0", "lb")]
    ticks += [(side // 2, f"{max_bits / 2:g}", "lm")] if side >= 48 else []
    x = GAP + len(parts) * (w * scale + GAP)  # where the bar starts
    width = x + BAR + 3 + max(math.ceil(font.getlength(text)) for _, text, _ in ticks) + GAP
    figure = Image.new("RGB", (width, side + 2 * GAP), "white")
    for k, part in enumerate(parts):
        figure.paste(enlarge(part, scale), (GAP + k * (w * scale + GAP), GAP))
    figure.paste(bar, (x, GAP))
    draw = ImageDraw.Draw(figure)
    draw.rectangle([(x - 1, GAP - 1), (x + BAR, GAP + side)], outline="black")  # around the bar, in the margin
    for y, text, anchor in ticks:
        draw.line([(x + BAR, GAP + y), (x + BAR + 2, GAP + y)], fill="black")
        draw.text((x + BAR + 3, GAP + y + (anchor == "lb")), text, fill="black", font=font, anchor=anchor)
    return figure


def heatmap_png(image, pixel_nll, max_bits: float, n_bits: int | None = None, scale: int | None = None) -> bytes:
    """:func:`heatmap_figure` as the bytes of a PNG file."""
    png = io.BytesIO()
    heatmap_figure(image, pixel_nll, max_bits, n_bits, scale).save(png, format="PNG")
    return png.getvalue()


def uniform_bits(model) -> float:
    """What a uniform guess costs a pixel of ``model``'s data, in bits: the white of its heat maps."""
    return math.log2(model.n_codes) if model.n_codes else model.image_shape[0] * model.n_bits


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


def score_columns(scores: Scores) -> dict[str, tuple[torch.Tensor, str]]:
    """The CSV's columns of ``scores``, name -> ((N,) values, format): bits_per_dim and nll_nats, then those
    present: background_bits_per_dim and likelihood_ratio (bits/dim), complexity_CODEC and
    complexity_score_CODEC (bits/dim under the codec, and S = bits/dim - complexity)."""
    columns = {"bits_per_dim": (scores.bits_per_dim, "{:.6f}"), "nll_nats": (scores.nll, "{:.4f}")}
    if scores.likelihood_ratio is not None:
        columns |= {"background_bits_per_dim": (scores.background_bits_per_dim, "{:.6f}"),
                    "likelihood_ratio": (scores.likelihood_ratio, "{:.6f}")}
    if scores.complexity is not None:
        columns |= {f"complexity_{scores.codec}": (scores.complexity, "{:.6f}"),
                    f"complexity_score_{scores.codec}": (scores.complexity_score, "{:.6f}")}
    return columns


def scores_csv(inputs: Inputs, scores: Scores, lead: dict[str, list] | None = None, labels: bool = True) -> str:
    """CSV text, one row per image: the ``lead`` columns (name -> N values) if any, then source,index,label
    (without ``labels``: no label) (blank index / label: none), then :func:`score_columns`."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    lead = lead or {}
    columns = score_columns(scores)
    writer.writerow([*lead, "source", "index", *(["label"] if labels else []), *columns])
    values = [v.tolist() for v, _ in columns.values()]
    forms = [form for _, form in columns.values()]
    for k, (source, index, label) in enumerate(zip(inputs.sources, inputs.indices, inputs.labels.tolist())):
        writer.writerow([*(column[k] for column in lead.values()), source, "" if index is None else index,
                         *(["" if label < 0 else label] if labels else []),
                         *(form.format(v[k]) for form, v in zip(forms, values))])
    return text.getvalue()


def score_targets(out: Path | None, heatmap_dir: Path | None, names: list[str], overwrite: bool):
    """Check, before scoring, where ``score`` writes: the CSV ``out`` (``--out``, a ``.csv``) and the heat
    maps ``names`` in the folder ``heatmap_dir`` (``--heatmap``), each None when not asked for. Returns
    their :class:`~pixelmodels.app.outputs.Target` s (or None)."""
    if out is not None and Path(out).suffix.lower() != ".csv":
        refuse_format("--out", Path(out), [".csv"])
    if heatmap_dir is not None and heatmap_dir.exists() and not heatmap_dir.is_dir():
        raise PixelModelsError(f"--heatmap: {heatmap_dir} is a file; expected a folder for the heat maps")
    return (None if out is None else target("--out", out, overwrite=overwrite),
            None if heatmap_dir is None else target("--heatmap", heatmap_dir, [heatmap_dir / n for n in names],
                                                    overwrite))


def write_scores(inputs: Inputs, scores: Scores, model, out: Target | None = None,
                 heatmaps: Target | None = None) -> str:
    """Write what ``pixelmodels score`` writes where :func:`score_targets` planned it: the CSV rows to ``out``
    (standard output when None) and a heat-map figure (:func:`heatmap_png`) per image in ``heatmaps``.
    Returns the summary line."""
    table = scores_csv(inputs, scores)
    files = {} if out is None else {out.path: table.encode()}
    if heatmaps is not None:
        images = [None] * len(inputs.sources) if model.n_codes else inputs.images
        files |= {f: heatmap_png(image, nll, uniform_bits(model), model.n_bits)
                  for f, image, nll in zip(heatmaps.files, images, scores.pixel_nll)}
    if out is None:
        sys.stdout.write(table)
    write_files(files)
    n = len(inputs.sources)
    said = ([str(out.path)] if out else []) + ([f"{plural(n, 'heat map')} in {heatmaps.path}"] if heatmaps else [])
    mean = scores.bits_per_dim.double().mean().item() if n else float("nan")
    return (f"scored {plural(n, 'image')}: mean bits/dim {mean:.4f}" + (f"; wrote {listed(said)}" if said else "")
            + made_note([m for t in (out, heatmaps) if t is not None for m in t.made]))
