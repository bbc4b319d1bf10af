"""examples/ood.py end to end at a tiny configuration: its AUROCs against counting every pair, its scores
against the saved models (the example itself trains for minutes; here a few steps on tiny IDX files)."""

import itertools
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelmodels

from formats import write_mnist

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "ood.py"


def brute_force_auroc(a, b) -> Fraction:
    """Count every (in, out) pair: 1 when in > out, 1/2 when equal."""
    wins = sum(Fraction(1) if x > y else Fraction(1, 2) if x == y else Fraction(0)
               for x, y in itertools.product(a, b))
    return wins / (len(a) * len(b))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    fashion, mnist, out = root / "fashion", root / "mnist", root / "out"
    write_mnist(fashion, "train", n=32, seed=1)
    write_mnist(fashion, "test", n=12, seed=2)
    write_mnist(mnist, "test", n=10, seed=3)
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_NO_DOWNLOAD="1")
    done = subprocess.run([sys.executable, str(SCRIPT), "--preset", "tiny", "--steps", "3", "--batch-size", "8",
                           "--n-eval", "10", "--sequential", "--data-dir", str(fashion), "--ood-data", str(mnist),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, done.stdout, json.loads((out / "results.json").read_text()), dict(np.load(out / "scores.npz"))


def test_the_tables_name_every_set_and_score(run):
    _, stdout, results, _ = run
    assert results["sets"]["mnist"] == f"MNIST test, {Path(results['runs']['model']).parents[1] / 'mnist'}"
    for title in results["sets"].values():
        assert f"| {title} |" in stdout
    assert set(results["auroc"]) == {"mnist", "noise", "inverted"}
    for scores in results["auroc"].values():
        assert set(scores) == {"likelihood", "ratio background_mu_0.2"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_auroc_equals_the_pair_count(run):
    _, _, results, scores = run
    in_model, in_background = scores["bpd_in_model"], scores["bpd_in_background_mu_0.2"]
    for s, printed in results["auroc"].items():
        model, background = scores[f"bpd_{s}_model"], scores[f"bpd_{s}_background_mu_0.2"]
        assert printed["likelihood"] == pytest.approx(float(brute_force_auroc(-in_model, -model)), abs=1e-12)
        ratio = brute_force_auroc(in_background - in_model, background - model)
        assert printed["ratio background_mu_0.2"] == pytest.approx(float(ratio), abs=1e-12)


def test_scores_are_the_saved_models_bits_per_dim(run):
    _, _, results, scores = run
    assert len(scores["images_in"]) == 10 and len(scores["images_mnist"]) == 10  # --n-eval, all 10 digits
    assert np.array_equal(scores["images_inverted"], 255 - scores["images_in"])
    for name, folder in results["runs"].items():
        model = pixelmodels.load(folder)
        for s in results["sets"]:
            with torch.no_grad():
                expected = model.bits_per_dim(torch.from_numpy(scores[f"images_{s}"])).double()
            assert np.allclose(scores[f"bpd_{s}_{name}"], expected.numpy(), rtol=0, atol=1e-5), (name, s)
            assert results["mean_bpd"][s][name] == pytest.approx(float(expected.mean()), abs=1e-5)
