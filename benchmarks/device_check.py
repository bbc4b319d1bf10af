"""The library on a device, as pytest tests: training in every precision (eager and compiled), evaluation,
cached sampling, ``torchrun`` and DistributedDataParallel on the device's backend. Speed is for
``benchmarks/train.py`` and ``benchmarks/sampling.py`` (``--device cuda``); here each passing check prints a
row of a table (images/s, peak memory, notes), which ``-s`` shows and ``PIXELMODELS_CHECK_OUT`` keeps.

    pytest benchmarks/device_check.py -v -rs -s                       # on a GPU (CUDA when available)
    PIXELMODELS_CHECK_OUT=$OUT/device_check pytest benchmarks/device_check.py -v -rs -s   # keep runs, table.md
    pytest benchmarks/device_check.py -k compiled -s                  # the compiled rows alone
    PIXELMODELS_CHECK_DEVICE=cpu PIXELMODELS_CHECK_QUICK=1 pytest benchmarks/device_check.py   # the CPU, tiny
                                                                      # (tests/test_device_check.py runs it)

The environment sets it up: ``PIXELMODELS_CHECK_DEVICE`` (cpu, cuda, cuda:N; default cuda where available),
``PIXELMODELS_CHECK_QUICK=1`` (tiny presets on 1x8x8 images, batch 4, 3 steps, 4 samples; no compiled rows
unless ``PIXELMODELS_CHECK_COMPILE=1``), ``PIXELMODELS_CHECK_BUDGET`` (seconds after which the remaining checks
are skipped; default 200 on CUDA without quick, else none), ``PIXELMODELS_CHECK_OUT`` (a folder for the run
directories and ``table.md``; default pytest's temporary folders). The checks:

* ``test_train``: every family of ``pixelmodels.list_models()`` at preset ``small`` (``tiny`` quick) on random
  Fashion-MNIST-shaped data (1x28x28, 8 bits) kept on the device, trained by ``Trainer.fit`` for 20 steps
  (3 quick) in fp32, bf16 and fp16 (GradScaler; CUDA only). The last loss is finite, an optimizer step was
  taken, the weights changed, the final test bits/dim (EMA weights, the run's precision) is finite and the
  checkpoint is written. images/s: the steps after the first.
* ``test_sample``: the fp32-trained EMA model of each family (a fresh one if its check did not run) with a
  ``torch.Generator`` on the device: ``sample(cached=True)`` twice gives the same images, and they equal
  ``sample(cached=False)`` (``torch.equal``; TF32 off during the check).
* ``test_torchrun``: ``torchrun --standalone --nproc_per_node=1 -m pixelmodels train ... --device cuda|cpu``
  on an ``arrays`` dataset written to disk: exit code 0, ``model.safetensors``, a finite test bits/dim.
* ``test_ddp``: this file as a ``torchrun --nproc_per_node=1`` worker (``--ddp-worker nccl|gloo``; nccl needs
  CUDA): a process group of one on that backend and a Trainer given a world that counts as distributed, so it
  trains through DistributedDataParallel and reduces through the backend.
* ``test_restart`` (CUDA): ``torchrun --max-restarts 1`` with the last rank SIGKILLed after step 5 (through
  ``tests/faults.py``): every rank restarts, continues from the checkpoint of step 4, exits 0, and ends with the
  weights of an uninterrupted run (1e-6); two ranks over NCCL where there are two GPUs, else one.
* ``test_compiled_train``: ``test_train`` with ``TrainConfig(compile=True)`` (training and evaluation
  forward through ``torch.compile``), bf16 first, then fp16 and fp32, after ``torch._dynamo.reset()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelmodels
from pixelmodels.config import DataConfig, RunConfig, TrainConfig
from pixelmodels.data import ImageDataset
from pixelmodels.app.runs import resolve_train_config
from pixelmodels.distributed import World
from pixelmodels.training import Callbacks, Trainer

DEVICE = torch.device(os.environ.get("PIXELMODELS_CHECK_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
CUDA = DEVICE.type == "cuda"
if CUDA and DEVICE.index is None:
    DEVICE = torch.device("cuda", torch.cuda.current_device())
QUICK = os.environ.get("PIXELMODELS_CHECK_QUICK") == "1"
PRESET, SHAPE, BATCH, SAMPLES = ("tiny", (1, 8, 8), 4, 4) if QUICK else ("small", (1, 28, 28), 32, 16)
STEPS = 3 if QUICK else 20
BUDGET = float(os.environ.get("PIXELMODELS_CHECK_BUDGET") or (200 if CUDA and not QUICK else 0))
OUT = Path(os.environ["PIXELMODELS_CHECK_OUT"]) if os.environ.get("PIXELMODELS_CHECK_OUT") else None
START = time.monotonic()
FAMILIES = pixelmodels.list_models()
ROWS = ["| check | family | precision | images/s | peak MiB | s | notes |", "|" + " --- |" * 7]
TRAINED: dict[str, torch.nn.Module] = {}  # family -> its fp32-trained EMA model, for test_sample
FAULTS = Path(__file__).resolve().parents[1] / "tests" / "faults.py"  # kills a worker (test_restart)


@pytest.fixture(autouse=True)
def budget_and_memory():
    """Skip a check that would start after the budget; reset the peak memory and the seed before each."""
    if BUDGET and time.monotonic() - START > BUDGET:
        pytest.skip(f"over the budget of {BUDGET:g} s (PIXELMODELS_CHECK_BUDGET)")
    if CUDA:
        torch.cuda.set_device(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module", autouse=True)
def table():
    """The rows of the passing checks, printed (``-s``) and kept in ``table.md`` under PIXELMODELS_CHECK_OUT."""
    yield
    text = "\n".join(ROWS)
    print(f"\n{environment()}\n\n{text}")
    if OUT is not None:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "table.md").write_text(f"{environment()}\n\n{text}\n")


def report(check: str, family: str, precision: str, started: float, images_per_s: float | None = None,
           notes: str = "") -> None:
    memory = f"{torch.cuda.max_memory_allocated(DEVICE) / 2**20:,.0f}" if CUDA else "-"
    rate = "-" if images_per_s is None else f"{images_per_s:.3g}" if images_per_s < 100 else f"{images_per_s:,.0f}"
    ROWS.append(f"| {check} | {family} | {precision} | {rate} | {memory} | {time.monotonic() - started:.1f} | "
                f"{notes} |")


def environment() -> str:
    parts = [f"torch {torch.__version__}", f"python {sys.version.split()[0]}", f"device {DEVICE}"]
    if CUDA:
        props = torch.cuda.get_device_properties(DEVICE)
        parts += [f"CUDA {torch.version.cuda}", f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"]
    return ", ".join(parts + [f"{torch.get_num_threads()} threads", "quick" if QUICK else f"preset {PRESET}"])


def folder(tmp_path: Path, name: str) -> Path:
    return OUT / name if OUT is not None else tmp_path / name


def random_dataset(n: int, seed: int, split: str) -> ImageDataset:
    """Fashion-MNIST-shaped random data: uint8 images in [0, 256), labels in 0..9."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8)
    return ImageDataset(images, torch.randint(0, 10, (n,), generator=g), 8, 10, name="random", split=split)


