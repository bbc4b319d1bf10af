"""The ``pixelmodels`` command: argparse subcommands that only wire library calls.

Flags are derived from the settings dataclasses (``config.py``, through ``flags.py``) and from the
chosen model's options dataclass, in kebab case, so every setting is written once; the flags several
commands share are declared once, in ``SHARED``. A flag the user does not give is absent from the
namespace, which is how ``--resume`` knows what to override. The library checks every value: ``main``
prints its error as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path


from pixelmodels import checkpoint as ckpt
from pixelmodels.app.commands import (CompleteSettings, CompressSettings, EvaluateSettings, GenerateSettings,
                                      OodSettings, ScoreSettings)
from pixelmodels.config import DataConfig, TrainConfig
from pixelmodels.errors import PixelModelsError, run_command
from pixelmodels.imageio import GRID_FORMATS
from pixelmodels.app.flags import Parser, add_dataclass_flags, given
from pixelmodels.models.registry import get_spec, list_models
from pixelmodels.pretrained import list_pretrained

# The settings dataclasses each command's flags come from (train adds the chosen model's options dataclass).
SETTINGS = {"train": (DataConfig, TrainConfig), "evaluate": (EvaluateSettings,), "generate": (GenerateSettings,),
            "complete": (CompleteSettings,), "score": (ScoreSettings,), "compress": (CompressSettings,),
            "ood": (OodSettings,)}

# The flags the commands that use a trained model share (train takes its own from DataConfig and TrainConfig).
SHARED = {
    "--dataset": dict(help="the dataset to read, before any INPUT (default: the one the model was trained on, "
                      "when no INPUT is given)"),
    "--data-dir": dict(help="where the dataset's files are (default: as in the run's config)"),
    "--split": dict(choices=["train", "test"], default="test", help="the dataset's split (default: test)"),
    "--device": dict(default="auto", help="cpu, cuda or cuda:N (default auto: CUDA when available)"),
    "--cond": dict(type=Path, metavar="FILE.npy", help="the model's conditions: (N, *cond_shape), or one"),
    "--resize": dict(action="store_true", help="convert image files to the model's channels and size: center-crop "
                     "to its aspect ratio and resize (else a file of another shape is an error)"),
    "--overwrite": dict(action="store_true", help="replace existing outputs: every file the command would write "
                        "over (--out / -o and the files beside it)"),
}


def command_parser(command: str, description: str, *shared: str, inputs: bool = False, helps: dict | None = None,
                   **kw) -> Parser:
    """The parser of a command that uses a trained model: its source (RUN_DIR or --pretrained NAME; with
    ``inputs``, RUN_DIR then INPUT files) and the ``shared`` flags of ``SHARED``, their help written for this
    command where ``helps`` (flag -> help) says so."""
    p = Parser(prog=f"pixelmodels {command}", description=description, **kw)
    if inputs:
        p.add_argument("paths", nargs="*", type=Path, metavar="RUN_DIR / INPUT",
                       help="the run directory (unless --pretrained), then PNG/JPEG files, folders of them, or "
                       ".npz/.npy arrays files")
    else:
        p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR",
                       help="a run directory (or a directory written by save_pretrained)")
    p.add_argument("--pretrained", metavar="NAME", help=f"a model shipped with pixelmodels, one of {list_pretrained()}")
    for flag in shared:
        p.add_argument(flag, **(SHARED[flag] | ({"help": helps[flag]} if flag in (helps or {}) else {})))
    return p


def grid_out_help(name: str, codes: str) -> str:
    """The help of ``--out`` for a command that writes a grid (``generate``, ``complete``): its default ``name``,
    and what a model of ``codes`` writes."""
    return (f"where to write, the format from the extension: a grid ({', '.join(GRID_FORMATS)}; default "
            f"RUN_DIR/{name}.png, or ./{name}.png for --pretrained) and the .npz of the arrays beside it, or the .npz "
            f"alone. Code maps: {codes}")


# -- train -------------------------------------------------------------------
def train_parser(model: str | None) -> argparse.ArgumentParser:
    """The parser of ``train``: its own flags, DataConfig's, TrainConfig's and those of ``model``'s options."""
    p = Parser(prog="pixelmodels train", description="Train a model; writes a run directory.")
    p.add_argument("--model", choices=list_models(), default=argparse.SUPPRESS, help="model family")
    p.add_argument("--preset", default=argparse.SUPPRESS, help="model preset (tiny, small, default, ...)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/MODEL-DATASET-TIME)")
    p.add_argument("--resume", metavar="DIR|auto", help="continue the run in DIR; given flags override. auto: "
                   "continue the run in --out if it holds a checkpoint of the same run, else start it there (the "
                   "command torchrun --max-restarts restarts)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataclass_flags(p.add_argument_group("data"), DataConfig)
    add_dataclass_flags(p.add_argument_group("training"), TrainConfig)
    if model is not None:
        group = p.add_argument_group(f"{model} options (default: the preset's value)")
        add_dataclass_flags(group, get_spec(model).options, show_default=False)
    return p


def cmd_train(argv: list[str]) -> int:
    """``pixelmodels train``; torchrun's process group, when joined, is left at the end, whatever the end, its
    threads ended (:func:`pixelmodels.distributed.closing`)."""
    from pixelmodels import distributed

    with distributed.closing():
        return train_command(argv)


def train_command(argv: list[str]) -> int:
    """Resolve the run of ``argv`` (new, ``--resume DIR`` or ``--resume auto``), train it and report."""
    from pixelmodels.app import runs, session
    from pixelmodels.app.inputs import splits_line
    from pixelmodels.app.outputs import plural

    pre = Parser(add_help=False)
    pre.add_argument("--model")
    pre.add_argument("--resume")
    known, _ = pre.parse_known_args(argv)
    resume_dir = None if known.resume in (None, "auto") else Path(known.resume)
    name = known.model or (runs.read_run(resume_dir).model.name if resume_dir is not None else None)
    ns = train_parser(name).parse_args(argv)
    options = given(ns, get_spec(name).options) if name else {}
    run, out, resume, replaces = runs.run_and_dir(known.model, getattr(ns, "preset", None), ns.out, known.resume,
                                                  given(ns, TrainConfig), options, given(ns, DataConfig))
    trainer = runs.build_trainer(run, out, resume=resume, overwrite=ns.overwrite or replaces)
    if trainer.world.main:  # one start line and one report under torchrun, not one per process
        if trainer.train_set.facts is not None:  # image files were read: what was found, skipped, converted
            print(splits_line(trainer.train_set, trainer.test_set), file=sys.stderr)
        print(session.start_line(trainer, auto_precision=run.train.precision == "auto"), file=sys.stderr)
    record = session.run_training(trainer, session.RunCallbacks(progress=False if ns.no_progress else None),
                                  ["pixelmodels", "train", *argv])
    if trainer.world.main:
        print(f"run directory: {out}\ntest bits/dim (EMA weights): {record['test_bpd']:.4f} after "
              f"{plural(record['step'], 'step')}")
    return 0


# -- evaluate / generate / complete --------------------------------------------
def cmd_evaluate(argv: list[str]) -> int:
    from pixelmodels.app.outputs import plural
    from pixelmodels.evaluation import evaluate

    p = command_parser("evaluate", "Bits/dim of a run's EMA weights on a dataset split (default: the run's test "
                       "split) or on image files, folders and arrays files.", "--dataset", "--split", "--data-dir",
                       "--device", "--resize", inputs=True,
                       usage="pixelmodels evaluate (RUN_DIR | --pretrained NAME) [INPUT ...] [options]")
    add_dataclass_flags(p, EvaluateSettings)
    add_dataclass_flags(p, ScoreSettings, only=("label",))
    ns = p.parse_args(argv)
    s = EvaluateSettings(**given(ns, EvaluateSettings))
    run_dir, paths = run_and_inputs(ns)
    model, batch = model_and_inputs(ns, ScoreSettings(**given(ns, ScoreSettings)), ns.resize)
    bpd = evaluate(model, batch, s.batch_size, next(model.parameters()).device)
    if run_dir is not None and not paths:
        ckpt.write_json(run_dir / f"evaluation_{ns.split}.json",
                        {"split": ns.split, "bits_per_dim": bpd, "n_images": len(batch), "weights": "ema"})
    print(f"{'' if paths else f'{ns.split} '}bits/dim: {bpd:.4f} ({plural(len(batch), 'image')}, EMA weights)")
    return 0


def cmd_generate(argv: list[str]) -> int:
    from pixelmodels.app.inputs import read_cond
    from pixelmodels.app.outputs import samples_target, write_samples
    from pixelmodels.app.samples import generate_samples
    from pixelmodels.app.runs import open_model, vqvae_of

    p = command_parser("generate", "Sample a PNG grid and an .npz (images), or an .npy of code maps (decoded too by "
                       "a VQ-VAE beside the model); --n samples for each condition of --cond.", "--device", "--cond",
                       "--overwrite")
    add_dataclass_flags(p, GenerateSettings)
    p.add_argument("--out", type=Path, help=grid_out_help("generated", "the .npy (default generated.npy) or .npz; "
                   "with a VQ-VAE beside the model, also the grid and .npz of the images it decodes them to"))
    ns = p.parse_args(argv)
    s = GenerateSettings(**given(ns, GenerateSettings))
    model, _, home = open_model(ns.run_dir, ns.pretrained, ns.device)
    cond = read_cond(ns.cond, model)
    s.check(model, None if cond is None else len(cond))
    vqvae = vqvae_of(ns.run_dir, ns.pretrained, ns.device)
    out = samples_target(ns.out or home / f"generated.{'npy' if model.n_codes else 'png'}", model, vqvae,
                         ns.overwrite)
    images, nrow, labels = generate_samples(model, s, cond)
    print(write_samples(out, images, model, nrow, labels, vqvae))
    return 0


def cmd_complete(argv: list[str]) -> int:
    from pixelmodels.app.outputs import completions_target, write_completions
    from pixelmodels.app.samples import complete_examples
    from pixelmodels.app.runs import vqvae_of

    p = command_parser("complete", "Keep the top of images (of a dataset split, or image files, folders and arrays "
                       "files) and sample the rest.", "--dataset", "--data-dir", "--split", "--device", "--resize",
                       "--overwrite", inputs=True, usage="pixelmodels complete (RUN_DIR | --pretrained NAME) "
                       "[INPUT ...] [--label K] [--resize] [options]")
    add_dataclass_flags(p.add_mutually_exclusive_group(), CompleteSettings, only=("rows", "pixels"))
    add_dataclass_flags(p, CompleteSettings, skip=("rows", "pixels"))
    p.add_argument("--out", type=Path, help=grid_out_help("completions", "the .npz (default completions.npz), or "
                   "a grid with a VQ-VAE beside the model"))
    ns = p.parse_args(argv)
    s = CompleteSettings(**given(ns, CompleteSettings))
    run_dir, _ = run_and_inputs(ns)
    model, batch = model_and_inputs(ns, s, ns.resize, limit=s.n)
    if "n" not in given(ns, CompleteSettings):  # the default: 8, or all when fewer were read
        s = CompleteSettings(**given(ns, CompleteSettings), n=min(s.n, len(batch)))
    home = Path(run_dir or ".")
    vqvae = vqvae_of(run_dir, ns.pretrained, ns.device)
    out = completions_target(ns.out or home / f"completions.{'npz' if model.n_codes else 'png'}", model, vqvae,
                             ns.overwrite)
    x, known, done = complete_examples(model, batch, s)
    print(write_completions(out, x, known, done, model, vqvae))
    return 0


# -- score / compress / decompress ---------------------------------------------
def run_and_inputs(ns) -> tuple[Path | None, list[Path]]:
    """A command's RUN_DIR (the first path, unless --pretrained) and its INPUT paths."""
    return (None, ns.paths) if ns.pretrained or not ns.paths else (ns.paths[0], ns.paths[1:])


def model_and_inputs(ns, s, resize: bool = False, limit: int | None = None, marginal: bool = False):
    """The model of a command that reads images (evaluate, complete, score, compress) and what it reads
    (:func:`~pixelmodels.app.inputs.inputs_for`): the dataset's first examples (``--dataset``, or the run's
    when no INPUT is given), then the INPUT files, folders and arrays files; ``limit`` of them (default
    ``s.limit``), labelled ``s.label`` (``marginal``: images without labels are taken, for the marginal
    likelihood), ``s`` checked against the model. Says what it read on stderr."""
    from pixelmodels.app.inputs import inputs_for, inputs_line
    from pixelmodels.app.runs import dataset_config, load_data, open_model

    run_dir, paths = run_and_inputs(ns)
    model, run_data, _ = open_model(run_dir, ns.pretrained, ns.device)
    s.check(model)
    dataset = load_data(dataset_config(run_data, ns.dataset, ns.data_dir, model), ns.split) \
        if ns.dataset is not None or not paths else None
    inputs = inputs_for(model, dataset, paths, label=s.label, limit=s.limit if limit is None else limit,
                        resize=resize, marginal=marginal)
    print(inputs_line(inputs, model), file=sys.stderr)
    return model, inputs


def add_background_flags(p: Parser) -> None:
    """``--background RUN_DIR`` or ``--background-pretrained NAME``: the background model of the likelihood
    ratio (``score``, ``ood``)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--background", type=Path, metavar="RUN_DIR", help="a background model (say one trained "
                       "with train --perturb) of the same data: its bits/dim and the likelihood ratio log p(x) - "
                       "log p_background(x), bits/dim (Ren et al. 2019)")
    group.add_argument("--background-pretrained", metavar="NAME", help="a shipped background model, as "
                       "--background")


def cmd_score(argv: list[str]) -> int:
    from pixelmodels.app import detect, reports

    p = command_parser(
        "score", "Bits/dim of every image of a dataset split or of image files and folders, as CSV rows "
        "(source,index,label,bits_per_dim,nll_nats, and with --background or --complexity their columns); "
        "optionally a per-pixel NLL heat map per image. A class-conditional model given images without labels "
        "(and no --label) scores their marginal likelihood over its classes.",
        "--dataset", "--data-dir", "--split", "--device", "--resize", "--overwrite", inputs=True,
        helps={"--overwrite": "replace existing outputs: the CSV of --out and the heat maps of --heatmap"},
        usage="pixelmodels score (RUN_DIR | --pretrained NAME) [INPUT ...] [options]")
    add_dataclass_flags(p, ScoreSettings, skip=("batch_size",))
    add_background_flags(p)
    p.add_argument("--out", type=Path, help="the CSV file to write, ending in .csv (default: standard output)")
    p.add_argument("--heatmap", type=Path, metavar="DIR", help="write a PNG per image here: the image beside its "
                   "per-pixel NLL heat map, with the colour scale (black: 0 bits, red, yellow, white: C * n_bits "
                   "bits, a uniform guess, or more)")
    add_dataclass_flags(p, ScoreSettings, only=("batch_size",))
    ns = p.parse_args(argv)
    s = ScoreSettings(**given(ns, ScoreSettings))
    model, batch = model_and_inputs(ns, s, ns.resize, marginal=True)
    background = detect.open_background(ns.background, ns.background_pretrained, model, ns.device)
    detect.check_codec(s.complexity, model)
    names = reports.heatmap_names(batch) if ns.heatmap else []
    out, heatmaps = reports.score_targets(ns.out, ns.heatmap, names, ns.overwrite)
    for line in detect.marginal_lines(model, background, batch):
        print(line, file=sys.stderr)
    result = detect.score_inputs(model, batch, background=background, complexity=s.complexity,
                                 batch_size=s.batch_size, per_pixel=ns.heatmap is not None, progress=True)
    print(reports.write_scores(batch, result, model, out, heatmaps), file=sys.stdout if ns.out else sys.stderr)
    return 0


def cmd_compress(argv: list[str]) -> int:
    from pixelmodels.app.compression_files import compress_to_file, file_names

    p = command_parser("compress", "Compress the examples of a dataset split (--dataset), then image files, folders "
                       "and arrays files (.npz/.npy), losslessly with a model into one stream; prints its bits/dim, "
                       "the model's NLL and images/s.", "--dataset", "--data-dir", "--split", "--device", "--resize",
                       "--overwrite", inputs=True,
                       usage="pixelmodels compress (RUN_DIR | --pretrained NAME) [INPUT ...] -o OUT.pmc")
    add_dataclass_flags(p, CompressSettings)
    p.add_argument("-o", "--out", type=Path, required=True, help="the stream to write (.pmc); image files' names "
                   "go beside it (OUT.pmc.names.json), for decompress")
    ns = p.parse_args(argv)
    s = CompressSettings(**given(ns, CompressSettings))
    model, batch = model_and_inputs(ns, s, ns.resize)
    print(compress_to_file(model, batch.images, batch.labels, batch.cond, ns.out,
                           file_names(batch.sources, batch.indices), chunk_size=s.chunk_size, workers=s.workers,
                           overwrite=ns.overwrite))
    return 0


def cmd_decompress(argv: list[str]) -> int:
    from pixelmodels.app.inputs import read_cond
    from pixelmodels.app.compression_files import decompress_to_file
    from pixelmodels.app.runs import load_model_data, open_model

    p = command_parser("decompress", "Decode a stream of compress with its model into PNG files in a folder, or an "
                       ".npz; a model with a condition takes it from --cond or the dataset. Prints the bits/dim, the "
                       "model's NLL and images/s.", "--dataset", "--data-dir", "--split", "--device", "--cond",
                       "--overwrite", helps={
                           "--dataset": "for a model with a condition and no --cond: the dataset whose conditions "
                                        "the stream was coded with (default: the one the model was trained on)",
                           "--overwrite": "replace an existing --out (the .npz, or the PNG files in the folder)"})
    p.add_argument("stream", type=Path, metavar="IN.pmc", help="the stream to decode")
    add_dataclass_flags(p, CompressSettings, only=("workers",))
    p.add_argument("-o", "--out", type=Path, required=True, help="a folder for PNG files (named as the compressed "
                   "files were, when IN.pmc.names.json is beside the stream), or a path ending in .npz")
    ns = p.parse_args(argv)
    model, run_data, _ = open_model(ns.run_dir, ns.pretrained, ns.device)
    cond = read_cond(ns.cond, model) if ns.cond or model.cond_shape is None else \
        load_model_data(model, run_data, ns.split, ns.dataset, ns.data_dir).cond
    print(decompress_to_file(model, ns.stream, ns.out, cond, workers=CompressSettings(
        **given(ns, CompressSettings)).workers, overwrite=ns.overwrite))
    return 0


# -- ood -------------------------------------------------------------------------
def cmd_ood(argv: list[str]) -> int:
    from pixelmodels.app.detect import run_ood
    from pixelmodels.app.ood_sets import SPECS

    p = command_parser("ood", "Evaluate a detector of out-of-distribution images: score the in-distribution set "
                       "and each OOD set without labels (a class-conditional model: the marginal over its classes) "
                       "and print AUROC, AUPRC and the FPR at 95% TPR of each score (likelihood; likelihood ratio "
                       "with a background model; complexity S with --complexity); writes scores.csv and roc.png. "
                       "--pretrained NAME without --background*: the detector its metadata names. "
                       f"INPUTS: {SPECS} (noise and constant: --limit or 1,000 images).",
                       "--data-dir", "--device", "--resize", "--overwrite",
                       helps={"--data-dir": "where the DATASET:SPLIT sets' files are (default: the run's folder for "
                                            "its own dataset, else the dataset's usual places)",
                              "--overwrite": "replace the files of --out (scores.csv, roc.png)"},
                       usage="pixelmodels ood (RUN_DIR | --pretrained NAME) --in INPUTS --out-of INPUTS "
                       "[--out-of INPUTS ...] [--background RUN_DIR | --background-pretrained NAME] "
                       "[--complexity CODEC] [options]")
    p.add_argument("--in", dest="inside", metavar="INPUTS", help="the in-distribution set (required)")
    p.add_argument("--out-of", dest="outside", action="append", metavar="INPUTS", help="an out-of-distribution set; "
                   "give it again for more (at least one)")
    add_background_flags(p)
    add_dataclass_flags(p, OodSettings)
    p.add_argument("--out", type=Path, default=Path("ood"), metavar="DIR", help="where to write scores.csv (every "
                   "image's scores) and roc.png (default: ./ood)")
    ns = p.parse_args(argv)
    s = OodSettings(**given(ns, OodSettings))
    for flag, value in (("--in", ns.inside), ("--out-of", ns.outside)):
        if not value:
            raise PixelModelsError(f"{flag}: expected a set of images ({SPECS}), found none")
    print(run_ood(ns.run_dir, ns.pretrained, ns.inside, ns.outside, s, background_dir=ns.background,
                  background_name=ns.background_pretrained, out=ns.out, overwrite=ns.overwrite,
                  data_dir=ns.data_dir, resize=ns.resize, device=ns.device))
    return 0


# -- check -----------------------------------------------------------------------
def cmd_check(argv: list[str]) -> int:
    from pixelmodels.causality import check_causality
    from pixelmodels.app.runs import open_model
    from pixelmodels.settings import SettingError

    p = command_parser("check", "Check that a model is causal: no output depends on a later pixel, a later channel "
                       "of its pixel or another image of the batch (gradient and perturbation probes, train and "
                       "eval mode, in float64). Exit code 0: causal; 1: a leak, located in the line printed. A "
                       "model of your own: --import MODULE (the module that calls register_model).")
    p.add_argument("--positions", type=int, metavar="N", help="probe N random positions, the first and the last "
                   "pixel among them (default: every position)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu: exact zeros in float64)")
    ns = p.parse_args(argv)
    model, _, _ = open_model(ns.run_dir, ns.pretrained, ns.device)
    try:
        report = check_causality(model, positions=ns.positions, device=next(model.parameters()).device)
    except SettingError as e:  # the library names its argument; the command, the flag as typed
        raise SettingError(e.name, f"--{e.name}", e.expected, e.found, e.allowed) from None
    print(report.summary())
    return 0 if report.ok else 1


def cmd_pretrained(argv: list[str]) -> int:
    from pixelmodels.pretrained import pretrained_table

    Parser(prog="pixelmodels pretrained", description="The models shipped with pixelmodels (--pretrained NAME) "
           "and their figures, from their metadata.json.").parse_args(argv)
    print(pretrained_table(), end="")
    return 0


# command -> (handler, what it does, for the usage line)
COMMANDS = {
    "train": (cmd_train, "train a model into a run directory"),
    "evaluate": (cmd_evaluate, "bits/dim of a run's EMA weights on a split"),
    "generate": (cmd_generate, "sample images from a run"),
    "complete": (cmd_complete, "keep the top of dataset images, sample the rest"),
    "score": (cmd_score, "bits/dim (and per-pixel NLL heat maps) of dataset images or image files"),
    "compress": (cmd_compress, "compress images losslessly with a model into one stream (.pmc)"),
    "decompress": (cmd_decompress, "decode a stream of compress into PNG files or an .npz"),
    "ood": (cmd_ood, "evaluate a detector of out-of-distribution images (AUROC, ROC plot)"),
    "check": (cmd_check, "check that a run's model is causal (exit code 1 on a leak)"),
    "pretrained": (cmd_pretrained, "list the shipped models with their figures"),
}
USAGE = ("usage: pixelmodels {" + ",".join(COMMANDS) + "} ... [--import MODULE] [--debug] | --version\n"
         + "".join(f"  {name:<10}  {about}\n" for name, (_, about) in COMMANDS.items())
         + "Run 'pixelmodels COMMAND --help' for a command's flags.")


def main(argv: list[str] | None = None) -> int:
    """Run a command; a user's error (the library's ``PixelModelsError``, a failed read or write) is one line
    on stderr and exit code 2 (``--debug``: the traceback instead). Library warnings print as one line too."""
    import os

    from pixelmodels._version import __version__
    from pixelmodels.models.registry import import_models

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    imports = [m.strip() for m in os.environ.get("PIXELMODELS_IMPORT", "").split(",") if m.strip()]
    argv = [part for a in argv for part in (a.split("=", 1) if a.startswith("--import=") else [a])]
    while "--import" in argv:  # --import MODULE, anywhere, as --debug: the modules that register a user's models
        at = argv.index("--import")
        imports += argv[at + 1:at + 2] or [""]
        del argv[at:at + 2]
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        print(f"pixelmodels {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"{USAGE}\npixelmodels: error: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2

    def command(rest: list[str]) -> int:  # imported first, a user's model is known to every flag and run
        import_models(imports)
        return COMMANDS[argv[0]][0](rest)

    with warnings.catch_warnings():  # restores the caller's warning display on the way out
        warnings.showwarning = _one_line_warning
        return run_command(f"pixelmodels {argv[0]}", command, argv[1:], debug)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pixelmodels: warning: {message}", file=sys.stderr if file is None else file)


if __name__ == "__main__":
    sys.exit(main())
