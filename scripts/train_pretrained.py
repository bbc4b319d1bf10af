"""Train, export and measure a model shipped with pixelmodels (``scripts/train_pretrained.sh NAME``).

Each entry of ``RECIPES`` is the exact ``pixelmodels train`` command of a shipped model, with a fixed number
of steps (``--max-steps``), so its weights do not depend on the machine's speed. The script trains into
``runs/pretrained-NAME`` (in one go, or resumed from there with ``--resume-run``), exports the EMA weights to
``src/pixelmodels/pretrained/NAME/`` and writes ``metadata.json`` beside them: the command, steps, images
seen, CPU thread-minutes (the CPU time, user and system, of the training process: what it used, whatever
else ran beside it), parameters, test bits/dim of the EMA and of
the raw weights on the whole test split, the first 200 test images' bits/dim (``tests/test_pretrained.py``
checks it to 1e-4), the cached sampling time of 16 images and the machine. The README's table and
``pixelmodels pretrained`` read that file. A grid of samples, one row per class, goes to
``docs/pretrained/NAME.png``.

    OMP_NUM_THREADS=1 scripts/train_pretrained.sh fashion-mnist
    scripts/train_pretrained.sh fashion-mnist --export-only      # measure and export runs/pretrained-NAME as it is
    scripts/train_pretrained.sh fashion-mnist --steps 20 --dest /tmp/x --run /tmp/r   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from learning_curve import draw as draw_curve  # beside this file

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.85  # the flagship's goal, test bits/dim, drawn on its learning curve


def lr_decay(quarter_at: int) -> float:
    """The per-step learning-rate factor that brings it to a quarter at step ``quarter_at``, as the flags give it."""
    return float(f"{0.25 ** (1 / quarter_at):.7f}")


# name -> (description, dataset, the ``pixelmodels train`` flags without --max-steps and --out, steps)
RECIPES = {
    # The default `fashion-mnist` until the flagship replaced it; kept loadable under this name for a release.
    "fashion-mnist-gated-small-v1": (
        "Gated PixelCNN (small preset), conditional on the 10 Fashion-MNIST classes, 8-bit 28x28 grayscale; the "
        "default `fashion-mnist` before the flagship, kept loadable for a release",
        "fashion-mnist",
        "--model gated-pixelcnn --preset small --dataset fashion-mnist --conditional --batch-size 32 --epochs 2 "
        "--eval-every 2 --lr 2e-3 --lr-decay 0.9995 --ema 0.995 --seed 0 --n-samples 0",
        3000),
}

# The flagship, the default `--pretrained fashion-mnist`: the zoo's best family at 30 thread-minutes
# (PixelCNN++, small preset; 48 filters did worse at equal compute), trained for 110 minutes of wall time
# on both cores: two processes of one thread each under torchrun, 32 images each per step. Test bits/dim on the
# first 1000 test images every 300 steps make its learning curve (docs/pretrained/fashion-mnist-curve.png).
FLAGSHIP_STEPS = 4200
RECIPES["fashion-mnist"] = (
    "PixelCNN++ (small preset), conditional on the 10 Fashion-MNIST classes, 8-bit 28x28 grayscale; the flagship, "
    "trained on both CPU cores under torchrun",
    "fashion-mnist",
    "--model pixelcnnpp --preset small --dataset fashion-mnist --conditional --batch-size 64 --epochs 100 "
    "--eval-every 100 --eval-every-steps 300 --eval-limit 1000 --lr 2e-3 "
    f"--lr-decay {lr_decay(FLAGSHIP_STEPS):.7f} --ema 0.995 --seed 0 --n-samples 0",
    FLAGSHIP_STEPS)
PROCESSES = {"fashion-mnist": 2}  # name -> data-parallel processes under torchrun (one torch thread each)

# The zoo: every family on Fashion-MNIST (8 bits, class-conditional) under one budget of at least 30 CPU
# thread-minutes, trained one torch thread each. Size and schedule come from scripts/pretrained_trials.py
# (at equal thread-minutes the small preset beat a wider or deeper one for PixelCNN, Gated PixelCNN and
# PixelCNN++, a narrower one beat it for PixelSNAIL and both PixelRNNs; exponential decay beat cosine for the
# Gated PixelCNN). The steps give each family 30 thread-minutes at its measured
# speed (benchmarks/train.py --threads 1 --batch-size 32), plus 5%; the learning rate decays from 2e-3
# to a quarter of it at the last step.
ZOO = {  # family -> (preset and options, steps)
    "pixelcnn": ("--preset small", 4750),
    "gated-pixelcnn": ("--preset small", 3050),
    "pixelcnnpp": ("--preset small", 1320),
    "pixelsnail": ("--preset small --n-filters 32", 1900),  # 1750 steps measured 29.4 thread-minutes
    "row-lstm": ("--preset small --n-channels 64 --n-state 32 --n-layers 3", 3450),
    "diagonal-bilstm": ("--preset small --n-channels 48 --n-state 24 --n-layers 3", 1570),
}
for family, (options, steps) in ZOO.items():
    RECIPES[f"fashion-mnist-{family}"] = (
        f"{family} ({options}), conditional on the 10 Fashion-MNIST classes, 8-bit 28x28 grayscale; one of the "
        "zoo, each family trained for 30 CPU thread-minutes",
        "fashion-mnist",
        f"--model {family} {options} --dataset fashion-mnist --conditional --batch-size 32 --epochs 100 "
        f"--eval-every 100 --eval-limit 1000 --lr 2e-3 --lr-decay {lr_decay(steps):.7f} --ema 0.995 --seed 0 "
        "--n-samples 0",
        steps)

# The out-of-distribution detector of the flagship (pixelmodels ood --pretrained fashion-mnist): an unconditional
# PixelCNN++ and its background model (Ren et al. 2019), trained with the same seed and so the same data order and
# the same optimizer settings, one torch thread each. The model is the zoo's pixelcnnpp recipe without the classes;
# its learning rate falls to a quarter at 6,600 steps (five times the zoo's steps) and it trains on to 13,200
# (7 epochs; to a sixteenth). The background model sees its inputs perturbed at rate mu (--perturb), optionally
# under an L2 penalty (--weight-decay), for the zoo's 1,320 steps. Its network is a small PixelCNN with the model's
# kind of head, a mixture of logistics: its receptive field is local (the 7x7 mask-A convolution and five 3x3
# masked ones reach 8 rows up), so it learns the pixel statistics of Fashion-MNIST (flat backgrounds, edges,
# textures) and cannot learn a whole object; the ratio cancels what both know. Every choice was made by
# scripts/ood_trials.py on validation sets without MNIST (OOD_TRIALS, OOD_PAIRS).
OOD_LR_STEPS = 5 * ZOO["pixelcnnpp"][1]
OOD_STEPS = 2 * OOD_LR_STEPS
BACKGROUND_STEPS = ZOO["pixelcnnpp"][1]
MODEL_NETWORK = "--model pixelcnnpp --preset small"
BACKGROUND_NETWORK = "--model pixelcnn --preset small --likelihood logistic-mixture"


def ood_flags(steps: int, curve: bool = False, quarter_at: int | None = None, network: str = MODEL_NETWORK) -> str:
    """The detector's ``pixelmodels train`` flags for ``steps`` steps of ``network``: the learning rate decaying
    from 2e-3 to a quarter of it at step ``quarter_at`` (default: the last); ``curve``: an evaluation every 1,100
    steps for a learning curve."""
    return (f"{network} --dataset fashion-mnist --batch-size 32 --epochs 100 --eval-every 100 "
            + ("--eval-every-steps 1100 " if curve else "")
            + f"--eval-limit 1000 --lr 2e-3 --lr-decay {lr_decay(quarter_at or steps):.7f} --ema 0.995 --seed 0 "
            "--n-samples 0")


RECIPES["fashion-mnist-unconditional"] = (
    "PixelCNN++ (small preset), unconditional, 8-bit 28x28 Fashion-MNIST; the model of the flagship's "
    f"out-of-distribution detector, trained for {OOD_STEPS:,} steps",
    "fashion-mnist", ood_flags(OOD_STEPS, curve=True, quarter_at=OOD_LR_STEPS), OOD_STEPS)
MU, WEIGHT_DECAY = 0.02, 0.0
# The first trials (scripts/ood_trials.py): 150 steps of both models (PixelCNN++ small), (mu, weight decay) ->
# AUROC of the ratio, upside down and patches shuffled, on 1,000 held-out Fashion-MNIST training images no trial
# draws
OOD_TRIALS = {
    (0.1, 0.0): (0.5868, 0.6622), (0.1, 1e-4): (0.5885, 0.6461), (0.2, 0.0): (0.5784, 0.7140),
    (0.2, 1e-4): (0.5752, 0.7158), (0.3, 0.0): (0.5609, 0.7147), (0.3, 1e-4): (0.5562, 0.7128)}
# The runs at full length (scripts/ood_trials.py --pair): (model steps, background network, background steps, mu,
# weight decay) -> AUROC of the ratio, upside down and patches shuffled, on the last 1,000 Fashion-MNIST test
# images (no run trains on them, the README's table uses the first 5,000). The background networks: "pixelcnnpp"
# is the model's own (PixelCNN++ small), "pixelcnnpp, 1 logistic" with --n-mixtures 1; "pixelcnn" is PixelCNN
# small (its 256-way softmax), "pixelcnn, 2 blocks" with --n-blocks 2, "pixelcnn, logistics" with
# --likelihood logistic-mixture (10 logistics; the shipped network), "pixelcnn, logistics, 8 blocks" with
# --n-blocks 8 too. A penalty of 1e-4 was too weak to matter at 150 steps; at 1,320 steps the stronger ones won
# with PixelCNN++, and the local PixelCNN with the logistic mixture beat every PixelCNN++.
PP, PP1, PC, PC2, PCL, PCL8 = ("pixelcnnpp", "pixelcnnpp, 1 logistic", "pixelcnn", "pixelcnn, 2 blocks",
                               "pixelcnn, logistics", "pixelcnn, logistics, 8 blocks")
OOD_PAIRS = {
    (1320, PP, 1320, 0.2, 0.0): (0.3678, 0.5724), (1320, PP, 6600, 0.2, 0.0): (0.2375, 0.2633),
    (6600, PP, 1320, 0.2, 0.0): (0.5192, 0.8155), (6600, PP, 6600, 0.2, 0.0): (0.4305, 0.7424),
    (6600, PP, 1320, 0.2, 1e-3): (0.5733, 0.9075), (6600, PP, 1320, 0.2, 1e-2): (0.6405, 0.9403),
    (6600, PP, 1320, 0.1, 1e-2): (0.6641, 0.9572), (6600, PP, 1320, 0.1, 1e-1): (0.6865, 0.9733),
    (6600, PP, 1320, 0.1, 1.0): (0.6036, 0.8751),
    (13200, PP, 1320, 0.2, 0.0): (0.5355, 0.8487), (13200, PP, 1320, 0.2, 1e-3): (0.5851, 0.9247),
    (13200, PP, 1320, 0.2, 1e-2): (0.6456, 0.9493), (13200, PP, 1320, 0.1, 1e-2): (0.6690, 0.9644),
    (13200, PP, 1320, 0.1, 1e-1): (0.6891, 0.9759), (13200, PP, 1320, 0.1, 1.0): (0.6068, 0.8833),
    (13200, PP, 1320, 0.1, 0.3): (0.6813, 0.9553), (13200, PP, 1320, 0.05, 0.1): (0.7037, 0.9874),
    (13200, PP, 1320, 0.02, 0.1): (0.7072, 0.9867), (13200, PP1, 1320, 0.05, 0.1): (0.6337, 0.8796),
    (13200, PC, 1320, 0.05, 0.1): (0.5737, 0.8311), (13200, PC2, 1320, 0.05, 0.1): (0.5736, 0.8294),
    (13200, PC, 1320, 0.05, 0.0): (0.7177, 0.9832), (13200, PC2, 1320, 0.05, 0.0): (0.6969, 0.9805),
    (13200, PC, 1320, 0.02, 0.0): (0.7327, 0.9845),
    (13200, PCL, 1320, 0.1, 0.0): (0.7924, 0.9974), (13200, PCL, 1320, 0.05, 0.0): (0.8195, 0.9983),
    (13200, PCL, 1320, 0.02, 0.0): (0.8308, 0.9978), (13200, PCL, 1320, 0.0, 0.0): (0.8178, 0.9959),
    (13200, PCL, 1320, 0.02, 1e-3): (0.8269, 0.9983), (13200, PCL, 1320, 0.05, 1e-2): (0.7247, 0.9930),
    (13200, PCL8, 1320, 0.05, 0.0): (0.8240, 0.9977)}
RECIPES["fashion-mnist-background"] = (
    "PixelCNN (small preset, a mixture of logistics), unconditional, the background model of the flagship's "
    f"out-of-distribution detector (Ren et al. 2019): trained on Fashion-MNIST perturbed at rate {MU}"
    + (f" with L2 penalty {WEIGHT_DECAY}" if WEIGHT_DECAY else ""),
    "fashion-mnist", f"{ood_flags(BACKGROUND_STEPS, network=BACKGROUND_NETWORK)} --perturb {MU} --weight-decay "
    f"{WEIGHT_DECAY}", BACKGROUND_STEPS)
EXTRA = {
    "fashion-mnist-unconditional": {"lr_decay": lr_decay(OOD_LR_STEPS)},
    "fashion-mnist-background": {
        "perturb": MU, "weight_decay": WEIGHT_DECAY, "lr_decay": lr_decay(BACKGROUND_STEPS),
        "chosen_by": "scripts/ood_trials.py, on validation sets without MNIST. First, 150-step trials with "
                     "PixelCNN++ small as the background, mu in (0.1, 0.2, 0.3) x L2 penalty in (0, 1e-4), each "
                     "background paired with a model trained alike, scored on 1,000 held-out Fashion-MNIST training "
                     "images (no trial draws them) against the same images upside down and with their 7x7 patches "
                     "shuffled (Fashion-MNIST's pixel statistics, its objects broken): mu 0.2 won and the penalty "
                     "1e-4 made no difference (\"trials\"). Then runs at full length (scripts/ood_trials.py --pair, "
                     "\"pairs\"), scored on the last 1,000 Fashion-MNIST test images (no run trains on them; the "
                     "README's table takes the first 5,000) against the same two distortions. With PixelCNN++ small "
                     "as the background: one of 6,600 steps did worse than one of 1,320, and at 1,320 steps "
                     "stronger penalties did better up to a point (with the model of 13,200 steps the mean AUROC "
                     "went 0.692 at mu 0.2 without a penalty to 0.833 at mu 0.1 with 0.1, and 0.846 and 0.847 at mu "
                     "0.05 and 0.02 with 0.1; 0.745 with 1.0), one logistic instead of five did worse (0.757). A local "
                     "network did better: PixelCNN small (8 rows of context) with its 256-way softmax 0.859 (mu "
                     "0.02, no penalty), and with a mixture of logistics, the model's kind of head, 0.907 (mu 0), "
                     "0.914 (mu 0.02, chosen), 0.909 (mu 0.05), 0.895 (mu 0.1); a penalty hurt it (0.913 with 1e-3 "
                     "at mu 0.02, 0.859 with 1e-2 at mu 0.05), and 8 blocks instead of 5 made no difference "
                     "(0.911 at mu 0.05). The model of 13,200 steps beat the one of 6,600 with every PixelCNN++ "
                     "background tried",
        "trials": [{"mu": mu, "weight_decay": wd, "auroc_upside_down": a, "auroc_patches_shuffled": b}
                   for (mu, wd), (a, b) in OOD_TRIALS.items()],
        "pairs": [{"model_steps": m, "background_network": net, "background_steps": b, "mu": mu, "weight_decay": wd,
                   "auroc_upside_down": u, "auroc_patches_shuffled": v}
                  for (m, net, b, mu, wd), (u, v) in OOD_PAIRS.items()]}}
# `pixelmodels ood --pretrained NAME` runs NAME's detector: the model to score in its place (one pass an image
# where the class-conditional flagship's marginal costs ten) and the background model of the likelihood ratio.
OOD = {"fashion-mnist": {"model": "fashion-mnist-unconditional", "background": "fashion-mnist-background"},
       "fashion-mnist-unconditional": {"background": "fashion-mnist-background"}}

# The code prior: the VQ-VAE of examples/vqvae_prior.py (part 1: the VQ-VAE and the 7x7 maps of 128 codes of
# both splits, no prior of its own), then a class-conditional prior over those maps trained with the CLI. The
# VQ-VAE is shipped beside the prior (pixelmodels.vqvae), so `pixelmodels generate --pretrained
# fashion-mnist-codes` decodes what it samples.
CODES_RUN = "runs/pretrained-fashion-mnist-codes-vqvae"
BEFORE = {  # name -> the script run before `pixelmodels train`, and the folder holding its VQ-VAE and codes
    "fashion-mnist-codes": (f"examples/vqvae_prior.py --part 1 --prior-steps 0 --vqvae-steps 2000 --seed 0 "
                            f"--out {CODES_RUN}", CODES_RUN),
}
RECIPES["fashion-mnist-codes"] = (
    "Gated PixelCNN (small preset) over the 7x7 maps of 128 codes of a small VQ-VAE shipped beside it "
    "(pixelmodels.vqvae; 28x28 Fashion-MNIST -> 7x7 codes), conditional on the 10 classes; bits/dim are per code",
    "fashion-mnist",
    f"--model gated-pixelcnn --preset small --dataset arrays --data-dir {CODES_RUN}/codes --n-codes 128 "
    f"--conditional --batch-size 64 --epochs 100 --eval-every 100 --lr 2e-3 --lr-decay {lr_decay(3000):.7f} "
    "--ema 0.995 --seed 0 --n-samples 0",
    3000)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--steps", type=int, help="override the recipe's steps (a smoke run; not for shipping)")
    p.add_argument("--run", type=Path, help="run directory (default runs/pretrained-NAME)")
    p.add_argument("--dest", type=Path, help="export folder (default src/pixelmodels/pretrained/NAME)")
    p.add_argument("--export-only", action="store_true", help="do not train: export and measure the run")
    p.add_argument("--grid", type=Path, help="the sample grid's path (default docs/pretrained/NAME.png)")
    args = p.parse_args()
    description, dataset, flags, steps = RECIPES[args.name]
    steps = args.steps or steps
    run = args.run or ROOT / "runs" / f"pretrained-{args.name}"
    dest = args.dest or ROOT / "src" / "pixelmodels" / "pretrained" / args.name
    shown_run = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    processes = PROCESSES.get(args.name, 1)
    torchrun = ["--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    command = f"pixelmodels train {flags} --max-steps {steps} --out {shown_run}"
    if torchrun:
        command = f"OMP_NUM_THREADS=1 torchrun {' '.join(torchrun)} -m {command}"
    script, vqvae_run = BEFORE.get(args.name, (None, None))
    if script is not None:
        command = f"python {script} && {command}"
    cpu_seconds = None
    if not args.export_only:
        before = cpu_of_children()
        if script is not None:
            subprocess.run([sys.executable, *shlex.split(script)], check=True, cwd=ROOT)
        launcher = ["-m", "torch.distributed.run", *torchrun] if torchrun else []
        env = {**os.environ, "OMP_NUM_THREADS": "1"} if torchrun else None
        subprocess.run([sys.executable, *launcher, "-m", "pixelmodels", "train", *shlex.split(flags),
                        "--max-steps", str(steps), "--out", str(run), "--overwrite", "--no-progress"],
                       check=True, cwd=ROOT, env=env)
        cpu_seconds = cpu_of_children() - before
    grid = args.grid or ROOT / "docs" / "pretrained" / f"{args.name}.png"
    vqvae = None if vqvae_run is None else ROOT / vqvae_run
    print(json.dumps(export(args.name, description, dataset, command, run, dest, cpu_seconds, grid, vqvae), indent=2))


def cpu_of_children() -> float:
    """CPU seconds (user + system) used by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def export(name: str, description: str, dataset: str, command: str, run: Path, dest: Path,
           cpu_seconds: float | None, grid: Path, vqvae_run: Path | None = None) -> dict:
    """Export the run's EMA weights to ``dest``, write its metadata.json there and its sample grid (one row
    per class) to ``grid``; the metadata. A code prior (``vqvae_run``: the folder with the VQ-VAE and the
    codes it was trained on) is measured on the test codes, and its VQ-VAE is shipped beside it and
    decodes the grid."""
    import pixelmodels
    from pixelmodels import checkpoint as ckpt
    from pixelmodels.devices import describe_machine
    from pixelmodels.app.samples import sample_grid
    from pixelmodels.imageio import save_grid
    from pixelmodels.vqvae import load_vqvae

    state = torch.load(run / ckpt.STATE, weights_only=True)
    config = json.loads((run / ckpt.CONFIG).read_text())
    model = pixelmodels.load(run)
    raw = pixelmodels.load(run)
    raw.load_state_dict(state["model"])
    if vqvae_run is None:
        test = pixelmodels.load_dataset(dataset, "test", n_bits=model.n_bits)
    else:
        test = pixelmodels.load_dataset("arrays", "test", vqvae_run / "codes", n_codes=model.n_codes)
    labels = torch.arange(16) % model.n_classes if model.n_classes else None
    start = time.perf_counter()
    pixelmodels.sample(model, 16, labels, generator=torch.Generator().manual_seed(0))
    sampling = time.perf_counter() - start
    images, nrow = sample_grid(model, 8 * (model.n_classes or 1), seed=0)
    extra = {}
    if vqvae_run is not None:
        vqvae = load_vqvae(vqvae_run / "vqvae")
        images = vqvae.decode_images(images)
        originals = pixelmodels.load_dataset(dataset, "test").images
        mse = (vqvae.decode(vqvae.encode_images(originals)) - originals.float() / 255).pow(2).mean().item()
        extra = {"vqvae_parameters": sum(p.numel() for p in vqvae.parameters()),
                 "vqvae_test_reconstruction_mse": round(mse, 5)}
    save_grid(images, grid, model.n_bits or 8, nrow)
    pixelmodels.save_pretrained(model, dest)
    if vqvae_run is not None:
        vqvae.save(dest)
    meta = {
        "name": name,
        "description": description,
        "dataset": dataset,
        "train_command": command,
        "steps": state["step"],
        "images_seen": state["step"] * config["train"]["batch_size"],
        "thread_minutes": None if cpu_seconds is None else round(cpu_seconds / 60, 1),
        "parameters": model.n_parameters(),
        "test_bits_per_dim": round(pixelmodels.evaluate(model, test, 500), 4),
        "raw_test_bits_per_dim": round(pixelmodels.evaluate(raw, test, 500), 4),
        "test_images": len(test),
        "first_200_test_bits_per_dim": round(pixelmodels.evaluate(model, test, 200, limit=200), 4),
        "sampling_seconds_16": round(sampling, 2),
        **extra,
        **({"ood": OOD[name]} if name in OOD else {}),
        **EXTRA.get(name, {}),
        "machine": describe_machine("cpu"),
    }
    ckpt.write_json(dest / "metadata.json", meta)
    evaluations = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "test_bpd" in line]
    if len(evaluations) > 2:  # a learning curve: the evaluations during training, then the whole test set
        points = [(r["step"], r["test_bpd"]) for r in evaluations[:-1]] + [(meta["steps"], meta["test_bits_per_dim"])]
        draw_curve(points, grid.with_name(f"{name}-curve.png"), f"{name}: test bits/dim against steps",
                   GOAL if name == "fashion-mnist" else None)
    return meta


if __name__ == "__main__":
    main()
