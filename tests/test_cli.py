"""End-to-end CLI tests on a tiny Fashion-MNIST written in the real IDX format."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.config import RunConfig

from formats import write_mnist

TINY = ["--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist", "--batch-size", "8",
        "--n-samples", "0", "--no-progress", "--log-every", "1", "--epochs", "3"]


@pytest.fixture
def data(tmp_path, monkeypatch):
    folder = tmp_path / "fmnist"
    write_mnist(folder, "train", n=24, seed=1)
    write_mnist(folder, "test", n=10, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    return folder


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_resume_evaluate_generate(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--max-steps", "2", "--n-samples", "1", "--out", str(run)]) == 0
    assert "test bits/dim (EMA weights)" in capsys.readouterr().out
    for name in ["config.json", "model.safetensors", "training_state.pt", "samples/step_0000002.png"]:
        assert (run / name).is_file(), name
    assert (run / "command.txt").read_text().startswith("pixelmodels train --model gated-pixelcnn")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.model.image_shape == (1, 28, 28) and config.model.n_bits == 8
    assert config.train.lr == 5e-4 and config.train.ema == 0.9995  # the preset's defaults, resolved
    train_records = [r for r in read_metrics(run) if "train_bpd" in r]
    assert [r["step"] for r in train_records] == [1, 2]
    assert train_records[1]["lr"] == pytest.approx(5e-4 * 0.999995**2, rel=1e-9)  # decayed after every step

    assert main(["train", "--resume", str(run), "--epochs", "2", "--max-steps", "4", "--no-progress"]) == 0
    state = torch.load(run / "training_state.pt", weights_only=True)
    assert state["step"] == 4 and state["epoch"] == 1 and state["batch_in_epoch"] == 1  # 24 images = 3 batches
    assert [r["step"] for r in read_metrics(run) if "train_bpd" in r] == [1, 2, 3, 4]
    assert (run / "samples" / "step_0000003.png").is_file()  # the end of epoch 1 evaluated and sampled

    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "evaluation_test.json").read_text())
    model = pixelmodels.load(run)
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    with torch.no_grad():
        direct = model.bits_per_dim(test.images).mean().item()
    assert result["bits_per_dim"] == pytest.approx(direct, rel=1e-5)
    assert result["n_images"] == 10 and f"{direct:.4f}" in printed

    out = tmp_path / "gen.png"
    assert main(["generate", str(run), "--n", "3", "--seed", "5", "--out", str(out)]) == 0
    images = np.load(out.with_suffix(".npz"))["images"]
    assert images.shape == (3, 28, 28, 1) and images.dtype == np.uint8
    assert Image.open(out).size[0] > 28
    gen = torch.Generator().manual_seed(5)
    assert np.array_equal(pixelmodels.sample(model, 3, generator=gen).numpy().transpose(0, 2, 3, 1), images)


@pytest.mark.parametrize("schedule", [[], ["--lr-schedule", "cosine", "--warmup-steps", "2", "--decay-steps", "5"]])
def test_resume_is_exact(tmp_path, data, schedule):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *TINY, *schedule, "--data-dir", str(data), "--max-steps", "5", "--out", str(straight)]) == 0
    assert main(["train", *TINY, *schedule, "--data-dir", str(data), "--max-steps", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--max-steps", "5", "--no-progress"]) == 0
    a = torch.load(straight / "training_state.pt", weights_only=True)
    b = torch.load(split / "training_state.pt", weights_only=True)
    for part in ["model", "ema"]:
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name}"
    ema_a, ema_b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_same_seed_same_weights(tmp_path, data):
    args = [*TINY, "--data-dir", str(data), "--max-steps", "1", "--n-samples", "0"]
    torch.manual_seed(123)  # the global state before a run must not matter
    assert main(["train", *args, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *args, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_conditional_run_generates_one_row_per_class(tmp_path, data):
    run = tmp_path / "cond"
    assert main(["train", *TINY, "--data-dir", str(data), "--max-steps", "1", "--conditional",
                 "--n-samples", "0", "--out", str(run)]) == 0
    model = pixelmodels.load(run)
    assert model.n_classes == 10
    # p(y) of the marginal likelihood: the training labels' frequencies, counted here from the same files
    labels = pixelmodels.load_dataset("fashion-mnist", "train", root=data).labels
    counts = np.bincount(labels.numpy(), minlength=10)
    assert np.allclose(model.config.class_frequencies, counts / counts.sum(), rtol=0, atol=1e-12)
    assert main(["generate", str(run), "--n", "1"]) == 0
    saved = np.load(run / "generated.npz")
    assert saved["images"].shape == (10, 28, 28, 1)
    assert saved["labels"].tolist() == list(range(10))
    assert main(["generate", str(run), "--n", "2", "--class", "7", "--out", str(tmp_path / "seven.png")]) == 0
    assert np.load(tmp_path / "seven.npz")["labels"].tolist() == [7, 7]


def test_model_options_come_from_the_cli(tmp_path, data):
    run = tmp_path / "opts"
    assert main(["train", *TINY, "--data-dir", str(data), "--max-steps", "1", "--n-samples", "0",
                 "--n-channels", "4", "--n-layers", "2", "--n-bits", "3", "--out", str(run)]) == 0
    model = pixelmodels.load(run)
    assert model.options.n_channels == 4 and len(model.layers) == 2 and model.n_bits == 3


@pytest.mark.parametrize("argv,message", [
    (["train", "--model", "nope", "--dataset", "fashion-mnist"], "unknown model 'nope'"),
    (["train", "--model", "pixelcnn", "--dataset", "fashion-mnist", "--n-bits", "9"], "n_bits"),
    (["train", "--model", "pixelcnn", "--dataset", "nope"], "nope"),
    (["evaluate", "does-not-exist"], "does-not-exist"),
    (["generate", "does-not-exist"], "does-not-exist"),
])
def test_bad_input_is_one_clear_line(tmp_path, data, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = argv + (["--data-dir", str(data)] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_existing_run_is_not_overwritten(tmp_path, data, capsys):
    run = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(data), "--max-steps", "1", "--n-samples", "0", "--out", str(run)]
    assert main(args) == 0
    before = (run / "model.safetensors").read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before
    assert main(args + ["--overwrite", "--n-bits", "9"]) == 2  # a bad new run does not destroy the old one
    assert (run / "model.safetensors").read_bytes() == before
    assert main(args + ["--overwrite", "--seed", "3"]) == 0
    assert (run / "model.safetensors").read_bytes() != before


def test_pixelcnnpp_run_initializes_from_data_and_round_trips(tmp_path, data):
    run = tmp_path / "pp"
    assert main(["train", "--model", "pixelcnnpp", "--preset", "tiny", "--dataset", "fashion-mnist",
                 "--data-dir", str(data), "--batch-size", "8", "--max-steps", "1", "--n-samples", "0",
                 "--no-progress", "--likelihood", "categorical", "--out", str(run)]) == 0
    model = pixelmodels.load(run)
    assert model.options.likelihood == "categorical" and not model.channel_masked
    state = torch.load(run / "training_state.pt", weights_only=True)
    ema = load_file(run / "model.safetensors")
    assert any("parametrizations.weight.original0" in k for k in ema)
    assert set(ema) == set(state["model"])
    x = pixelmodels.load_dataset("fashion-mnist", "test", root=data).images[:2]
    with torch.no_grad():
        assert torch.isfinite(model.bits_per_dim(x)).all()


def test_complete_keeps_the_known_rows_and_writes_the_grid(tmp_path, data):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data-dir", str(data), "--max-steps", "1", "--out", str(run)]) == 0
    out = tmp_path / "done.png"
    assert main(["complete", str(run), "--dataset", "fashion-mnist", "--data-dir", str(data), "--rows", "20",
                 "--n", "3", "--out", str(out)]) == 0
    saved = np.load(out.with_suffix(".npz"))
    originals, completions = saved["originals"], saved["completions"]
    test = pixelmodels.load_dataset("fashion-mnist", "test", root=data)
    assert np.array_equal(originals, test.images[:3].numpy().transpose(0, 2, 3, 1))
    assert np.array_equal(completions[:, :20], originals[:, :20])
    assert not np.array_equal(completions[:, 20:], originals[:, 20:])
    assert saved["known"].sum() == 20 * 28
    width, height = Image.open(out).size
    assert height > width / 3 * 2  # three rows of three images
    assert main(["complete", str(run), "--data-dir", str(data), "--pixels", "30", "--n", "1",
                 "--out", str(tmp_path / "p.png")]) == 0
    assert np.load(tmp_path / "p.npz")["known"].reshape(-1).tolist() == [True] * 30 + [False] * (28 * 28 - 30)
    assert main(["complete", str(run), "--data-dir", str(data), "--rows", "29"]) == 2


def test_max_steps_alone_is_the_limit_and_both_limits_are_announced(tmp_path, data, capsys):
    """24 images in batches of 8: an epoch is 3 steps. --max-steps without --epochs is not cut at one epoch."""
    run = tmp_path / "run"
    args = ["--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist", "--data-dir", str(data),
            "--batch-size", "8", "--n-samples", "0", "--no-progress"]
    assert main(["train", *args, "--max-steps", "5", "--out", str(run)]) == 0
    assert torch.load(run / "training_state.pt", weights_only=True)["step"] == 5
    assert "training stops" not in capsys.readouterr().err  # one limit: nothing to say
    assert main(["train", "--resume", str(run), "--epochs", "2", "--max-steps", "9", "--no-progress"]) == 0
    assert torch.load(run / "training_state.pt", weights_only=True)["step"] == 6
    assert "training stops after 2 epochs, 6 batches (--epochs; --max-steps is 9)" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--max-steps", "8", "--no-progress"]) == 0  # epochs: no limit
    assert torch.load(run / "training_state.pt", weights_only=True)["step"] == 8
    assert main(["train", *args, "--epochs", "1", "--max-steps", "5", "--out", str(tmp_path / "one")]) == 0
    assert torch.load(tmp_path / "one" / "training_state.pt", weights_only=True)["step"] == 3
    assert "training stops after 1 epoch, 3 batches (--epochs; --max-steps is 5)" in capsys.readouterr().err


def test_help_and_version_go_to_stdout_and_an_unknown_command_is_an_error_line(capsys):
    assert main(["--help"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: pixelmodels {train,") and err == ""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pixelmodels {pixelmodels.__version__}"
    assert pixelmodels.__version__[0].isdigit()
    assert main(["trian"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines()[-1].startswith("pixelmodels: error: unknown command 'trian'; expected one of")


def test_a_library_warning_prints_as_one_line(capsys, monkeypatch):
    import warnings

    from pixelmodels.app import cli

    def warn(argv):
        warnings.warn("--precision bf16: told so by the test")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "train", (warn, "stands in for train"))
    assert main(["train"]) == 0
    assert capsys.readouterr().err == "pixelmodels: warning: --precision bf16: told so by the test\n"
