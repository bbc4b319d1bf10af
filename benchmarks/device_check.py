"""One command that checks the library on a device: training, mixed precision, compilation, torchrun,
DistributedDataParallel, evaluation and cached sampling. Speed is for ``benchmarks/train.py`` and
``benchmarks/sampling.py``, which take ``--device cuda`` too.

    python benchmarks/device_check.py                            # on a GPU (no check starts after --budget 200 s;
                                                                 # --timeout 90 s each)
    python benchmarks/device_check.py --out $OUT/device_check    # keep run dirs, table.md, results.json, tracebacks
    python benchmarks/device_check.py --only compile --budget 0  # the compiled rows alone, without the budget
    python benchmarks/device_check.py --device cpu --quick       # on the CPU, tiny models (tests/test_device_check.py)
    python benchmarks/device_check.py --device cpu --quick --compile-quick   # + torch.compile on the CPU

Checks, each isolated (an exception is one FAILED row: type, message and where it was raised; the full
traceback goes to stderr and to ``tracebacks.txt`` under ``--out``), in this order:

* ``train``: every family of ``pixelmodels.list_models()`` at preset ``small`` (``tiny`` with ``--quick``) on
  random Fashion-MNIST-shaped data (1x28x28, 8 bits; 1x8x8 with ``--quick``) held on the device, through the
  real ``pixelmodels.training.Trainer``: 20 steps (3 with ``--quick``) in fp32, bf16 and fp16 (GradScaler;
  CUDA only), eagerly. The last loss is finite, the weights changed, the optimizer stepped, the test bits/dim
  (``pixelmodels.evaluate`` under the same precision, the EMA weights, the trainer's evaluation forward) is
  finite, and a checkpoint is written. images/s: the steps after the first.
* ``sample``: the fp32-trained EMA model of each family (a freshly initialized one if that row failed) with a
  ``torch.Generator`` on the device: ``sample(cached=True)`` twice gives the same images, and they equal
  ``sample(cached=False)`` (``torch.equal``; TF32 off during the check). images/s: the second cached run.
* ``torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node=1 -m pixelmodels train ...
  --device cuda|cpu`` on a dataset written to disk (the ``arrays`` format: train.npz / test.npz); exit code 0,
  ``model.safetensors`` written, a finite test bits/dim. A world of one joins no process group
  (``pixelmodels.distributed``), so the next check exercises the backend.
* ``ddp``: ``torchrun --standalone --nproc_per_node=1 benchmarks/device_check.py --ddp-worker nccl`` (gloo on the
  CPU, where nccl is reported skipped): a process group of one on that backend and the Trainer told it is
  distributed, so it trains through DistributedDataParallel and reduces through the backend. Both torchrun
  jobs start first and run alongside the in-process checks; their rows' seconds are their own wall time.
* ``compile`` (not with ``--quick`` unless ``--compile-quick``): the ``train`` check with
  ``TrainConfig(compile=True)`` (training and evaluation forward through ``torch.compile``), bf16 first, then
  fp16 and fp32; ``torch._dynamo.reset()`` before each; twice the ``--timeout``. Its seconds include compiling.

A check that would start after ``--budget`` seconds is reported skipped (no budget on the CPU), so a GPU run
ends in about budget + timeout seconds; rerun the skipped ones with ``--only GROUP[,GROUP] --budget 0``. Peak
memory is ``torch.cuda.max_memory_allocated`` of the check ('-' on the CPU). The output is one markdown table
and a last line ``N passed, M failed, K skipped``; the exit code is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

SCRIPT = Path(__file__).resolve()
GROUPS = ("train", "sample", "torchrun", "ddp", "compile")
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_ORDER = ("bf16", "fp16", "fp32")


class Skipped(Exception):
    """Raised by a check that cannot run here; its message is the reason."""


class CheckTimeout(Exception):
    pass


@dataclass
class Row:
    check: str
    family: str = "-"
    precision: str = "-"
    compiled: str = "-"
    status: str = ""
    images_per_s: float | None = None
    memory_mib: float | None = None
    seconds: float | None = None
    notes: str = ""


def describe_failure(exc: BaseException) -> str:
    """One line: ``Type: message (at file.py:123 in func)``, the innermost frame of our code or the library.
    A timeout that torch.compile wrapped in its own error is reported as the timeout."""
    inner, seen = exc, set()
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, CheckTimeout):
            return f"CheckTimeout: {inner}" + ("" if inner is exc else f" (inside {type(exc).__name__})")
        inner = inner.__cause__ or inner.__context__
    text = " ".join(str(exc).split()) or "(no message)"
    if len(text) > 220:
        text = text[:217] + "..."
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "pixelmodels" in f.filename or f.filename.endswith("device_check.py")]
    where = (ours or frames)[-1:] if frames else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno} in {where[0].name})" if where else ""
    return f"{type(exc).__name__}: {text}{at}".replace("|", "/")


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise CheckTimeout in the main thread after ``seconds`` (no limit elsewhere, or for None/0)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise CheckTimeout(f"over the {seconds:g} s --timeout")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Runner:
    """Runs checks one at a time, each isolated, and collects their rows."""

    def __init__(self, device: torch.device, timeout: float | None = None, budget: float | None = None,
                 log=None):
        self.device, self.timeout, self.budget, self.log = device, timeout, budget, log
        self.rows: list[Row] = []
        self.tracebacks: list[str] = []
        self.start = time.perf_counter()

    def run(self, fn, check: str, family: str = "-", precision: str = "-", compiled: bool | None = None,
            timeout: float | None = None) -> Row:
        """Run ``fn()``, which returns a dict of Row fields (images_per_s, notes, ...) or raises."""
        row = Row(check, family, precision, "-" if compiled is None else ("yes" if compiled else "no"))
        started = time.perf_counter()
        if self.budget and started - self.start > self.budget:
            row.status = f"skipped: over the --budget of {self.budget:g} s"
            return self._add(row)
        cuda = self.device.type == "cuda"
        try:
            if cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            torch.manual_seed(0)
            with time_limit(timeout or self.timeout):
                result = fn() or {}
            for key, value in result.items():
                setattr(row, key, value)
            row.status = "passed"
        except Skipped as e:
            row.status = f"skipped: {e}"
        except Exception as e:  # noqa: BLE001 - every failure is a row; KeyboardInterrupt still stops
            row.status = f"FAILED: {describe_failure(e)}"
            tb = f"--- {check} {family} {precision} compile={row.compiled}\n{traceback.format_exc()}"
            self.tracebacks.append(tb)
            print(tb, file=sys.stderr, flush=True)
        finally:
            if cuda:
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize(self.device)
                    row.memory_mib = row.memory_mib or torch.cuda.max_memory_allocated(self.device) / 2**20
            gc.collect()
            if cuda:
                with contextlib.suppress(Exception):
                    torch.cuda.empty_cache()
        if row.seconds is None:
            row.seconds = time.perf_counter() - started
        return self._add(row)

    def _add(self, row: Row) -> Row:
        self.rows.append(row)
        if self.log:
            self.log(f"[{time.perf_counter() - self.start:6.1f} s] {row.check} {row.family} {row.precision} "
                     f"compile={row.compiled}: {row.status}")
        return row

    def counts(self) -> tuple[int, int, int]:
        passed = sum(r.status == "passed" for r in self.rows)
        failed = sum(r.status.startswith("FAILED") for r in self.rows)
        return passed, failed, len(self.rows) - passed - failed


def fmt(value, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def table(rows: list[Row]) -> str:
    head = ["check", "family", "precision", "compile", "status", "images/s", "peak MiB", "s", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        ips = fmt(r.images_per_s, "{:.3g}" if r.images_per_s is not None and r.images_per_s < 100 else "{:,.0f}")
        cells = [r.check, r.family, r.precision, r.compiled, r.status, ips, fmt(r.memory_mib, "{:,.0f}"),
                 fmt(r.seconds, "{:.1f}"), r.notes]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


# -- the checks -----------------------------------------------------------------------------------------------

class Context:
    """What the checks share: settings, the device, the run directories, the models trained in fp32."""

    def __init__(self, args, device: torch.device, out: Path):
        self.args, self.device, self.out = args, device, out
        self.cuda = device.type == "cuda"
        self.trained: dict[str, torch.nn.Module] = {}
        self.background: dict[str, Background] = {}
        self.serial = 0

    def run_dir(self, name: str) -> Path:
        self.serial += 1
        return self.out / f"{self.serial:03d}-{name}"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def random_dataset(shape, n: int, seed: int, split: str):
    """Fashion-MNIST-shaped random data: uint8 images in [0, 256), labels in 0..9."""
    from pixelmodels.data import ImageDataset

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageDataset(images, labels, 8, 10, name="random", split=split)


def make_trainer(ctx: Context, family: str, preset: str, shape, precision: str, compiled: bool, batch: int,
                 n_train: int, n_test: int, world=None):
    """A Trainer built as ``runs.build_trainer`` builds one, on in-memory random data."""
    from pixelmodels.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pixelmodels.distributed import World
    from pixelmodels.devices import check_precision
    from pixelmodels.models.registry import build_model
    from pixelmodels.app.runs import on_device, resolve_model_config, resolve_train_config
    from pixelmodels.training import Trainer

    check_precision(precision, ctx.device)
    train_set = on_device(random_dataset(shape, n_train, 1, "train"), ctx.device)
    test_set = random_dataset(shape, n_test, 2, "test")
    config = resolve_model_config(ModelConfig(name=family, image_shape=tuple(shape), preset=preset), train_set, False)
    model = build_model(config).to(ctx.device)
    train = resolve_train_config(TrainConfig(batch_size=batch, precision=precision, compile=compiled,
                                             device=str(ctx.device), eval_batch_size=max(1, n_test // 2),
                                             n_samples=0, seed=0), family)
    run = RunConfig(model=model.config, data=DataConfig(dataset="arrays"), train=train)
    return Trainer(run, model, train_set, test_set, ctx.run_dir(f"{family}-{precision}"), world=world or World(),
                   device=ctx.device, progress=False)


def train_steps(ctx: Context, trainer, steps: int) -> tuple[list[float], list[float]]:
    """``steps`` optimizer steps on the global batches in the trainer's order; (losses, step seconds)."""
    losses, times, epoch = [], [], 0
    batches = trainer.batches(epoch)
    batch = trainer.run.train.batch_size
    while len(losses) < steps:
        idx = next(batches, None)
        if idx is None or len(idx) < batch:  # only whole batches: no recompilation for a last, short one
            epoch += 1
            batches = trainer.batches(epoch)
            continue
        ctx.sync()
        start = time.perf_counter()
        losses.append(trainer.train_step(*trainer._batch(idx), n_global=len(idx)))
        ctx.sync()
        times.append(time.perf_counter() - start)
    return losses, times


