"""Scoring what ``score`` and ``ood`` read (:func:`score_inputs`: labels where there are some, the marginal over
the classes where a class-conditional model has none), and ``pixelmodels ood``: a detector (a model, and a
background model for the likelihood ratio) evaluated on in-distribution images against sets of
out-of-distribution ones (:func:`run_ood`).

The scores, each oriented so that **higher means more likely out of distribution** (``pixelmodels.ood``):
``likelihood`` (bits/dim), ``likelihood ratio`` (its negation: the ratio is low out of distribution) and
``complexity S (CODEC)`` (bits/dim - complexity). The CSV keeps each as ``score`` writes it.
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pixelmodels.app.inputs import Inputs
from pixelmodels.app.ood_sets import read_set
from pixelmodels.app.outputs import listed, made_note, plural, target, write_files
from pixelmodels.app.reports import scores_csv
from pixelmodels.app.runs import open_model
from pixelmodels.errors import PixelModelsError
from pixelmodels.ood import complexity, detection
from pixelmodels.pretrained import pretrained_info
from pixelmodels.scoring import Scores, check_background, check_complexity, score

FILES = ("scores.csv", "roc.png")  # what ood writes into --out


def check_codec(codec: str | None, model) -> None:
    """Refuse, before any work, a ``--complexity`` codec that is not installed or a model of code maps."""
    try:
        check_complexity(model, codec)
    except PixelModelsError as e:
        raise PixelModelsError(f"--complexity: {str(e).removeprefix('complexity: ')}") from None


def open_background(run_dir: Path | None, name: str | None, model, device="cpu"):
    """The background model in ``run_dir`` (``--background``) or shipped as ``name``
    (``--background-pretrained``), checked against ``model``; None when neither is given."""
    if run_dir is None and name is None:
        return None
    flag, given = ("--background", run_dir) if run_dir is not None else ("--background-pretrained", name)
    try:
        background, _, _ = open_model(run_dir, name, device)
        check_background(model, background)
    except PixelModelsError as e:
        raise PixelModelsError(f"{flag} {given}: {str(e).removeprefix('background: ').removeprefix(f'{given}: ')}") \
            from None
    return background


def marginal_line(what: str, model, unlabelled: int, n: int) -> str:
    """What ``score`` does with ``unlabelled`` of ``n`` images for a class-conditional ``model`` (the ``what``:
    ``model``, ``background model``), in one line."""
    who = "no labels were given" if unlabelled == n else f"{unlabelled} of {plural(n, 'image')} have no labels"
    prior = "uniform" if model.config.class_frequencies is None else "the frequencies of its training labels"
    return (f"the {what} is conditional on {model.n_classes} classes and {who}: scoring "
            f"{'the' if unlabelled == n else 'their'} marginal likelihood "
            f"log sum_y p(x|y) p(y), p(y) {prior} ({model.n_classes} passes an image)")


def marginal_lines(model, background, inputs: Inputs, labelled: bool = True) -> list[str]:
    """The :func:`marginal_line` s of scoring ``inputs`` (with their labels unless not ``labelled``)."""
    n = len(inputs)
    unlabelled = int((inputs.labels < 0).sum()) if labelled and model.n_classes else n
    lines = [marginal_line("model", model, unlabelled, n)] if model.n_classes and unlabelled else []
    if background is not None and background.n_classes and unlabelled:  # it is given the labels the model is
        lines.append(marginal_line("background model", background, unlabelled, n))
    return lines


def _merged(parts: list[Scores], masks: list[torch.Tensor]) -> Scores:
    """The :class:`Scores` of images scored in parts, the images of part k where ``masks[k]`` is True."""
    fields = {}
    for name in Scores._fields:
        values = [getattr(p, name) for p in parts]
        if isinstance(values[0], torch.Tensor):
            whole = values[0].new_empty((len(masks[0]), *values[0].shape[1:]))
            for value, mask in zip(values, masks):
                whole[mask] = value
            fields[name] = whole
        else:
            fields[name] = any(values) if name == "marginal" else values[0]
    return Scores(**fields)


def score_inputs(model, inputs: Inputs, *, labelled: bool = True, **kw) -> Scores:
    """``pixelmodels.score`` of ``inputs`` under ``model``: a class-conditional model takes their labels (unless
    not ``labelled``) and scores the marginal over its classes where there are none; ``kw`` as ``score``."""
    known = inputs.labels >= 0 if labelled and model.n_classes else torch.zeros(len(inputs), dtype=torch.bool)
    if bool(known.all()) or not bool(known.any()):
        return score(model, inputs.images, inputs.labels if bool(known.any()) else None, cond=inputs.cond, **kw)
    masks = [known, ~known]
    return _merged([score(model, inputs.images[m], inputs.labels[m] if m is known else None,
                          cond=None if inputs.cond is None else inputs.cond[m], **kw) for m in masks], masks)


# -- pixelmodels ood -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Detector:
    """Which models ``ood`` scores with: each a (run directory, shipped name) pair, one of them None; why, in
    one line; and whether a shipped model's metadata chose them (``default``)."""

    model: tuple[Path | None, str | None]
    background: tuple[Path | None, str | None]
    line: str
    default: bool = False


