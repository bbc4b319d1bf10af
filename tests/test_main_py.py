"""main.py, the original pixel_models command line, on tiny data in the real formats.

Runs happen in tmp_path (the current directory), so results/MODEL/TIMESTAMP/ lands there, as the
original wrote it. Also: gated-pixelcnn's weight_norm option (what --norm_layer True maps to) is
causal and its cached sampler matches the full pass.
"""

import itertools
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import pixelmodels
from pixelmodels.imageio import make_grid
from pixelmodels.app.samples import sample_grid

from cachecheck import assert_cache_matches_full_pass, perturbed
from formats import write_mnist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from main import main  # noqa: E402  (main.py sits at the repository root)

PIXELCNN = ["pixelcnn", "--n_channels", "4", "--n_out_conv_channels", "8", "--n_res_layers", "1",
            "--kernel_size", "3", "--norm_layer", "False"]
QUICK = ["--mini_data", "--batch_size", "4", "--log_interval", "1"]


@pytest.fixture
def mnist(tmp_path, monkeypatch):
    folder = tmp_path / "mnist-data"
    write_mnist(folder, "train", n=12, seed=1)
    write_mnist(folder, "test", n=5, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    return folder


def runs(model):
    return sorted(p for p in (Path("results") / model).glob("*") if p.is_dir()) if Path("results").exists() else []


def new_run(model, argv, capsys=None):
    """Run main.py and return the one results directory it created."""
    before = set(runs(model))
    assert main(argv) == 0
    (created,) = set(runs(model)) - before
    return created


def state(run):
    return torch.load(run / "training_state.pt", weights_only=True)


def test_train_writes_the_original_layout_with_the_original_defaults(mnist, capsys):
    run = new_run("pixelcnn", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                               "--n_samples", "2", *PIXELCNN])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run.name) and run.parent == Path("results/pixelcnn")
    for name in ["config.json", "model.safetensors", "training_state.pt", "generation_sample_step_1.png",
                 "command.txt", "metrics.jsonl"]:
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    out = capsys.readouterr()
    assert "Evaluate bits per dim:" in out.out and "warning" not in out.err
    cfg = json.loads((run / "config.json").read_text())
    model, train = cfg["model"], cfg["train"]
    assert model["name"] == "gated-pixelcnn" and model["n_bits"] == 4 and model["n_classes"] is None
    assert {k: model["options"][k] for k in ["n_channels", "n_out_channels", "n_layers", "kernel_size",
                                             "input_kernel_size", "likelihood", "weight_norm"]} == dict(
        n_channels=4, n_out_channels=8, n_layers=2, kernel_size=3, input_kernel_size=7,
        likelihood="categorical", weight_norm=False)
    # the original's pixelcnn: RMSprop, lr 5e-4, no decay; polyak 0.9995; batch 16 unless given
    assert (train["optimizer"], train["lr"], train["lr_decay"], train["ema"]) == ("rmsprop", 5e-4, 1.0, 0.9995)
    assert (train["epochs"], train["batch_size"], train["seed"], train["device"]) == (1, 4, 0, "cpu")
    assert (train["eval_every"], train["log_every"]) == (10, 1)
    assert state(run)["step"] == 1  # --mini_data: one batch of training images
    assert Image.open(run / "generation_sample_step_1.png").size == ((2 * 30 + 2) * 2, 32 * 2)  # one row of 2
    assert (run / "command.txt").read_text().startswith("python main.py --train --dataset mnist")


