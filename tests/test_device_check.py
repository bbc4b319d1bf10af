"""benchmarks/device_check.py runs on the CPU (--quick), so the GPU check cannot rot."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixelmodels import list_models

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def load_script():
    if "device_check" not in sys.modules:  # its dataclasses look their module up there
        spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["device_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["device_check"]


def rows(stdout: str) -> list[list[str]]:
    """The table's rows (header and rule left out) as lists of cells."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ") and set(line) - set("|- ")]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines[1:]]


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_quick_cpu_run_passes_and_reports_every_family(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PIXELMODELS_NO_DOWNLOAD="1")
    env.pop("PIXELMODELS_FAULTS", None)
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path / "dc")],
                          env=env, capture_output=True, text=True, timeout=600)
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
    assert (tmp_path / "dc" / "table.md").is_file()


def test_a_check_that_raises_is_a_failed_row_and_exit_code_1(capsys):
    script = load_script()
    assert script.main(["--device", "cpu", "--quick", "--inject-failure", "--only", "sample",
                        "--families", "pixelcnn"]) == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table[0][:1] == ["inject"]
    assert table[0][4].startswith("FAILED: RuntimeError: injected failure (--inject-failure)")
    assert re.match(r"^\d+ passed, 1 failed", out.strip().splitlines()[-1])


def test_the_runner_isolates_checks_and_counts_them():
    import torch

    script = load_script()
    runner = script.Runner(torch.device("cpu"))

    def broken():
        raise ValueError("bad\nvalue | here")

    def skipped():
        raise script.Skipped("not here")

    runner.run(broken, "broken")
    runner.run(lambda: dict(images_per_s=2.0, notes="ok"), "fine")
    runner.run(skipped, "skip")
    status = [r.status for r in runner.rows]
    assert status[0].startswith("FAILED: ValueError: bad value / here (at test_device_check.py:")
    assert status[1:] == ["passed", "skipped: not here"]
    assert runner.counts() == (1, 1, 1)
    assert "| fine | - | - | - | passed | 2 |" in script.table(runner.rows)
