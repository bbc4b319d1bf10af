"""The command line of the project this library grew from (kamenbliznashki/pixel_models), run on pixelmodels.

    python main.py --train --dataset mnist --data_path ~/data/mnist --n_bits 4 pixelcnn --n_res_layers 5
    python main.py --train --dataset cifar10 --data_path ~/data --n_epochs 10 pixelsnail --attn_nh 2
    python main.py --evaluate --generate --restore_file results/pixelcnn/2024-05-01_12-00-00/training_state.pt \\
        --dataset mnist pixelcnn

Every flag of the original is accepted with its default; the MODEL subcommand and its options come
last. A new run writes ``results/MODEL/YYYY-MM-DD_HH-MM-SS/`` (UTC, as the original) under the
current directory; ``--restore_file`` continues the run in the directory of the given file. The
directory is a pixelmodels run directory (``config.json``, ``model.safetensors``, ``training_state.pt``,
``metrics.jsonl``, ``tensorboard/``, ``command.txt``) plus the original's
``generation_sample_step_N.png`` grids, so ``pixelmodels evaluate|generate|complete DIR`` and
``pixelmodels train --resume DIR`` work on it too. README.md ("main.py") has the flag mapping.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig, read_config
from pixelmodels.data import DATASET_INFO, ImageDataset
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import make_grid, save_grid
from pixelmodels.evaluation import evaluate, sample_grid
from pixelmodels.app.runs import build_trainer
from pixelmodels.training import Trainer

DATASETS = ["mnist", "cifar10", "colored-mnist"]
MODELS = {"pixelcnn": "gated-pixelcnn", "pixelcnnpp": "pixelcnnpp", "pixelsnail": "pixelsnail"}
N_BITS = 4  # the original's default, lowered to the data's depth for colored-mnist (2 bits)
NORM_WARNING = ("main.py: warning: --norm_layer True: the original's per-batch normalization (BatchNorm2d) "
                "breaks causality (batch statistics let each pixel see later pixels and other images); "
                "using weight normalization instead, which keeps it (--norm_layer False: no normalization)")


# -- flags ---------------------------------------------------------------------
def _typed(kind, low, what):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}")
        return value
    return parse


POSITIVE = _typed(int, 1, "a positive integer")
NATURAL = _typed(int, 0, "an integer >= 0")
RATE = _typed(float, 0.0, "a number >= 0")


def boolean(text: str) -> bool:
    """``True`` / ``False``, as the original's ``type=eval`` took them (plus lower case, 1 and 0)."""
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, found {text!r}")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The original's parser. ``defaults=False``: given flags only (the others are left out of the namespace)."""
    def d(value):
        return value if defaults else argparse.SUPPRESS

    p = argparse.ArgumentParser(prog="main.py", description="Train, evaluate and sample pixel models "
                                "(the original pixel_models command line, run on pixelmodels).",
                                argument_default=None if defaults else argparse.SUPPRESS)
    sub = p.add_subparsers(dest="model", metavar="MODEL", required=True,
                           help="pixelcnn (gated PixelCNN), pixelcnnpp or pixelsnail; then its options")
    a = sub.add_parser("pixelcnn", help="gated PixelCNN (pixelmodels gated-pixelcnn)",
                       argument_default=None if defaults else argparse.SUPPRESS)
    a.add_argument("--n_channels", type=POSITIVE, default=d(128), help="features of both stacks (default 128)")
    a.add_argument("--n_out_conv_channels", type=POSITIVE, default=d(1024),
                   help="features of the 1x1 output layer (default 1024)")
    a.add_argument("--n_res_layers", type=NATURAL, default=d(12),
                   help="gated residual layers after the 7x7 input layer (default 12)")
    a.add_argument("--kernel_size", type=POSITIVE, default=d(5), help="odd kernel size of the gated layers (default 5)")
    a.add_argument("--norm_layer", type=boolean, default=d(True),
                   help="True: weight normalization (the original's BatchNorm breaks causality); default True")
    b = sub.add_parser("pixelcnnpp", help="PixelCNN++", argument_default=None if defaults else argparse.SUPPRESS)
    b.add_argument("--n_channels", type=POSITIVE, default=d(128), help="filters of both streams (default 128)")
    b.add_argument("--n_res_layers", type=POSITIVE, default=d(5), help="gated ResNet blocks per stage (default 5)")
    b.add_argument("--n_logistic_mix", type=POSITIVE, default=d(10), help="logistic mixture components (default 10)")
    c = sub.add_parser("pixelsnail", help="PixelSNAIL", argument_default=None if defaults else argparse.SUPPRESS)
    c.add_argument("--n_channels", type=POSITIVE, default=d(256), help="filters of the residual stream (default 256)")
    c.add_argument("--n_res_layers", type=NATURAL, default=d(5), help="residual layers per attention block (default 5)")
    c.add_argument("--attn_n_layers", type=POSITIVE, default=d(12), help="attention blocks (default 12)")
    c.add_argument("--attn_nh", type=POSITIVE, default=d(1), help="attention heads (default 1)")
    c.add_argument("--attn_dq", type=POSITIVE, default=d(16), help="query/key features over all heads (default 16)")
    c.add_argument("--attn_dv", type=POSITIVE, default=d(128), help="value features over all heads (default 128)")
    c.add_argument("--attn_drop_rate", type=RATE, default=d(0.0), help="dropout on the attention (default 0)")
    c.add_argument("--n_logistic_mix", type=POSITIVE, default=d(10), help="logistic mixture components (default 10)")

    p.add_argument("--train", action="store_true", default=d(False), help="train the model")
    p.add_argument("--evaluate", action="store_true", default=d(False), help="test bits/dim of the EMA weights")
    p.add_argument("--generate", action="store_true", default=d(False),
                   help="write generation_sample_step_N.png from the EMA weights")
    p.add_argument("--restore_file", type=Path, default=d(None),
                   help="a file of a results directory (training_state.pt, ...): continue that run")
    p.add_argument("--seed", type=int, default=d(0), help="random seed (default 0)")
    p.add_argument("--cuda", type=NATURAL, default=d(None), help="run on CUDA device N (default: the CPU)")
    p.add_argument("--mini_data", action="store_true", default=d(False),
                   help="train and evaluate on the first batch_size training images only")
    p.add_argument("--dataset", choices=DATASETS, default=d(None), help="required for a new run")
    p.add_argument("--n_cond_classes", type=POSITIVE, default=d(None),
                   help="class-conditional model; must equal the dataset's number of classes")
    p.add_argument("--n_bits", type=_typed(int, 1, "an integer from 1 to 8"), default=d(None),
                   help=f"bits per sub-pixel (default {N_BITS}; 2 for colored-mnist)")
    p.add_argument("--data_path", type=Path, default=d(None),
                   help="folder of the dataset's files (the pickle itself for colored-mnist); "
                        "default: found or downloaded as pixelmodels does")
    p.add_argument("--lr", type=RATE, default=d(5e-4), help="learning rate (default 5e-4)")
    p.add_argument("--lr_decay", type=RATE, default=d(None),
                   help="per-step learning rate factor (default 0.999995; pixelcnn: 1, as the original)")
    p.add_argument("--polyak", type=RATE, default=d(0.9995), help="decay of the weights' EMA (default 0.9995)")
    p.add_argument("--batch_size", type=POSITIVE, default=d(16), help="default 16")
    p.add_argument("--n_epochs", type=NATURAL, default=d(1), help="epochs to train (more, when restoring); default 1")
    p.add_argument("--log_interval", type=POSITIVE, default=d(50),
                   help="log training metrics every N steps (default 50)")
    p.add_argument("--eval_interval", type=POSITIVE, default=d(10),
                   help="evaluate, sample and checkpoint every N epochs, and after the last (default 10)")
    p.add_argument("--n_samples", type=NATURAL, default=d(8),
                   help="images per sample grid (per class for a conditional model); default 8")
    return p