def test_restore_continues_exactly_where_the_run_stopped(mnist):
    common = ["--dataset", "mnist", "--data_path", str(mnist), *QUICK, "--n_samples", "0"]
    straight = new_run("pixelcnn", ["--train", *common, "--n_epochs", "3", *PIXELCNN])
    split = new_run("pixelcnn", ["--train", *common, *PIXELCNN])
    assert state(split)["step"] == 1
    # --n_epochs more epochs, in the directory of the restored file; model flags come from its config
    assert main(["--train", "--restore_file", str(split / "training_state.pt"), *QUICK, "--n_samples", "1",
                 "--n_epochs", "2", "pixelcnn"]) == 0
    assert runs("pixelcnn") == sorted([straight, split])  # no new directory
    a, b = state(straight), state(split)
    assert (b["step"], b["epoch"]) == (3, 3)
    for part in ["model", "ema"]:
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name}"
    assert (split / "generation_sample_step_3.png").is_file()
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()
             if "train_bpd" in line]
    assert steps == [1, 2, 3]


def test_evaluate_and_generate_from_a_restored_run(mnist, capsys):
    run = new_run("pixelcnn", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                               "--n_samples", "0", "--n_epochs", "2", *PIXELCNN])
    capsys.readouterr()
    assert main(["--evaluate", "--restore_file", str(run / "model.safetensors"), "pixelcnn"]) == 0
    model = pixelmodels.load(run)
    test = pixelmodels.load_dataset("mnist", "test", root=mnist, n_bits=4)
    with torch.no_grad():
        direct = model.bits_per_dim(test.images).mean().item()
    result = json.loads((run / "evaluation_test.json").read_text())
    assert result["bits_per_dim"] == pytest.approx(direct, rel=1e-6)
    assert (result["n_images"], result["step"]) == (5, 2)
    assert f"Evaluate bits per dim: {direct:.3f}" in capsys.readouterr().out

    assert main(["--evaluate", "--mini_data", "--batch_size", "3", "--restore_file", str(run / "config.json"),
                 "pixelcnn"]) == 0  # the original's quick check: the first training batch
    train = pixelmodels.load_dataset("mnist", "train", root=mnist, n_bits=4)
    with torch.no_grad():
        direct = model.bits_per_dim(train.images[:3]).mean().item()
    assert json.loads((run / "evaluation_test.json").read_text())["bits_per_dim"] == pytest.approx(direct, rel=1e-6)

    assert main(["--generate", "--n_samples", "3", "--seed", "4", "--restore_file", str(run), "pixelcnn"]) == 0
    png = np.asarray(Image.open(run / "generation_sample_step_2.png"))
    images, _ = sample_grid(model, 3, 4)
    expected = make_grid(images, 4, 3)[..., 0]  # one row of 3, from the run's seed and EMA weights
    assert np.array_equal(png[::2, ::2], expected)
    assert runs("pixelcnn") == [run]


def test_evaluate_and_generate_without_training_keep_a_restorable_run(mnist):
    run = new_run("pixelcnn", ["--evaluate", "--generate", "--dataset", "mnist", "--data_path", str(mnist),
                               *QUICK, "--n_samples", "1", *PIXELCNN])
    assert state(run)["step"] == 0 and (run / "generation_sample_step_0.png").is_file()
    assert main(["--train", "--restore_file", str(run / "training_state.pt"), *QUICK, "--n_samples", "0",
                 "pixelcnn"]) == 0
    assert state(run)["step"] == 1


def test_class_conditional_runs_sample_one_row_per_class(mnist):
    run = new_run("pixelcnn", ["--train", "--dataset", "mnist", "--data_path", str(mnist), "--n_cond_classes",
                               "10", *QUICK, "--n_samples", "1", *PIXELCNN])
    assert pixelmodels.load(run).n_classes == 10
    assert Image.open(run / "generation_sample_step_1.png").size == (32 * 2, (10 * 30 + 2) * 2)


def test_norm_layer_true_warns_and_uses_weight_norm(mnist, capsys):
    flags = [f for f in PIXELCNN if f not in ("--norm_layer", "False")]
    run = new_run("pixelcnn", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                               "--n_samples", "0", *flags, "--norm_layer", "True"])
    err = capsys.readouterr().err
    assert "per-batch normalization" in err and "causality" in err and "weight normalization" in err
    model = pixelmodels.load(run)
    assert model.options.weight_norm
    assert any("parametrizations.weight.original0" in k for k in load_file(run / "model.safetensors"))


