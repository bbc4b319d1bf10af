"""The command line of the project this library grew from (kamenbliznashki/pixel_models), run on pixelmodels.

    python main.py --train --dataset mnist --data_path ~/data/mnist --n_bits 4 pixelcnn --n_res_layers 5
    python main.py --train --dataset cifar10 --data_path ~/data --n_epochs 10 pixelsnail --attn_nh 2
    python main.py --evaluate --generate --restore_file results/pixelcnn/2024-05-01_12-00-00/training_state.pt \\
        --dataset mnist pixelcnn

Every flag of the original is accepted with its default; the MODEL subcommand and its options come last. A new
run writes ``results/MODEL/YYYY-MM-DD_HH-MM-SS/`` (UTC, as the original) under the current directory;
``--restore_file`` continues the run in the directory of the given file. The directory is a pixelmodels run
directory plus the original's ``generation_sample_step_N.png`` grids, so ``pixelmodels evaluate|generate|complete
DIR`` and ``pixelmodels train --resume DIR`` work on it too. README.md ("main.py") has the flag mapping.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels import distributed
from pixelmodels.app import runs, session
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig, read_config
from pixelmodels.data import DATASET_INFO, ImageDataset
from pixelmodels.errors import PixelModelsError, run_command
from pixelmodels.evaluation import evaluate
from pixelmodels.models.registry import resolve_options
from pixelmodels.settings import SettingError
from pixelmodels.training import Trainer


def typed(parse, what: str, ok=lambda value: True):
    """An argparse type: ``parse(text)``, refused with 'expected ``what``' unless it parses and is ``ok``."""
    def convert(text: str):
        try:
            value = parse(text)
        except (KeyError, ValueError):
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value
    return convert


POSITIVE, NATURAL = typed(int, "a positive integer", lambda v: v >= 1), typed(int, "an integer >= 0", lambda v: v >= 0)
RATE, BITS = typed(float, "a number >= 0", lambda v: v >= 0), typed(int, "an integer from 1 to 8", lambda v: v >= 1)
BOOLEAN = typed({"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}.get,
                "True or False")  # as the original's type=eval took them, plus lower case, 1 and 0
MODELS = {"pixelcnn": "gated-pixelcnn", "pixelcnnpp": "pixelcnnpp", "pixelsnail": "pixelsnail"}
N_BITS = 4  # the original's default, lowered to the data's depth for colored-mnist (2 bits)
# MODEL -> (help, {its flag: (type, default, help, the pixelmodels option it sets)})
MODEL_FLAGS = {
    "pixelcnn": ("gated PixelCNN (pixelmodels gated-pixelcnn)", {
        "n_channels": (POSITIVE, 128, "features of both stacks", "n_channels"),
        "n_out_conv_channels": (POSITIVE, 1024, "features of the 1x1 output layer", "n_out_channels"),
        "n_res_layers": (NATURAL, 12, "gated residual layers after the 7x7 input layer", "n_layers"),
        "kernel_size": (POSITIVE, 5, "odd kernel size of the gated layers", "kernel_size"),
        "norm_layer": (BOOLEAN, True, "True: weight normalization (the original's BatchNorm breaks causality)",
                       "weight_norm")}),
    "pixelcnnpp": ("PixelCNN++", {
        "n_channels": (POSITIVE, 128, "filters of both streams", "n_filters"),
        "n_res_layers": (POSITIVE, 5, "gated ResNet blocks per stage", "n_blocks"),
        "n_logistic_mix": (POSITIVE, 10, "logistic mixture components", "n_mixtures")}),
    "pixelsnail": ("PixelSNAIL", {
        "n_channels": (POSITIVE, 256, "filters of the residual stream", "n_filters"),
        "n_res_layers": (NATURAL, 5, "residual layers per attention block", "n_res_layers"),
        "attn_n_layers": (POSITIVE, 12, "attention blocks", "n_blocks"),
        "attn_nh": (POSITIVE, 1, "attention heads", "n_heads"),
        "attn_dq": (POSITIVE, 16, "query/key features over all heads", "key_size"),
        "attn_dv": (POSITIVE, 128, "value features over all heads", "value_size"),
        "attn_drop_rate": (RATE, 0.0, "dropout on the attention", "attn_dropout"),
        "n_logistic_mix": (POSITIVE, 10, "logistic mixture components", "n_mixtures")}),
}
FLAGS = {  # the original's flags: type (or store_true, or the choices), default, help, the TrainConfig field set
    "train": ("store_true", None, "train the model", None),
    "evaluate": ("store_true", None, "test bits/dim of the EMA weights", None),
    "generate": ("store_true", None, "write generation_sample_step_N.png from the EMA weights", None),
    "restore_file": (Path, None, "a file of a results directory (training_state.pt, ...): continue that run", None),
    "seed": (int, 0, "random seed", "seed"),
    "cuda": (NATURAL, None, "run on CUDA device N (default: the CPU)", None),
    "mini_data": ("store_true", None, "train and evaluate on the first batch_size training images only", None),
    "dataset": (["mnist", "cifar10", "colored-mnist"], None, "required for a new run", None),
    "n_cond_classes": (POSITIVE, None, "class-conditional model; must equal the dataset's number of classes", None),
    "n_bits": (BITS, None, f"bits per sub-pixel (default {N_BITS}; 2 for colored-mnist)", None),
    "data_path": (Path, None, "folder of the dataset's files (the pickle for colored-mnist); default: found or "
                  "downloaded as pixelmodels does", None),
    "lr": (RATE, 5e-4, "learning rate", "lr"),
    "lr_decay": (RATE, None, "per-step learning rate factor (default 0.999995; pixelcnn: 1)", "lr_decay"),
    "polyak": (RATE, 0.9995, "decay of the weights' EMA", "ema"),
    "batch_size": (POSITIVE, 16, "images per step", "batch_size"),
    "n_epochs": (NATURAL, 1, "epochs to train (more, when restoring)", "epochs"),
    "log_interval": (POSITIVE, 50, "log training metrics every N steps", "log_every"),
    "eval_interval": (POSITIVE, 10, "evaluate, sample and checkpoint every N epochs, and after the last", "eval_every"),
    "n_samples": (NATURAL, 8, "images per sample grid (per class for a conditional model)", None),
}
NORM_WARNING = ("main.py: warning: --norm_layer True: the original's per-batch normalization (BatchNorm2d) "
                "breaks causality (batch statistics let each pixel see later pixels and other images); "
                "using weight normalization instead, which keeps it (--norm_layer False: no normalization)")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The original's parser. ``defaults=False``: given flags only (the others are left out of the namespace)."""
    def add(parser, flags):
        for name, (kind, default, about, _) in flags.items():
            how = dict(action=kind) if kind == "store_true" else dict(choices=kind) if isinstance(kind, list) else \
                dict(type=kind)
            parser.add_argument(f"--{name}", **how, default=default if defaults else argparse.SUPPRESS,
                                help=about + ("" if default is None else f" (default {default})"))

    p = argparse.ArgumentParser(prog="main.py", description="Train, evaluate and sample pixel models (the original "
                                "pixel_models command line, run on pixelmodels).")
    sub = p.add_subparsers(dest="model", metavar="MODEL", required=True,
                           help="pixelcnn (gated PixelCNN), pixelcnnpp or pixelsnail; then its options")
    for model, (about, flags) in MODEL_FLAGS.items():
        add(sub.add_parser(model, help=about), flags)
    add(p, FLAGS)
    return p


