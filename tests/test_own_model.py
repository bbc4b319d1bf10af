"""A model of the user's own (examples/own_model.py, docs/own_model.md): registered, trained through the library
and the CLI, sampled, saved, loaded back by the CLI given ``--import`` (and only then), and checked causal; the
registry refuses what it cannot build. Every model registered here is removed again, so the tests that run over
the registry see the built-in families only."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import pixelmodels
from pixelmodels import AutoregressiveModel, ModelOptions, PixelModelsError, register_model, setting
from pixelmodels.app.cli import main
from pixelmodels.models import REGISTRY, import_models

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model.py"
NAME = "own-pixelcnn"
SIZE = 8


@pytest.fixture(scope="module")
def own():
    """The example imported as the CLI imports it (a .py file), and its main run on tiny sizes."""
    assert NAME not in REGISTRY
    import_models([str(EXAMPLE)])
    yield sys.modules["own_model"]
    REGISTRY.pop(NAME, None)
    sys.modules.pop("own_model", None)


@pytest.fixture(scope="module")
def result(own, tmp_path_factory):
    out = tmp_path_factory.mktemp("own")
    return own.main(["--out", str(out), "--steps", "30", "--size", str(SIZE), "--preset", "tiny"])


@pytest.fixture
def unregistered(monkeypatch):
    """Forgets the example's model and module, as a new process has neither (put back after the test)."""
    monkeypatch.setitem(REGISTRY, NAME, REGISTRY[NAME])
    monkeypatch.setitem(sys.modules, "own_model", sys.modules["own_model"])

    def forget():
        REGISTRY.pop(NAME, None)
        sys.modules.pop("own_model", None)

    forget()
    return forget


def test_the_example_trains_samples_saves_and_is_causal(result):
    before, after = result["before"], result["after"]
    assert np.isfinite(after) and 0 < after < before - 0.05, (before, after)
    samples = result["samples"]
    assert samples.dtype == torch.uint8 and samples.shape == (8, 3, SIZE, SIZE) and int(samples.max()) <= 3
    assert result["report"].ok and result["report"].n_outputs == 3 * SIZE * SIZE
    model = pixelmodels.load(result["run"])
    assert type(model).__name__ == "OwnPixelCNN" and model.config.name == NAME and model.cache_class is None
    assert model.options.n_features == 12 and model.config.preset == "tiny"


def test_a_model_without_a_cache_samples_through_the_reference_path(result):
    model = pixelmodels.load(result["run"])
    x = torch.randint(0, 4, (3, 3, SIZE, SIZE))
    cache, full = model.sampling_cache(3), model(x)
    for i, j in [(0, 0), (3, 5), (SIZE - 1, SIZE - 1)]:  # receptive_rows: only the rows that reach row i
        assert torch.allclose(cache.step(x, i, j), full[:, :, i, j], atol=1e-5)
    cached = pixelmodels.sample(model, 4, generator=torch.Generator().manual_seed(1))
    reference = pixelmodels.sample(model, 4, generator=torch.Generator().manual_seed(1), cached=False)
    assert torch.equal(cached, reference)
    data = pixelmodels.compress(model, cached)
    assert torch.equal(pixelmodels.decompress(model, data), cached)


