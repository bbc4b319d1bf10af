"""The model shipped in the package: it loads, and scores the Fashion-MNIST test set as the README says."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.app.cli import main
from pixelmodels.checkpoint import read_model_dir
from pixelmodels.pretrained import METADATA, pretrained_path
from pixelmodels.vqvae import has_vqvae, load_vqvae

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def meta():
    return json.loads((pretrained_path("fashion-mnist") / METADATA).read_text())


@pytest.fixture(scope="module")
def test_set():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELMODELS_NO_DOWNLOAD", "1")  # a test does not download 30 MB
        try:
            return pixelmodels.load_dataset("fashion-mnist", "test")
        except pixelmodels.DatasetError as e:
            pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): {e}")


def test_shipped_model_loads_and_is_described(meta):
    assert "fashion-mnist" in pixelmodels.list_pretrained()
    model = pixelmodels.load_pretrained("fashion-mnist")
    assert not model.training and model.config.name == "pixelcnnpp"
    assert model.image_shape == (1, 28, 28) and model.n_bits == 8 and model.n_classes == 10
    assert model.n_parameters() == meta["parameters"]
    folder = pretrained_path("fashion-mnist")
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5 * 2**20
    readme = README.read_text()
    assert meta["train_command"] in readme and f"{meta['test_bits_per_dim']:.4f}" in readme
    curve = "docs/pretrained/fashion-mnist-curve.png"
    assert (README.parent / curve).is_file() and f"]({curve})" in readme


def test_the_default_is_the_flagship_and_the_previous_default_stays_loadable(meta):
    assert meta["test_bits_per_dim"] <= 2.85  # the flagship's goal, on all 10,000 test images
    image_models = [n for n in pixelmodels.list_pretrained()  # the class-conditional ones: the zoo, the old default
                    if n != "fashion-mnist" and not has_vqvae(pretrained_path(n))
                    and read_model_dir(pretrained_path(n))[0].n_classes]
    assert len(image_models) >= 7
    assert all(meta["test_bits_per_dim"] < pixelmodels.pretrained_info(n)["test_bits_per_dim"] for n in image_models)
    old = pixelmodels.load_pretrained("fashion-mnist-gated-small-v1")
    assert old.config.name == "gated-pixelcnn" and old.n_parameters() == 219_872
    assert pixelmodels.pretrained_info("fashion-mnist-gated-small-v1")["test_bits_per_dim"] == 2.9941


def test_shipped_model_scores_as_its_metadata_says(meta, test_set):
    # pixelmodels.score, per image, against the metadata's figure that evaluate (per batch) measured
    model = pixelmodels.load_pretrained("fashion-mnist")
    scores = pixelmodels.score(model, test_set.images[:200], test_set.labels[:200], batch_size=100)
    assert scores.bits_per_dim.double().mean().item() == pytest.approx(meta["first_200_test_bits_per_dim"], abs=1e-3)


def test_cli_uses_the_shipped_model(tmp_path, test_set, capsys):
    image = tmp_path / "coat.png"
    Image.fromarray(test_set.images[0, 0].numpy()).save(image)
    label = int(test_set.labels[0])
    out = tmp_path / "scores.csv"
    assert main(["score", "--pretrained", "fashion-mnist", str(image), "--label", str(label),
                 "--out", str(out)]) == 0
    row = out.read_text().splitlines()[1].split(",")
    model = pixelmodels.load_pretrained("fashion-mnist")
    with torch.no_grad():
        direct = model.bits_per_dim(test_set.images[:1], label).item()
    assert float(row[3]) == pytest.approx(direct, rel=1e-5)

    png = tmp_path / "sneakers.png"
    assert main(["generate", "--pretrained", "fashion-mnist", "--n", "2", "--class", "7", "--out", str(png)]) == 0
    samples = np.load(png.with_suffix(".npz"))
    assert samples["images"].shape == (2, 28, 28, 1) and samples["labels"].tolist() == [7, 7]


@pytest.mark.parametrize("name", pixelmodels.list_pretrained())
def test_every_shipped_model_scores_its_first_200_test_images_as_its_metadata_says(name, test_set):
    info = pixelmodels.pretrained_info(name)
    model = pixelmodels.load_pretrained(name)
    config = json.loads((pretrained_path(name) / "config.json").read_text())["model"]
    assert model.config.name == config["name"] and model.n_parameters() == info["parameters"]
    assert info["images_seen"] >= info["steps"] and f"--max-steps {info['steps']}" in info["train_command"]
    data = pixelmodels.load_dataset(info["dataset"], "test", n_bits=model.n_bits)
    if has_vqvae(pretrained_path(name)):  # a prior over codes: the images through its shipped VQ-VAE's encoder
        codes = load_vqvae(pretrained_path(name)).encode_images(data.images[:200])[:, None]
        with torch.no_grad():
            bpd = model.bits_per_dim(codes, data.labels[:200]).double().mean().item()
    else:
        bpd = pixelmodels.evaluate(model, data, 200, limit=200)
    assert bpd == pytest.approx(info["first_200_test_bits_per_dim"], abs=1e-4)


def test_all_shipped_models_together_stay_under_25_mb():
    from pixelmodels.pretrained import ROOT

    total = sum(p.stat().st_size for name in pixelmodels.list_pretrained() for p in (ROOT / name).rglob("*"))
    assert 0 < total <= 25 * 10**6, f"the shipped models take {total / 1e6:.1f} MB"


def test_the_readme_table_of_shipped_models_is_generated_from_their_metadata():
    from pixelmodels.pretrained import pretrained_table

    table = pretrained_table()
    assert len(table.splitlines()) == 2 + len(pixelmodels.list_pretrained())
    assert table in README.read_text(), "README's table is stale: paste pixelmodels.pretrained.pretrained_table()"


def test_the_pretrained_command_lists_the_shipped_models(capsys):
    from pixelmodels.pretrained import pretrained_table

    assert main(["pretrained"]) == 0
    out = capsys.readouterr().out
    assert out == pretrained_table() and all(f"| {name} |" in out for name in pixelmodels.list_pretrained())


def test_the_shipped_code_prior_generates_decoded_images(tmp_path, capsys):
    assert pixelmodels.pretrained_info("fashion-mnist-codes")["vqvae_test_reconstruction_mse"] < 0.01
    out = tmp_path / "dresses.npy"
    assert main(["generate", "--pretrained", "fashion-mnist-codes", "--class", "3", "--n", "4", "--out",
                 str(out)]) == 0
    assert "decoded by the VQ-VAE" in capsys.readouterr().out
    codes, decoded = np.load(out), np.load(out.with_suffix(".npz"))
    assert codes.shape == (4, 7, 7) and codes.max() < 128 and decoded["labels"].tolist() == [3] * 4
    vqvae = pixelmodels.load_vqvae("fashion-mnist-codes")
    expected = vqvae.decode_images(torch.from_numpy(codes)).permute(0, 2, 3, 1).numpy()
    assert decoded["images"].shape == (4, 28, 28, 1) and np.array_equal(decoded["images"], expected)
    assert Image.open(out.with_suffix(".png")).size[0] >= 4 * 28


def test_every_shipped_file_is_package_data():
    import fnmatch
    import tomllib

    from pixelmodels.pretrained import ROOT

    pyproject = tomllib.loads((README.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["pixelmodels.pretrained"]
    shipped = [p.relative_to(ROOT).as_posix() for name in pixelmodels.list_pretrained() for p in (ROOT / name).iterdir()]
    assert any(s.endswith("vqvae.safetensors") for s in shipped)
    missing = [s for s in shipped if not any(fnmatch.fnmatch(s, pat) for pat in patterns)]
    assert not missing, f"not in pyproject's package-data, so not in a wheel: {missing}"
