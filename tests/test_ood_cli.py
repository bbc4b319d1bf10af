"""`pixelmodels ood`: its table against scikit-learn on its own CSV, the CSV against direct scoring, the synthetic
sets, the default detector of a shipped model, the marginal of a class-conditional model, and every refusal."""

import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics

import pixelmodels
import pixelmodels.pretrained
from pixelmodels.app import ood_sets
from pixelmodels.app.cli import main
from pixelmodels.app.detect import short
from pixelmodels.app.ood_sets import read_set
from pixelmodels.ood import complexity

from formats import write_mnist


def export(folder, name="model", seed=1, **kw):
    """A tiny untrained gated PixelCNN of 8x8 grayscale images, its weights shaken so images score apart."""
    kw = {"image_shape": (1, 8, 8), "preset": "tiny", **kw}
    torch.manual_seed(seed)
    model = pixelmodels.create_model("gated-pixelcnn", **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return pixelmodels.save_pretrained(model, folder / name), model


def arrays(path, n, seed=0, high=256, shape=(8, 8)):
    """An .npz of ``n`` random unlabelled images (n, *shape); returns them as (n, 1, *shape) uint8."""
    x = np.random.default_rng(seed).integers(0, high, (n, *shape), dtype=np.uint8)
    np.savez(path, x=x)
    return torch.from_numpy(x[:, None])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table(stdout):
    """The printed table: (OOD set, score) -> (AUROC, AUPRC, FPR at 95% TPR)."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    assert [c.strip() for c in rows[0]] == ["OOD set", "score", "AUROC", "AUPRC", "FPR at 95% TPR"]
    return {(r[0].strip(), r[1].strip()): tuple(float(c) for c in r[2:]) for r in rows[2:]}


def bpd(model, x, y=None):
    with torch.no_grad():
        return model.bits_per_dim(x, y)


def column(rows, name, **where):
    return np.array([float(r[name]) for r in rows if all(r[k] == v for k, v in where.items())])


@pytest.fixture
def two(tmp_path):
    """A model, a background model of the same data, and 6 in-distribution images in in.npz."""
    model_dir, model = export(tmp_path, "model", seed=1)
    background_dir, background = export(tmp_path, "background", seed=2)
    x = arrays(tmp_path / "in.npz", 6)
    return dict(model_dir=model_dir, model=model, background_dir=background_dir, background=background,
                inside=tmp_path / "in.npz", x=x)


def test_table_is_sklearn_on_the_csv_and_the_csv_is_direct_scoring(tmp_path, two, capsys):
    out = tmp_path / "report"
    inside = str(two["inside"])
    assert main(["ood", str(two["model_dir"]), "--in", inside, "--out-of", "noise", "--out-of", "constant",
                 "--out-of", f"inverted:{inside}", "--background", str(two["background_dir"]),
                 "--complexity", "png", "--limit", "5", "--batch-size", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["set", "kind", "source", "index", "bits_per_dim", "nll_nats", "background_bits_per_dim",
                             "likelihood_ratio", "complexity_png", "complexity_score_png"]
    sets = [inside, "noise", "constant", f"inverted:{inside}"]
    assert [r["set"] for r in rows] == [s for s in sets for _ in range(5)]
    assert [r["kind"] for r in rows] == ["in"] * 5 + ["out"] * 15
    assert [r["index"] for r in rows[:5]] == ["0", "1", "2", "3", "4"]

    model, background, x = two["model"], two["background"], two["x"][:5]
    inverted = 255 - x
    noise = ood_sets.noise(model, 5, 0)
    for name, images in [(inside, x), ("noise", noise), (f"inverted:{inside}", inverted)]:
        assert np.allclose(column(rows, "bits_per_dim", set=name), bpd(model, images), atol=2e-6, rtol=0)
        assert np.allclose(column(rows, "background_bits_per_dim", set=name), bpd(background, images), atol=2e-6,
                           rtol=0)
        assert np.allclose(column(rows, "complexity_png", set=name), complexity(images, "png"), atol=2e-6, rtol=0)
    assert np.allclose(column(rows, "likelihood_ratio"),
                       column(rows, "background_bits_per_dim") - column(rows, "bits_per_dim"), atol=3e-6, rtol=0)
    assert np.allclose(column(rows, "complexity_score_png"),
                       column(rows, "bits_per_dim") - column(rows, "complexity_png"), atol=3e-6, rtol=0)

    printed = table(captured.out)
    oriented = {"likelihood": ("bits_per_dim", 1), "likelihood ratio": ("likelihood_ratio", -1),
                "complexity S (png)": ("complexity_score_png", 1)}
    shown = {short(s): s for s in sets}  # the table names a path by its file name
    assert set(printed) == {(short(s), name) for s in sets[1:] for name in oriented}
    for (s, name), (auroc, auprc, fpr95) in printed.items():
        key, sign = oriented[name]
        s = shown[s]
        scores = sign * np.r_[column(rows, key, set=inside), column(rows, key, set=s)]
        truth = np.r_[np.zeros(5), np.ones(5)]
        assert auroc == pytest.approx(metrics.roc_auc_score(truth, scores), abs=5.1e-5)
        assert auprc == pytest.approx(metrics.average_precision_score(truth, scores), abs=5.1e-5)
        fpr, tpr, _ = metrics.roc_curve(truth, scores)
        assert fpr95 == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=5.1e-5)
    assert "scored 20 images at " in captured.out and " images/s (the model and the background model); " \
        "complexity (png) at " in captured.out
    assert f"wrote {out / 'scores.csv'} and {out / 'roc.png'}; made the folder {out}" in captured.out
    assert Image.open(out / "roc.png").format == "PNG"
    assert f"detector: the model {two['model_dir']} and the background model {two['background_dir']} " \
        "(--background)" in captured.err
    assert "--out-of noise: made 5 images of uniform noise (grayscale 8x8, seed 0)" in captured.err
    assert f"--in {inside}: read 5 images from {inside} (grayscale 8x8)" in captured.err


def test_synthetic_sets(tmp_path):
    model = pixelmodels.create_model("gated-pixelcnn", image_shape=(3, 5, 4), n_bits=3, preset="tiny")
    made = read_set("noise", "--out-of", model)
    x = made.inputs.images
    assert x.shape == (ood_sets.SYNTHETIC_SIZE, 3, 5, 4) and x.dtype == torch.uint8
    assert int(x.min()) == 0 and int(x.max()) == 7 and len(x.unique()) == 8  # every 3-bit value, none beyond
    assert (made.inputs.labels == -1).all() and made.inputs.sources[:2] == ["noise", "noise"]
    assert torch.equal(read_set("noise", "--in", model, limit=9, seed=0).inputs.images, x[:9])  # seeded
    assert not torch.equal(read_set("noise", "--in", model, limit=9, seed=1).inputs.images, x[:9])

    flat = read_set("constant", "--out-of", model, limit=50).inputs.images
    assert flat.shape == (50, 3, 5, 4)
    assert all(len(image.unique()) == 1 for image in flat)  # one value everywhere
    assert sorted(flat[:, 0, 0, 0].unique().tolist()) == list(range(8))  # spread over the range

    images = torch.randint(0, 8, (4, 3, 5, 4), dtype=torch.uint8)
    np.savez(tmp_path / "x.npz", x=images.numpy())
    flipped = read_set(f"inverted:{tmp_path / 'x.npz'}", "--out-of", model, limit=3)
    assert torch.equal(flipped.inputs.images, 7 - images[:3])
    assert flipped.line.endswith("; inverted (v -> 7 - v)")
    assert torch.equal(ood_sets.inverted(torch.tensor([0, 1, 254, 255], dtype=torch.uint8), 8),
                       torch.tensor([255, 254, 1, 0], dtype=torch.uint8))


def test_a_dataset_split_of_the_run_and_its_inversion(tmp_path, monkeypatch, capsys):
    data, run = tmp_path / "fmnist", tmp_path / "run"
    write_mnist(data, "train", n=4, seed=1)
    write_mnist(data, "test", n=5, seed=2)
    monkeypatch.setenv("PIXELMODELS_NO_DOWNLOAD", "1")
    monkeypatch.setenv("PIXELMODELS_DATA", str(tmp_path / "empty-cache"))
    assert main(["train", "--model", "gated-pixelcnn", "--preset", "tiny", "--dataset", "fashion-mnist",
                 "--data-dir", str(data), "--batch-size", "4", "--max-steps", "1", "--n-samples", "0",
                 "--no-progress", "--out", str(run)]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    # the run's own dataset is read from the run's --data-dir
    assert main(["ood", str(run), "--in", "fashion-mnist:test", "--out-of", "inverted:fashion-mnist:test",
                 "--limit", "3"]) == 0
    captured = capsys.readouterr()
    assert "alone; no likelihood ratio: no --background RUN_DIR or --background-pretrained NAME given" \
        in captured.err
    rows = read_csv(tmp_path / "ood" / "scores.csv")
    assert list(rows[0])[-2:] == ["bits_per_dim", "nll_nats"]  # no background, no codec
    model, x = pixelmodels.load(run), pixelmodels.load_dataset("fashion-mnist", "test", root=data).images[:3]
    assert np.allclose(column(rows, "bits_per_dim", kind="in"), bpd(model, x), atol=2e-6, rtol=0)
    assert np.allclose(column(rows, "bits_per_dim", kind="out"), bpd(model, 255 - x), atol=2e-6, rtol=0)
    assert [r["source"] for r in rows] == ["fashion-mnist:test"] * 6
    assert set(table(captured.out)) == {("inverted:fashion-mnist:test", "likelihood")}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A registry of shipped models: 'tiny' (conditional on 3 classes) whose metadata names its detector,
    'tiny-unconditional' and 'tiny-background', 'plain' with no detector, and 'dangling' whose detector names a
    background model that is not shipped."""
    root = tmp_path / "shipped"
    models = {}
    for k, (name, kw, ood) in enumerate([
            ("tiny", {"n_classes": 3}, {"model": "tiny-unconditional", "background": "tiny-background"}),
            ("tiny-unconditional", {}, None), ("tiny-background", {}, None), ("plain", {}, None),
            ("dangling", {}, {"background": "not-shipped"})]):
        folder, models[name] = export(root, name, seed=10 + k, **kw)
        (folder / "metadata.json").write_text(json.dumps({"dataset": "mnist", **({"ood": ood} if ood else {})}))
    monkeypatch.setattr(pixelmodels.pretrained, "ROOT", root)
    return models


def test_the_default_detector_of_a_shipped_model(tmp_path, shipped, capsys):
    x = arrays(tmp_path / "in.npz", 4)
    argv = ["--in", str(tmp_path / "in.npz"), "--out-of", "noise", "--limit", "4", "--overwrite",
            "--out", str(tmp_path / "o")]
    assert main(["ood", "--pretrained", "tiny", *argv]) == 0
    err = capsys.readouterr().err
    assert ("detector: the model tiny-unconditional and the background model tiny-background, the default "
            "detector of --pretrained tiny (its metadata's \"ood\")") in err
    assert "marginal" not in err  # the unconditional pair: one pass each
    rows = read_csv(tmp_path / "o" / "scores.csv")
    assert np.allclose(column(rows, "bits_per_dim", kind="in"), bpd(shipped["tiny-unconditional"], x), atol=2e-6)
    assert np.allclose(column(rows, "background_bits_per_dim", kind="in"), bpd(shipped["tiny-background"], x),
                       atol=2e-6)

    # a background given: NAME itself is the model
    assert main(["ood", "--pretrained", "tiny", "--background-pretrained", "plain", *argv]) == 0
    err = capsys.readouterr().err
    assert "detector: the model tiny and the background model plain (--background-pretrained)" in err
    assert "the model is conditional on 3 classes and no labels were given" in err
    assert np.allclose(column(read_csv(tmp_path / "o" / "scores.csv"), "background_bits_per_dim", kind="in"),
                       bpd(shipped["plain"], x), atol=2e-6)

    assert main(["ood", "--pretrained", "plain", *argv]) == 0
    captured = capsys.readouterr()
    assert ("detector: the model plain alone; no likelihood ratio: no --background RUN_DIR or "
            "--background-pretrained NAME given, and plain names no default background model") in captured.err
    assert set(table(captured.out)) == {("noise", "likelihood")}


def test_a_class_conditional_model_scores_its_marginal(tmp_path, capsys):
    model_dir, model = export(tmp_path, n_classes=3)
    x = arrays(tmp_path / "in.npz", 3)
    np.savez(tmp_path / "labelled.npz", x=x[:, 0].numpy(), y=np.array([0, 2, 1]))
    assert main(["ood", str(model_dir), "--in", str(tmp_path / "labelled.npz"), "--out-of", "noise",
                 "--limit", "3", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert ("the model is conditional on 3 classes and no labels were given: scoring the marginal likelihood "
            "log sum_y p(x|y) p(y), p(y) uniform (3 passes an image)") in err
    with torch.no_grad():  # the labels of the set are not used: log p(x) = logsumexp_y log p(x|y) - log 3
        per_class = torch.stack([model.log_prob(x, torch.full((3,), y)) for y in range(3)])
    marginal = -(torch.logsumexp(per_class.double(), 0) - math.log(3)) / (math.log(2) * 64)
    rows = read_csv(tmp_path / "o" / "scores.csv")
    assert "label" not in rows[0]
    assert np.allclose(column(rows, "bits_per_dim", kind="in"), marginal.numpy(), atol=2e-6, rtol=0)


def run_error(argv, capsys):
    """(exit code, the one line on stderr) of ``main(argv)``."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return code, err.strip()


def test_refusals_name_the_flag(tmp_path, two, shipped, capsys, monkeypatch):
    model, inside, out = str(two["model_dir"]), str(two["inside"]), tmp_path / "o"
    base = ["ood", model, "--in", inside, "--out-of", "noise", "--limit", "3", "--out", str(out)]
    other, _ = export(tmp_path, "three-bit", n_bits=3)
    rgb, _ = export(tmp_path, "rgb", image_shape=(3, 8, 8))
    arrays(tmp_path / "one.npz", 1)
    cases = [
        (base + ["--background", str(other)], f"--background {other}: the model takes 8-bit images (1, 8, 8), the "
         "background model takes 3-bit images (1, 8, 8); a likelihood ratio needs models of the same data"),
        (base + ["--background", str(rgb)], "the background model takes 8-bit images (3, 8, 8)"),
        (["ood", "--pretrained", "tiny", "--in", inside, "--out-of", "noise", "--background", str(rgb)],
         f"--background {rgb}: the model takes 8-bit images (1, 8, 8)"),
        (base + ["--background-pretrained", "nope"], "--background-pretrained nope: unknown pretrained model 'nope'"),
        (["ood", "--pretrained", "dangling", "--in", inside, "--out-of", "noise"], "--pretrained dangling: its "
         "default detector (its metadata's \"ood\") cannot be opened: --background-pretrained not-shipped: unknown "
         "pretrained model 'not-shipped'"),
        (base + ["--background", str(other), "--background-pretrained", "plain"],
         "--background-pretrained: not allowed with argument --background"),
        (["ood", model, "--in", str(tmp_path / "one.npz"), "--out-of", "noise"],
         f"--in {tmp_path / 'one.npz'}: expected at least 2 images (a detector's metrics compare sets), found 1"),
        (base + ["--out-of", f"inverted:{tmp_path / 'one.npz'}"],
         f"--out-of inverted:{tmp_path / 'one.npz'}: expected at least 2 images"),
        (base[:-4] + ["--limit", "1"], f"--in {inside}: expected at least 2 images (a detector's metrics compare "
         "sets), found 1 (--limit 1)"),
        (base + ["--out-of", "nope"], "--out-of nope: expected DATASET:SPLIT, an image file, a folder of images, an "
         "arrays file (.npz/.npy), noise, constant or inverted:SPEC (DATASET one of "),
        (base + ["--out-of", "mnist:validation"], "--out-of mnist:validation: expected a split among train, test, "
         "found 'validation'"),
        (base + ["--out-of", "noise"], "--out-of: noise given twice; expected each set once"),
        (["ood", model, "--out-of", "noise"], "--in: expected a set of images (DATASET:SPLIT, "),
        (["ood", model, "--in", "noise"], "--out-of: expected a set of images (DATASET:SPLIT, "),
        (base + ["--limit", "0"], "--limit: expected at least 1, found 0"),
    ]
    for argv, message in cases:
        code, err = run_error(argv, capsys)
        assert code == 2 and err.startswith("pixelmodels ood: error: ") and message in err, (argv, err)
        assert not out.exists()

    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    code, err = run_error(base + ["--complexity", "jpegxl"], capsys)
    assert code == 2 and err == ("pixelmodels ood: error: --complexity: the jpegxl codec needs imagecodecs, which is "
                                 "not installed; pip install 'pixelmodels[codecs]' (png needs nothing)")
    for module, name in [("sklearn.metrics", "scikit-learn"), ("matplotlib", "matplotlib")]:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)
            code, err = run_error(base, capsys)
        assert code == 2 and f"pixelmodels ood needs {name} for " in err, err
        assert err.endswith("which is not installed; pip install 'pixelmodels[ood]'")
    assert not out.exists()


def test_existing_outputs_are_refused_before_scoring(tmp_path, two, capsys, monkeypatch):
    out = tmp_path / "o"
    argv = ["ood", str(two["model_dir"]), "--in", str(two["inside"]), "--out-of", "constant", "--limit", "3",
            "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()

    def no_scoring(*args, **kw):
        raise AssertionError("scored before checking the outputs")

    monkeypatch.setattr("pixelmodels.app.detect.score", no_scoring)
    code, err = run_error(argv, capsys)
    assert code == 2 and err == (f"pixelmodels ood: error: --out: {out / 'scores.csv'} and {out / 'roc.png'} exist; "
                                 "give --overwrite to replace them")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.undo()
    assert main(argv + ["--overwrite", "--limit", "2"]) == 0
    assert len(read_csv(out / "scores.csv")) == 4


def test_the_table_names_a_path_by_its_name_unless_two_share_it():
    assert short("/data/sets/mnist-5k.npz") == "mnist-5k.npz" and short("fashion-mnist:test") == "fashion-mnist:test"
    assert short("inverted:inverted:/data/x.npz") == "inverted:inverted:x.npz" and short("noise") == "noise"


def test_the_marginal_line_names_the_recorded_class_frequencies():
    from pixelmodels.app.detect import marginal_line

    model = pixelmodels.create_model("pixelcnn", image_shape=(1, 4, 4), preset="tiny", n_classes=2,
                                     class_frequencies=[0.25, 0.75])
    assert marginal_line("model", model, 3, 5).endswith(
        "3 of 5 images have no labels: scoring their marginal likelihood log sum_y p(x|y) p(y), p(y) the "
        "frequencies of its training labels (2 passes an image)")
