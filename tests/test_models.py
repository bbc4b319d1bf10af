"""Causality, normalization and gradient tests over every registered model."""

import itertools
import math

import pytest
import torch

from pixelmodels import create_model, list_models
from pixelmodels.errors import PixelModelsError
from pixelmodels.nn import weight_normed_layers

H = W = 8
POSITIONS = [(0, 0), (0, 5), (3, 0), (4, 4), (H - 1, W - 1)]  # first pixel, first row, first column, middle, last
LIKELIHOODS = ["categorical", "logistic-mixture"]
CASES = list(itertools.product(list_models(), LIKELIHOODS, [1, 3], [None, 4], [True, False]))


def make(name, c, n_classes, n_bits=3, likelihood="categorical", **kw):
    model = create_model(name, image_shape=(c, H, W), n_bits=n_bits, n_classes=n_classes, preset="tiny",
                         likelihood=likelihood, **kw)
    with torch.no_grad():  # break the symmetry of zero-initialized class biases
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def param_channels(model):
    """Which image channel each output parameter belongs to (None: the whole pixel)."""
    return model.head.param_groups() if model.channel_masked else None


def allowed(c, i, j, C, channel, h=H, w=W):
    """(C, h, w) mask of the sub-pixels the parameters of (channel, i, j) may depend on."""
    a = torch.zeros(C, h, w, dtype=torch.bool)
    a[:, :i] = True
    a[:, i, :j] = True
    if channel is not None:
        a[:channel, i, j] = True
    return a


@pytest.mark.parametrize("name,likelihood,c,n_classes,train", CASES)
def test_jacobian_causality_and_batch_independence(name, likelihood, c, n_classes, train):
    model = make(name, c, n_classes, likelihood=likelihood)
    model.train(train)
    B = 3
    x = torch.randint(0, 8, (B, c, H, W))
    y = torch.tensor([0, 3, 1]) if n_classes else None
    groups = param_channels(model)
    for (i, j), b in itertools.product(POSITIONS, [1]):  # image 1's parameters, against images 0 and 2
        channels = range(c) if groups is not None else [None]
        for ch in channels:
            xs = model.embed(x).requires_grad_(True)
            torch.manual_seed(1)  # same dropout mask in every pass
            params = model.network(xs, model.condition(y))
            sel = params[b, :, i, j] if ch is None else params[b, groups == ch, i, j]
            (grad,) = torch.autograd.grad(sel.sum(), xs)
            others = torch.ones(B, dtype=torch.bool)
            others[b] = False
            assert grad[others].abs().max() == 0, f"image {b} depends on another image of the batch"
            leak = grad[b].abs() * ~allowed(ch or 0, i, j, c, ch if ch is not None else 0)
            assert leak.max() == 0, f"params of ({ch}, {i}, {j}) see {leak.nonzero().tolist()}"


@pytest.mark.parametrize("name,likelihood,c,n_classes,train", CASES)
def test_later_pixels_do_not_change_earlier_log_probs(name, likelihood, c, n_classes, train):
    """Black-box check through the head on integer images: perturb a pixel, earlier log-probs stay."""
    model = make(name, c, n_classes, likelihood=likelihood)
    model.train(train)
    x = torch.randint(0, 8, (2, c, H, W))
    y = torch.tensor([1, 2]) if n_classes else None
    for i, j in POSITIONS:
        x2 = x.clone()
        x2[:, :, i, j] = (x2[:, :, i, j] + 3) % 8
        torch.manual_seed(1)
        lp1 = model.log_prob(x, y, per_pixel=True)
        torch.manual_seed(1)
        lp2 = model.log_prob(x2, y, per_pixel=True)
        before = torch.zeros(H, W, dtype=torch.bool)
        before[:i] = True
        before[i, :j] = True
        assert torch.equal(lp1[:, before], lp2[:, before])
        assert not torch.equal(lp1[:, i, j], lp2[:, i, j])  # the pixel's own probability does change


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("n_classes", [None, 4])
def test_joint_values_of_a_pixel_sum_to_one(name, likelihood, n_classes):
    model = make(name, 3, n_classes, n_bits=2, likelihood=likelihood).eval()
    values = torch.tensor(list(itertools.product(range(4), repeat=3)))  # (64, 3)
    background = torch.randint(0, 4, (1, 3, H, W))
    for i, j in [(0, 0), (2, 3), (H - 1, W - 1)]:
        x = background.repeat(64, 1, 1, 1)
        x[:, :, i, j] = values
        y = torch.full((64,), 2) if n_classes else None
        with torch.no_grad():
            lp = model.log_prob(x, y, per_pixel=True)[:, i, j]
        assert torch.logsumexp(lp, 0).exp().item() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("n_bits", [1, 5, 8])
def test_uniform_logits_give_n_bits_per_dim(name, n_bits):
    model = create_model(name, image_shape=(3, H, W), n_bits=n_bits, preset="tiny", likelihood="categorical")
    model.network = lambda x, y: torch.zeros(x.shape[0], model.head.n_params, H, W)
    with torch.no_grad():
        for p in model.head.parameters():  # a head with a network of its own outputs zero logits too
            p.zero_()
    x = torch.randint(0, 2**n_bits, (2, 3, H, W))
    assert torch.allclose(model.bits_per_dim(x), torch.full((2,), float(n_bits)), atol=1e-6)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("c,n_classes", [(1, None), (3, 4)])