# -- the mapping ---------------------------------------------------------------
def model_options(ns: argparse.Namespace) -> tuple[dict, dict]:
    """(pixelmodels options, which option each given model flag sets) for the MODEL flags in ``ns``."""
    if ns.model == "pixelcnn":
        options = dict(n_channels=ns.n_channels, n_out_channels=ns.n_out_conv_channels,
                       n_layers=ns.n_res_layers + 1, kernel_size=ns.kernel_size, input_kernel_size=7,
                       likelihood="categorical", weight_norm=ns.norm_layer)
        if ns.kernel_size % 2 == 0:
            raise PixelModelsError(f"--kernel_size: expected an odd size, found {ns.kernel_size}")
        flags = dict(n_channels="n_channels", n_out_conv_channels="n_out_channels", n_res_layers="n_layers",
                     kernel_size="kernel_size", norm_layer="weight_norm")
    elif ns.model == "pixelcnnpp":
        options = dict(n_filters=ns.n_channels, n_blocks=ns.n_res_layers, n_mixtures=ns.n_logistic_mix,
                       likelihood="logistic-mixture")
        flags = dict(n_channels="n_filters", n_res_layers="n_blocks", n_logistic_mix="n_mixtures")
    else:
        for flag, total in (("--attn_dq", ns.attn_dq), ("--attn_dv", ns.attn_dv)):
            if total % ns.attn_nh:  # the original splits these features evenly over the heads
                raise PixelModelsError(f"{flag}: the features of all heads together; expected a multiple of "
                                       f"--attn_nh {ns.attn_nh}, found {total}")
        if ns.attn_drop_rate >= 1:
            raise PixelModelsError(f"--attn_drop_rate: expected a probability below 1, found {ns.attn_drop_rate}")
        options = dict(n_filters=ns.n_channels, n_res_layers=ns.n_res_layers, n_blocks=ns.attn_n_layers,
                       n_heads=ns.attn_nh, key_size=ns.attn_dq // ns.attn_nh, value_size=ns.attn_dv // ns.attn_nh,
                       attn_dropout=ns.attn_drop_rate, n_mixtures=ns.n_logistic_mix, likelihood="logistic-mixture")
        flags = dict(n_channels="n_filters", n_res_layers="n_res_layers", attn_n_layers="n_blocks",
                     attn_nh="n_heads", attn_dq="key_size", attn_dv="value_size", attn_drop_rate="attn_dropout",
                     n_logistic_mix="n_mixtures")
    return options, flags


