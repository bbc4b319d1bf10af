"""Likelihood heads: normalization, agreement with direct computation, stability, sampling.

Every check compares against something computed independently: probabilities
summed over all values, a plain-Python discretized logistic, empirical
frequencies of samples, or exact zeros of gradients.
"""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import (
    HEADS,
    AutoregressiveCategoricalHead,
    CategoricalHead,
    LogisticMixtureHead,
    make_head,
)

FAST = settings(max_examples=40, deadline=None)
N_SAMPLES = 20000


def joint_values(c, n_bits):
    """Every joint value of a pixel, (V**c, c) long, in lexicographic order."""
    return torch.tensor(list(itertools.product(range(2**n_bits), repeat=c)), dtype=torch.long)


def pixel_probs(head, params, c, n_bits):
    """exp(-nll) of every joint value of one pixel with parameters params (P,)."""
    x = joint_values(c, n_bits)
    p = params[None, :, None, None].expand(len(x), -1, 1, 1)
    return torch.exp(-head.nll(p, x[:, :, None, None]))[:, 0, 0]


def empirical(samples, n_bits):
    """Frequencies of the joint values of samples (N, c), in ``joint_values`` order."""
    v = 2**n_bits
    index = torch.zeros(len(samples), dtype=torch.long)
    for ch in range(samples.shape[1]):
        index = index * v + samples[:, ch]
    return torch.bincount(index, minlength=v ** samples.shape[1]).double() / len(samples)


def check_sampler(head, params, c, n_bits, seed=0):
    """Total variation between N_SAMPLES samples and exp(-nll) stays within ~2.5x its expected size."""
    probs = pixel_probs(head, params, c, n_bits)
    g = torch.Generator().manual_seed(seed)
    noise = head.noise(N_SAMPLES, g)
    samples = head.sample(params[None].expand(N_SAMPLES, -1), noise)
    assert samples.shape == (N_SAMPLES, c) and samples.dtype == torch.long
    assert torch.equal(samples, head.sample(params[None].expand(N_SAMPLES, -1), noise)), "not deterministic"
    tv = 0.5 * (empirical(samples, n_bits) - probs).abs().sum().item()
    bound = math.sqrt(len(probs) / N_SAMPLES)
    assert tv < bound, f"samples do not follow exp(-nll): TV {tv:.4f} >= {bound:.4f}"


# -- hypothesis strategies for logistic-mixture parameters ------------------

def _values(moderate, extremes):
    return st.one_of(moderate, st.sampled_from(extremes))


EXTREME = dict(
    logit=_values(st.floats(-50, 50), [-1e4, 1e4, 0.0]),
    mean=_values(st.floats(-50, 50), [-50.0, 50.0, -1.0, 1.0, 0.0]),
    log_scale=_values(st.floats(-12, 20), [-7.0, -7.5, -30.0, 20.0, 100.0]),
    coeff=_values(st.floats(-1e4, 1e4), [-1e4, 1e4, 0.0]),
)
MODERATE = dict(
    logit=st.floats(-3, 3),
    mean=st.floats(-1.5, 1.5),
    log_scale=st.floats(-3, 1),
    coeff=st.floats(-3, 3),
)


@st.composite
def mixture_params(draw, c, kinds=EXTREME, k=st.integers(1, 3)):
    """(head K, flat params (P,) as a list) for a C-channel logistic mixture."""
    k = draw(k)
    sizes = [("logit", k), ("mean", c * k), ("log_scale", c * k)] + ([("coeff", 3 * k)] if c == 3 else [])
    values = []
    for kind, n in sizes:
        values += draw(st.lists(kinds[kind], min_size=n, max_size=n))
    return k, values


# -- 1. normalization -------------------------------------------------------