def test_every_parameter_gets_a_gradient(name, likelihood, c, n_classes):
    model = make(name, c, n_classes, likelihood=likelihood).float()
    x = torch.randint(0, 8, (4, c, H, W))
    y = torch.arange(4) if n_classes else None
    model.bits_per_dim(x, y).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


def receptive_field(model, i, j):
    """(H, W) bool: earlier pixels the params at (i, j) depend on."""
    x = torch.randint(0, 8, (1,) + tuple(model.image_shape))
    xs = model.embed(x).requires_grad_(True)
    (g,) = torch.autograd.grad(model.network(xs, None)[0, :, i, j].sum(), xs)
    return g[0].abs().sum(0) > 0


def test_gated_pixelcnn_has_no_blind_spot():
    model = create_model("gated-pixelcnn", image_shape=(1, 6, 6), n_bits=3, preset="tiny", n_layers=6).double()
    for i, j in [(5, 5), (5, 0), (3, 2)]:
        field = receptive_field(model, i, j)
        expected = allowed(0, i, j, 1, 0, 6, 6)[0]
        assert torch.equal(field, expected)


def test_pixelcnn_has_the_blind_spot_its_docstring_names():
    model = create_model("pixelcnn", image_shape=(1, 8, 8), n_bits=3, preset="tiny", n_blocks=6).double()
    field = receptive_field(model, 5, 3)
    expected = allowed(0, 5, 3, 1, 0, 8, 8)[0]
    assert not field[~expected].any()
    assert not torch.equal(field, expected)
    assert not field[4, 7]  # one row up, four to the right: beyond the 7x7 input layer, never reached


def test_conditioning_reaches_every_layer():
    for name in list_models():
        model = make(name, 1, 4).float().eval()
        x = torch.randint(0, 8, (2, 1, H, W))
        model.bits_per_dim(x, torch.tensor([1, 2])).sum().backward()
        biases = [p for n, p in model.named_parameters() if "class" in n or "embedding" in n]
        n_blocks = sum(1 for m in model.modules() if type(m).__name__ in ("ResidualBlock", "GatedLayer", "GatedResNet"))
        assert n_blocks and len(biases) >= n_blocks
        assert all(p.grad[[1, 2]].abs().sum() > 0 and p.grad[[0, 3]].abs().sum() == 0 for p in biases)


def test_bad_labels_and_shapes_are_clear_errors():
    model = create_model("gated-pixelcnn", image_shape=(1, H, W), n_bits=3, n_classes=4, preset="tiny")
    x = torch.zeros(2, 1, H, W, dtype=torch.uint8)
    with pytest.raises(PixelModelsError, match="labels in 0..3, found 4"):
        model.log_prob(x, torch.tensor([0, 4]))
    with pytest.raises(PixelModelsError, match="give y"):
        model.log_prob(x)
    with pytest.raises(PixelModelsError, match=r"\(C, H, W\) = \(1, 8, 8\) \(grayscale 8x8\), found a tensor of shape \(2, 3, 8, 8\)"):
        model.log_prob(torch.zeros(2, 3, H, W, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(PixelModelsError, match="unknown model 'nope'"):
        create_model("nope", image_shape=(1, H, W))
    with pytest.raises(PixelModelsError, match="n-bits: expected an integer from 1 to 8, found 9"):
        create_model("pixelcnn", image_shape=(1, H, W), n_bits=9)
    with pytest.raises(PixelModelsError, match="unknown options"):
        create_model("pixelcnn", image_shape=(1, H, W), n_layerz=3)


def test_log_prob_sums_per_pixel_and_bits_per_dim_scales():
    model = make("gated-pixelcnn", 3, None).float()
    x = torch.randint(0, 8, (2, 3, H, W))
    per_pixel = model.log_prob(x, per_pixel=True)
    assert per_pixel.shape == (2, H, W)
    assert torch.allclose(per_pixel.sum((1, 2)), model.log_prob(x), atol=1e-4)
    assert torch.allclose(model.bits_per_dim(x), -model.log_prob(x) / (math.log(2) * 3 * H * W), atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_family_can_be_weight_normed_and_stays_causal_after_data_dependent_init(name):
    """``weight_norm`` is one option of every family: its convolutions are reparametrized (the head and the
    conditioning are not), the data-dependent initialization leaves a finite loss, and a later pixel still
    changes no earlier log-probability."""
    torch.manual_seed(0)
    model = create_model(name, image_shape=(3, H, W), n_bits=3, n_classes=2, preset="tiny", weight_norm=True)
    normed = weight_normed_layers(model)
    assert normed and all(hasattr(layer, "init_scale") for layer in normed)
    assert not set(normed) & {*model.head.modules(), *model.conditioning.modules()}
    x, y = torch.randint(0, 8, (8, 3, H, W)), torch.randint(0, 2, (8,))
    model.initialize_from_data(x, y)
    model.eval()
    with torch.no_grad():
        lp = model.log_prob(x, y, per_pixel=True)
        x2 = x.clone()
        x2[:, :, 4, 4] = (x2[:, :, 4, 4] + 3) % 8
        lp2 = model.log_prob(x2, y, per_pixel=True)
    assert torch.isfinite(lp).all()
    assert torch.equal(lp[:, :4], lp2[:, :4]) and torch.equal(lp[:, 4, :4], lp2[:, 4, :4])