def test_pixelcnnpp_and_pixelsnail_flags_map_onto_their_options(mnist):
    run = new_run("pixelcnnpp", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                                 "--n_samples", "0", "--n_bits", "3", "--lr", "1e-3", "pixelcnnpp", "--n_channels",
                                 "4", "--n_res_layers", "1", "--n_logistic_mix", "2"])
    cfg = json.loads((run / "config.json").read_text())
    assert {k: cfg["model"]["options"][k] for k in ["n_filters", "n_blocks", "n_mixtures", "likelihood"]} == dict(
        n_filters=4, n_blocks=1, n_mixtures=2, likelihood="logistic-mixture")
    assert cfg["model"]["n_bits"] == 3
    t = cfg["train"]
    assert (t["optimizer"], t["adam_betas"], t["lr"], t["lr_decay"]) == ("adam", [0.95, 0.9995], 1e-3, 0.999995)

    run = new_run("pixelsnail", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                                 "--n_samples", "1", "--lr_decay", "0.99", "pixelsnail", "--n_channels", "4",
                                 "--n_res_layers", "1", "--attn_n_layers", "1", "--attn_nh", "2", "--attn_dq", "4",
                                 "--attn_dv", "6", "--attn_drop_rate", "0.1", "--n_logistic_mix", "2"])
    cfg = json.loads((run / "config.json").read_text())
    keys = ["n_filters", "n_res_layers", "n_blocks", "n_heads", "key_size", "value_size", "attn_dropout",
            "n_mixtures"]
    assert {k: cfg["model"]["options"][k] for k in keys} == dict(
        n_filters=4, n_res_layers=1, n_blocks=1, n_heads=2, key_size=2, value_size=3, attn_dropout=0.1,
        n_mixtures=2)  # the original's attn_dq / attn_dv are over all heads, ours per head
    assert cfg["train"]["lr_decay"] == 0.99 and (run / "generation_sample_step_1.png").is_file()


