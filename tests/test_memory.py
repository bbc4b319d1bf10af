"""The library changes no process-wide state: after training with the Trainer, glibc's allocator is as it was
(a block over its mmap threshold is still mapped apart and unmapped on free)."""

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pixelmodels

SRC = str(Path(pixelmodels.__file__).resolve().parents[1])

# A 48 MiB tensor (over the mmap threshold glibc adapts up to by default, 32 MiB) allocated and freed; where its
# memory came from and where it went, from glibc's mallinfo2 (MiB): mapped apart (hblkhd) or from the heap, and
# the heap's free bytes after the free (fordblks), as JSON. Mode "trainer" first trains a tiny model with the
# library's Trainer, to see the allocator it leaves behind.
CHILD = r"""
import ctypes, json, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "trainer":
    import pixelmodels
    from pixelmodels.config import DataConfig, RunConfig, TrainConfig
    from pixelmodels.data import ImageDataset
    from pixelmodels.app.runs import resolve_train_config
    from pixelmodels.training import Trainer
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 8, 8), n_bits=2, preset="tiny")
    data = ImageDataset(torch.randint(0, 4, (16, 1, 8, 8), dtype=torch.uint8), torch.full((16,), -1), n_bits=2)
    train = resolve_train_config(TrainConfig(batch_size=8, max_steps=2, n_samples=0, device="cpu"), model.config.name)
    Trainer(RunConfig(model.config, DataConfig(), train), model, data, data, sys.argv[2]).fit()
before = libc.mallinfo2()
x = torch.ones(48 * 2**18)
live = libc.mallinfo2()
del x
freed = libc.mallinfo2()
print(json.dumps(dict(mapped_apart=(live.hblkhd - before.hblkhd) / 2**20,
                      unmapped=(live.hblkhd - freed.hblkhd) / 2**20, free_in_heap=freed.fordblks / 2**20)))
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")  # glibc 2.33 and later
    except OSError:
        return False


glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(),
                                 reason="glibc (2.33 or later, for mallinfo2) on Linux")


def child(mode: str, *args, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, *args], capture_output=True, text=True, check=True,
                          env={**clean, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **env})
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_linux
def test_the_library_trainer_leaves_the_allocator_as_it_found_it(tmp_path):
    after = child("trainer", str(tmp_path / "run"))
    assert (tmp_path / "run" / "model.safetensors").is_file()  # it trained
    assert after["mapped_apart"] >= 48 and after["unmapped"] >= 48  # glibc's default, untouched