def model_options(ns) -> dict:
    """The pixelmodels options of the MODEL flags in ``ns``, checked by the family's declarations."""
    options = {key: getattr(ns, flag) for flag, (*_, key) in MODEL_FLAGS[ns.model][1].items()}
    options["likelihood"] = "categorical" if ns.model == "pixelcnn" else "logistic-mixture"
    if ns.model == "pixelcnn":  # our first gated layer is the original's 7x7 input layer
        options.update(n_layers=ns.n_res_layers + 1, input_kernel_size=7)
    for flag, key in (("--attn_dq", "key_size"), ("--attn_dv", "value_size")) if ns.model == "pixelsnail" else ():
        if options[key] % ns.attn_nh:  # the original's are over all heads, ours per head
            raise PixelModelsError(f"{flag}: the features of all heads together; expected a multiple of "
                                   f"--attn_nh {ns.attn_nh}, found {options[key]}")
        options[key] //= ns.attn_nh
    resolve_options(MODELS[ns.model], "default", options)
    return options


def train_config(ns, epochs: int, conditional: bool) -> TrainConfig:
    """The original's training settings: RMSprop without decay for pixelcnn, Adam (0.95, 0.9995) otherwise."""
    pixelcnn = ns.model == "pixelcnn"
    if ns.cuda is not None and ns.cuda >= torch.cuda.device_count():
        raise PixelModelsError(f"--cuda {ns.cuda}: " + ("no CUDA device is available here; leave out --cuda to run "
                               "on the CPU" if not torch.cuda.is_available() else
                               f"expected a device index below {torch.cuda.device_count()}"))
    return TrainConfig(epochs=epochs, batch_size=ns.batch_size, lr=ns.lr, ema=ns.polyak, seed=ns.seed,
                       lr_decay=ns.lr_decay if ns.lr_decay is not None else 1.0 if pixelcnn else 0.999995,
                       optimizer="rmsprop" if pixelcnn else "adam", adam_betas=None if pixelcnn else (0.95, 0.9995),
                       device="cpu" if ns.cuda is None else f"cuda:{ns.cuda}", eval_every=ns.eval_interval,
                       log_every=ns.log_interval, conditional=conditional)


