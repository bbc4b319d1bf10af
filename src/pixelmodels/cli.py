"""The ``pixelmodels`` command: argparse subcommands that only wire library calls.

Flags are derived from the settings dataclasses (``config.py``) and from the
chosen model's options dataclass, in kebab case, so every setting is written
once. A flag the user does not give is absent from the namespace, which is how
``--resume`` knows what to override.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import typing
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig, read_config
from pixelmodels.data import list_datasets
from pixelmodels.data.datasets import DATASET_INFO
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import save_grid
from pixelmodels.models.registry import get_spec, list_models
from pixelmodels.pretrained import list_pretrained, load_pretrained, pretrained_info

HELP = {
    "dataset": f"one of {list_datasets()}",
    "data_dir": "directory holding the dataset's files (default: cache dir and usual local places)",
    "n_bits": "bits per sub-pixel, 1..8 (default: the dataset's own depth)",
    "image_size": "side of the square images of a 'folder' dataset (default 32)",
    "channels": "1 (grayscale) or 3 (RGB) for a 'folder' dataset",
    "epochs": "passes over the training set",
    "batch_size": "images per step",
    "lr": "learning rate (default: the model's preset)",
    "lr_decay": "learning rate multiplier applied after every step",
    "ema": "decay of the polyak (exponential moving) average of the weights, used for evaluation and sampling",
    "optimizer": "adam or rmsprop",
    "adam_betas": "Adam's two betas",
    "grad_clip": "clip the gradient norm to this value (0: no clipping)",
    "device": "cpu, cuda or cuda:N (auto: CUDA when available)",
    "seed": "random seed of initialization, data order and sample grids",
    "max_steps": "stop after this many optimizer steps in total",
    "max_minutes": "stop after this many minutes of training in this session (evaluation not counted)",
    "eval_every": "evaluate test bits/dim and write a sample grid every this many epochs",
    "eval_batch_size": "images per evaluation batch",
    "eval_limit": "evaluate on the first N test images only",
    "n_samples": "images in each sample grid (per class, rounded up, for a conditional model)",
    "log_every": "write training metrics every this many steps",
    "conditional": "condition the model on the dataset's class labels",
    "precision": "fp32, bf16 (autocast, CPU or CUDA) or fp16 (autocast + gradient scaler, CUDA only)",
    "compile": "run the training and evaluation forward passes through torch.compile",
    "channels_last": "channels-last memory format (default: on for CUDA, off for CPU)",
    "checkpoint_every_steps": "also write a checkpoint every N steps (one is always written at the end of an epoch)",
    "max_bad_steps": "stop with an error after this many steps in a row with a non-finite loss (they are skipped)",
    "deterministic": "torch.use_deterministic_algorithms: a resumed run repeats an uninterrupted one bitwise",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, help_texts: dict | None = None, skip=()) -> None:
    """One flag per field of dataclass ``cls``; absent from the namespace when not given."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        kind = hints[field.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        base = args[0] if typing.get_origin(kind) is typing.Union or type(kind).__name__ == "UnionType" else kind
        default = field.default if field.default is not dataclasses.MISSING else None
        text = (help_texts or {}).get(field.name, "")
        text = f"{text} (default: {default})" if text else f"default: {default}"
        kw = dict(default=argparse.SUPPRESS, help=text, dest=field.name)
        if base is bool:
            parser.add_argument(_flag(field.name), action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(base) is tuple:
            parser.add_argument(_flag(field.name), type=typing.get_args(base)[0], nargs=2, **kw)
        else:
            parser.add_argument(_flag(field.name), type=base, **kw)


def _given(ns: argparse.Namespace, cls) -> dict:
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}


# -- train -------------------------------------------------------------------
def train_parser(model: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelmodels train", description="Train a model; writes a run directory.")
    p.add_argument("--model", choices=list_models(), default=argparse.SUPPRESS, help="model family")
    p.add_argument("--preset", default=argparse.SUPPRESS, help="model preset (tiny, small, default, ...)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/MODEL-DATASET-TIME)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR; given flags override")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p.add_argument_group("data"), DataConfig, HELP)
    add_dataclass_flags(p.add_argument_group("training"), TrainConfig, HELP)
    if model is not None:
        group = p.add_argument_group(f"{model} options (default: the preset's value)")
        add_dataclass_flags(group, get_spec(model).options)
    return p


