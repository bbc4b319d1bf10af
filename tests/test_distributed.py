"""Data-parallel training under torchrun (gloo on the CPU) against one process, and mixed precision."""

import json
import warnings
import math
import os
import subprocess
import sys

import pytest
import torch

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.config import TrainConfig
from pixelmodels.devices import autocast, check_precision
from pixelmodels.errors import PixelModelsError

from formats import write_mnist

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")


def env():
    return dict(os.environ, PIXELMODELS_NO_DOWNLOAD="1", OMP_NUM_THREADS="1")


def train_cmd(data, out, model, steps, *extra):
    """fp32 unless ``extra`` says otherwise: one process and two agree to 1e-5 in fp32 (``--precision auto`` may
    pick bf16, which rounds each process's gradients)."""
    return ["-m", "pixelmodels", "train", "--model", model, "--preset", "tiny", "--dataset", "fashion-mnist",
            "--data-dir", str(data), "--batch-size", "8", "--n-samples", "0", "--no-progress", "--log-every", "1",
            "--max-steps", str(steps), "--lr", "0.01", "--ema", "0.5", "--device", "cpu", "--precision", "fp32",
            "--out", str(out), *extra]


def run(args, nproc=1):
    if nproc == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def state(out):
    return torch.load(out / "training_state.pt", weights_only=True)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=21, seed=1)  # 8 + 8 + 5: the third global batch splits 3 / 2
    write_mnist(folder, "test", n=9, seed=2)    # evaluation splits 5 / 4
    return folder


@pytest.mark.parametrize("model, extra", [("gated-pixelcnn", ["--conditional"]),
                                          pytest.param("row-lstm", [], marks=pytest.mark.slow)])
def test_two_processes_train_the_same_weights_as_one(tmp_path, data, model, extra):
    """Gradient averaging, the split of the data, the schedule, the EMA and the evaluation all match."""
    one, two = tmp_path / "one", tmp_path / "two"
    run(train_cmd(data, one, model, 3, *extra))
    run(train_cmd(data, two, model, 3, *extra), nproc=2)
    a, b = state(one), state(two)
    assert a["step"] == b["step"] == 3
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.allclose(tensor, b[key][name], atol=1e-5, rtol=0), (key, name)
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    # Only rank 0 logs: one record per step, and the exactly reduced test bits/dim.
    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2]
    assert m2[-1]["test_bpd"] == pytest.approx(m1[-1]["test_bpd"], abs=1e-5)
    assert [r["train_bpd"] for r in m2 if "train_bpd" in r] == pytest.approx(
        [r["train_bpd"] for r in m1 if "train_bpd" in r], abs=1e-5)


@pytest.mark.slow
def test_resume_with_another_number_of_processes(tmp_path, data):
    straight, switched = tmp_path / "straight", tmp_path / "switched"
    run(train_cmd(data, straight, "gated-pixelcnn", 4, "--epochs", "2"))
    run(train_cmd(data, switched, "gated-pixelcnn", 2, "--epochs", "2"), nproc=2)
    run(["-m", "pixelmodels", "train", "--resume", str(switched), "--max-steps", "4", "--no-progress"])
    a, b = state(straight), state(switched)
    assert b["step"] == 4
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor, b["model"][name], atol=1e-4, rtol=0), name  # Adam on near-zero gradients


def test_global_batch_must_divide_among_processes(tmp_path, data):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
           *train_cmd(data, tmp_path / "r", "gated-pixelcnn", 1)]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--batch-size: the global batch 8 does not divide among 3 processes" in done.stderr
    assert not (tmp_path / "r").exists()


def test_bf16_loss_is_close_to_fp32_on_the_same_batch():
    torch.manual_seed(0)
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 12, 12), n_bits=8, preset="small")
    x = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    cpu = torch.device("cpu")
    full = model.head.nll(model(x).float(), x).mean()
    with autocast(cpu, "bf16"):
        params = model(x)
    assert params.dtype == torch.bfloat16  # the network really ran in bf16
    half = model.head.nll(params.float(), x).mean()
    assert half.dtype == torch.float32
    assert abs(half.item() - full.item()) < 0.01 * full.item()


