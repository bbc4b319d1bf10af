"""Options that check themselves: every numeric flag and model option has one declaration
(``pixelmodels.settings.setting``) that gives its help, its range and its check, for the CLI, ``create_model``
and a run's ``config.json`` alike.

The property test runs over every numeric flag of every command, enumerated from the settings
dataclasses the commands derive their flags from (and every registered model's options for
``train``), so a new flag is covered the day it is declared."""

import contextlib
import dataclasses
import io
import json
import math
import shutil
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pixelmodels
from pixelmodels.app import cli, flags
from pixelmodels.app.cli import main, train_parser
from pixelmodels.config import RunConfig, TrainConfig
from pixelmodels.errors import PixelModelsError
from pixelmodels.models.registry import create_model, get_spec, list_models
from pixelmodels.settings import field_types, flag_name

from formats import write_mnist


def numeric(cls):
    """(field, element type) of every int / float / numeric-tuple field of settings dataclass ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        base, _ = field_types(cls)[f.name]
        element = typing.get_args(base)[0] if typing.get_origin(base) is tuple else base
        if element in (int, float):
            out.append((f, element, typing.get_origin(base) is tuple))
    return out


def all_flags():
    """(command, model for train or None, field, element type, is a tuple) for every numeric flag."""
    flags = []
    for command, classes in cli.SETTINGS.items():
        for cls in classes:
            flags += [(command, None, *entry) for entry in numeric(cls)]
    for model in list_models():
        flags += [("train", model, *entry) for entry in numeric(get_spec(model).options)]
    return flags


FLAGS = all_flags()


def test_every_numeric_flag_of_train_is_declared():
    """No numeric flag reaches a parser without a declaration (it would escape the property test)."""
    for model in list_models():
        parsed = {a.option_strings[0] for a in train_parser(model)._actions
                  if a.type in (flags.PARSE[int], flags.PARSE[float])}
        declared = {flag_name(f) for command, m, f, *_ in FLAGS if command == "train" and m in (None, model)}
        assert parsed == declared, model
    assert len(FLAGS) >= 60


def inside(f, element, value) -> bool:
    """Whether ``value`` is in ``f``'s declared range, computed here from the declaration's bounds."""
    c = f.metadata["check"]
    if element is int:
        if not isinstance(value, int):
            return False  # "nan", "inf", "1e+300" are not integers on the command line
        return ((c.ge is None or value >= c.ge) and (c.le is None or value <= c.le)
                and (not c.odd or value % 2 == 1) and (c.choices is None or value in c.choices))
    return (math.isfinite(value) and (c.ge is None or value >= c.ge) and (c.gt is None or value > c.gt)
            and (c.le is None or value <= c.le) and (c.lt is None or value < c.lt))


BAD = st.one_of(
    st.sampled_from([0, -1, -5, math.nan, math.inf, -math.inf, 10**12, 2**63, 10**30, 1e300, -1e300, 0.0]),
    st.integers(max_value=-1),
    st.integers(min_value=10**10),
    st.floats(min_value=1e10, allow_infinity=True),
    st.floats(max_value=-1e-3, allow_infinity=True),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny real run directory, its data, and an empty working directory, offline."""
    root = tmp_path_factory.mktemp("options")
    data, run, cwd = root / "fmnist", root / "run", root / "cwd"
    write_mnist(data, "train", n=8, seed=1)
    write_mnist(data, "test", n=4, seed=2)
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
        mp.setenv("PIXELMODELS_DATA", str(root / "cache"))
        mp.chdir(cwd)
        assert main(["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                     "--data-dir", str(data), "--batch-size", "4", "--n-samples", "0", "--no-progress",
                     "--max-steps", "1", "--eval-limit", "4", "--out", str(run)]) == 0
        yield dict(data=data, run=run, cwd=cwd, root=root)