@FAST
@given(mixture_params(1))
def test_logistic_mixture_gray_sums_to_one_for_every_bit_depth(drawn):
    k, values = drawn
    params = torch.tensor(values, dtype=torch.float64)
    for n_bits in range(1, 9):
        total = pixel_probs(LogisticMixtureHead(1, n_bits, k), params, 1, n_bits).sum().item()
        assert abs(total - 1) < 1e-5, f"n_bits={n_bits}: probabilities sum to {total}"


@FAST
@given(mixture_params(3))
def test_logistic_mixture_rgb_joint_values_sum_to_one(drawn):
    k, values = drawn
    params = torch.tensor(values, dtype=torch.float64)
    for n_bits in (1, 2, 3):
        total = pixel_probs(LogisticMixtureHead(3, n_bits, k), params, 3, n_bits).sum().item()
        assert abs(total - 1) < 1e-5, f"n_bits={n_bits}: joint probabilities sum to {total}"


# -- 2. agreement with a direct computation ---------------------------------

def direct_pixel_prob(values, x, c, k, n_bits):
    """P(pixel = x) by CDF differences of the logistic, summed over components, in plain Python."""
    top = 2**n_bits - 1
    h = 1.0 / top
    logits = values[:k]
    mean = [values[k + ch * k:k + (ch + 1) * k] for ch in range(c)]
    log_scale = [[max(v, -7.0) for v in values[k + (c + ch) * k:k + (c + ch + 1) * k]] for ch in range(c)]
    coeff = [[math.tanh(v) for v in values[k + 2 * c * k + i * k:k + 2 * c * k + (i + 1) * k]]
             for i in range(3 if c == 3 else 0)]
    zmax = max(logits)
    weights = [math.exp(z - zmax) for z in logits]
    total_weight = sum(weights)
    xs = [x[ch] * 2 / top - 1 for ch in range(c)]
    prob = 0.0
    for j in range(k):
        p = weights[j] / total_weight
        for ch in range(c):
            m = mean[ch][j]
            if ch == 1:
                m += coeff[0][j] * xs[0]
            if ch == 2:
                m += coeff[1][j] * xs[0] + coeff[2][j] * xs[1]
            s = math.exp(log_scale[ch][j])
            sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
            upper = 1.0 if x[ch] == top else sigmoid((xs[ch] + h - m) / s)
            lower = 0.0 if x[ch] == 0 else sigmoid((xs[ch] - h - m) / s)
            p *= upper - lower
        prob += p
    return prob


@FAST
@given(st.sampled_from([(1, 1), (1, 3), (1, 8), (3, 1), (3, 2)]), st.data())
def test_logistic_mixture_matches_direct_computation(shape, data):
    c, n_bits = shape
    k, values = data.draw(mixture_params(c, MODERATE))
    head = LogisticMixtureHead(c, n_bits, k)
    got = pixel_probs(head, torch.tensor(values, dtype=torch.float64), c, n_bits)
    want = torch.tensor([direct_pixel_prob(values, x.tolist(), c, k, n_bits) for x in joint_values(c, n_bits)],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-13)


def test_logistic_known_values():
    """One component, C = 1, 1 bit: P(0) = sigmoid((0 - mean) / s), the bins meeting at 0."""
    head = LogisticMixtureHead(1, 1, 1)
    params = torch.tensor([[0.0, 0.4, math.log(0.5)]], dtype=torch.float64)[:, :, None, None].expand(2, -1, 1, 1)
    probs = torch.exp(-head.nll(params, torch.tensor([0, 1])[:, None, None, None]))[:, 0, 0]
    p0 = 1 / (1 + math.exp(0.4 / 0.5))
    torch.testing.assert_close(probs, torch.tensor([p0, 1 - p0], dtype=torch.float64))


# -- 3. numerical stability in float32 and under bf16 autocast ---------------

def _all_values_pixels(c, n_bits):
    """(V, c, 1, 1): every value appears in every channel, in different combinations."""
    v = torch.arange(2**n_bits)
    cols = [v, v.flip(0), (v * 5 + 3) % len(v)][:c]
    return torch.stack(cols, dim=1)[:, :, None, None]