def cmd_train(argv: list[str]) -> int:
    from pixelmodels.training import Trainer

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--resume", type=Path)
    known, _ = pre.parse_known_args(argv)
    stored = None
    if known.resume is not None:
        stored = RunConfig.from_dict(read_config(known.resume / ckpt.CONFIG))
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
        run = RunConfig(model=model, data=DataConfig(**data), train=TrainConfig(**train_cfg))
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = ns.out or Path("runs") / f"{model_name}-{run.data.dataset}-{stamp}"
        if (out / ckpt.CONFIG).exists() and not ns.overwrite:
            raise PixelModelsError(f"--out: {out} already holds a run; use --resume {out} to continue it "
                                   "or --overwrite to replace it")
    trainer = Trainer(run, out, resume=stored is not None, progress=False if ns.no_progress else None)
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
    return model, (RunConfig.from_dict(stored).data if "data" in stored else None), run_dir


def dataset_config(run_data: DataConfig | None, dataset: str | None, data_dir: str | None, model) -> DataConfig:
    """--dataset / --data-dir over the dataset the model was trained on."""
    if dataset is None:
        if run_data is None:
            raise PixelModelsError("--dataset: this model directory does not say which dataset it was trained on; "
                                   f"expected --dataset NAME, one of {list_datasets()}")
        return dataclasses.replace(run_data, data_dir=data_dir or run_data.data_dir)
    c, size, _ = model.image_shape
    folder = dict(image_size=size, channels=c) if dataset == "folder" else {}
    info = DATASET_INFO.get(dataset)
    n_bits = model.n_bits if info is not None and model.n_bits <= info.n_bits else None  # else: refused by name
    return DataConfig(dataset=dataset, data_dir=data_dir, n_bits=n_bits, **folder)


def load_model_data(model, data: DataConfig, split: str):
    """The split of ``data``, refused unless its images have the model's shape and depth."""
    from pixelmodels.training import load_data

    dataset = load_data(data, split)
    if tuple(dataset.image_shape) != tuple(model.image_shape) or dataset.n_bits != model.n_bits:
        raise PixelModelsError(f"--dataset: the model takes {model.n_bits}-bit images of shape {model.image_shape}, "
                               f"{data.dataset} has {dataset.n_bits}-bit images of shape {dataset.image_shape}")
    return dataset