def train_config(ns: argparse.Namespace, conditional: bool) -> TrainConfig:
    """The original's training settings: RMSprop without decay for pixelcnn, Adam (0.95, 0.9995) otherwise."""
    pixelcnn = ns.model == "pixelcnn"
    lr_decay = ns.lr_decay if ns.lr_decay is not None else (1.0 if pixelcnn else 0.999995)
    if not 0 <= ns.polyak < 1:
        raise PixelModelsError(f"--polyak: expected a decay in [0, 1), found {ns.polyak}")
    if not 0 < lr_decay <= 1:
        raise PixelModelsError(f"--lr_decay: expected a factor in (0, 1], found {lr_decay}")
    return TrainConfig(epochs=ns.n_epochs, batch_size=ns.batch_size, lr=ns.lr, lr_decay=lr_decay, ema=ns.polyak,
                       optimizer="rmsprop" if pixelcnn else "adam", adam_betas=None if pixelcnn else (0.95, 0.9995),
                       device=device(ns.cuda), seed=ns.seed, eval_every=ns.eval_interval,
                       n_samples=0,  # main.py writes the original's generation_sample_step_N.png itself
                       log_every=ns.log_interval, conditional=conditional)


def device(cuda: int | None) -> str:
    """``--cuda N`` -> cuda:N (refused where there is no such device); the CPU without it, as the original."""
    if cuda is None:
        return "cpu"
    if not torch.cuda.is_available():
        raise PixelModelsError(f"--cuda {cuda}: no CUDA device is available here; leave out --cuda to run on the CPU")
    if cuda >= torch.cuda.device_count():
        raise PixelModelsError(f"--cuda {cuda}: expected a device index below {torch.cuda.device_count()}")
    return f"cuda:{cuda}"


