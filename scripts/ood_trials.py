"""The trials that chose the perturbation rate mu, the L2 penalty, the steps and the background network of
the shipped detector.

First, short trials of the detector's first recipe (``scripts/train_pretrained.py``: PixelCNN++ small,
unconditional, seed 0, for both models), a few minutes each: one model on Fashion-MNIST as it is, and one
background model for each (mu, penalty) of the grid, on inputs perturbed at rate mu (``--perturb``) under the
penalty (``--weight-decay``). Then each pair's likelihood ratio is measured as a detector on a validation set
without MNIST and without any set the README reports:

- in-distribution: 1,000 Fashion-MNIST *training* images that no trial draws (the seed-0 order of the first
  epoch puts them after every image a trial trains on; the shipped pair, trained for 7 epochs, sees them);
- out-of-distribution: the same images upside down, and the same images with their sixteen 7x7 patches
  shuffled: the pixel statistics of Fashion-MNIST with its objects broken, which is what a background model
  is meant to tell apart from semantics.

    OMP_NUM_THREADS=1 scripts/ood_trials.py --out runs/ood-trials        # trains, scores, prints the table

Then runs at full length, scored on other images: ``--pair MODEL BACKGROUND`` (repeated) scores run pairs on
the last 1,000 Fashion-MNIST *test* images (no run trains on test images, and the README's table takes the
first 5,000) against the same images upside down and with their patches shuffled. Those pairs chose the
shipped steps, background network, mu and penalty (``OOD_PAIRS`` in ``scripts/train_pretrained.py``).
``--background MU PENALTY`` (repeated) trains a background of the shipped recipe, network and steps with
another mu and penalty into ``--out``; ``--flags`` adds train flags to it (another network: the last
``--model`` given wins):

    OMP_NUM_THREADS=1 scripts/ood_trials.py --background 0.02 0 --background 0.05 0.01
    OMP_NUM_THREADS=1 scripts/ood_trials.py --background 0.1 0.1 --flags "--model pixelcnnpp --preset small"
    scripts/ood_trials.py --pair runs/pretrained-fashion-mnist-unconditional runs/ood-trials/background-1320-mu0.02-wd0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from train_pretrained import (  # noqa: E402  (beside this file)
    BACKGROUND_NETWORK, BACKGROUND_STEPS, MODEL_NETWORK, ood_flags)

STEPS = 150  # about 4 CPU thread-minutes of PixelCNN++ small at batch 32
GRID = [(mu, wd) for mu in (0.1, 0.2, 0.3) for wd in (0.0, 1e-4)]
N_VALIDATION = 1000


def validation_sets(seed: int = 0) -> dict[str, torch.Tensor]:
    """The in-distribution validation images and the two out-of-distribution sets made from them."""
    import pixelmodels

    train = pixelmodels.load_dataset("fashion-mnist", "train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 100_003))  # epoch 0's
    assert len(train) - N_VALIDATION >= STEPS * 32  # none of them is drawn by a trial
    return distorted(train.images[order[-N_VALIDATION:]])


def distorted(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``images`` as the in-distribution set, and the two out-of-distribution sets made from them."""
    gen = torch.Generator().manual_seed(1)
    patches = images.unfold(2, 7, 7).unfold(3, 7, 7).reshape(len(images), 1, 16, 7, 7)
    shuffled = torch.stack([p[:, torch.randperm(16, generator=gen)] for p in patches])
    shuffled = shuffled.reshape(len(images), 1, 4, 4, 7, 7).permute(0, 1, 2, 4, 3, 5).reshape(images.shape)
    return {"in": images, "upside down": images.flip(2), "patches shuffled": shuffled}


def held_out_test_sets() -> dict[str, torch.Tensor]:
    """The validation sets of ``--pair``: the last 1,000 Fashion-MNIST test images (no run trains on test images;
    the README's table takes the first 5,000), upside down and with their 7x7 patches shuffled."""
    import pixelmodels

    return distorted(pixelmodels.load_dataset("fashion-mnist", "test").images[-N_VALIDATION:])


def auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([1] * len(inside) + [0] * len(outside), torch.cat([inside, outside]).numpy()))


def train(out: Path, extra: str, steps: int = STEPS, network: str = MODEL_NETWORK) -> None:
    if (out / "model.safetensors").exists():
        return
    flags = ood_flags(steps, network=network).split() + extra.split()
    subprocess.run([sys.executable, "-m", "pixelmodels", "train", *flags,
                    "--max-steps", str(steps), "--out", str(out), "--overwrite", "--no-progress"], check=True, cwd=ROOT)