def train_check(ctx: Context, family: str, precision: str, compiled: bool):
    from pixelmodels.evaluation import evaluate

    a = ctx.args
    if precision == "fp16" and not ctx.cuda:
        raise Skipped("needs CUDA")
    if precision == "bf16" and ctx.cuda and not torch.cuda.is_bf16_supported():
        raise Skipped("this GPU has no bf16")
    if compiled:
        torch._dynamo.reset()
    trainer = make_trainer(ctx, family, a.preset, a.shape, precision, compiled, a.batch, a.batch * 4, a.batch * 2)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses, times = train_steps(ctx, trainer, a.steps)
    if not math.isfinite(losses[-1]):
        raise AssertionError(f"the last training loss is {losses[-1]} (bits/dim per step: {losses})")
    if trainer.step == 0:
        raise AssertionError(f"no optimizer step in {a.steps} (GradScaler skipped them all?); losses {losses}")
    changed = sum(not torch.equal(b, p.detach()) for b, p in zip(before, trainer.model.parameters()))
    if changed == 0:
        raise AssertionError(f"no weight changed in {trainer.step} optimizer steps")
    t = trainer.run.train
    test_bpd = evaluate(trainer.ema.model, trainer.test_set, t.eval_batch_size, ctx.device,
                        forward=trainer.eval_forward, precision=precision, world=trainer.world)
    if not math.isfinite(test_bpd):
        raise AssertionError(f"the test bits/dim is {test_bpd}")
    trainer.save()
    if not (trainer.out / "model.safetensors").is_file():
        raise AssertionError(f"no model.safetensors in {trainer.out}")
    if precision == "fp32" and not compiled:
        ctx.trained[family] = trainer.ema.model
    timed = times[1:] or times
    notes = (f"bpd {losses[0]:.2f} -> {losses[-1]:.2f}, test {test_bpd:.2f}; {trainer.step}/{a.steps} steps; "
             f"first step {times[0]:.2f} s")
    if trainer.scaler is not None:
        notes += f"; scale {trainer.scaler.get_scale():g}"
    return dict(images_per_s=a.batch * len(timed) / sum(timed), notes=notes)


