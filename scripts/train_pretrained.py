"""Train, export and measure a model shipped with pixelmodels (``scripts/train_pretrained.sh NAME``).

Each entry of ``RECIPES`` is the exact ``pixelmodels train`` command of a shipped model, with a fixed number
of steps (``--max-steps``), so its weights do not depend on the machine's speed. The script trains into
``runs/pretrained-NAME`` (in one go, or resumed from there with ``--resume-run``), exports the EMA weights to
``src/pixelmodels/pretrained/NAME/`` and writes ``metadata.json`` beside them: the command, steps, images
seen, CPU thread-minutes (training wall time x torch threads), parameters, test bits/dim of the EMA and of
the raw weights on the whole test split, the first 200 test images' bits/dim (``tests/test_pretrained.py``
checks it to 1e-4), the cached sampling time of 16 images and the machine. The README's table and
``pixelmodels pretrained`` read that file.

    OMP_NUM_THREADS=1 scripts/train_pretrained.sh fashion-mnist
    scripts/train_pretrained.sh fashion-mnist --export-only      # measure and export runs/pretrained-NAME as it is
    scripts/train_pretrained.sh fashion-mnist --steps 20 --dest /tmp/x --run /tmp/r   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# name -> (description, dataset, the ``pixelmodels train`` flags without --max-steps and --out, steps)
RECIPES = {
    "fashion-mnist": (
        "Gated PixelCNN (small preset), conditional on the 10 Fashion-MNIST classes, 8-bit 28x28 grayscale",
        "fashion-mnist",
        "--model gated-pixelcnn --preset small --dataset fashion-mnist --conditional --batch-size 32 --epochs 2 "
        "--eval-every 2 --lr 2e-3 --lr-decay 0.9995 --ema 0.995 --seed 0 --n-samples 0",
        3000),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--steps", type=int, help="override the recipe's steps (a smoke run; not for shipping)")
    p.add_argument("--run", type=Path, help="run directory (default runs/pretrained-NAME)")
    p.add_argument("--dest", type=Path, help="export folder (default src/pixelmodels/pretrained/NAME)")
    p.add_argument("--export-only", action="store_true", help="do not train: export and measure the run")
    args = p.parse_args()
    description, dataset, flags, steps = RECIPES[args.name]
    steps = args.steps or steps
    run = args.run or ROOT / "runs" / f"pretrained-{args.name}"
    dest = args.dest or ROOT / "src" / "pixelmodels" / "pretrained" / args.name
    shown_run = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    command = f"pixelmodels train {flags} --max-steps {steps} --out {shown_run}"
    threads = torch.get_num_threads()
    seconds = None
    if not args.export_only:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pixelmodels", "train", *shlex.split(flags), "--max-steps", str(steps),
                        "--out", str(run), "--overwrite", "--no-progress"], check=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    print(json.dumps(export(args.name, description, dataset, command, run, dest, seconds, threads), indent=2))


def export(name: str, description: str, dataset: str, command: str, run: Path, dest: Path,
           seconds: float | None, threads: int) -> dict:
    """Export the run's EMA weights to ``dest`` and write its metadata.json there; the metadata."""
    import pixelmodels
    from pixelmodels import checkpoint as ckpt
    from pixelmodels.evaluation import describe_machine

    state = torch.load(run / ckpt.STATE, weights_only=True)
    config = json.loads((run / ckpt.CONFIG).read_text())
    model = pixelmodels.load(run)
    raw = pixelmodels.load(run)
    raw.load_state_dict(state["model"])
    test = pixelmodels.load_dataset(dataset, "test", n_bits=model.n_bits)
    labels = torch.arange(16) % model.n_classes if model.n_classes else None
    start = time.perf_counter()
    pixelmodels.sample(model, 16, labels, generator=torch.Generator().manual_seed(0))
    sampling = time.perf_counter() - start
    pixelmodels.save_pretrained(model, dest)
    meta = {
        "name": name,
        "description": description,
        "dataset": dataset,
        "train_command": command,
        "steps": state["step"],
        "images_seen": state["step"] * config["train"]["batch_size"],
        "thread_minutes": None if seconds is None else round(seconds * threads / 60, 1),
        "parameters": model.n_parameters(),
        "test_bits_per_dim": round(pixelmodels.evaluate(model, test, 500), 4),
        "raw_test_bits_per_dim": round(pixelmodels.evaluate(raw, test, 500), 4),
        "test_images": len(test),
        "first_200_test_bits_per_dim": round(pixelmodels.evaluate(model, test, 200, limit=200), 4),
        "sampling_seconds_16": round(sampling, 2),
        "machine": describe_machine("cpu"),
    }
    ckpt.write_json(dest / "metadata.json", meta)
    return meta


if __name__ == "__main__":
    main()
