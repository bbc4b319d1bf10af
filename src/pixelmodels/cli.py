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
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import save_grid
from pixelmodels.models.registry import get_spec, list_models

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


# -- evaluate / generate -----------------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    from pixelmodels.training import evaluate, load_data, resolve_device

    p = argparse.ArgumentParser(prog="pixelmodels evaluate", description="Bits/dim of a run's EMA weights.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--data-dir", help="where the dataset's files are now (default: as in the run's config)")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    run = RunConfig.from_dict(read_config(ns.run_dir / ckpt.CONFIG))
    device = resolve_device(ns.device)
    model = ckpt.load(ns.run_dir, device)
    data = dataclasses.replace(run.data, data_dir=ns.data_dir) if ns.data_dir else run.data
    dataset = load_data(data, ns.split)
    bpd = evaluate(model, dataset, ns.batch_size, device, ns.limit)
    n = len(dataset) if ns.limit is None else min(ns.limit, len(dataset))
    ckpt.write_json(ns.run_dir / f"evaluation_{ns.split}.json",
                    {"split": ns.split, "bits_per_dim": bpd, "n_images": n, "weights": "ema"})
    print(f"{ns.split} bits/dim: {bpd:.4f} ({n} images, EMA weights)")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from pixelmodels.training import resolve_device, sample_grid
    from pixelmodels.sampling import sample

    p = argparse.ArgumentParser(prog="pixelmodels generate", description="Sample a PNG grid and an .npz.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=16, help="images (per class for a conditional model without --class)")
    p.add_argument("--class", dest="klass", type=int, help="class label for a conditional model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/generated.png); the .npz goes beside it")
    p.add_argument("--batch-size", type=int, default=256, help="images sampled at a time (bounds memory)")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    if ns.batch_size < 1:
        raise PixelModelsError(f"--batch-size: expected a positive number of images, found {ns.batch_size}")
    if ns.n < 1:
        raise PixelModelsError(f"--n: expected a positive number of images, found {ns.n}")
    model = ckpt.load(ns.run_dir, resolve_device(ns.device))
    if ns.klass is not None and model.n_classes is None:
        raise PixelModelsError("--class: this model is not conditional")
    if model.n_classes and ns.klass is None:
        images, nrow = sample_grid(model, ns.n * model.n_classes, ns.seed, ns.batch_size)
        labels = torch.arange(model.n_classes).repeat_interleave(nrow)
    else:
        gen = torch.Generator(next(model.parameters()).device).manual_seed(ns.seed)
        labels = None if ns.klass is None else torch.full((ns.n,), ns.klass)
        images, nrow = sample(model, ns.n, labels, generator=gen, progress=True, batch_size=ns.batch_size), None
    out = ns.out or ns.run_dir / "generated.png"
    save_grid(images, out, model.n_bits, nrow)
    arrays = {"images": images.cpu().numpy().transpose(0, 2, 3, 1)}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez(out.with_suffix(".npz"), **arrays)
    print(f"wrote {out} and {out.with_suffix('.npz')} ({len(images)} images, values 0..{2**model.n_bits - 1})")
    return 0


def cmd_complete(argv: list[str]) -> int:
    from pixelmodels.sampling import complete
    from pixelmodels.training import load_data, resolve_device

    p = argparse.ArgumentParser(prog="pixelmodels complete",
                                description="Keep the top of dataset images and sample the rest.")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dataset", help="dataset to take images from (default: the run's)")
    p.add_argument("--data-dir", help="where the dataset's files are (default: as in the run's config)")
    p.add_argument("--split", choices=["train", "test"], default="test")
    known_group = p.add_mutually_exclusive_group()
    known_group.add_argument("--rows", type=int, help="keep the first K rows (default: half the image)")
    known_group.add_argument("--pixels", type=int, help="keep the first P pixels in raster order")
    p.add_argument("--n", type=int, default=8, help="images to complete (the first N of the split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/completions.png); the .npz goes beside it")
    p.add_argument("--device", default="auto")
    ns = p.parse_args(argv)
    run = RunConfig.from_dict(read_config(ns.run_dir / ckpt.CONFIG))
    device = resolve_device(ns.device)
    model = ckpt.load(ns.run_dir, device)
    data = dataclasses.replace(run.data, dataset=ns.dataset or run.data.dataset,
                               data_dir=ns.data_dir or (run.data.data_dir if not ns.dataset else None))
    dataset = load_data(data, ns.split)
    _, h, w = model.image_shape
    if tuple(dataset.image_shape) != tuple(model.image_shape) or dataset.n_bits != model.n_bits:
        raise PixelModelsError(f"--dataset: the model takes {model.n_bits}-bit images of shape {model.image_shape}, "
                               f"{data.dataset} has {dataset.n_bits}-bit images of shape {dataset.image_shape}")
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
    out = ns.out or ns.run_dir / "completions.png"
    save_grid(torch.cat([x, occluded, done]), out, model.n_bits, nrow=ns.n)
    np.savez(out.with_suffix(".npz"), originals=x.numpy().transpose(0, 2, 3, 1),
             known=known.numpy(), completions=done.numpy().transpose(0, 2, 3, 1))
    print(f"wrote {out} (rows: originals, occluded inputs, completions) and {out.with_suffix('.npz')}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "generate": cmd_generate, "complete": cmd_complete}


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
              "Run 'pixelmodels COMMAND --help' for a command's flags.", file=sys.stderr if argv else sys.stdout)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except PixelModelsError as e:
        if debug:
            raise
        print(f"pixelmodels {argv[0]}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
