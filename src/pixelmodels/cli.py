"""The ``pixelmodels`` command: argparse subcommands that only wire library calls.

Flags are derived from the settings dataclasses (``config.py``) and from the
chosen model's options dataclass, in kebab case, so every setting is written
once. A flag the user does not give is absent from the namespace, which is how
``--resume`` knows what to override.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import re
import shutil
import sys
import typing
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels.config import (MAX_SAMPLES, CompleteSettings, DataConfig, EvaluateSettings, GenerateSettings,
                                ModelConfig, RunConfig, ScoreSettings, TrainConfig, field_types, flag_name,
                                range_words, read_config)
from pixelmodels.data import list_datasets
from pixelmodels.data.datasets import DATASET_INFO
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import save_grid
from pixelmodels.models.registry import get_spec, list_models, resolve_options
from pixelmodels.pretrained import list_pretrained, load_pretrained, pretrained_info

NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: a ``PixelModelsError`` that ``main`` prints, exit 2.

    It takes ``--lr -1e-3`` or ``--lr -inf`` as a (negative) value, not as an unknown flag.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        raise PixelModelsError(message.removeprefix("argument "))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None


PARSE = {int: _integer, float: _number, str: str}
# The settings dataclasses each command's flags come from (train adds the chosen model's options dataclass).
SETTINGS = {"train": (DataConfig, TrainConfig), "evaluate": (EvaluateSettings,), "generate": (GenerateSettings,),
            "complete": (CompleteSettings,), "score": (ScoreSettings,)}


def add_dataclass_flags(parser, cls, *, skip=(), only=None, show_default: bool = True) -> None:
    """One flag per field of settings dataclass ``cls``, its help and range from the field's declaration.

    A flag not given is absent from the namespace; the dataclass checks the given values when it is built.
    """
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        base, _ = kinds[field.name]
        check = field.metadata.get("check")
        shown = "" if check is not None and check.choices is not None else range_words(field, base)  # choices: metavar
        text = "; ".join(t for t in (field.metadata.get("help", ""), shown) if t)
        if show_default and field.default not in (None, dataclasses.MISSING):
            text += f" (default: {field.default})"
        kw = dict(default=argparse.SUPPRESS, help=text, dest=field.name)
        if base is bool:
            parser.add_argument(flag_name(field), action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(base) is tuple:
            parts = typing.get_args(base)
            parser.add_argument(flag_name(field), type=PARSE[parts[0]], nargs=len(parts), **kw)
        elif check is not None and check.choices is not None:
            metavar = "{" + ",".join(map(str, check.choices)) + "}"
            parser.add_argument(flag_name(field), type=PARSE[base], metavar=metavar, **kw)
        else:
            metavar = flag_name(field).lstrip("-").replace("-", "_").upper()
            parser.add_argument(flag_name(field), type=PARSE.get(base, str), metavar=metavar, **kw)


def _given(ns: argparse.Namespace, cls) -> dict:
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}


# -- train -------------------------------------------------------------------
def train_parser(model: str | None) -> argparse.ArgumentParser:
    p = Parser(prog="pixelmodels train", description="Train a model; writes a run directory.")
    p.add_argument("--model", choices=list_models(), default=argparse.SUPPRESS, help="model family")
    p.add_argument("--preset", default=argparse.SUPPRESS, help="model preset (tiny, small, default, ...)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/MODEL-DATASET-TIME)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR; given flags override")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p.add_argument_group("data"), DataConfig)
    add_dataclass_flags(p.add_argument_group("training"), TrainConfig)
    if model is not None:
        group = p.add_argument_group(f"{model} options (default: the preset's value)")
        add_dataclass_flags(group, get_spec(model).options, show_default=False)
    return p


def cmd_train(argv: list[str]) -> int:
    from pixelmodels.runs import build_trainer

    pre = Parser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--resume", type=Path)
    known, _ = pre.parse_known_args(argv)
    stored = None
    if known.resume is not None:
        ckpt.model_config_of(known.resume)  # the model section, its options included, by their declarations
        stored = RunConfig.from_dict(read_config(known.resume / ckpt.CONFIG), known.resume / ckpt.CONFIG)
    model_name = known.model or (stored.model.name if stored else None)
    if model_name is not None and model_name not in list_models():
        raise PixelModelsError(f"--model: unknown model {model_name!r}; expected one of {list_models()}")
    ns = train_parser(model_name).parse_args(argv)
    if model_name is None:
        raise PixelModelsError("--model: required for a new run; expected one of " + str(list_models()))
    options = _given(ns, get_spec(model_name).options)
    data, train_cfg = _given(ns, DataConfig), _given(ns, TrainConfig)
    if stored is not None:
        if model_name != stored.model.name or options or data or hasattr(ns, "preset"):
            raise PixelModelsError(f"--resume: {known.resume} is a {stored.model.name} run; only training flags "
                                   "(--epochs, --max-steps, --lr, ...) can change on resume")
        run = dataclasses.replace(stored, train=dataclasses.replace(stored.train, **train_cfg))
        out = known.resume
    else:
        model = ModelConfig(name=model_name, image_shape=(1, 1, 1), preset=getattr(ns, "preset", "default"),
                            options=options)
        resolve_options(model.name, model.preset, options)  # the family's declarations check its flags
        run = RunConfig(model=model, data=DataConfig(**data), train=TrainConfig(**train_cfg))
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = ns.out or Path("runs") / f"{model_name}-{run.data.dataset}-{stamp}"
        if (out / ckpt.CONFIG).exists() and not ns.overwrite:
            raise PixelModelsError(f"--out: {out} already holds a run; use --resume {out} to continue it "
                                   "or --overwrite to replace it")
    trainer = build_trainer(run, out, resume=stored is not None, progress=False if ns.no_progress else None)
    if stored is None and ns.overwrite and out.exists():
        shutil.rmtree(out)  # only once the new run's data and model are known to be good
    record = trainer.fit(command=["pixelmodels", "train", *argv])
    print(f"run directory: {out}")
    print(f"test bits/dim (EMA weights): {record['test_bpd']:.4f} after {record['step']} steps")
    return 0


# -- the model a command uses: a run directory or a shipped model ------------
def add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR",
                   help="a run directory (or a directory written by save_pretrained)")
    p.add_argument("--pretrained", metavar="NAME", help=f"a model shipped with pixelmodels, one of {list_pretrained()}")


def open_model(run_dir: Path | None, pretrained: str | None, device) -> tuple:
    """(model, the DataConfig it was trained on or None, the folder for default outputs)."""
    if (run_dir is None) == (pretrained is None):
        raise PixelModelsError("expected a run directory or --pretrained NAME (one of "
                               f"{list_pretrained()}), found {'both' if pretrained else 'neither'}")
    if pretrained is not None:
        model = load_pretrained(pretrained, device)
        return model, DataConfig(dataset=pretrained_info(pretrained)["dataset"], n_bits=model.n_bits), Path(".")
    model = ckpt.load(run_dir, device)
    stored = read_config(run_dir / ckpt.CONFIG)
    return model, (RunConfig.from_dict(stored, run_dir / ckpt.CONFIG).data if "data" in stored else None), run_dir


def dataset_config(run_data: DataConfig | None, dataset: str | None, data_dir: str | None, model) -> DataConfig:
    """--dataset / --data-dir over the dataset the model was trained on."""
    if dataset is None:
        if run_data is None:
            raise PixelModelsError("--dataset: this model directory does not say which dataset it was trained on; "
                                   f"expected --dataset NAME, one of {list_datasets()}")
        return dataclasses.replace(run_data, data_dir=data_dir or run_data.data_dir)
    c, size, _ = model.image_shape
    folder = dict(image_size=size, channels=c) if dataset == "folder" else {}
    if dataset == "arrays":
        return DataConfig(dataset=dataset, data_dir=data_dir, n_bits=model.n_bits, n_codes=model.n_codes)
    info = DATASET_INFO.get(dataset)
    n_bits = model.n_bits if info is not None and model.n_bits is not None and model.n_bits <= info.n_bits \
        else None  # else: refused by name below
    return DataConfig(dataset=dataset, data_dir=data_dir, n_bits=n_bits, **folder)


def load_model_data(model, data: DataConfig, split: str):
    """The split of ``data``, refused unless it holds what the model takes (shape, depth or codes, condition)."""
    from pixelmodels.runs import describe_data, load_data

    dataset = load_data(data, split)
    if describe_data(dataset) != describe_data(model):
        raise PixelModelsError(f"--dataset: the model takes {describe_data(model)}, {data.dataset} has "
                               f"{describe_data(dataset)}")
    return dataset


def read_cond(path: Path, model) -> torch.Tensor:
    """--cond FILE.npy: (N, *cond_shape) conditions, or one, cond_shape (as (1, *cond_shape))."""
    shape = tuple(model.cond_shape)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PixelModelsError(f"--cond: {path}: no such file; expected a .npy of conditions") from None
    except (OSError, ValueError, EOFError) as e:
        raise PixelModelsError(f"--cond: {path}: expected a .npy array of conditions, could not read it "
                               f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        raise PixelModelsError(f"--cond: {path}: expected a numeric array, found {getattr(array, 'dtype', array)}")
    if array.shape == shape:
        array = array[None]
    if array.shape[1:] != shape or len(array) == 0:
        raise PixelModelsError(f"--cond: {path}: expected shape (N, {', '.join(map(str, shape))}) or "
                               f"{shape} (the model's cond_shape), found {array.shape}")
    if not np.isfinite(array).all():
        raise PixelModelsError(f"--cond: {path}: expected finite values, found NaN or inf")
    return torch.from_numpy(array.astype(np.float32))


# -- evaluate / generate -----------------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    from pixelmodels.evaluation import evaluate, resolve_device

    p = Parser(prog="pixelmodels evaluate", description="Bits/dim of a run's EMA weights.")
    add_model_source(p)
    p.add_argument("--dataset", help="dataset to evaluate on (default: the model's)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--data-dir", help="where the dataset's files are now (default: as in the run's config)")
    add_dataclass_flags(p, EvaluateSettings)
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    s = EvaluateSettings(**_given(ns, EvaluateSettings))
    device = resolve_device(ns.device)
    model, run_data, _ = open_model(ns.run_dir, ns.pretrained, device)
    dataset = load_model_data(model, dataset_config(run_data, ns.dataset, ns.data_dir, model), ns.split)
    bpd = evaluate(model, dataset, s.batch_size, device, s.limit)
    n = len(dataset) if s.limit is None else min(s.limit, len(dataset))
    if ns.run_dir is not None:
        ckpt.write_json(ns.run_dir / f"evaluation_{ns.split}.json",
                        {"split": ns.split, "bits_per_dim": bpd, "n_images": n, "weights": "ema"})
    print(f"{ns.split} bits/dim: {bpd:.4f} ({n} images, EMA weights)")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from pixelmodels.evaluation import resolve_device, sample_grid
    from pixelmodels.sampling import sample

    p = Parser(prog="pixelmodels generate", description="Sample a PNG grid and an .npz (images), or an .npy of "
               "code maps (a model of codes).")
    add_model_source(p)
    add_dataclass_flags(p, GenerateSettings)
    p.add_argument("--cond", type=Path, metavar="FILE.npy", help="conditions of a model with cond_shape: "
                   "(N, *cond_shape) or one, cond_shape; --n samples for each")
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/generated.png, or ./generated.png for "
                   "--pretrained); the .npz goes beside it. For code maps: the .npy path (default generated.npy)")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    s = GenerateSettings(**_given(ns, GenerateSettings))
    model, _, home = open_model(ns.run_dir, ns.pretrained, resolve_device(ns.device))
    if s.class_label is not None and model.n_classes and not 0 <= s.class_label < model.n_classes:
        raise PixelModelsError(f"--class: expected a class 0..{model.n_classes - 1}, found {s.class_label}")
    if s.class_label is not None and model.n_classes is None:
        raise PixelModelsError("--class: this model is not conditional")
    if model.cond_shape is None and ns.cond is not None:
        raise PixelModelsError(f"--cond: this model takes no condition; found {ns.cond}")
    if model.cond_shape is not None and ns.cond is None:
        raise PixelModelsError(f"--cond: the model is conditional on cond_shape {tuple(model.cond_shape)}; "
                               "give --cond FILE.npy")
    if model.cond_shape is not None and model.n_classes and s.class_label is None:
        raise PixelModelsError(f"--class: the model is conditional on {model.n_classes} classes and on --cond; "
                               "give --class K")
    cond = None if ns.cond is None else read_cond(ns.cond, model)
    gen = torch.Generator(next(model.parameters()).device).manual_seed(s.seed)
    if model.n_classes and s.class_label is None:
        images, nrow = sample_grid(model, s.n * model.n_classes, s.seed, s.batch_size, temperature=s.temperature)
        labels = torch.arange(model.n_classes).repeat_interleave(nrow)
    else:
        n, nrow = s.n * (1 if cond is None else len(cond)), None if cond is None else s.n
        cond = None if cond is None else cond.repeat_interleave(s.n, dim=0)
        if n > MAX_SAMPLES:
            raise PixelModelsError(f"--n / --cond: expected at most {MAX_SAMPLES} samples, found {s.n} for each of "
                                   f"{n // s.n} conditions ({n})")
        labels = None if s.class_label is None else torch.full((n,), s.class_label)
        images = sample(model, n, labels, cond, generator=gen, progress=True, batch_size=s.batch_size,
                        temperature=s.temperature)
    if model.n_codes:
        out = ns.out or home / "generated.npy"
        buffer = io.BytesIO()
        np.save(buffer, images[:, 0].cpu().numpy())
        ckpt.atomic_write(out, buffer.getvalue())
        print(f"wrote {out} ({len(images)} code maps {tuple(images.shape[2:])}, values 0..{model.n_codes - 1})")
        return 0
    out = ns.out or home / "generated.png"
    save_grid(images, out, model.n_bits, nrow)
    arrays = {"images": images.cpu().numpy().transpose(0, 2, 3, 1)}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez(out.with_suffix(".npz"), **arrays)
    print(f"wrote {out} and {out.with_suffix('.npz')} ({len(images)} images, values 0..{2**model.n_bits - 1})")
    return 0


def cmd_complete(argv: list[str]) -> int:
    from pixelmodels.sampling import complete
    from pixelmodels.evaluation import resolve_device

    p = Parser(prog="pixelmodels complete", description="Keep the top of dataset images and sample the rest.")
    add_model_source(p)
    p.add_argument("--dataset", help="dataset to take images from (default: the run's)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: as in the run's config)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    add_dataclass_flags(p.add_mutually_exclusive_group(), CompleteSettings, only=("rows", "pixels"))
    add_dataclass_flags(p, CompleteSettings, skip=("rows", "pixels"))
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/completions.png, or ./completions.png for "
                   "--pretrained); the .npz goes beside it")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    s = CompleteSettings(**_given(ns, CompleteSettings))
    device = resolve_device(ns.device)
    model, run_data, home = open_model(ns.run_dir, ns.pretrained, device)
    dataset = load_model_data(model, dataset_config(run_data, ns.dataset, ns.data_dir, model), ns.split)
    _, h, w = model.image_shape
    if not 1 <= s.n <= len(dataset):
        raise PixelModelsError(f"--n: expected 1 to {len(dataset)} images, found {s.n}")
    known = torch.zeros(h, w, dtype=torch.bool)
    if s.pixels is not None:
        if not 0 <= s.pixels <= h * w:
            raise PixelModelsError(f"--pixels: expected 0 to {h * w}, found {s.pixels}")
        known.view(-1)[: s.pixels] = True
    else:
        rows = h // 2 if s.rows is None else s.rows
        if not 0 <= rows <= h:
            raise PixelModelsError(f"--rows: expected 0 to {h}, found {rows}")
        known[:rows] = True
    x = torch.as_tensor(dataset.images[: s.n])
    y = dataset.labels[: s.n] if model.n_classes else None
    cond = dataset.cond[: s.n] if model.cond_shape is not None else None
    gen = torch.Generator(device).manual_seed(s.seed)
    done = complete(model, x, known, y, generator=gen, progress=True, cond=cond, temperature=s.temperature).cpu()
    if model.n_codes:
        out = ns.out or home / "completions.npz"
        buffer = io.BytesIO()
        np.savez(buffer, originals=x[:, 0].numpy(), known=known.numpy(), completions=done[:, 0].numpy())
        ckpt.atomic_write(out, buffer.getvalue())
        print(f"wrote {out} (code maps: originals, known, completions)")
        return 0
    occluded = x.clone()
    occluded[:, :, ~known] = (2**model.n_bits - 1) // 2  # unknown pixels shown grey
    out = ns.out or home / "completions.png"
    save_grid(torch.cat([x, occluded, done]), out, model.n_bits, nrow=s.n)
    np.savez(out.with_suffix(".npz"), originals=x.numpy().transpose(0, 2, 3, 1),
             known=known.numpy(), completions=done.numpy().transpose(0, 2, 3, 1))
    print(f"wrote {out} (rows: originals, occluded inputs, completions) and {out.with_suffix('.npz')}")
    return 0


# -- score ---------------------------------------------------------------------
def cmd_score(argv: list[str]) -> int:
    from pixelmodels import scoring
    from pixelmodels.evaluation import resolve_device
    from pixelmodels.runs import load_data

    p = Parser(
        prog="pixelmodels score", usage="pixelmodels score (RUN_DIR | --pretrained NAME) [INPUT ...] [options]",
        description="Bits/dim of every image of a dataset split or of image files and folders, as CSV rows "
                    "(source,index,label,bits_per_dim,nll_nats); optionally a per-pixel NLL heat map per image.")
    p.add_argument("paths", nargs="*", type=Path, metavar="RUN_DIR / INPUT",
                   help="the run directory (unless --pretrained), then PNG/JPEG files or folders of them")
    p.add_argument("--pretrained", metavar="NAME", help=f"a model shipped with pixelmodels, one of {list_pretrained()}")
    p.add_argument("--dataset", help="score a dataset split (default, when no INPUT is given: the model's dataset)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: as in the run's config)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    add_dataclass_flags(p, ScoreSettings, skip=("batch_size",))
    p.add_argument("--resize", action="store_true",
                   help="convert image files to the model's channels and size (else another shape is an error)")
    p.add_argument("--out", type=Path, help="CSV path (default: standard output)")
    p.add_argument("--heatmap", type=Path, metavar="DIR", help="write a per-pixel NLL heat map PNG per image here "
                   "(black: 0 bits, red, yellow, white: C * n_bits bits, a uniform guess, or more)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file or heat maps")
    add_dataclass_flags(p, ScoreSettings, only=("batch_size",))
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    s = ScoreSettings(**_given(ns, ScoreSettings))
    if ns.pretrained is None and not ns.paths:
        raise PixelModelsError(f"expected a run directory or --pretrained NAME (one of {list_pretrained()})")
    run_dir, inputs = (None, ns.paths) if ns.pretrained else (ns.paths[0], ns.paths[1:])
    model, run_data, _ = open_model(run_dir, ns.pretrained, resolve_device(ns.device))
    if s.label is not None and not model.n_classes:
        raise PixelModelsError("--label: this model is not conditional")
    if s.label is not None and not 0 <= s.label < model.n_classes:
        raise PixelModelsError(f"--label: expected a class 0..{model.n_classes - 1}, found {s.label}")

    parts = []
    if ns.dataset is not None or not inputs:
        data = dataset_config(run_data, ns.dataset, ns.data_dir, model)
        exact = model.n_codes is not None or model.cond_shape is not None  # no quantizing: the model's own kind
        dataset = load_model_data(model, data, ns.split) if exact else load_data(data, ns.split)
        if model.n_classes and s.label is None and not dataset.n_classes:
            raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and "
                                   f"{data.dataset} has no labels; give --label K")
        parts.append(scoring.model_dataset_inputs(dataset, s.limit) if exact
                     else scoring.dataset_inputs(dataset, model.image_shape, model.n_bits, s.limit))
    if inputs and (model.n_codes is not None or model.cond_shape is not None):
        raise PixelModelsError(f"INPUT: image files cannot be scored by a model of "
                               f"{'codes' if model.n_codes else 'images with a condition'}; found {inputs[0]}; "
                               "score a dataset (--dataset arrays --data-dir DIR)")
    if inputs:
        if model.n_classes and s.label is None:
            raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and image "
                                   "files have no labels; give --label K")
        parts.append(scoring.read_inputs(inputs, model.image_shape, model.n_bits, ns.resize))
    batch = scoring.Inputs.cat(parts)
    if s.label is not None:
        batch.labels = torch.full_like(batch.labels, s.label)

    names = scoring.heatmap_names(batch) if ns.heatmap else []
    targets = ([ns.out] if ns.out else []) + [ns.heatmap / name for name in names]
    taken = [t for t in targets if t.exists()]
    if taken and not ns.overwrite:
        raise PixelModelsError(f"--out / --heatmap: {taken[0]} already exists ({len(taken)} files would be "
                               "replaced); use --overwrite to replace them")
    result = scoring.score(model, batch.images, batch.labels if model.n_classes else None, cond=batch.cond,
                           batch_size=s.batch_size, per_pixel=ns.heatmap is not None, progress=True)

    table = scoring.scores_csv(batch, result)
    if ns.out is None:
        sys.stdout.write(table)
    else:
        ckpt.atomic_write(ns.out, table.encode())
    for name, nll in zip(names, result.pixel_nll if ns.heatmap else []):
        uniform = math.log2(model.n_codes) if model.n_codes else model.image_shape[0] * model.n_bits
        ckpt.atomic_write(ns.heatmap / name, scoring.heatmap_png(nll, uniform))
    n = len(batch.sources)
    wrote = [str(ns.out)] if ns.out else []
    wrote += [f"{n} heat maps in {ns.heatmap}"] if ns.heatmap else []
    print(f"scored {n} images: mean bits/dim {result.bits_per_dim.double().mean().item() if n else float('nan'):.4f}"
          + (f"; wrote {', '.join(wrote)}" if wrote else ""), file=sys.stdout if ns.out else sys.stderr)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate, "complete": cmd_complete,
            "score": cmd_score}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: pixelmodels {" + ",".join(COMMANDS) + "} ... [--debug]\n"
              "  train     train a model into a run directory\n"
              "  evaluate  bits/dim of a run's EMA weights on a split\n"
              "  generate  sample images from a run\n"
              "  complete  keep the top of dataset images, sample the rest\n"
              "  score     bits/dim (and per-pixel NLL heat maps) of dataset images or image files\n"
              "Run 'pixelmodels COMMAND --help' for a command's flags.", file=sys.stderr if argv else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except PixelModelsError as e:
        if debug:
            raise
        print(f"pixelmodels {argv[0]}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:  # a plain write (grid, .npz, logs) that failed: disk full, read-only, ...
        if debug:
            raise
        print(f"pixelmodels {argv[0]}: error: {e.filename or ''}: could not write or read ({e.strerror or e})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