class Steps(Callbacks):
    """Each step's bits/dim and seconds."""

    def __init__(self):
        self.bpd, self.seconds = [], []

    def on_step(self, trainer, bpd, images, seconds):
        self.bpd.append(bpd)
        self.seconds.append(seconds)


def trained(family: str, precision: str, compiled: bool, out: Path, world: World = World()):
    """A Trainer of ``family`` on random data held on the device, after ``fit`` for STEPS optimizer steps
    (whole batches only: no recompilation for a short last one); (trainer, its initial weights, the last
    record, the steps)."""
    train_set, test_set = random_dataset(BATCH * 4, 1, "train"), random_dataset(BATCH * 2, 2, "test")
    train_set.images, train_set.labels = train_set.images.to(DEVICE), train_set.labels.to(DEVICE)
    model = pixelmodels.create_model(family, image_shape=SHAPE, n_bits=8, preset=PRESET).to(DEVICE)
    train = resolve_train_config(TrainConfig(
        batch_size=BATCH, precision=precision, compile=compiled, device=str(DEVICE), n_samples=0, max_steps=STEPS,
        epochs=STEPS // 4 + 3, eval_batch_size=BATCH, eval_every=1000), family)
    trainer = Trainer(RunConfig(model.config, DataConfig(dataset="arrays"), train), model, train_set, test_set, out,
                      world=world, device=DEVICE)
    initial, steps = [p.detach().clone() for p in trainer.model.parameters()], Steps()
    return trainer, initial, trainer.fit(steps), steps


def check_training(family: str, precision: str, compiled: bool, tmp_path: Path) -> None:
    if precision == "fp16" and not CUDA:
        pytest.skip("fp16 needs CUDA")
    if precision == "bf16" and CUDA and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    if compiled:
        torch._dynamo.reset()
    started, name = time.monotonic(), f"{family}-{precision}{'-compiled' * compiled}"
    trainer, initial, record, steps = trained(family, precision, compiled, folder(tmp_path, name))
    assert math.isfinite(steps.bpd[-1]), f"the last training loss is {steps.bpd[-1]} (per step: {steps.bpd})"
    assert trainer.step > 0, f"no optimizer step in {len(steps.bpd)} batches (GradScaler skipped them all?)"
    assert any(not torch.equal(a, b) for a, b in zip(initial, trainer.model.parameters())), "no weight changed"
    assert math.isfinite(record["test_bpd"]), f"the test bits/dim is {record['test_bpd']}"
    assert (trainer.out / "model.safetensors").is_file()
    if precision == "fp32" and not compiled:
        TRAINED[family] = trainer.ema.model
    timed = steps.seconds[1:] or steps.seconds
    scale = "" if trainer.scaler is None else f"; scale {trainer.scaler.get_scale():g}"
    report("train compiled" if compiled else "train", family, precision, started, BATCH * len(timed) / sum(timed),
           f"bpd {steps.bpd[0]:.2f} -> {steps.bpd[-1]:.2f}, test {record['test_bpd']:.2f}; {trainer.step} steps; "
           f"first step {steps.seconds[0]:.2f} s{scale}")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_train(family, precision, tmp_path):
    check_training(family, precision, False, tmp_path)


@contextlib.contextmanager
def no_tf32():
    """Full float32 products: the cached and reference paths use different kernels, which TF32 (cuDNN's default
    for convolutions) would round differently."""
    knobs = [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in knobs]
    for obj, name, value in knobs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


@pytest.mark.parametrize("family", FAMILIES)
def test_sample(family):
    started, model = time.monotonic(), TRAINED.get(family)
    notes = "the fp32-trained EMA model" if model is not None else "a fresh model (no fp32 training here)"
    if model is None:
        model = pixelmodels.create_model(family, image_shape=SHAPE, n_bits=8, preset=PRESET).to(DEVICE)
        model.initialize_from_data(random_dataset(8, 3, "train").images.to(DEVICE))
    model.eval()

    def draw(cached: bool):
        start = time.perf_counter()
        images = pixelmodels.sample(model, SAMPLES, generator=torch.Generator(DEVICE).manual_seed(11), cached=cached)
        if CUDA:
            torch.cuda.synchronize(DEVICE)
        return images, time.perf_counter() - start

    with no_tf32():
        (first, _), (cached, t_cached), (reference, t_reference) = draw(True), draw(True), draw(False)
    assert first.dtype == torch.uint8 and tuple(first.shape) == (SAMPLES, *SHAPE)
    assert first.device.type == DEVICE.type
    assert torch.equal(first, cached), "two cached runs with the same seed differ"
    differ = (cached != reference).sum().item()
    assert differ == 0, f"cached != reference: {differ} of {cached.numel()} sub-pixels differ"
    assert len(cached.unique()) > 1, "every sampled value is the same"
    report("sample", family, "fp32", started, SAMPLES / t_cached,
           f"{SAMPLES} images; cached {t_cached:.2f} s, reference {t_reference:.2f} s; {notes}")


def torchrun(args: list[str], logs: Path, launcher: tuple[str, ...] = ("--nproc_per_node=1",),
             **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone LAUNCHER ARGS`` (``env`` added to the environment), its output kept in ``logs``."""
    env = dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1", **env)
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", *launcher, *args],
                          env=env, capture_output=True, text=True, timeout=300 if QUICK or CUDA else 1200)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "stdout.txt").write_text(done.stdout)
    (logs / "stderr.txt").write_text(done.stderr)
    assert done.returncode == 0, f"exit code {done.returncode}: {done.stderr[-3000:]}"
    return done


def arrays_dataset(data: Path, n_train: int, n_test: int) -> Path:
    """An ``arrays`` dataset of random images written to ``data``."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez(data / f"{split}.npz", x=rng.integers(0, 256, (n, *SHAPE[1:]), dtype=np.uint8))
    return data


def test_torchrun(tmp_path):
    started, out = time.monotonic(), folder(tmp_path, "torchrun-run")
    data = arrays_dataset(folder(tmp_path, "torchrun-data"), BATCH * 2, BATCH)
    torchrun(["-m", "pixelmodels", "train", "--model", "gated-pixelcnn", "--preset", PRESET, "--dataset", "arrays",
              "--data-dir", str(data), "--batch-size", str(BATCH), "--max-steps", "3", "--n-samples", "4",
              "--no-progress", "--device", DEVICE.type, "--out", str(out)], folder(tmp_path, "torchrun-logs"))
    assert (out / "model.safetensors").is_file()
    test = [r["test_bpd"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "test_bpd" in r]
    assert test and test[-1] is not None and math.isfinite(test[-1]), f"no finite test_bpd in metrics.jsonl: {test}"
    grids = len(list((out / "samples").glob("*.png")))
    report("torchrun nproc=1", "gated-pixelcnn", "fp32", started,
           notes=f"exit 0; test bpd {test[-1]:.2f}, {grids} sample grid(s); a world of one joins no process group")


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_ddp(backend, tmp_path):
    if backend == "nccl" and not CUDA:
        pytest.skip("nccl needs CUDA")
    if backend == "gloo" and CUDA:
        pytest.skip("gloo is the CPU's backend; nccl is checked on CUDA")
    if not getattr(torch.distributed, f"is_{backend}_available")():
        pytest.skip(f"torch.distributed has no {backend}")
    started, out = time.monotonic(), folder(tmp_path, f"ddp-{backend}")
    done = torchrun([__file__, "--ddp-worker", backend, "--out", str(out)], folder(tmp_path, f"ddp-{backend}-logs"))
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("DDP-RESULT ")]
    result = json.loads(line[len("DDP-RESULT "):])
    report(f"ddp {backend}", "gated-pixelcnn", "fp32", started, result["images_per_s"], result["notes"])


def test_restart(tmp_path):
    """``torchrun --max-restarts 1`` on CUDA, as tests/test_restart.py on gloo: the last rank is SIGKILLed after
    step 5 (checkpoints every 2 steps), torchrun restarts every rank, ``--resume auto`` continues from step 4,
    every restarted worker exits 0, and the weights equal an uninterrupted run's (``--deterministic``, 1e-6).
    Two ranks over NCCL with two GPUs or more; with one, one rank (NCCL needs a GPU per rank; a world of one
    joins no process group)."""
    if not CUDA:
        pytest.skip("the NCCL restart needs CUDA (tests/test_restart.py restarts gloo workers)")
    ranks = min(2, torch.cuda.device_count())
    started, data = time.monotonic(), arrays_dataset(folder(tmp_path, "restart-data"), BATCH * 2 * 3, BATCH)
    cublas = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS, which --deterministic requires

    def train(out: Path) -> list[str]:
        return ["train", "--model", "gated-pixelcnn", "--preset", PRESET, "--dataset", "arrays", "--data-dir",
                str(data), "--batch-size", str(BATCH * ranks), "--max-steps", "8", "--checkpoint-every-steps", "2",
                "--n-samples", "0", "--eval-every", "1000", "--no-progress", "--device", "cuda", "--precision", "fp32",
                "--deterministic", "--resume", "auto", "--out", str(out)]

    straight, killed, report_dir = (folder(tmp_path, f"restart-{n}") for n in ("straight", "killed", "report"))
    launcher = (f"--nproc_per_node={ranks}",)
    torchrun(["-m", "pixelmodels", *train(straight)], folder(tmp_path, "restart-straight-logs"), launcher, **cublas)
    report_dir.mkdir(parents=True, exist_ok=True)
    done = torchrun([str(FAULTS), "--report", str(report_dir), f"rank@{ranks - 1};kill@step:5", *train(killed)],
                    folder(tmp_path, "restart-killed-logs"), (*launcher, "--max-restarts", "1"), **cublas)
    assert "from step 4" in done.stderr, done.stderr[-3000:]
    exits = {".".join(path.name.split(".")[:2]): int(path.read_text()) for path in report_dir.glob("rank*.exit")}
    assert exits[f"rank{ranks - 1}.attempt0"] == -9, exits  # faults.py --report: rank{R}.attempt{N}.{pid}.exit
    assert all(exits[f"rank{r}.attempt1"] == 0 for r in range(ranks)), exits
    a, b = (torch.load(out / "training_state.pt", weights_only=True) for out in (straight, killed))
    assert a["step"] == b["step"] == 8
    worst = max((a[k][n].float() - b[k][n].float()).abs().max().item() for k in ("model", "ema") for n in a[k])
    assert worst <= 1e-6, f"the restarted run's weights differ from the uninterrupted run's by {worst:.3g}"
    report("restart", "gated-pixelcnn", "fp32", started, notes=f"{ranks} rank(s), "
           f"{'NCCL' if ranks > 1 else 'no process group'}; rank {ranks - 1} killed at step 5, restarted from "
           f"step 4; weights differ by {worst:.3g}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_compiled_train(family, precision, tmp_path):
    if QUICK and os.environ.get("PIXELMODELS_CHECK_COMPILE") != "1":
        pytest.skip("quick: no compiled rows (PIXELMODELS_CHECK_COMPILE=1 adds them)")
    check_training(family, precision, True, tmp_path)


class OneProcessGroup(World):
    """A world of one process that counts as distributed: the Trainer wraps the model in DDP."""

    @property
    def distributed(self) -> bool:
        return True


def ddp_worker(backend: str, out: Path) -> None:
    """Under ``torchrun --nproc_per_node=1``: train through DDP on a process group of ``backend``; print the
    result as the line ``DDP-RESULT {json}``."""
    import importlib

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pixelmodels import distributed

    torch.manual_seed(0)
    importlib.import_module("torch.distributed.nn")  # before the group, as pixelmodels.distributed.init does
    dist.init_process_group(backend)  # env:// from torchrun
    trainer, _, record, steps = trained("gated-pixelcnn", "fp32", False, out, world=OneProcessGroup())
    assert isinstance(trainer.net, DistributedDataParallel), type(trainer.net).__name__
    assert all(math.isfinite(b) for b in steps.bpd) and math.isfinite(record["test_bpd"]), (steps.bpd, record)
    timed = steps.seconds[1:] or steps.seconds
    print("DDP-RESULT " + json.dumps(dict(
        images_per_s=BATCH * len(timed) / sum(timed),
        notes=f"{dist.get_backend()} group of 1, DDP; bpd {steps.bpd[0]:.2f} -> {steps.bpd[-1]:.2f}, "
              f"test {record['test_bpd']:.2f}")), flush=True)
    del trainer  # its DDP wrapper holds the group; then the group, its threads joined (pixelmodels.distributed.close)
    distributed.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="the DDP worker of test_ddp (run the checks with pytest)")
    p.add_argument("--ddp-worker", choices=["nccl", "gloo"], required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    ddp_worker(a.ddp_worker, a.out)
