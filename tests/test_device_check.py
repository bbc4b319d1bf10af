"""benchmarks/device_check.py runs on the CPU (--quick), so the GPU check cannot rot."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixelmodels import list_models

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_NO_DOWNLOAD="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def rows(stdout: str) -> list[list[str]]:
    """The table's rows (header and rule left out) as lists of cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ") and set(line) - set("|- ")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[1:]]


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_quick_cpu_run_passes_and_reports_every_family(tmp_path):
    done = run_script("--out", str(tmp_path / "dc"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.match(r"^\d+ passed, 0 failed", last), last
    table = rows(done.stdout)
    assert not [r for r in table if r[4].startswith("FAILED")]
    for family in list_models():
        mine = [r for r in table if r[1] == family]
        assert {(r[0], r[2]) for r in mine if r[4] == "passed"} >= {("train", "fp32"), ("train", "bf16"),
                                                                    ("sample", "fp32")}, (family, mine)
        assert [r[4] for r in mine if r[0] == "train" and r[2] == "fp16"] == ["skipped: needs CUDA"]
    assert [r[4] for r in table if r[0] == "ddp nccl"] == ["skipped: needs CUDA"]
    assert [r[4] for r in table if r[0] == "ddp gloo"] == ["passed"]
    assert [r[4] for r in table if r[0].startswith("torchrun")] == ["passed"]
    assert [r[4] for r in table if r[3] == "yes"] == ["skipped: --quick (add --compile-quick)"]
    assert (tmp_path / "dc" / "table.md").read_text().strip().endswith(last)


def test_a_check_that_raises_is_a_failed_row_and_exit_code_1():
    done = run_script("--inject-failure", "--only", "sample", "--families", "pixelcnn")
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    table = rows(done.stdout)
    assert [r[0] for r in table] == ["inject", "sample"]
    assert table[0][4].startswith("FAILED: RuntimeError: injected failure (--inject-failure) (at device_check.py:")
    assert table[1][4] == "passed"  # the next check still runs
    assert "RuntimeError: injected failure" in done.stderr  # the traceback
    assert re.match(r"^1 passed, 1 failed, 0 skipped", done.stdout.strip().splitlines()[-1])