@FAST
@given(st.sampled_from([1, 3]), st.data())
def test_logistic_mixture_float32_extremes_finite_values_and_gradients(c, data):
    k, values = data.draw(mixture_params(c))
    base = torch.tensor(values, dtype=torch.float32)
    for n_bits in range(1, 9):
        head = LogisticMixtureHead(c, n_bits, k)
        x = _all_values_pixels(c, n_bits)
        params = base[None, :, None, None].expand(len(x), -1, 1, 1).clone().requires_grad_(True)
        nll = head.nll(params, x)
        assert nll.dtype == torch.float32
        assert torch.isfinite(nll).all(), f"n_bits={n_bits}: nll {nll.flatten().tolist()}"
        assert (nll > -1e-4).all(), "a probability above 1"
        (grad,) = torch.autograd.grad(nll.sum(), params)
        assert torch.isfinite(grad).all(), f"n_bits={n_bits}: non-finite gradient"
        samples = head.sample(base[None].expand(50, -1), head.noise(50))
        assert samples.min() >= 0 and samples.max() < 2**n_bits


def test_logistic_float32_underflowing_bin_is_accurate():
    """Mean -50, scale e^-7, value in the middle: the mass e^-55000 underflows but its log is exact."""
    head = LogisticMixtureHead(1, 8, 1)
    params = torch.tensor([0.0, -50.0, -9.0])[None, :, None, None].requires_grad_(True)  # -9 clamps to -7
    nll = head.nll(params, torch.tensor([[[[128]]]]))
    h, xs = 1 / 255, 128 * 2 / 255 - 1
    b, d = (xs + 50 - h) * math.exp(7), 2 * h * math.exp(7)
    want = b - math.log1p(-math.exp(-d))  # -log(sigmoid(a) - sigmoid(b)) for a, b >> 0
    assert math.isclose(nll.item(), want, rel_tol=1e-5), (nll.item(), want)
    nll.sum().backward()
    assert torch.isfinite(params.grad).all() and params.grad[0, 2] == 0  # the clamp stops the gradient


def test_logistic_float32_vanishing_bin_width_uses_centre_density():
    """Scale e^100: the bin width underflows to 0, so log P = log density at the centre + log(2h)."""
    head = LogisticMixtureHead(1, 8, 1)
    params = torch.tensor([0.0, 0.0, 100.0])[None, :, None, None].requires_grad_(True)
    nll = head.nll(params, torch.tensor([[[[100]]]]))
    want = 100 + 2 * math.log(2) - math.log(2 / 255)
    assert math.isclose(nll.item(), want, rel_tol=1e-5), (nll.item(), want)
    nll.sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("c", [1, 3])