def data_dir(path: Path | None, dataset: str) -> str | None:
    """``--data_path`` as pixelmodels takes it; torchvision's MNIST/raw/ layout is looked into too."""
    if path is None:
        return None
    if dataset == "mnist" and (path / "MNIST" / "raw").is_dir():
        return str(path / "MNIST" / "raw")
    return str(path)


def n_bits(ns: argparse.Namespace, dataset: str) -> int:
    depth = DATASET_INFO[dataset].n_bits
    if ns.n_bits is None:
        return min(N_BITS, depth)
    if ns.n_bits > depth:
        raise PixelModelsError(f"--n_bits: {dataset} has {depth} bits per sub-pixel; found {ns.n_bits}")
    return ns.n_bits


def check_classes(k: int | None, dataset: str) -> None:
    have = DATASET_INFO[dataset].n_classes
    if k is not None and have is None:
        raise PixelModelsError(f"--n_cond_classes: {dataset} has no class labels")
    if k is not None and k != have:
        raise PixelModelsError(f"--n_cond_classes: {dataset} has {have} classes; found {k}")


def new_run(ns: argparse.Namespace) -> tuple[RunConfig, Path]:
    if ns.dataset is None:
        raise PixelModelsError(f"--dataset: required for a new run; expected one of {DATASETS}")
    check_classes(ns.n_cond_classes, ns.dataset)
    options, _ = model_options(ns)
    model = ModelConfig(name=MODELS[ns.model], image_shape=(1, 1, 1), options=options)
    data = DataConfig(dataset=ns.dataset, data_dir=data_dir(ns.data_path, ns.dataset), n_bits=n_bits(ns, ns.dataset))
    run = RunConfig(model=model, data=data, train=train_config(ns, ns.n_cond_classes is not None))
    out = Path("results") / ns.model / time.strftime("%Y-%m-%d_%H-%M-%S", time.gmtime())
    base, k = out, 1
    while out.exists():  # two runs in the same second
        k += 1
        out = base.with_name(f"{base.name}_{k}")
    return run, out


def restored_run(ns: argparse.Namespace, given: dict) -> tuple[RunConfig, Path]:
    """The run in the directory of ``--restore_file``; a given flag that contradicts it is an error."""
    path = ns.restore_file
    out = path if path.is_dir() else path.parent
    if not path.exists():
        raise PixelModelsError(f"--restore_file: {path}: no such file")
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
    options, flags = model_options(ns)
    for flag, key in flags.items():
        if flag in given and options[key] != stored.model.options.get(key):
            raise PixelModelsError(f"--{flag}: the run in {out} has {key}={stored.model.options.get(key)!r}; "
                                   f"found {getattr(ns, flag)!r} (leave model flags out when restoring)")
    dataset = stored.data.dataset
    if "dataset" in given and ns.dataset != dataset:
        raise PixelModelsError(f"--dataset: the run in {out} was trained on {dataset}; found {ns.dataset}")
    if "n_bits" in given and ns.n_bits != stored.model.n_bits:
        raise PixelModelsError(f"--n_bits: the run in {out} models {stored.model.n_bits}-bit images; found {ns.n_bits}")
    if "n_cond_classes" in given and ns.n_cond_classes != stored.model.n_classes:
        raise PixelModelsError(f"--n_cond_classes: the run in {out} has n_classes={stored.model.n_classes}; "
                               f"found {ns.n_cond_classes}")
    data = dataclasses.replace(stored.data, data_dir=data_dir(ns.data_path, dataset)) if ns.data_path \
        else stored.data
    return RunConfig(model=stored.model, data=data,
                     train=train_config(ns, stored.model.n_classes is not None)), out


