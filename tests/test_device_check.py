"""benchmarks/device_check.py runs on the CPU (quick), so the GPU check cannot rot; and it can fail."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixelmodels import list_models

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "device_check.py"


def run_checks(*args: str, target: str = str(CHECK), **env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_NO_DOWNLOAD="1", PIXELMODELS_CHECK_DEVICE="cpu",
               PIXELMODELS_CHECK_QUICK="1", COLUMNS="300", **env)  # wide: pytest's verbose lines keep skip reasons
    return subprocess.run([sys.executable, "-m", "pytest", target, "-v", "-s", "-p", "no:cacheprovider", *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def outcomes(stdout: str) -> dict[str, str]:
    """Test id -> PASSED, FAILED or 'SKIPPED (reason)', from pytest's verbose lines."""
    found = re.findall(r"device_check\.py::(\S+) (PASSED|FAILED|SKIPPED \([^)]*\))", stdout)
    return dict(found)


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_quick_cpu_run_passes_and_reports_every_family(tmp_path):
    done = run_checks(PIXELMODELS_CHECK_OUT=str(tmp_path / "dc"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    seen = outcomes(done.stdout)
    for family in list_models():
        assert seen[f"test_train[{family}-fp32]"] == seen[f"test_train[{family}-bf16]"] == "PASSED", family
        assert seen[f"test_train[{family}-fp16]"] == "SKIPPED (fp16 needs CUDA)"
        assert seen[f"test_sample[{family}]"] == "PASSED"
        assert seen[f"test_compiled_train[fp32-{family}]"].startswith("SKIPPED (quick: no compiled rows")
    assert (seen["test_torchrun"], seen["test_ddp[gloo]"], seen["test_ddp[nccl]"]) == (
        "PASSED", "PASSED", "SKIPPED (nccl needs CUDA)")
    table = (tmp_path / "dc" / "table.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert {tuple(r[:3]) for r in rows} >= {("train", f, p) for f in list_models() for p in ("fp32", "bf16")}
    sampled = [r for r in rows if r[0] == "sample"]
    assert len(sampled) == len(list_models()) and all("the fp32-trained EMA model" in r[-1] for r in sampled)
    assert [r[0] for r in rows if "ddp" in r[0] or "torchrun" in r[0]] == ["torchrun nproc=1", "ddp gloo"]
    assert all(float(r[3].replace(",", "")) > 0 for r in rows if r[0] in ("train", "sample", "ddp gloo"))
    assert table.strip().splitlines()[-1] in done.stdout  # the table is printed too


def test_a_cached_sampler_that_differs_from_the_reference_fails_the_check(tmp_path):
    """A plugin breaks the cached path (one sub-pixel off); the sample check must fail and say where."""
    (tmp_path / "broken_cache.py").write_text(
        "import pixelmodels\n"
        "sample = pixelmodels.sample\n"
        "def broken(*args, cached=True, **kwargs):\n"
        "    images = sample(*args, cached=cached, **kwargs)\n"
        "    if cached:\n"
        "        images[0, 0, 0, 0] ^= 1\n"
        "    return images\n"
        "pixelmodels.sample = broken\n")
    done = run_checks("-p", "broken_cache", target=f"{CHECK}::test_sample[pixelcnn]",
                      PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    assert outcomes(done.stdout) == {"test_sample[pixelcnn]": "FAILED"}
    assert "cached != reference: 1 of 256 sub-pixels differ" in done.stdout  # 4 images of 1x8x8