def test_heads_compute_float32_under_bf16_autocast(c):
    torch.manual_seed(3)
    n_bits, n_features = 8, 8
    heads = [LogisticMixtureHead(c, n_bits, 3), CategoricalHead(c, n_bits),
             AutoregressiveCategoricalHead(c, n_bits, n_features)]
    x = _all_values_pixels(c, n_bits)
    for head in heads:
        raw = (torch.randn(len(x), head.n_params) * 30).requires_grad_(True)
        if isinstance(head, LogisticMixtureHead):
            with torch.no_grad():  # extreme log-scales and means
                raw[:, 3 + c * 3:3 + 2 * c * 3] = torch.tensor([-8.0, 20.0, -7.0]).repeat(c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            params = raw @ torch.eye(head.n_params)  # a bf16 op, as a network's last layer
            assert params.dtype == torch.bfloat16
            nll = head.nll(params[:, :, None, None], x)
        assert nll.dtype == torch.float32
        assert torch.isfinite(nll).all()
        want = head.nll(params.detach().float()[:, :, None, None], x)
        assert torch.equal(nll.detach(), want), f"{type(head).__name__}: autocast changed the computation"
        (grad,) = torch.autograd.grad(nll.sum(), raw)
        assert torch.isfinite(grad).all()


# -- 4. sampling follows exp(-nll) -------------------------------------------

# Two components; wide R so its continuous value is far from its discretized one,
# narrow G and B with coefficients near +-1, so the coefficient terms matter.
RGB_MIXTURE = torch.tensor(
    [0.3, -0.2,  # logits
     0.1, -0.4, -0.2, 0.3, 0.05, -0.1,  # means R, G, B
     0.0, -0.5, -2.5, -2.0, -2.5, -2.0,  # log-scales R, G, B
     2.0, -2.0, 1.5, 2.0, -2.0, 1.0],  # coefficients c0, c1, c2
    dtype=torch.float64)


def test_logistic_mixture_gray_samples_follow_nll():
    params = torch.tensor([0.5, -0.5, -0.3, 0.6, -1.0, -2.0], dtype=torch.float64)
    check_sampler(LogisticMixtureHead(1, 3, 2), params, 1, 3)


@pytest.mark.parametrize("n_bits", [1, 2])
def test_logistic_mixture_rgb_samples_follow_nll(n_bits):
    check_sampler(LogisticMixtureHead(3, n_bits, 2), RGB_MIXTURE, 3, n_bits)


def test_categorical_samples_follow_nll():
    params = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    check_sampler(CategoricalHead(3, 2), params, 3, 2)


def sharpened_autoregressive_head(c, n_bits, n_features, seed=0):
    """An AutoregressiveCategoricalHead with random weights large enough for strong within-pixel dependence."""
    torch.manual_seed(seed)
    head = AutoregressiveCategoricalHead(c, n_bits, n_features).double()
    with torch.no_grad():
        head.inner.weight[:, n_features:].mul_(8)  # the pixel's own channels
        head.outer.weight.mul_(2)
    return head


def test_autoregressive_categorical_samples_follow_nll():
    head = sharpened_autoregressive_head(3, 2, 6)
    params = torch.randn(6, dtype=torch.float64)
    probs = pixel_probs(head, params, 3, 2).reshape(4, 4, 4)
    marginals = [probs.sum(dim=tuple(d for d in range(3) if d != ch)) for ch in range(3)]
    independent = torch.einsum("i,j,k->ijk", *marginals)
    dependence = 0.5 * (probs - independent).abs().sum().item()
    assert dependence > 0.2, "too weak a within-pixel dependence for the test to catch a sampler ignoring it"
    check_sampler(head, params, 3, 2)


# -- 5. the autoregressive categorical head ----------------------------------

@pytest.mark.parametrize("c,n_bits", [(1, 3), (3, 1), (3, 2)])
def test_autoregressive_categorical_joint_values_sum_to_one(c, n_bits):
    head = sharpened_autoregressive_head(c, n_bits, 5)
    params = torch.randn(5, dtype=torch.float64) * 3
    total = pixel_probs(head, params, c, n_bits).sum().item()
    assert abs(total - 1) < 1e-10


def test_autoregressive_categorical_channel_c_sees_only_earlier_channels():
    head = sharpened_autoregressive_head(3, 2, 5)
    params = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    xs = (torch.randint(0, 4, (2, 3, 3, 3)) * 2 / 3 - 1).double().requires_grad_(True)
    logits = head.logits(params, xs)  # (B, C, K, H, W)
    assert logits.shape == (2, 3, 4, 3, 3)
    for ch in range(3):
        g_params, g_xs = torch.autograd.grad(logits[:, ch].sum(), (params, xs), retain_graph=True)
        assert g_xs[:, ch:].abs().max() == 0, f"logits of channel {ch} see channels >= {ch}"
        if ch > 0:
            assert (g_xs[:, :ch].abs().sum(dim=(0, 2, 3)) > 0).all(), f"channel {ch} ignores an earlier one"
        assert g_params.abs().sum() > 0


def test_autoregressive_categorical_every_parameter_gets_a_gradient():
    head = make_head("categorical", 3, 2, masked=False, n_features=7)
    params = torch.randn(2, 7, 4, 4, requires_grad=True)
    head.nll(params, torch.randint(0, 4, (2, 3, 4, 4))).sum().backward()
    assert params.grad is not None and params.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"


# -- 6. parameter groups and the contract ------------------------------------

def test_param_groups_documented_values():
    assert CategoricalHead(3, 2).param_groups().tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert LogisticMixtureHead(1, 8, 2).param_groups().tolist() == [0] * 6
    assert LogisticMixtureHead(3, 8, 2).param_groups().tolist() == (
        [0, 0] + [0, 0, 1, 1, 2, 2] + [0, 0, 1, 1, 2, 2] + [1, 1, 2, 2, 2, 2])
    assert AutoregressiveCategoricalHead(3, 2, 9).param_groups().tolist() == [0] * 9


@pytest.mark.parametrize("head", [CategoricalHead(3, 2), CategoricalHead(1, 4), LogisticMixtureHead(1, 8, 4),
                                  LogisticMixtureHead(3, 5, 3), AutoregressiveCategoricalHead(3, 2, 9)],
                         ids=lambda h: f"{type(h).__name__}-{h.n_channels}")
def test_head_contract(head):
    groups = head.param_groups()
    assert groups.dtype == torch.long and groups.shape == (head.n_params,)
    assert groups.min() >= 0 and groups.max() < head.n_channels
    if isinstance(head, LogisticMixtureHead):
        k, c = head.n_mixtures, head.n_channels
        assert head.n_params == k * (1 + 2 * c) + (3 * k if c == 3 else 0)
    noise = head.noise(4, torch.Generator().manual_seed(5))
    again = torch.rand(noise.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(noise, again), "noise is not one torch.rand call"
    values = head.sample(torch.randn(4, head.n_params), noise)
    assert values.shape == (4, head.n_channels) and values.dtype == torch.long


@pytest.mark.parametrize("n_bits", [1, 2])
def test_logistic_param_groups_bound_what_earlier_channels_see(n_bits):
    """The marginal of channels < g does not move with any parameter of group >= g."""
    head = LogisticMixtureHead(3, n_bits, 2)
    params = RGB_MIXTURE.clone().requires_grad_(True)
    probs = pixel_probs(head, params, 3, n_bits).reshape((2**n_bits,) * 3)
    groups = head.param_groups()
    for g in (1, 2):
        marginal = probs.sum(dim=tuple(range(g, 3)))  # P(x_<g)
        for value in marginal.flatten():
            (grad,) = torch.autograd.grad(value, params, retain_graph=True)
            assert grad[groups >= g].abs().max() < 1e-12
            assert grad[groups < g].abs().max() > 1e-6


# -- 7. make_head ----------------------------------------------------------

def test_make_head_builds_each_head():
    assert set(HEADS) == {"categorical", "logistic-mixture"}
    assert type(make_head("categorical", 3, 8)) is CategoricalHead
    assert type(make_head("categorical", 3, 8, n_mixtures=5)) is CategoricalHead
    ar = make_head("categorical", 3, 8, masked=False, n_features=16)
    assert type(ar) is AutoregressiveCategoricalHead and ar.n_params == 16
    for masked in (True, False):
        lm = make_head("logistic-mixture", 3, 8, n_mixtures=5, masked=masked)
        assert type(lm) is LogisticMixtureHead and lm.n_params == 50


def test_make_head_errors():
    expected = r"unknown likelihood 'gaussian'.*'categorical'.*'logistic-mixture'"
    with pytest.raises(PixelModelsError, match=expected):
        make_head("gaussian", 3, 8)
    with pytest.raises(PixelModelsError, match="n_features"):
        make_head("categorical", 3, 8, masked=False)
    with pytest.raises(PixelModelsError, match="1 or 3 channels, found 2"):
        make_head("logistic-mixture", 2, 8)
