"""The scores of out-of-distribution detection in the library: the likelihood ratio against two independent
``score`` calls, the marginal likelihood of a class-conditional model against an explicit sum over classes,
input complexity against its own files decoded, the metrics against counting, and the background model's
training inputs (``--perturb``, ``--weight-decay``)."""

import io
import itertools
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import pixelmodels
from pixelmodels.errors import PixelModelsError
from pixelmodels.ood import complexity, detection, encoder
from pixelmodels.training import perturb


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    conditional = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_classes=3).eval()
    with torch.no_grad():  # classes that differ (a fresh model's class embeddings start at zero)
        for name, p in conditional.named_parameters():
            p.normal_(0, 3) if "class" in name else None
    background = pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny").eval()
    images = torch.randint(0, 256, (7, 1, 6, 6), dtype=torch.uint8)
    return conditional, background, images


def test_the_ratio_is_two_independent_scores_subtracted(models):
    model, background, x = models
    both = pixelmodels.score(model, x, 2, background=background, batch_size=3)
    alone = pixelmodels.score(model, x, 2).bits_per_dim
    under = pixelmodels.score(background, x).bits_per_dim
    torch.testing.assert_close(both.bits_per_dim, alone)
    torch.testing.assert_close(both.background_bits_per_dim, under)
    torch.testing.assert_close(both.likelihood_ratio, under - alone)
    assert not both.marginal and both.complexity is None and both.complexity_score is None


def test_no_labels_give_the_marginal_an_explicit_sum_over_classes(models):
    model, _, x = models
    s = pixelmodels.score(model, x, per_pixel=True, batch_size=4)
    assert s.marginal
    per_class = torch.stack([model.log_prob(x, torch.full((len(x),), y), per_pixel=True) for y in range(3)]).double()
    assert (per_class.sum((2, 3)).std(0) > 0.01).all()  # the classes differ, so the sum is a real mixture
    log_px = torch.logsumexp(per_class.sum((2, 3)), 0) - math.log(3)  # log sum_y p(x|y) / 3
    torch.testing.assert_close(s.nll.double(), -log_px, rtol=0, atol=1e-4)
    torch.testing.assert_close(s.pixel_nll.sum((1, 2)), s.nll, rtol=0, atol=1e-4)
    # the first pixel's marginal conditional is the class mixture of its first probabilities
    first = torch.logsumexp(per_class[:, :, 0, 0], 0) - math.log(3)
    torch.testing.assert_close(s.pixel_nll[:, 0, 0].double(), -first, rtol=0, atol=1e-5)
    # with labels, no marginal: each label's own likelihood
    torch.testing.assert_close(pixelmodels.score(model, x, 1).nll.double(), -per_class[1].sum((1, 2)),
                               rtol=0, atol=1e-4)


def test_recorded_class_frequencies_weigh_the_marginal(models, tmp_path):
    model, _, x = models
    weighted = pixelmodels.create_model("gated-pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_classes=3,
                                        class_frequencies=[0.5, 0.5, 0.0]).eval()
    weighted.load_state_dict(model.state_dict())
    s = pixelmodels.score(weighted, x, per_pixel=True)
    per_class = torch.stack([model.log_prob(x, torch.full((len(x),), y)) for y in range(3)]).double()
    log_px = torch.logsumexp(per_class[:2], 0) + math.log(0.5)  # class 2 has p(y) = 0
    torch.testing.assert_close(s.nll.double(), -log_px, rtol=0, atol=1e-4)
    torch.testing.assert_close(s.pixel_nll.sum((1, 2)), s.nll, rtol=0, atol=1e-4)
    assert not torch.allclose(s.nll, pixelmodels.score(model, x).nll, atol=1e-3)  # uniform differs
    # saved with the model and loaded back
    pixelmodels.load(pixelmodels.save_pretrained(weighted, tmp_path / "m"))
    assert pixelmodels.load(tmp_path / "m").config.class_frequencies == (0.5, 0.5, 0.0)


@pytest.mark.parametrize("freqs, found", [([0.5, 0.5], "found 2"), ([0.5, 0.2, 0.2], "summing to 1"),
                                          ([1.5, -0.5, 0.0], "each 0 or more")])
def test_class_frequencies_are_checked(freqs, found):
    with pytest.raises(PixelModelsError, match="class_frequencies") as e:
        pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_classes=3,
                                 class_frequencies=freqs)
    assert found in str(e.value)


def test_a_model_without_classes_takes_no_class_frequencies():
    with pytest.raises(PixelModelsError, match="class_frequencies: expected none for a model without classes"):
        pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny", class_frequencies=[1.0])


def test_training_records_the_frequencies_of_its_labels():
    from pixelmodels.app.runs import resolve_model_config
    from pixelmodels.config import ModelConfig
    from pixelmodels.data.datasets import ImageDataset

    labels = torch.tensor([0, 0, 0, 2, -1, 2, 0, 0])  # 5 of class 0, none of 1, 2 of class 2, one unlabelled
    data = ImageDataset(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), labels, 8, 3, "mine", "train")
    base = ModelConfig(name="pixelcnn", image_shape=(1, 4, 4))
    assert resolve_model_config(base, data, conditional=True).class_frequencies == (5 / 7, 0.0, 2 / 7)
    assert resolve_model_config(base, data, conditional=False).class_frequencies is None