def listing(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def run_cli(argv):
    """(exit code, stderr) of ``main(argv)``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def argv_for(command, model, world, flag, values):
    if command == "train":
        out = world["root"] / "new-run"
        return ["train", "--model", model or "pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                "--data-dir", str(world["data"]), "--out", str(out), "--no-progress", flag, *values]
    out = ["-o", str(world["root"] / "out.pmc")] if command == "compress" else []  # a flag compress needs
    return [command, str(world["run"]), *out, flag, *values]  # default outputs land in the run directory


@pytest.mark.parametrize("command,model,f,element,pair", FLAGS,
                         ids=[f"{c}-{m or ''}{flag_name(f)}" for c, m, f, *_ in FLAGS])
@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.filter_too_much])
@given(value=BAD)
def test_a_value_outside_the_declared_range_is_one_line_exit_2_nothing_written(world, command, model, f, element,
                                                                              pair, value):
    if inside(f, element, value):
        return  # in range: not this test's business (e.g. --class -1 is checked against the model)
    flag = flag_name(f)
    text = str(value) if isinstance(value, int) else repr(value)
    before_run, before_root = listing(world["run"]), sorted(p.name for p in world["root"].iterdir())
    code, err = run_cli(argv_for(command, model, world, flag, ["0.9", text] if pair else [text]))
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"pixelmodels {command}: error: {flag}: expected "), err
    assert listing(world["run"]) == before_run
    assert sorted(p.name for p in world["root"].iterdir()) == before_root
    assert not any(world["cwd"].iterdir())


@pytest.mark.parametrize("argv,words", [
    (["generate", "{run}", "--class", "-1"], "--class: this model is not conditional"),
    (["score", "{run}", "--label", "-3"], "--label: this model is not conditional"),
    (["evaluate", "{run}", "--limit", "-5"], "--limit: expected at least 1, found -5"),
    (["evaluate", "{run}", "--batch-size", "abc"], "--batch-size: expected an integer, found 'abc'"),
    (["evaluate", "{run}", "--limit", "nan"], "--limit: expected an integer, found 'nan'"),
    (["complete", "{run}", "--rows", "29", "--n", "1"], "--rows: expected 0 to 28, found 29"),
    (["train", "--resume", "{run}", "--lr", "-1e-3"], "--lr: expected a learning rate in (0, 10], found -0.001"),
    (["train", "--resume", "{run}", "--eval-every", "0"], "--eval-every: expected at least 1, found 0"),
])
def test_values_checked_against_the_model_or_by_type_are_one_line_too(world, argv, words):
    before = listing(world["run"])
    code, err = run_cli([a.format(run=world["run"]) for a in argv])
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert listing(world["run"]) == before


def test_edge_values_in_range_work():
    for name in list_models():
        spec = get_spec(name)
        low = {f.name: f.metadata["check"].ge for f, element, _ in numeric(spec.options)
               if f.metadata["check"].ge is not None}  # every size at its smallest, dropout 0
        model = create_model(name, image_shape=(1, 8, 8), n_bits=1, n_classes=1, preset="tiny", **low)
        x = torch.randint(0, 2, (2, 1, 8, 8))
        with torch.no_grad():
            assert torch.isfinite(model.log_prob(x, torch.zeros(2, dtype=torch.long))).all(), name
    assert create_model("pixelcnn", image_shape=(1, 8, 8), n_channels=1, preset="tiny").options.n_channels == 1
    t = TrainConfig(epochs=0, lr=10, lr_decay=1, ema=0, adam_betas=[0, 0.999], n_samples=0, grad_clip=0, seed=0)
    assert t.adam_betas == (0.0, 0.999) and isinstance(t.lr, float)


def test_create_model_refuses_a_bad_option_in_one_line():
    with pytest.raises(PixelModelsError, match=r"^--n-channels: expected at least 1, found 0 \(allowed: 1 to \d+\)$"):
        create_model("pixelcnn", image_shape=(1, 8, 8), n_channels=0)
    with pytest.raises(PixelModelsError, match=r"^--dropout: expected a probability in \[0, 1\), found nan$"):
        create_model("pixelcnnpp", image_shape=(1, 8, 8), dropout=math.nan)
    with pytest.raises(PixelModelsError, match=r"^--kernel-size: expected an odd integer, found 4"):
        create_model("gated-pixelcnn", image_shape=(1, 8, 8), kernel_size=4)
    with pytest.raises(PixelModelsError, match=r"^--n-layers: expected an integer \(1 to \d+\), found True$"):
        create_model("row-lstm", image_shape=(1, 8, 8), n_layers=True)
    with pytest.raises(PixelModelsError, match=r"^--n-bits: expected an integer from 1 to 8, found 0$"):
        create_model("pixelcnn", image_shape=(1, 8, 8), n_bits=0)


@pytest.mark.parametrize("section,key,value,words", [
    ("model", "n_bits", 9, "model.n_bits: expected an integer from 1 to 8, found 9"),
    ("options", "n_channels", 0, "model.options.n_channels: expected at least 1, found 0"),
    ("train", "lr", -1.0, "train.lr: expected a learning rate in (0, 10], found -1.0"),
    ("data", "image_size", 10**9, "data.image_size: expected at most"),
])
def test_a_bad_value_in_config_json_names_the_file_and_the_field(world, tmp_path, section, key, value, words):
    copy = tmp_path / "run"
    shutil.copytree(world["run"], copy)
    path = copy / "config.json"
    config = json.loads(path.read_text())
    (config["model"]["options"] if section == "options" else config[section])[key] = value
    path.write_text(json.dumps(config))
    before = listing(copy)
    if section in ("model", "options"):
        with pytest.raises(PixelModelsError) as e:
            pixelmodels.load(copy)
        assert str(e.value).startswith(f"{path}: {words}") and len(str(e.value).splitlines()) == 1
    with pytest.raises(PixelModelsError) as e:
        RunConfig.from_dict(json.loads(path.read_text()), path) if section != "options" else pixelmodels.load(copy)
    assert str(e.value).startswith(f"{path}: {words}")
    code, err = run_cli(["train", "--resume", str(copy), "--max-steps", "2", "--no-progress"])
    assert code == 2 and len(err.splitlines()) == 1 and f"{path}: {words}" in err, err
    assert listing(copy) == before