def test_the_cli_loads_the_run_only_given_the_module(result, tmp_path, capsys, unregistered, monkeypatch):
    run = str(result["run"])
    assert main(["check", run]) == 2
    assert capsys.readouterr().err == (
        f"pixelmodels check: error: {run}/config.json: --model: unknown model '{NAME}'; expected one of "
        f"{pixelmodels.list_models()}; a model of your own: pass --import MODULE (the module that calls "
        "register_model)\n")
    assert main(["check", run, "--import", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("causal: no output depends on an input it must not (192 outputs")
    unregistered()
    out = tmp_path / "samples.png"
    monkeypatch.setenv("PIXELMODELS_IMPORT", f"json, {EXAMPLE}")  # a comma-separated list
    assert main(["generate", run, "--n", "3", "--out", str(out)]) == 0
    images = np.load(out.with_suffix(".npz"))["images"]
    assert images.shape == (3, SIZE, SIZE, 3) and images.max() <= 3


def test_the_cli_trains_it_with_its_own_flags(result, tmp_path, capsys, unregistered):
    data, out = result["run"].parent / "data", tmp_path / "cli"
    assert main(["train", "--import", str(EXAMPLE), "--model", NAME, "--preset", "tiny", "--n-layers", "2",
                 "--dataset", "arrays", "--data-dir", str(data), "--n-bits", "2", "--batch-size", "8",
                 "--max-steps", "2", "--n-samples", "4", "--eval-limit", "8", "--no-progress", "--out", str(out)]) == 0
    model = pixelmodels.load(out)
    assert model.config.name == NAME and model.options.n_layers == 2 and model.options.n_features == 12
    assert main(["train", f"--import={EXAMPLE}", "--model", NAME, "--n-layers", "99", "--dataset", "arrays",
                 "--data-dir", str(data), "--out", str(tmp_path / "bad")]) == 2
    assert "--n-layers: expected at most 64, found 99" in capsys.readouterr().err


def test_a_fresh_process_imports_a_module_from_the_current_directory(result):
    script = Path(sys.executable).with_name("pixelmodels")  # the console script: the current directory is not
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pixelmodels"]  # on sys.path itself
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "check", str(result["run"]), "--positions", "4", "--import", "own_model"],
                          cwd=EXAMPLE.parent, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("causal: no output depends on an input it must not (4 of 64 positions")


@pytest.mark.parametrize("modules,message", [
    (["no_such_module_here"], "--import: no module named 'no_such_module_here' in the current directory ("),
    (["a b"], "--import: expected a module name (own_model, package.module) or a .py file, found 'a b'"),
    ([""], "--import: expected a module name"),
    (["missing.py"], "--import: missing.py: no such file"),
])
def test_a_module_that_cannot_be_imported_is_a_clear_error(modules, message):
    with pytest.raises(PixelModelsError) as e:
        import_models(modules)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_module_that_fails_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys):
    broken = tmp_path / "broken_model.py"
    broken.write_text("import no_such_dependency_xyz\n")
    assert main(["check", "x", "--import", str(broken)]) == 2
    assert capsys.readouterr().err == ("pixelmodels check: error: --import: importing " + str(broken) + " failed: "
                                       "ModuleNotFoundError: No module named 'no_such_dependency_xyz'\n")
    assert "broken_model" not in sys.modules
    shadow = tmp_path / "json.py"  # a file named as a module already imported never replaces it
    shadow.write_text("")
    with pytest.raises(PixelModelsError, match=r"--import: .*json.py: a module named 'json' is already imported "
                       r"\(from .*json.*\); rename the file"):
        import_models([str(shadow)])
    assert sys.modules["json"].__file__ != str(shadow)


@dataclass
class TinyOptions(ModelOptions):
    n_features: int = setting(8, "features", ge=1, le=64)


class Tiny(AutoregressiveModel):
    pass


@pytest.mark.parametrize("args,message", [
    (("pixelcnn", Tiny), "register_model: 'pixelcnn' is already the name of pixelmodels.models.pixelcnn.PixelCNN; "
                         "choose another name"),
    (("my model", Tiny), "register_model: expected a name without spaces, ':' or '/', found 'my model'"),
    (("mine", torch.nn.Conv2d), "register_model: mine: expected a subclass of AutoregressiveModel, found"),
    (("mine", Tiny, type("Plain", (ModelOptions,), {})), "register_model: mine: expected options, a @dataclass "
                                                         "subclass of ModelOptions, found"),
    (("mine", Tiny, TinyOptions, {"big": dict(n_layers=3)}), "register_model: mine: preset 'big': expected a dict "
                                                             "of some of ['data_init', 'likelihood', "),
    (("mine", Tiny, TinyOptions, {"big": dict(n_features=100)}), "register_model: mine: preset 'big': --n-features: "
                                                                 "expected at most 64, found 100"),
    (("mine", Tiny, TinyOptions, None, None, dict(lr=1e-3, momentum=0.9)), "register_model: mine: train_defaults: "
                                                                           "expected a dict of some of ['adam_betas'"),
])
def test_the_registry_refuses_what_it_cannot_build(args, message):
    names = pixelmodels.list_models()
    with pytest.raises(PixelModelsError) as e:
        register_model(*args)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    assert pixelmodels.list_models() == names


def test_the_registry_takes_a_model_with_the_shared_options_and_fills_the_defaults(monkeypatch):
    monkeypatch.setattr(pixelmodels.models.registry, "REGISTRY", dict(REGISTRY))
    register_model("mine", Tiny, train_defaults=dict(lr=1e-3))
    register_model("mine", Tiny, TinyOptions, {"big": dict(n_features=16)})  # the same class again: replaced
    spec = pixelmodels.models.registry.get_spec("mine")
    assert spec.options is TinyOptions and spec.presets == {"default": {}, "big": {"n_features": 16}}
    assert spec.train_defaults == pixelmodels.models.registry.TRAIN_DEFAULTS
    script = type("Tiny", (Tiny,), {"__module__": "__main__"})  # the module run as a script, imported again
    register_model("mine", script)
    assert pixelmodels.models.registry.get_spec("mine").cls is script
    assert "mine" not in REGISTRY  # the module's own dict was replaced for this test