@pytest.mark.parametrize("codec", ["png", "webp", "jpegxl"])
@pytest.mark.parametrize("channels", [1, 3])
def test_complexity_is_the_size_of_a_lossless_file(codec, channels):
    pytest.importorskip("imagecodecs") if codec != "png" else None
    gen = torch.Generator().manual_seed(channels)
    x = torch.randint(0, 256, (3, channels, 12, 10), generator=gen, dtype=torch.uint8)
    x[0] = 7  # a flat image costs far less than noise
    bits = complexity(x, codec)
    for image, b in zip(x, bits):
        data = encoder(codec)(image.permute(1, 2, 0).numpy())
        assert b.item() == pytest.approx(8 * len(data) / image.numel())
        if codec == "png":
            decoded = np.asarray(Image.open(io.BytesIO(data)))
        else:
            import imagecodecs
            decoded = getattr(imagecodecs, f"{codec}_decode")(data)
        decoded = decoded.reshape(12, 10, -1)
        if channels == 1 and decoded.shape[-1] == 3:  # WebP codes grayscale as three equal channels
            assert np.array_equal(decoded[..., 1:], np.repeat(decoded[..., :1], 2, -1))
        assert np.array_equal(decoded[..., :channels], image.permute(1, 2, 0).numpy())
    assert bits[0] < bits[1] and bits[0] < bits[2]


def test_score_adds_complexity_and_s(models):
    model, _, x = models
    s = pixelmodels.score(model, x, 0, complexity="png")
    assert s.codec == "png"
    torch.testing.assert_close(s.complexity, complexity(x, "png"))
    torch.testing.assert_close(s.complexity_score, s.bits_per_dim - s.complexity)


def test_refusals(models, monkeypatch):
    model, _, x = models
    with pytest.raises(PixelModelsError, match=r"complexity: expected a codec among png, webp, jpegxl, found 'gif'"):
        complexity(x, "gif")
    with pytest.raises(PixelModelsError, match=r"--complexity|complexity"):
        pixelmodels.score(model, x, 0, complexity="gif")
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(PixelModelsError, match=r"the webp codec needs imagecodecs.*pip install 'pixelmodels\[codecs\]'"):
        pixelmodels.score(model, x, 0, complexity="webp")
    for other in (pixelmodels.create_model("pixelcnn", image_shape=(1, 8, 8), preset="tiny"),
                  pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_bits=4),
                  pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_codes=16)):
        with pytest.raises(PixelModelsError, match=r"^background: the model takes .*, the background model takes"):
            pixelmodels.score(model, x, 0, background=other)
    codes = pixelmodels.create_model("pixelcnn", image_shape=(1, 6, 6), preset="tiny", n_codes=16)
    with pytest.raises(PixelModelsError, match="a codec measures images"):
        pixelmodels.score(codes, torch.zeros(2, 1, 6, 6, dtype=torch.long), complexity="png")


def _pairs_auroc(inside, outside) -> float:
    wins = sum(1.0 if o > i else 0.5 if o == i else 0.0 for i, o in itertools.product(inside, outside))
    return wins / (len(inside) * len(outside))


def test_metrics_against_counting():
    gen = torch.Generator().manual_seed(3)
    inside = torch.randn(40, generator=gen).double()
    outside = (torch.randn(25, generator=gen) + 0.8).double()
    outside[:3] = inside[:3]  # ties count a half
    d = detection(inside, outside)
    assert d.auroc == pytest.approx(_pairs_auroc(inside.tolist(), outside.tolist()))
    # the threshold that first catches 95% of the OOD images, and the in-distribution share above it
    ranked = sorted(outside.tolist(), reverse=True)
    t = ranked[math.ceil(0.95 * len(ranked)) - 1]
    assert d.fpr_at_95_tpr == pytest.approx(float((inside >= t).double().mean()))
    # average precision without ties: the mean precision at each OOD image's rank
    i2, o2 = torch.randn(30, generator=gen).double(), torch.randn(20, generator=gen).double() + 1
    order = sorted([(s, 0) for s in i2.tolist()] + [(s, 1) for s in o2.tolist()], reverse=True)
    hits, precisions = 0, []
    for k, (_, positive) in enumerate(order, 1):
        if positive:
            hits += 1
            precisions.append(hits / k)
    assert detection(i2, o2).auprc == pytest.approx(sum(precisions) / len(precisions))
    assert detection(i2, o2 + 100).auroc == 1.0 and detection(i2, o2 + 100).fpr_at_95_tpr == 0.0


def test_metrics_refuse_too_few_or_not_finite():
    with pytest.raises(PixelModelsError, match="at least 2 out-of-distribution images, found 1"):
        detection(torch.randn(5), torch.randn(1))
    with pytest.raises(PixelModelsError, match="NaN or inf among the in-distribution"):
        detection(torch.tensor([0.0, math.nan]), torch.randn(3))


def test_perturb_replaces_at_its_rate_and_a_shard_is_its_part_of_the_whole():
    x = torch.full((64, 1, 16, 16), 200, dtype=torch.uint8)
    out = perturb(x, 0.2, 16, torch.Generator().manual_seed(0))
    changed = out != x
    assert abs(changed.double().mean().item() - 0.2 * 15 / 16 + 0) < 0.02 + 0.2 / 16  # a draw of 200 is no change
    assert int(out[changed].max()) < 16 and out.dtype == x.dtype
    whole = perturb(x, 0.3, 256, torch.Generator().manual_seed(5))
    rows = torch.tensor_split(torch.arange(64), 3)
    parts = [perturb(x[r], 0.3, 256, torch.Generator().manual_seed(5), 64, r) for r in rows]
    assert torch.equal(torch.cat(parts), whole)