def data_dir(path: Path | None, dataset: str) -> str | None:
    """``--data_path`` as pixelmodels takes it, absolute; torchvision's MNIST/raw/ layout is looked into too."""
    if path is not None and dataset == "mnist" and (path / "MNIST" / "raw").is_dir():
        path = path / "MNIST" / "raw"
    return None if path is None else str(path.expanduser().absolute())


def new_run(ns) -> tuple[RunConfig, Path, None]:
    if ns.dataset is None:
        raise PixelModelsError(f"--dataset: required for a new run; expected one of {FLAGS['dataset'][0]}")
    info = DATASET_INFO[ns.dataset]
    if ns.n_cond_classes not in (None, info.n_classes):
        raise PixelModelsError(f"--n_cond_classes: {ns.dataset} has " + (
            f"{info.n_classes} classes; found {ns.n_cond_classes}" if info.n_classes else "no class labels"))
    if (ns.n_bits or 0) > info.n_bits:
        raise PixelModelsError(f"--n_bits: {ns.dataset} has {info.n_bits} bits per sub-pixel; found {ns.n_bits}")
    data = DataConfig(ns.dataset, data_dir(ns.data_path, ns.dataset), n_bits=ns.n_bits or min(N_BITS, info.n_bits))
    model = ModelConfig(name=MODELS[ns.model], image_shape=(1, 1, 1), options=model_options(ns))
    out = base = Path("results") / ns.model / time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime())
    while out.exists():  # two runs in the same second
        out = base.with_name(f"{base.name}_{int(out.name[len(base.name) + 1:] or 1) + 1}")
    return RunConfig(model, data, train_config(ns, ns.n_epochs, ns.n_cond_classes is not None)), out, None


def restored_run(ns, given: dict) -> tuple[RunConfig, Path, dict]:
    """The run in the directory of ``--restore_file``, for ``--n_epochs`` more epochs, and its training state;
    a given flag that contradicts the run is an error."""
    out = ns.restore_file if ns.restore_file.is_dir() else ns.restore_file.parent
    if not ns.restore_file.exists():
        raise PixelModelsError(f"--restore_file: {ns.restore_file}: no such file")
    raw = read_config(out / ckpt.CONFIG)
    if not isinstance(raw.get("model"), dict):
        raise PixelModelsError(f"--restore_file: {out / ckpt.CONFIG} was not written by pixelmodels (the original "
                               "main.py's checkpoints cannot be loaded); restore a run this main.py wrote")
    if not (out / ckpt.STATE).is_file():
        raise PixelModelsError(f"--restore_file: {out} holds no {ckpt.STATE}; expected a results directory "
                               "written by main.py --train")
    stored = RunConfig.from_dict(raw)
    if MODELS[ns.model] != stored.model.name:
        raise PixelModelsError(f"MODEL: {out} holds a {stored.model.name} run; found {ns.model}")
    options = model_options(ns)
    for flag, (*_, key) in MODEL_FLAGS[ns.model][1].items():
        if flag in given and options[key] != stored.model.options.get(key):
            raise PixelModelsError(f"--{flag}: the run in {out} has {key}={stored.model.options.get(key)!r}; "
                                   f"found {given[flag]!r} (leave model flags out when restoring)")
    for flag, value, words in (("dataset", stored.data.dataset, "was trained on {}"),
                               ("n_bits", stored.model.n_bits, "models {}-bit images"),
                               ("n_cond_classes", stored.model.n_classes, "has n_classes={}")):
        if flag in given and given[flag] != value:
            raise PixelModelsError(f"--{flag}: the run in {out} {words.format(value)}; found {given[flag]}")
    data = dataclasses.replace(stored.data, data_dir=data_dir(ns.data_path, stored.data.dataset)
                               or stored.data.data_dir)
    state = ckpt.load_state(out / ckpt.STATE)
    return RunConfig(stored.model, data, train_config(ns, state["epoch"] + ns.n_epochs, stored.model.n_classes
                                                      is not None)), out, state


