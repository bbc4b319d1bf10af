"""``keep_freed_memory``: freed blocks are reused instead of mapped afresh, and the user's malloc tuning wins."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pixelmodels.training

SRC = str(Path(pixelmodels.training.__file__).resolve().parents[1])

# Allocate and free four tensors of 8-48 MiB 20 times (the sizes of large activations: over the mmap
# threshold that glibc adapts up to by default, 32 MiB, and together over its trim threshold); the minor page
# faults of the last 19 rounds (the first maps the memory either way), as JSON with whether it was applied.
CHILD = r"""
import json, resource, sys, torch
from pixelmodels.evaluation import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def step():
    xs = [torch.ones(n * 2**18) for n in (48, 8, 24, 16)]  # MiB
    del xs
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    step()
print(json.dumps(dict(applied=applied, faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)))
"""

glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/maps"),
                                 reason="glibc's mallopt on Linux")


def child(mode: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                          env={**clean, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env})
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_linux
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    system, kept = child("system"), child("keep")
    assert kept["applied"] and not system["applied"]
    assert system["faults"] > 19 * 12288 * 0.9  # each round faults in 48 MiB (4 KiB pages) again at least
    assert kept["faults"] < system["faults"] / 20


@glibc_linux
def test_a_users_own_malloc_tuning_is_left_alone():
    tuned = child("keep", MALLOC_MMAP_THRESHOLD_="131072")
    assert not tuned["applied"] and tuned["faults"] > 19 * 12288 * 0.9
    assert not child("keep", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")["applied"]


def test_a_cpu_trainer_keeps_freed_memory(tmp_path, monkeypatch):
    from test_training import tiny_trainer

    calls = []
    monkeypatch.setattr(pixelmodels.training, "keep_freed_memory", lambda: calls.append(1) or True)
    tiny_trainer(tmp_path / "run")
    assert calls == [1]