@contextlib.contextmanager
def no_tf32():
    """Full float32 matmuls and convolutions: the cached and reference paths use different kernels, and TF32
    (cuDNN's default for convolutions) would round them differently. The fp32_precision API where there is one."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        knobs = [(torch.backends.cuda.matmul, "fp32_precision", "ieee"),
                 (torch.backends.cudnn.conv, "fp32_precision", "ieee")]
    else:
        knobs = [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in knobs]
    for obj, name, value in knobs:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = (a != b)
    n = int(diff.sum())
    pixel = diff.any(dim=(0, 1)).flatten().nonzero()
    where = ""
    if len(pixel):
        k = int(pixel[0])
        where = f", first at pixel {k} of {diff.shape[2] * diff.shape[3]} in raster order"
    return f"{n} of {a.numel()} sub-pixels differ{where}"


def fresh_model(ctx: Context, family: str, preset: str, shape):
    from pixelmodels import create_model

    model = create_model(family, image_shape=tuple(shape), n_bits=8, preset=preset).to(ctx.device)
    model.initialize_from_data(random_dataset(shape, 8, 3, "train").images.to(ctx.device))
    return model


def sample_check(ctx: Context, family: str):
    from pixelmodels import sample

    a = ctx.args
    model = ctx.trained.get(family)
    notes = "the fp32-trained EMA model"
    if model is None:
        model, notes = fresh_model(ctx, family, a.preset, a.shape), "a fresh model (its train row failed)"
    model.eval()

    def draw(cached: bool):
        g = torch.Generator(ctx.device).manual_seed(11)
        ctx.sync()
        start = time.perf_counter()
        images = sample(model, a.n_samples, generator=g, cached=cached)
        ctx.sync()
        return images, time.perf_counter() - start

    with no_tf32():
        first, _ = draw(True)
        cached, t_cached = draw(True)
        reference, t_reference = draw(False)
    want = (a.n_samples, *a.shape)
    if first.dtype != torch.uint8 or tuple(first.shape) != want or first.device.type != ctx.device.type:
        raise AssertionError(f"expected uint8 {want} on {ctx.device.type}, found {first.dtype} "
                             f"{tuple(first.shape)} on {first.device}")
    if not torch.equal(first, cached):
        raise AssertionError(f"two cached runs with the same seed differ: {first_difference(first, cached)}")
    if not torch.equal(cached, reference):
        raise AssertionError(f"cached != reference: {first_difference(cached, reference)}")
    if len(cached.unique()) < 2:
        raise AssertionError("every sampled value is the same")
    return dict(images_per_s=a.n_samples / t_cached,
                notes=f"{a.n_samples} images; cached {t_cached:.2f} s, reference {t_reference:.2f} s "
                      f"({t_reference / t_cached:.1f}x); {notes}")


def write_arrays(folder: Path, shape, n_train: int, n_test: int) -> None:
    """The ``arrays`` dataset on disk: train.npz / test.npz holding ``x`` (N, H, W) uint8."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez(folder / f"{split}.npz", x=rng.integers(0, 256, (n, *shape[1:]), dtype=np.uint8))