def main() -> None:
    import pixelmodels

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ood-trials")
    p.add_argument("--pair", nargs=2, action="append", type=Path, metavar=("MODEL", "BACKGROUND"),
                   help="instead of the trials: the ratio of these two runs on the test-image validation sets "
                        "(repeat for several pairs)")
    p.add_argument("--background", nargs=2, action="append", type=float, metavar=("MU", "PENALTY"),
                   help=f"instead of the trials: train a background of the shipped recipe ({BACKGROUND_STEPS:,} "
                        f"steps of {BACKGROUND_NETWORK}) perturbed at rate MU under the L2 penalty PENALTY into "
                        "OUT/background-STEPS-muMU-wdPENALTY (repeat for several)")
    p.add_argument("--flags", default="", metavar="FLAGS",
                   help="more train flags for every --background, after the recipe's (e.g. '--model pixelcnnpp "
                        "--preset small'); they name its run too: "
                        "OUT/background-STEPS-muMU-wdPENALTY--modelpixelcnnpp--presetsmall")
    args = p.parse_args()
    if args.pair or args.background:
        for mu, wd in args.background or []:
            train(args.out / (f"background-{BACKGROUND_STEPS}-mu{mu:g}-wd{wd:g}" + args.flags.replace(" ", "")),
                  f"--perturb {mu} --weight-decay {wd} {args.flags}", BACKGROUND_STEPS, network=BACKGROUND_NETWORK)
        return compare_pairs(args.pair) if args.pair else None
    train(args.out / "model", "")
    for mu, wd in GRID:
        train(args.out / f"background-mu{mu}-wd{wd}", f"--perturb {mu} --weight-decay {wd}")
    sets = validation_sets()
    model = pixelmodels.load(args.out / "model")
    fg = {name: pixelmodels.score(model, x, batch_size=100).bits_per_dim for name, x in sets.items()}
    rows = []
    for mu, wd in GRID:
        background = pixelmodels.load(args.out / f"background-mu{mu}-wd{wd}")
        bg = {name: pixelmodels.score(background, x, batch_size=100).bits_per_dim for name, x in sets.items()}
        ratio = {name: bg[name] - fg[name] for name in sets}  # log p - log p_background, bits/dim
        aurocs = {name: auroc(ratio["in"], ratio[name]) for name in sets if name != "in"}
        rows.append({"mu": mu, "weight_decay": wd, **aurocs, "mean": sum(aurocs.values()) / len(aurocs)})
    likelihood = {name: auroc(-fg["in"], -fg[name]) for name in sets if name != "in"}
    print(f"likelihood alone: {json.dumps({k: round(v, 4) for k, v in likelihood.items()})}")
    print("| mu | weight decay | " + " | ".join(k for k in rows[0] if k not in ("mu", "weight_decay")) + " |")
    for r in rows:
        print(f"| {r['mu']} | {r['weight_decay']:g} | " + " | ".join(
            f"{v:.4f}" for k, v in r.items() if k not in ("mu", "weight_decay")) + " |")
    best = max(rows, key=lambda r: r["mean"])
    print(f"chosen: mu {best['mu']}, weight decay {best['weight_decay']:g}")
    (args.out / "trials.json").write_text(json.dumps({"likelihood": likelihood, "rows": rows, "chosen": best},
                                                     indent=2))


def compare_pairs(pairs: list[tuple[Path, Path]]) -> None:
    """The AUROC of the ratio of each (model, background) run pair on :func:`held_out_test_sets`, as a table."""
    import pixelmodels

    sets = held_out_test_sets()
    bpd = {}
    for run in dict.fromkeys(r for pair in pairs for r in pair):
        model = pixelmodels.load(run)
        bpd[run] = {name: pixelmodels.score(model, x, batch_size=100).bits_per_dim for name, x in sets.items()}
    print("| model | background | " + " | ".join(name for name in sets if name != "in") + " | mean |")
    print(("| --- | --- | " + "--- | " * len(sets)).rstrip())
    for model, background in pairs:
        ratio = {name: bpd[background][name] - bpd[model][name] for name in sets}
        aurocs = [auroc(ratio["in"], ratio[name]) for name in sets if name != "in"]
        print(f"| {model} | {background} | " + " | ".join(f"{a:.4f}" for a in aurocs)
              + f" | {sum(aurocs) / len(aurocs):.4f} |")


if __name__ == "__main__":
    main()