# -- evaluate / generate -----------------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    from pixelmodels.training import evaluate, resolve_device

    p = argparse.ArgumentParser(prog="pixelmodels evaluate", description="Bits/dim of a run's EMA weights.")
    add_model_source(p)
    p.add_argument("--dataset", help="dataset to evaluate on (default: the model's)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--data-dir", help="where the dataset's files are now (default: as in the run's config)")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    device = resolve_device(ns.device)
    model, run_data, _ = open_model(ns.run_dir, ns.pretrained, device)
    dataset = load_model_data(model, dataset_config(run_data, ns.dataset, ns.data_dir, model), ns.split)
    bpd = evaluate(model, dataset, ns.batch_size, device, ns.limit)
    n = len(dataset) if ns.limit is None else min(ns.limit, len(dataset))
    if ns.run_dir is not None:
        ckpt.write_json(ns.run_dir / f"evaluation_{ns.split}.json",
                        {"split": ns.split, "bits_per_dim": bpd, "n_images": n, "weights": "ema"})
    print(f"{ns.split} bits/dim: {bpd:.4f} ({n} images, EMA weights)")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from pixelmodels.training import resolve_device, sample_grid
    from pixelmodels.sampling import sample

    p = argparse.ArgumentParser(prog="pixelmodels generate", description="Sample a PNG grid and an .npz.")
    add_model_source(p)
    p.add_argument("--n", type=int, default=16, help="images (per class for a conditional model without --class)")
    p.add_argument("--class", dest="klass", type=int, help="class label for a conditional model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/generated.png, or ./generated.png for "
                   "--pretrained); the .npz goes beside it")
    p.add_argument("--batch-size", type=int, default=256, help="images sampled at a time (bounds memory)")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    if ns.batch_size < 1:
        raise PixelModelsError(f"--batch-size: expected a positive number of images, found {ns.batch_size}")
    if ns.n < 1:
        raise PixelModelsError(f"--n: expected a positive number of images, found {ns.n}")
    model, _, home = open_model(ns.run_dir, ns.pretrained, resolve_device(ns.device))
    if ns.klass is not None and model.n_classes and not 0 <= ns.klass < model.n_classes:
        raise PixelModelsError(f"--class: expected a class 0..{model.n_classes - 1}, found {ns.klass}")
    if ns.klass is not None and model.n_classes is None:
        raise PixelModelsError("--class: this model is not conditional")
    if model.n_classes and ns.klass is None:
        images, nrow = sample_grid(model, ns.n * model.n_classes, ns.seed, ns.batch_size)
        labels = torch.arange(model.n_classes).repeat_interleave(nrow)
    else:
        gen = torch.Generator(next(model.parameters()).device).manual_seed(ns.seed)
        labels = None if ns.klass is None else torch.full((ns.n,), ns.klass)
        images, nrow = sample(model, ns.n, labels, generator=gen, progress=True, batch_size=ns.batch_size), None
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
    from pixelmodels.training import resolve_device

    p = argparse.ArgumentParser(prog="pixelmodels complete",
                                description="Keep the top of dataset images and sample the rest.")
    add_model_source(p)
    p.add_argument("--dataset", help="dataset to take images from (default: the run's)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: as in the run's config)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    known_group = p.add_mutually_exclusive_group()
    known_group.add_argument("--rows", type=int, help="keep the first K rows (default: half the image)")
    known_group.add_argument("--pixels", type=int, help="keep the first P pixels in raster order")
    p.add_argument("--n", type=int, default=8, help="images to complete (the first N of the split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/completions.png, or ./completions.png for "
                   "--pretrained); the .npz goes beside it")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    device = resolve_device(ns.device)
    model, run_data, home = open_model(ns.run_dir, ns.pretrained, device)
    dataset = load_model_data(model, dataset_config(run_data, ns.dataset, ns.data_dir, model), ns.split)
    _, h, w = model.image_shape
    if not 1 <= ns.n <= len(dataset):
        raise PixelModelsError(f"--n: expected 1 to {len(dataset)} images, found {ns.n}")
    known = torch.zeros(h, w, dtype=torch.bool)
    if ns.pixels is not None:
        if not 0 <= ns.pixels <= h * w:
            raise PixelModelsError(f"--pixels: expected 0 to {h * w}, found {ns.pixels}")
        known.view(-1)[: ns.pixels] = True
    else:
        rows = h // 2 if ns.rows is None else ns.rows
        if not 0 <= rows <= h:
            raise PixelModelsError(f"--rows: expected 0 to {h}, found {rows}")
        known[:rows] = True
    x = dataset.images[: ns.n]
    y = dataset.labels[: ns.n] if model.n_classes else None
    gen = torch.Generator(device).manual_seed(ns.seed)
    done = complete(model, x, known, y, generator=gen, progress=True).cpu()
    occluded = x.clone()
    occluded[:, :, ~known] = (2**model.n_bits - 1) // 2  # unknown pixels shown grey
    out = ns.out or home / "completions.png"
    save_grid(torch.cat([x, occluded, done]), out, model.n_bits, nrow=ns.n)
    np.savez(out.with_suffix(".npz"), originals=x.numpy().transpose(0, 2, 3, 1),
             known=known.numpy(), completions=done.numpy().transpose(0, 2, 3, 1))
    print(f"wrote {out} (rows: originals, occluded inputs, completions) and {out.with_suffix('.npz')}")
    return 0


# -- score ---------------------------------------------------------------------
def cmd_score(argv: list[str]) -> int:
    from pixelmodels import scoring
    from pixelmodels.training import load_data, resolve_device

    p = argparse.ArgumentParser(
        prog="pixelmodels score", usage="pixelmodels score (RUN_DIR | --pretrained NAME) [INPUT ...] [options]",
        description="Bits/dim of every image of a dataset split or of image files and folders, as CSV rows "
                    "(source,index,label,bits_per_dim,nll_nats); optionally a per-pixel NLL heat map per image.")
    p.add_argument("paths", nargs="*", type=Path, metavar="RUN_DIR / INPUT",
                   help="the run directory (unless --pretrained), then PNG/JPEG files or folders of them")
    p.add_argument("--pretrained", metavar="NAME", help=f"a model shipped with pixelmodels, one of {list_pretrained()}")
    p.add_argument("--dataset", help="score a dataset split (default, when no INPUT is given: the model's dataset)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: as in the run's config)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--limit", type=int, help="score the first N images of the dataset only")
    p.add_argument("--label", type=int, metavar="K",
                   help="class label for a conditional model: all image files (and the dataset, instead of its labels)")
    p.add_argument("--resize", action="store_true",
                   help="convert image files to the model's channels and size (else another shape is an error)")
    p.add_argument("--out", type=Path, help="CSV path (default: standard output)")
    p.add_argument("--heatmap", type=Path, metavar="DIR", help="write a per-pixel NLL heat map PNG per image here "
                   "(black: 0 bits, red, yellow, white: C * n_bits bits, a uniform guess, or more)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file or heat maps")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    if ns.pretrained is None and not ns.paths:
        raise PixelModelsError(f"expected a run directory or --pretrained NAME (one of {list_pretrained()})")
    run_dir, inputs = (None, ns.paths) if ns.pretrained else (ns.paths[0], ns.paths[1:])
    if ns.limit is not None and ns.limit < 1:
        raise PixelModelsError(f"--limit: expected a positive number of images, found {ns.limit}")
    model, run_data, _ = open_model(run_dir, ns.pretrained, resolve_device(ns.device))
    if ns.label is not None and not model.n_classes:
        raise PixelModelsError("--label: this model is not conditional")
    if ns.label is not None and not 0 <= ns.label < model.n_classes:
        raise PixelModelsError(f"--label: expected a class 0..{model.n_classes - 1}, found {ns.label}")

    parts = []
    if ns.dataset is not None or not inputs:
        data = dataset_config(run_data, ns.dataset, ns.data_dir, model)
        dataset = load_data(data, ns.split)
        if model.n_classes and ns.label is None and not dataset.n_classes:
            raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and "
                                   f"{data.dataset} has no labels; give --label K")
        parts.append(scoring.dataset_inputs(dataset, model.image_shape, model.n_bits, ns.limit))
    if inputs:
        if model.n_classes and ns.label is None:
            raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and image "
                                   "files have no labels; give --label K")
        parts.append(scoring.read_inputs(inputs, model.image_shape, model.n_bits, ns.resize))
    batch = scoring.Inputs.cat(parts)
    if ns.label is not None:
        batch.labels = torch.full_like(batch.labels, ns.label)

    names = scoring.heatmap_names(batch) if ns.heatmap else []
    targets = ([ns.out] if ns.out else []) + [ns.heatmap / name for name in names]
    taken = [t for t in targets if t.exists()]
    if taken and not ns.overwrite:
        raise PixelModelsError(f"--out / --heatmap: {taken[0]} already exists ({len(taken)} files would be "
                               "replaced); use --overwrite to replace them")
    result = scoring.score(model, batch.images, batch.labels if model.n_classes else None,
                           batch_size=ns.batch_size, per_pixel=ns.heatmap is not None, progress=True)

    table = scoring.scores_csv(batch, result)
    if ns.out is None:
        sys.stdout.write(table)
    else:
        ckpt.atomic_write(ns.out, table.encode())
    for name, nll in zip(names, result.pixel_nll if ns.heatmap else []):
        ckpt.atomic_write(ns.heatmap / name, scoring.heatmap_png(nll, model.image_shape[0] * model.n_bits))
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