def child_env() -> dict:
    env = dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Background:
    """A command started now and waited for later (``torchrun`` runs alongside the in-process checks)."""

    def __init__(self, cmd: list[str], folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.cmd, self.start = cmd, time.perf_counter()
        self.stdout, self.stderr = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(cmd, env=child_env(), stdout=out, stderr=err, start_new_session=True)
        self.seconds = None

    def wait(self, timeout: float | None) -> int:
        """The exit code; killed (with the processes it started) after ``timeout`` seconds from its start."""
        left = None if not timeout else max(1.0, timeout - (time.perf_counter() - self.start))
        try:
            code = self.proc.wait(timeout=left)
        except BaseException:  # the timeout, or the check's own time limit
            self.kill()
            raise
        self.seconds = time.perf_counter() - self.start
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: torchrun and its worker only
            self.proc.wait()


def start_torchrun(ctx: Context, family: str = "gated-pixelcnn") -> Background:
    """``torchrun --nproc_per_node=1 -m pixelmodels train`` on an ``arrays`` dataset written to disk."""
    a = ctx.args
    data, out = ctx.run_dir("torchrun-data"), ctx.run_dir("torchrun-run")
    write_arrays(data, a.shape, a.batch * 2, a.batch)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "pixelmodels", "train", "--model", family, "--preset", a.preset, "--dataset", "arrays",
           "--data-dir", str(data), "--batch-size", str(a.batch), "--max-steps", "3", "--n-samples", "4",
           "--no-progress", "--device", ctx.device.type, "--out", str(out)]
    job = Background(cmd, ctx.run_dir("torchrun-logs"))
    job.out = out
    return job