def choose_detector(run_dir: Path | None, pretrained: str | None, background_dir: Path | None = None,
                    background_name: str | None = None) -> Detector:
    """The detector of ``RUN_DIR`` or ``--pretrained NAME``: with ``--background`` or ``--background-pretrained``,
    that model and that background; else, for a shipped model whose metadata has an ``"ood"`` entry, the
    ``"model"`` (default: NAME itself) and ``"background"`` it names; else the model alone (no likelihood ratio)."""
    source = str(run_dir) if pretrained is None else pretrained
    if background_dir is not None or background_name is not None:
        flag = "--background" if background_dir is not None else "--background-pretrained"
        return Detector((run_dir, pretrained), (background_dir, background_name),
                        f"detector: the model {source} and the background model "
                        f"{background_dir or background_name} ({flag})")
    default = (pretrained_info(pretrained).get("ood") or {}) if pretrained is not None else {}
    alone = ("no likelihood ratio: no --background RUN_DIR or --background-pretrained NAME given"
             + (f", and {pretrained} names no default background model" if pretrained is not None else ""))
    if not default:
        return Detector((run_dir, pretrained), (None, None), f"detector: the model {source} alone; {alone}")
    name, background = default.get("model", pretrained), default.get("background")
    why = f"the default detector of --pretrained {pretrained} (its metadata's \"ood\")"
    if background is None:
        return Detector((None, name), (None, None), f"detector: the model {name} alone, {why}; {alone}", True)
    return Detector((None, name), (None, background),
                    f"detector: the model {name} and the background model {background}, {why}; --background or "
                    "--background-pretrained chooses another", True)


def require_extras() -> None:
    """Refuse, before any work, a missing scikit-learn (the metrics) or matplotlib (the ROC plot)."""
    for module, name, what in (("sklearn.metrics", "scikit-learn", "its metrics"),
                               ("matplotlib", "matplotlib", "its ROC plot")):
        try:
            importlib.import_module(module)
        except ImportError:
            raise PixelModelsError(f"pixelmodels ood needs {name} for {what}, which is not installed; "
                                   "pip install 'pixelmodels[ood]'") from None


def oriented(scores: Scores) -> dict[str, torch.Tensor]:
    """Each score of ``scores`` by name, (N,), higher meaning more likely out of distribution."""
    named = {"likelihood": scores.bits_per_dim}
    if scores.likelihood_ratio is not None:
        named["likelihood ratio"] = -scores.likelihood_ratio
    if scores.complexity is not None:
        named[f"complexity S ({scores.codec})"] = scores.complexity_score
    return named


def passes(model) -> str:
    """`` (K passes an image)`` for a class-conditional model scored without labels (its marginal); else empty."""
    return f" ({model.n_classes} passes an image)" if model.n_classes else ""


def short(spec: str) -> str:
    """A set's name in the table and the plot: its spec, a path as its file or folder name
    (``inverted:data/mnist.npz`` -> ``inverted:mnist.npz``); the CSV keeps the spec as typed."""
    prefix, _, rest = spec.rpartition("inverted:")
    return prefix + "inverted:" + short(rest) if _ else (Path(spec).name if "/" in spec else spec)