# -- the work ------------------------------------------------------------------
class MainTrainer(Trainer):
    """A Trainer that evaluates and samples as the original: prints bits/dim, writes generation_sample_step_N.png."""

    def __init__(self, *args, n_samples: int, mini_data: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_samples = n_samples
        if mini_data:  # the original's quick runs: one batch of training images, evaluated on itself
            t, n = self.train_set, self.run.train.batch_size
            self.train_set = ImageDataset(t.images[:n], t.labels[:n], t.n_bits, t.n_classes, t.name, "train")
            self.test_set = self.train_set

    def test_bpd(self) -> float:
        return evaluate(self.ema.model, self.test_set, self.run.train.eval_batch_size, self.device)

    def evaluate_and_sample(self) -> dict:
        record = super().evaluate_and_sample()
        print(f"Evaluate bits per dim: {record['test_bpd']:.3f}")
        self.write_samples()
        return record

    def write_samples(self) -> Path | None:
        """The EMA weights' sample grid: one row of n_samples, or one per class for a conditional model."""
        if self.n_samples == 0:
            return None
        model = self.ema.model
        k = model.n_classes or 1
        images, nrow = sample_grid(model, self.n_samples * k, self.run.train.seed)
        path = save_grid(images, self.out / f"generation_sample_step_{self.step}.png", model.n_bits,
                         nrow or self.n_samples)
        if getattr(self, "writer", None) is not None:
            self.writer.add_image("samples", make_grid(images, model.n_bits, nrow or self.n_samples), self.step,
                                  dataformats="HWC")
        return path


def run_main(argv: list[str]) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    given = vars(build_parser(defaults=False).parse_args(argv))
    if not (ns.train or ns.evaluate or ns.generate):
        parser.error("nothing to do: give --train, --evaluate and/or --generate")
    restoring = ns.restore_file is not None
    run, out = restored_run(ns, given) if restoring else new_run(ns)
    if run.model.name == "gated-pixelcnn" and run.model.options.get("weight_norm") \
            and (not restoring or "norm_layer" in given):
        print(NORM_WARNING, file=sys.stderr)
    trainer = build_trainer(run, out, resume=restoring, trainer_cls=MainTrainer, n_samples=ns.n_samples,
                            mini_data=ns.mini_data)
    if restoring:  # as the original: --n_epochs more epochs from where the run stopped
        trainer.run = dataclasses.replace(trainer.run, train=dataclasses.replace(
            trainer.run.train, epochs=trainer.epoch + ns.n_epochs))
    print(f"results directory: {out}")
    print(f"Model parameters: {sum(p.numel() for p in trainer.model.parameters()):,}")
    record = None
    if ns.train:
        record = trainer.fit(command=["python", "main.py", *argv])
    elif not restoring:  # evaluate / generate an untrained model, as the original allowed: keep it restorable
        trainer.save()
    if ns.evaluate:
        bpd = record["test_bpd"] if record is not None and record["step"] == trainer.step else trainer.test_bpd()
        ckpt.write_json(out / "evaluation_test.json",
                        {"split": "train[:batch_size]" if ns.mini_data else "test", "bits_per_dim": bpd,
                         "n_images": len(trainer.test_set), "step": trainer.step, "weights": "ema"})
        print(f"Evaluate bits per dim: {bpd:.3f}")
    if ns.generate:
        path = out / f"generation_sample_step_{trainer.step}.png"
        if not (record is not None and path.exists()):  # training's last evaluation wrote it already
            path = trainer.write_samples()
        print(f"wrote {path}" if path else "--n_samples 0: no samples written")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a bad flag, a missing file, a mismatched run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run_main(argv)
    except SystemExit as e:  # argparse: --help (0) or a bad flag (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    except PixelModelsError as e:
        print(f"main.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