def torchrun_check(ctx: Context, job: Background | None):
    a = ctx.args
    if not torch.distributed.is_available():
        raise Skipped("torch.distributed is not available")
    job = job or start_torchrun(ctx)
    try:
        code = job.wait(a.timeout)
    except subprocess.TimeoutExpired:
        raise CheckTimeout(f"torchrun took over the {a.timeout:g} s --timeout") from None
    out = job.out
    if code != 0:
        stderr = job.stderr.read_text(errors="replace")
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "Error" in line or "error" in line),
                    lines[-1] if lines else "")
        print(f"--- torchrun stderr ({' '.join(job.cmd)})\n{stderr[-5000:]}", file=sys.stderr, flush=True)
        raise AssertionError(f"exit code {code}: {last.strip()[:200]}")
    if not (out / "model.safetensors").is_file():
        raise AssertionError(f"exit code 0 but no model.safetensors in {out}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    test = [r["test_bpd"] for r in records if "test_bpd" in r]
    if not test or test[-1] is None or not math.isfinite(test[-1]):
        raise AssertionError(f"no finite test_bpd in metrics.jsonl: {test}")
    samples = sorted((out / "samples").glob("*.png")) if (out / "samples").is_dir() else []
    return dict(seconds=job.seconds,
                notes=f"exit 0; model.safetensors, test bpd {test[-1]:.2f}, {len(samples)} sample grid(s); "
                      "world of one: no process group; ran alongside the checks above")


def ddp_worker(a) -> int:
    """Under ``torchrun --nproc_per_node=1``: join the process group (nccl or gloo), train through DDP, print
    the result as the line ``DDP-RESULT {json}``."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pixelmodels.distributed import World
    from pixelmodels.evaluation import evaluate

    class World1(World):
        @property
        def distributed(self) -> bool:
            return True

    backend = a.ddp_worker
    device = torch.device(a.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    settle(a, device)
    ctx = Context(a, device, Path(a.out))
    try:
        dist.init_process_group(backend)  # env:// from torchrun
        trainer = make_trainer(ctx, "gated-pixelcnn", a.preset, a.shape, "fp32", False, a.batch, a.batch * 4,
                               a.batch * 2, world=World1(int(os.environ.get("RANK", 0)), 1, 0))
        if not isinstance(trainer.net, DistributedDataParallel):
            raise AssertionError(f"the Trainer did not wrap the model in DDP: {type(trainer.net).__name__}")
        before = [p.detach().clone() for p in trainer.model.parameters()]
        losses, times = train_steps(ctx, trainer, a.steps)
        if not all(math.isfinite(x) for x in losses):
            raise AssertionError(f"losses {losses}")
        if all(torch.equal(b, p.detach()) for b, p in zip(before, trainer.model.parameters())):
            raise AssertionError("no weight changed")
        bpd = evaluate(trainer.ema.model, trainer.test_set, trainer.run.train.eval_batch_size, device,
                       precision="fp32", world=trainer.world)
        if not math.isfinite(bpd):
            raise AssertionError(f"test bits/dim {bpd}")
        trainer.save()
        timed = times[1:] or times
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        print("DDP-RESULT " + json.dumps(dict(
            images_per_s=a.batch * len(timed) / sum(timed), memory_mib=memory,
            notes=f"torchrun, {dist.get_backend()} group of 1, DDP; bpd {losses[0]:.2f} -> {losses[-1]:.2f}, "
                  f"test {bpd:.2f}")), flush=True)
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    # No destructors: freeing a gloo-backed DDP Reducer while holding the GIL can deadlock against gloo's
    # worker thread (c10d::ProcessGroupGloo::~ProcessGroupGloo joins a thread waiting for the GIL; seen
    # here about once in 100 in-process runs), so the process leaves without running them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start_ddp(ctx: Context, backend: str) -> Background:
    a, out = ctx.args, ctx.run_dir(f"ddp-{backend}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(SCRIPT),
           "--ddp-worker", backend, "--device", ctx.device.type, "--out", str(out), "--steps", str(a.steps)]
    job = Background(cmd + (["--quick"] if a.quick else []), out)
    job.out = out
    return job


def ddp_check(ctx: Context, backend: str, job: Background | None):
    import torch.distributed as dist

    if backend == "nccl" and not ctx.cuda:
        raise Skipped("needs CUDA")
    if not dist.is_available() or not getattr(dist, f"is_{backend}_available")():
        raise Skipped(f"torch.distributed has no {backend}")
    job = job or start_ddp(ctx, backend)
    try:
        code = job.wait(ctx.args.timeout)
    except subprocess.TimeoutExpired:
        raise CheckTimeout(f"the DDP run took over the {ctx.args.timeout:g} s --timeout") from None
    results = [line for line in job.stdout.read_text(errors="replace").splitlines() if line.startswith("DDP-RESULT ")]
    if code != 0 or not results:
        stderr = job.stderr.read_text(errors="replace")
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
        print(f"--- ddp {backend} stderr ({' '.join(job.cmd)})\n{stderr[-5000:]}", file=sys.stderr, flush=True)
        raise AssertionError(f"exit code {code}: {last.strip()[:200]}")
    result = json.loads(results[-1][len("DDP-RESULT "):])
    result["notes"] += "; ran alongside the checks above"
    return dict(result, seconds=job.seconds)


def injected_failure(ctx: Context):
    raise RuntimeError("injected failure (--inject-failure)")


def plan(ctx: Context, families: list[str]):
    """The checks to run, (function, row fields), in order, and a skipped row per group that --quick skips."""
    a, cuda = ctx.args, ctx.cuda
    todo = []
    if "inject" in a.only:
        todo.append(("inject", lambda: injected_failure(ctx), dict(check="inject")))
    for family in families:
        for precision in PRECISIONS:
            todo.append(("train", lambda f=family, p=precision: train_check(ctx, f, p, False),
                         dict(check="train", family=family, precision=precision, compiled=False)))
    for family in families:
        todo.append(("sample", lambda f=family: sample_check(ctx, f),
                     dict(check="sample", family=family, precision="fp32")))
    todo.append(("torchrun", lambda: torchrun_check(ctx, ctx.background.pop("torchrun", None)),
                 dict(check="torchrun nproc=1", family="gated-pixelcnn", precision="fp32")))
    for backend in ("nccl",) if cuda else ("gloo", "nccl"):
        todo.append(("ddp", lambda b=backend: ddp_check(ctx, b, ctx.background.pop(f"ddp-{b}", None)),
                     dict(check=f"ddp {backend}", family="gated-pixelcnn", precision="fp32")))
    for precision in COMPILE_ORDER:
        for family in families:
            todo.append(("compile", lambda f=family, p=precision: train_check(ctx, f, p, True),
                         dict(check="train", family=family, precision=precision, compiled=True,
                              timeout=2 * a.timeout if a.timeout else None)))
    skips = {}
    if a.quick:
        if not a.compile_quick:
            skips["compile"] = Row("train", "all", "all", "yes", "skipped: --quick (add --compile-quick)")
    checks, skipped_rows = [], []
    for group, fn, fields in todo:
        if group not in a.only:
            continue
        if group in skips:
            if skips[group] not in skipped_rows:
                skipped_rows.append(skips[group])
            continue
        checks.append((fn, fields))
    return checks, skipped_rows


def environment(device: torch.device) -> str:
    parts = [f"torch {torch.__version__}", f"python {sys.version.split()[0]}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts += [f"CUDA {torch.version.cuda}", f"cuDNN {torch.backends.cudnn.version()}",
                  f"{props.name} ({props.total_memory / 2**30:.0f} GiB, capability {props.major}.{props.minor})"]
    else:
        cpu = "?"
        if os.path.exists("/proc/cpuinfo"):
            cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                       "?")
        parts += [f"cpu ({cpu}), {torch.get_num_threads()} threads"]
    return ", ".join(parts)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny presets, 1x8x8 images, 3 steps, 4 samples; no "
                   "compile rows")
    p.add_argument("--compile-quick", action="store_true", help="run the compile rows with --quick too")
    p.add_argument("--out", type=Path, help="keep the run directories, table.md, results.json and "
                   "tracebacks.txt here (default: a temporary directory, removed)")
    p.add_argument("--timeout", type=float, help="seconds per check, twice that for a compiled one (default 90 "
                   "on CUDA, 600 on the CPU, 120 with --quick; 0: none)")
    p.add_argument("--budget", type=float, help="start no check after this many seconds (default 200 on CUDA "
                   "without --quick, else none; 0: none)")
    p.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {GROUPS}")
    p.add_argument("--families", help="comma-separated model families (default: all)")
    p.add_argument("--steps", type=int, help="training steps per train row (default 20, 3 with --quick)")
    p.add_argument("--inject-failure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp-worker", choices=("nccl", "gloo"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.only = [g.strip() for g in a.only.split(",") if g.strip()]
    unknown = sorted(set(a.only) - set(GROUPS))
    if unknown:
        p.error(f"--only: unknown groups {unknown}; expected some of {list(GROUPS)}")
    if a.inject_failure:
        a.only.insert(0, "inject")
    return a


def settle(a, device: torch.device) -> None:
    """The settings that follow from --quick and the device."""
    cuda = device.type == "cuda"
    a.preset, a.shape = ("tiny", (1, 8, 8)) if a.quick else ("small", (1, 28, 28))
    a.batch, a.n_samples = (4, 4) if a.quick else (32, 16)
    a.steps = a.steps or (3 if a.quick else 20)
    if a.timeout is None:
        a.timeout = 120.0 if a.quick else (90.0 if cuda else 600.0)
    if a.budget is None:
        a.budget = 200.0 if cuda and not a.quick else 0.0


def main(argv=None) -> int:
    a = parse(argv)
    if a.ddp_worker:
        return ddp_worker(a)
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        with contextlib.suppress(Exception):  # no file descriptor behind sys.stderr (a test's capture)
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 PID: where a hung check is
    from pixelmodels import list_models
    from pixelmodels.devices import resolve_device

    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    if cuda:
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)
    families = list_models() if not a.families else [f.strip() for f in a.families.split(",")]
    bad = sorted(set(families) - set(list_models()))
    if bad:
        print(f"--families: unknown {bad}; expected some of {list_models()}", file=sys.stderr)
        return 2
    settle(a, device)
    keep = a.out is not None
    out = Path(a.out) if keep else Path(tempfile.mkdtemp(prefix="device_check-"))
    out.mkdir(parents=True, exist_ok=True)
    print("command: python " + " ".join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]), flush=True)
    print(environment(device), flush=True)
    runner = Runner(device, a.timeout, a.budget, log=lambda line: print(line, flush=True))
    ctx = Context(a, device, out)
    checks, skipped_rows = plan(ctx, families)
    try:
        if "torchrun" in a.only and torch.distributed.is_available():
            with contextlib.suppress(Exception):  # else the check starts it again and reports the failure
                ctx.background["torchrun"] = start_torchrun(ctx)
        backend = "nccl" if cuda else "gloo"
        if "ddp" in a.only and torch.distributed.is_available() and \
                getattr(torch.distributed, f"is_{backend}_available")():
            with contextlib.suppress(Exception):
                ctx.background[f"ddp-{backend}"] = start_ddp(ctx, backend)
        for fn, fields in checks:
            runner.run(fn, **fields)
        for row in skipped_rows:
            runner._add(row)
    finally:
        for job in ctx.background.values():  # not waited for: skipped, or interrupted
            job.kill()
        text = table(runner.rows)
        passed, failed, skipped = runner.counts()
        wall = time.perf_counter() - runner.start
        summary = f"{passed} passed, {failed} failed, {skipped} skipped ({wall:.0f} s)"
        if keep:
            (out / "table.md").write_text(text + "\n\n" + summary + "\n")
            (out / "results.json").write_text(json.dumps([asdict(r) for r in runner.rows], indent=1))
            (out / "tracebacks.txt").write_text("\n".join(runner.tracebacks))
        else:
            shutil.rmtree(out, ignore_errors=True)
        print()
        print(text)
        print()
        print(summary, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
