"""examples/vqvae2_prior.py end to end in its --quick mode, on tiny Fashion-MNIST IDX files: the printed
bits/dim and sampling times, the two PNG grids and the code maps it writes as arrays datasets."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import pixelmodels

from formats import write_mnist

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "vqvae2_prior.py"
NUMBER = r"([0-9.]+)"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqvae2")
    data, out = root / "fashion", root / "out"
    write_mnist(data, "train", n=96, seed=1)
    write_mnist(data, "test", n=24, seed=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_NO_DOWNLOAD="1")
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data-dir", str(data), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, done.stdout


@pytest.mark.parametrize("level, side, n_codes", [("top", 7, 64), ("bottom", 14, 128)])
def test_each_prior_prints_its_test_bits_per_dim_beside_the_uniform_prior(run, level, side, n_codes):
    _, stdout = run
    found = re.search(rf"^{level} prior \(gated-pixelcnn tiny, [0-9,]+ parameters\): test bits/dim {NUMBER} "
                      rf"over 24 test maps \(uniform prior: log2\({n_codes}\) = {NUMBER}\)$", stdout, re.M)
    assert found, stdout
    bpd, uniform = map(float, found.groups())
    assert uniform == pytest.approx(math.log2(n_codes), abs=1e-4)
    assert 0 < bpd < 2 * uniform  # a few steps on random images: near the uniform prior, not far above


@pytest.mark.parametrize("level, side", [("top", 7), ("bottom", 14)])
def test_cached_and_full_sampling_times_and_their_ratio(run, level, side):
    _, stdout = run
    found = re.search(rf"^sampling 16 {level} maps \({side}x{side}\): cached {NUMBER} s, full pass per position "
                      rf"\(cached=False\) {NUMBER} s, extrapolated from 40 of {side * side} positions: "
                      rf"cached {NUMBER}x faster$", stdout, re.M)
    assert found, stdout
    cached, full, ratio = map(float, found.groups())
    assert cached > 0 and full > 0
    assert ratio == pytest.approx(full / cached, rel=0.2, abs=0.2)  # the times are printed rounded


def test_the_grids_are_written_at_their_enlarged_size(run):
    out, stdout = run
    # 10 x 10 samples (one row per class) and 4 rows of 10, 28x28 pixels with a 2-pixel border, enlarged twice
    for name, rows in (("samples.png", 10), ("reconstructions.png", 4)):
        assert f"wrote {out / name} " in stdout
        assert (out / name).stat().st_size > 0
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == (2 * (10 * 30 + 2), 2 * (rows * 30 + 2))
    assert re.search(r"^wall time \d+ s$", stdout, re.M)


def test_the_code_maps_load_as_arrays_datasets(run):
    out, _ = run
    top = pixelmodels.load_dataset("arrays", "test", root=out / "codes" / "top")
    bottom = pixelmodels.load_dataset("arrays", "train", root=out / "codes" / "bottom")
    assert top.images.shape == (24, 1, 7, 7) and top.n_codes == 64 and top.n_classes == 10 and top.cond is None
    assert bottom.images.shape == (96, 1, 14, 14) and bottom.n_codes == 128
    assert bottom.cond_codes == 64 and bottom.cond_shape == (7, 7) and tuple(bottom.cond.shape) == (96, 7, 7)
    assert int(top.images.max()) < 64 and int(bottom.images.max()) < 128 and int(bottom.cond.max()) < 64