class Reports(session.RunCallbacks):
    """The original's reports: each evaluation printed, its grid written as generation_sample_step_N.png."""

    def on_evaluate(self, trainer: Trainer, record: dict) -> None:
        print(f"Evaluate bits per dim: {record['test_bpd']:.3f}")
        super().on_evaluate(trainer, record)


def run_main(argv: list[str]) -> int:
    """main.py's work; under torchrun its process group is left at the end, whatever the end."""
    with distributed.closing():
        return _run_main(argv)


def _run_main(argv: list[str]) -> int:
    parser = build_parser()
    ns, given = parser.parse_args(argv), vars(build_parser(defaults=False).parse_args(argv))
    if not (ns.train or ns.evaluate or ns.generate):
        parser.error("nothing to do: give --train, --evaluate and/or --generate")
    restoring = ns.restore_file is not None
    try:
        run, out, state = restored_run(ns, given) if restoring else new_run(ns)
    except SettingError as e:  # named by the original's flag
        flags = {field: f"--{f}" for f, (*_, field) in [*FLAGS.items(), *MODEL_FLAGS[ns.model][1].items()] if field}
        raise SettingError(e.name, flags.get(e.name, e.flag), e.expected, e.found, e.allowed) from None
    if run.model.options.get("weight_norm") and (not restoring or "norm_layer" in given):
        print(NORM_WARNING, file=sys.stderr)
    world, device = runs.setup_process(run.train)
    train_set, test_set = runs.load_splits(run.data, device)
    if ns.mini_data:  # the original's quick runs: one batch of training images, evaluated on itself
        t, n = train_set, ns.batch_size
        train_set = test_set = ImageDataset(t.images[:n], t.labels[:n], t.n_bits, t.n_classes, t.name, "train")
    model, run = runs.build_run_model(run, train_set, device)
    if state is not None:
        runs.restore_rng(state, device)
    trainer = Trainer(run, model, train_set, test_set, out, world=world, device=device, state=state)
    reports = Reports(n_samples=ns.n_samples * (model.n_classes or 1), nrow=ns.n_samples,
                      grid="generation_sample_step_{step}.png")
    print(f"results directory: {out}\nModel parameters: {model.n_parameters():,}")
    record = session.run_training(trainer, reports, ["python", "main.py", *argv]) if ns.train else None
    if not (ns.train or restoring):  # evaluate / generate an untrained model, as the original allowed: restorable
        trainer.save()
    if ns.evaluate:
        bpd = record["test_bpd"] if record is not None and record["step"] == trainer.step else \
            evaluate(trainer.ema.model, trainer.test_set, run.train.eval_batch_size, device)
        ckpt.write_json(out / "evaluation_test.json", {"split": "train[:batch_size]" if ns.mini_data else "test",
                        "bits_per_dim": bpd, "n_images": len(test_set), "step": trainer.step, "weights": "ema"})
        print(f"Evaluate bits per dim: {bpd:.3f}")
    if ns.generate:
        path = out / f"generation_sample_step_{trainer.step}.png"
        if not (record is not None and path.exists()):  # else training's last evaluation wrote it
            path = reports.write_grid(trainer)
        print(f"wrote {path}" if path else "--n_samples 0: no samples written")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a bad flag, a missing file, a mismatched run)."""
    try:
        return run_command("main.py", run_main, sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, message already printed)
        return e.code if isinstance(e.code, int) else 2


if __name__ == "__main__":
    sys.exit(main())