def ood_table(results: dict[tuple[str, str], tuple]) -> str:
    """The markdown table of (OOD set, score) -> ``ood.Detection``, one row each, 4 decimals."""
    lines = ["| OOD set | score | AUROC | AUPRC | FPR at 95% TPR |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {spec} | {name} | {d.auroc:.4f} | {d.auprc:.4f} | {d.fpr_at_95_tpr:.4f} |"
              for (spec, name), d in results.items()]
    return "\n".join(lines)


def run_ood(run_dir: Path | None, pretrained: str | None, inside: str, outside: list[str], settings, *,
            background_dir: Path | None = None, background_name: str | None = None, out: Path = Path("ood"),
            overwrite: bool = False, data_dir: str | None = None, resize: bool = False, device="auto") -> str:
    """``pixelmodels ood``: score the set ``inside`` and each set of ``outside`` (specs, see
    :mod:`pixelmodels.app.ood_sets`) with the detector of :func:`choose_detector`, without labels; write the CSV of
    every image's scores and the ROC plot into ``out``. Says what it reads on stderr; returns the table of each
    OOD set and score and the line of its speed and files.

    Args:
        settings: ``OodSettings`` (``limit``, ``seed``, ``batch_size``, ``complexity``).
    """
    from pixelmodels.app.plots import draw_roc

    require_extras()
    twice = sorted({spec for spec in outside if outside.count(spec) > 1})
    if twice:
        raise PixelModelsError(f"--out-of: {listed(twice)} given twice; expected each set once")
    files = target("--out", out, [Path(out) / name for name in FILES], overwrite)
    detector = choose_detector(run_dir, pretrained, background_dir, background_name)
    try:
        model, run_data, _ = open_model(*detector.model, device)
        background = open_background(*detector.background, model, device)
    except PixelModelsError as e:
        if not detector.default:
            raise
        raise PixelModelsError(f"--pretrained {pretrained}: its default detector (its metadata's \"ood\") cannot be "
                               f"opened: {e}; --background or --background-pretrained chooses another") from None
    check_codec(settings.complexity, model)
    read = {"data_dir": data_dir, "limit": settings.limit, "resize": resize, "seed": settings.seed}
    sets = [read_set(inside, "--in", model, run_data, **read)]
    sets += [read_set(spec, "--out-of", model, run_data, **read) for spec in outside]
    every = Inputs.cat([s.inputs for s in sets])
    said = [detector.line, *(f"{s.flag} {s.spec}: {s.line}" for s in sets),
            *marginal_lines(model, background, every, labelled=False)]
    print("\n".join(said), file=sys.stderr)  # once every input is known good: a refusal is one line

    start = time.perf_counter()
    scores = score(model, every.images, None, cond=every.cond, background=background,
                   batch_size=settings.batch_size, progress=True)
    seconds = time.perf_counter() - start
    speed = (f"scored {plural(len(every), 'image')} at {len(every) / seconds:,.0f} images/s (the model{passes(model)}"
             + (f" and the background model{passes(background)}" if background is not None else "") + ")")
    if settings.complexity is not None:
        start = time.perf_counter()
        scores = scores._replace(complexity=complexity(every.images, settings.complexity), codec=settings.complexity)
        speed += f"; complexity ({settings.complexity}) at {len(every) / (time.perf_counter() - start):,.0f} images/s"

    ends = torch.tensor([len(s.inputs) for s in sets]).cumsum(0).tolist()
    results, curves = {}, {}
    named = oriented(scores)
    shown = {s.spec: short(s.spec) for s in sets}
    if len(set(shown.values())) < len(shown):  # two paths with one name: the specs as typed
        shown = {spec: spec for spec in shown}
    for s, first, last in zip(sets[1:], ends, ends[1:]):  # the rows of each OOD set together
        for name, values in named.items():
            d = results[shown[s.spec], name] = detection(values[:ends[0]], values[first:last])
            curves.setdefault(name, {})[shown[s.spec]] = (d.fpr, d.tpr, d.auroc)
    kinds = {"set": [s.spec for s in sets for _ in range(len(s.inputs))],
             "kind": ["in" if s.flag == "--in" else "out" for s in sets for _ in range(len(s.inputs))]}
    write_files({files.files[0]: scores_csv(every, scores, lead=kinds, labels=False).encode()})
    draw_roc(files.files[1], curves, title=f"in distribution: {inside}")
    return f"{ood_table(results)}\n{speed}; wrote {listed(files.files)}{made_note(files.made)}"
