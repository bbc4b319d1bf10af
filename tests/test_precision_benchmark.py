"""benchmarks/precision.py, the bf16-against-fp32 comparison, in a smoke run: both runs train and are measured."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pixelmodels
from pixelmodels.data import load_dataset
from pixelmodels.evaluation import evaluate

from formats import write_mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 20 s: three processes start torch
def test_the_precision_benchmark_trains_both_and_prints_the_table(tmp_path):
    data, out = tmp_path / "fmnist", tmp_path / "runs"
    write_mnist(data, "train", n=16, seed=1)
    write_mnist(data, "test", n=24, seed=2)
    smoke = ["--steps", "2", "--eval-limit", "16", "--out", str(out),
             "--train-flags", f"--preset tiny --batch-size 8 --data-dir {data}"]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "precision.py"), *smoke],
                          env=dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for precision in ("fp32", "bf16"):  # the zoo recipe (conditional, seed 0) with the smoke run's changes
        config = json.loads((out / precision / "config.json").read_text())
        assert config["train"]["precision"] == precision and config["model"]["preset"] == "tiny"
        assert (config["train"]["max_steps"], config["train"]["seed"], config["model"]["n_classes"]) == (2, 0, 10)
    rows = re.findall(r"^\| (fp32|bf16) \| 2 \| [\d.]+ \| [\d.]+ \| - \| (\d\.\d{4}) \| (-|[+-]\d+\.\d\d%) \|$",
                      done.stdout, re.M)
    assert [(precision, relative) for precision, _, relative in rows] == [("fp32", "-"), ("bf16", rows[1][2])]
    fp32, bf16 = (float(bpd) for _, bpd, _ in rows)
    assert rows[1][2] == f"{100 * (bf16 - fp32) / fp32:+.2f}%"
    test_set = load_dataset("fashion-mnist", "test", root=data)
    for precision, bpd in (("fp32", fp32), ("bf16", bf16)):  # each run's EMA weights, 16 test images, in fp32
        assert evaluate(pixelmodels.load(out / precision), test_set, limit=16) == pytest.approx(bpd, abs=5e-5)
    assert "fashion-mnist-pixelcnnpp recipe, 2 steps" in done.stdout and "torch" in done.stdout