def test_colored_mnist_from_the_pickle_path_defaults_to_its_two_bits(mnist, tmp_path, capsys):
    rng = np.random.default_rng(0)
    pkl = tmp_path / "mnist_colored.pkl"
    pkl.write_bytes(pickle.dumps({"train": rng.integers(0, 4, (6, 28, 28, 3), dtype=np.uint8),
                                  "test": rng.integers(0, 4, (3, 28, 28, 3), dtype=np.uint8)}))
    base = ["--train", "--dataset", "colored-mnist", "--data_path", str(pkl), *QUICK, "--n_samples", "0"]
    run = new_run("pixelcnn", base + PIXELCNN)
    model = pixelmodels.load(run)
    assert model.n_bits == 2 and model.image_shape == (3, 28, 28)
    assert main(base + ["--n_bits", "4", *PIXELCNN]) == 2
    assert "--n_bits: colored-mnist has 2 bits per sub-pixel; found 4" in capsys.readouterr().err
    assert main(base + ["--n_cond_classes", "10", *PIXELCNN]) == 2
    assert "--n_cond_classes: colored-mnist has no class labels" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--train", "--dataset", "mnist", "--n_bits", "x", *PIXELCNN], "argument --n_bits: expected an integer"),
    (["--train", "--dataset", "mnist", "pixelrnn"], "invalid choice: 'pixelrnn'"),
    (["--train", "--dataset", "mnist", *PIXELCNN, "--lr", "1e-3"], "unrecognized arguments: --lr"),
    (["--train", "--dataset", "mnist", "pixelcnn", "--norm_layer", "maybe"], "expected True or False"),
    (["--dataset", "mnist", *PIXELCNN], "nothing to do"),
    (["--train", *PIXELCNN], "main.py: error: --dataset: required"),
    (["--train", "--dataset", "mnist", "--n_cond_classes", "5", *PIXELCNN], "mnist has 10 classes; found 5"),
    (["--train", "--dataset", "mnist", "pixelcnn", "--kernel_size", "4"], "--kernel_size: expected an odd"),
    (["--train", "--dataset", "mnist", "pixelsnail", "--attn_nh", "3"], "--attn_dq: the features of all heads"),
    (["--train", "--dataset", "mnist", "--polyak", "1", *PIXELCNN], "--polyak: expected a decay"),
    (["--train", "--restore_file", "results/pixelcnn/nope/training_state.pt", *PIXELCNN], "nope"),
])
def test_bad_input_is_one_line_and_exit_2(mnist, capsys, argv, message):
    if "--restore_file" not in argv:
        argv = ["--data_path", str(mnist), *argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("results").exists()


def test_restore_refuses_a_run_of_another_model_or_other_options(mnist, capsys):
    run = new_run("pixelcnn", ["--train", "--dataset", "mnist", "--data_path", str(mnist), *QUICK,
                               "--n_samples", "0", *PIXELCNN])
    before = (run / "training_state.pt").read_bytes()
    for argv, message in [
        (["pixelcnnpp"], "holds a gated-pixelcnn run; found pixelcnnpp"),
        (["pixelcnn", "--n_res_layers", "3"], "--n_res_layers: the run in"),
        (["--dataset", "cifar10", "pixelcnn"], "was trained on mnist; found cifar10"),
        (["--n_bits", "5", "pixelcnn"], "models 4-bit images; found 5"),
    ]:
        assert main(["--train", "--restore_file", str(run / "training_state.pt"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert (run / "training_state.pt").read_bytes() == before
    assert main(["--train", "--restore_file", str(run / "training_state.pt"), *QUICK, *PIXELCNN]) == 0  # same: ok


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no CUDA")
def test_cuda_without_a_gpu_names_the_flag(mnist, capsys):
    assert main(["--train", "--dataset", "mnist", "--data_path", str(mnist), "--cuda", "0", *PIXELCNN]) == 2
    assert "--cuda 0: no CUDA device is available here" in capsys.readouterr().err


def test_the_script_runs_as_a_program(tmp_path):
    bad = subprocess.run([sys.executable, str(ROOT / "main.py"), "--train", "--dataset", "mnist", "pixelcnn",
                          "--norm_layer", "maybe"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "main.py pixelcnn: error: argument --norm_layer: expected True or False" in bad.stderr
    helped = subprocess.run([sys.executable, str(ROOT / "main.py"), "pixelsnail", "--help"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--attn_dq" in helped.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("c,n_classes,train", list(itertools.product([1, 3], [None, 4], [True, False])))
def test_weight_normed_gated_pixelcnn_is_causal(c, n_classes, train):
    h = w = 6
    model = perturbed("gated-pixelcnn", c, n_classes, (h, w), weight_norm=True).double().train(train)
    assert any("parametrizations" in name for name, _ in model.named_parameters())
    x = torch.randint(0, 8, (2, c, h, w))
    y = torch.tensor([0, 3]) if n_classes else None
    groups = model.head.param_groups()
    for i, j, ch in itertools.product(range(h), range(w), range(c)):
        xs = model.embed(x).requires_grad_(True)
        (grad,) = torch.autograd.grad(model.network(xs, model.condition(y))[1, groups == ch, i, j].sum(), xs)
        allowed = torch.zeros(c, h, w, dtype=torch.bool)
        allowed[:, :i] = True
        allowed[:, i, :j] = True
        allowed[:ch, i, j] = True
        assert grad[0].abs().max() == 0, "image 1 depends on image 0"
        assert (grad[1].abs() * ~allowed).max() == 0, f"params of ({ch}, {i}, {j}) see the future"


def test_weight_normed_gated_pixelcnn_cache_matches_the_full_pass():
    model = perturbed("gated-pixelcnn", 3, 4, (5, 5), weight_norm=True).double()
    final = torch.randint(0, 8, (2, 3, 5, 5))
    assert_cache_matches_full_pass(model, torch.tensor([1, 2]), final)