def test_bf16_training_runs_on_the_cpu(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out = tmp_path / "bf16"
    args = train_cmd(data, out, "gated-pixelcnn", 2, "--precision", "bf16")[2:]
    assert main(args) == 0
    record = metrics(out)[-1]
    assert record["step"] == 2 and math.isfinite(record["test_bpd"])
    weights = state(out)["model"]
    assert all(t.dtype == torch.float32 for t in weights.values())  # the weights stay fp32 under autocast
    assert json.loads((out / "config.json").read_text())["train"]["precision"] == "bf16"


def test_precision_errors_name_the_flag():
    with pytest.raises(PixelModelsError, match="--precision fp16: needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(PixelModelsError, match="--precision: expected one of"):
        check_precision("fp8", torch.device("cpu"))


@pytest.mark.slow
def test_compiled_training_writes_checkpoints_that_load_without_compile(tmp_path, data, monkeypatch):
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    out, plain = tmp_path / "compiled", tmp_path / "plain"
    assert main(train_cmd(data, out, "gated-pixelcnn", 2, "--compile")[2:]) == 0
    assert main(train_cmd(data, plain, "gated-pixelcnn", 2)[2:]) == 0
    a, b = state(out)["model"], state(plain)["model"]
    assert a.keys() == b.keys()  # no "_orig_mod." prefixes
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-4), name
    model = pixelmodels.load(out)
    assert model.n_parameters() > 0


def test_precision_auto_is_the_default_and_config_records_what_was_chosen(tmp_path, data, monkeypatch, capsys):
    from pixelmodels import devices

    assert TrainConfig().precision == "auto"
    for native, chosen in [(False, "fp32"), (True, "bf16")]:
        monkeypatch.setattr(devices, "auto_precision", lambda device, c=chosen: (c, "told so by the test"))
        out = tmp_path / chosen
        assert main(["train", "--model", "pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                     "--data-dir", str(data), "--batch-size", "4", "--max-steps", "1", "--eval-limit", "4",
                     "--n-samples", "0", "--no-progress", "--out", str(out)]) == 0
        assert json.loads((out / "config.json").read_text())["train"]["precision"] == chosen
        err = capsys.readouterr().err
        assert f"cpu, {chosen} (--precision auto: told so by the test), batch 4;" in err and "warning" not in err
    assert main(["train", "--resume", str(out), "--max-steps", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "cpu, bf16, batch 4, from step 1" in err and "warning" not in err  # resumed as it chose: no reason


def test_explicit_bf16_without_native_support_warns(monkeypatch, capsys):
    from pixelmodels import devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: (False, "this CPU has no AMX"))
    with pytest.warns(UserWarning) as caught:
        assert devices.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    message = str(caught[0].message)
    assert len(caught) == 1 and "--precision bf16: this CPU has no AMX" in message and "--precision auto" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert devices.resolve_precision("fp32", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(devices, "native_bf16", lambda device: (True, "AMX"))
    assert devices.resolve_precision("auto", torch.device("cpu")) == "fp32"  # bf16 did not train as well
    monkeypatch.setattr(devices, "CPU_BF16_LOSS", 0.004)  # had it ended within 0.5%: bf16
    assert devices.auto_precision(torch.device("cpu")) == ("bf16", "AMX")
    assert not capsys.readouterr().err


@pytest.mark.parametrize("flags, native, why", [
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True, "this CPU has AMX with bf16"),
    ({"avx2", "avx512f", "avx512_bf16"}, True, "this CPU has AVX-512 bf16 dot products (avx512_bf16)"),
    ({"avx2", "avx512f", "amx_tile"}, False, "this CPU has neither AMX nor avx512_bf16"),
    ({"avx2", "fma"}, False, "this CPU has neither AMX nor avx512_bf16"),
])
def test_native_bf16_on_the_cpu_follows_the_amx_and_avx512_bf16_flags(monkeypatch, flags, native, why):
    """AMX or avx512_bf16: bf16 matrix products in hardware; AVX2 alone emulates them. auto takes fp32 on every
    CPU while bf16 training ends more than 0.5% above fp32's bits/dim, and says why."""
    from pixelmodels import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    assert devices.native_bf16(torch.device("cpu")) == (native, why)
    chosen, reason = devices.auto_precision(torch.device("cpu"))
    assert chosen == devices.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert reason.startswith(why) and ("0.56% above fp32" in reason if native else "emulated" in reason)
