"""Priors over code maps; vector, spatial and code-map conditions; temperature: over every registered family."""

import itertools

import pytest
import torch

import pixelmodels
from pixelmodels import create_model, list_models
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import CategoricalHead, LogisticMixtureHead

H = W = 6
K = 300  # codes: not a power of two, more than 256
CK = 7  # codes of a code-map condition
CONDS = {"vector": (5,), "map": (2, 3, 3), "codes": (3, 3)}
KINDS = [None, "vector", "map", "codes"]


def make(name, n_codes=K, cond=None, n_classes=None, shape=(H, W), c=1, dtype=torch.float64, cond_shape=None,
         **kw):
    """A tiny model far from its initialization (zero-initialized tables too)."""
    codes = dict(n_codes=n_codes) if n_codes else dict(n_bits=3)
    model = create_model(name, image_shape=(c, *shape), n_classes=n_classes, preset="tiny",
                         cond_shape=cond_shape or CONDS.get(cond), cond_codes=CK if cond == "codes" else None,
                         **codes, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(dtype).eval()


def inputs(model, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    top = model.n_codes or 2**model.n_bits
    x = torch.randint(0, top, (b, *model.image_shape), generator=g)
    y = torch.randint(0, model.n_classes, (b,), generator=g) if model.n_classes else None
    if model.cond_codes:
        cond = torch.randint(0, model.cond_codes, (b, *model.cond_shape), generator=g)
    else:
        cond = torch.randn(b, *model.cond_shape, generator=g, dtype=torch.float64) if model.cond_shape else None
    return x, y, cond


@pytest.mark.parametrize("name,cond,train", list(itertools.product(list_models(), KINDS, [True, False])))
def test_causality_in_codes_with_the_condition_fixed(name, cond, train):
    model = make(name, cond=cond, n_classes=3).train(train)
    x, y, c = inputs(model, 3)
    xs = model.embed(x).detach().requires_grad_(True)  # (B, E, H, W): the network's input
    reached = 0
    for i, j in [(0, 0), (0, 4), (2, 0), (3, 3), (H - 1, W - 1)]:
        torch.manual_seed(1)  # the same dropout masks
        params = model.network(xs, model.condition(y, 3, c))
        (g,) = torch.autograd.grad(params[1, :, i, j].sum(), xs)
        seen = g.abs().sum(1) > 0  # (B, H, W)
        allowed = torch.zeros(3, H, W, dtype=torch.bool)
        allowed[1, :i] = True
        allowed[1, i, :j] = True
        assert not (seen & ~allowed).any(), f"({i}, {j}) sees {(seen & ~allowed).nonzero().tolist()}"
        reached += int(seen[1].any())
    assert reached >= 3  # the test can see a dependence (a dead ReLU may hide one position's)


@pytest.mark.parametrize("name", list_models())
def test_the_k_probabilities_of_a_position_sum_to_one(name):
    model = make(name, cond="vector")
    x, _, c = inputs(model, 1)
    for i, j in [(0, 0), (4, 2)]:
        xs = x.repeat(K, 1, 1, 1)
        xs[:, 0, i, j] = torch.arange(K)  # every value of the position, the rest fixed
        lp = model.log_prob(xs, cond=c.expand(K, -1), per_pixel=True)[:, i, j]
        assert torch.logsumexp(lp, 0).abs() < 1e-9


@pytest.mark.parametrize("name,cond", list(itertools.product(list_models(), ["vector", "map", "codes"])))
def test_the_condition_reaches_the_first_and_the_last_pixel_and_gets_gradients(name, cond):
    model = make(name, cond=cond)
    x, _, c = inputs(model, 2)
    c2 = c.clone()
    if cond == "codes":
        c2[1] = (c2[1] + 1) % CK
    else:
        c2[1] += 1.0
    a = model.log_prob(x, cond=c, per_pixel=True)
    b = model.log_prob(x, cond=c2, per_pixel=True)
    assert torch.equal(a[0], b[0]), "changing one example's condition changed another's"
    for i, j in [(0, 0), (H - 1, W - 1)]:
        assert (a[1, i, j] - b[1, i, j]).abs() > 1e-6
    if cond == "codes":  # codes have no gradient: the table that embeds them does
        (g,) = torch.autograd.grad(model.log_prob(x, cond=c).sum(), model.conditioning.codes.weight)
        assert g[c.unique()].abs().sum(1).gt(0).all() and g.abs().sum() > 0
        return
    c.requires_grad_(True)
    (g,) = torch.autograd.grad(model.log_prob(x, cond=c).sum(), c)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("name,cond", list(itertools.product(list_models(), KINDS)))
def test_cached_parameters_equal_the_full_pass_at_every_step(name, cond):
    model = make(name, cond=cond, n_classes=3)
    n = 2
    _, y, c = inputs(model, n)
    final = torch.randint(0, K, (n, 1, H, W))
    cache = model.sampling_cache(n, y, c)
    with torch.no_grad():
        for i, j in itertools.product(range(H), range(W)):
            x = torch.randint(0, K, final.shape)  # whatever the step may not read is random
            x[:, :, :i] = final[:, :, :i]
            x[:, :, i, :j] = final[:, :, i, :j]
            torch.testing.assert_close(cache.step(x, i, j), model(x, y, c)[:, :, i, j], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name,cond,codes", list(itertools.product(list_models(), KINDS, [K, None])))
def test_cached_and_reference_samples_are_identical_at_any_temperature(name, cond, codes):
    model = make(name, n_codes=codes, cond=cond, n_classes=3, c=1 if codes else 3)
    _, y, c = inputs(model, 3)
    draws = {}
    for t, cached in itertools.product([1.0, 0.7], [True, False]):
        draws[t, cached] = pixelmodels.sample(model, 3, y, c, generator=torch.Generator().manual_seed(5),
                                              cached=cached, temperature=t)
    assert torch.equal(draws[1.0, True], draws[1.0, False]) and torch.equal(draws[0.7, True], draws[0.7, False])
    assert not torch.equal(draws[1.0, True], draws[0.7, True])
    default = pixelmodels.sample(model, 3, y, c, generator=torch.Generator().manual_seed(5))
    assert torch.equal(default, draws[1.0, True])  # T = 1 is the sampler without temperature
    assert default.dtype == (torch.int64 if codes else torch.uint8)
    if codes:
        assert default.max() < K and default.min() >= 0


@pytest.mark.parametrize("name,cond", list(itertools.product(list_models(), ["map", "codes"])))
def test_completion_of_code_maps_with_a_map_condition(name, cond):
    model = make(name, cond=cond)
    x, _, c = inputs(model, 2)
    known = torch.zeros(H, W, dtype=torch.bool)
    known[:3] = True
    a = pixelmodels.complete(model, x, known, cond=c, generator=torch.Generator().manual_seed(1), cached=True)
    b = pixelmodels.complete(model, x, known, cond=c, generator=torch.Generator().manual_seed(1), cached=False)
    assert torch.equal(a, b) and torch.equal(a[:, :, :3], x[:, :, :3]) and a.dtype == torch.int64


@pytest.mark.parametrize("name,shape", list(itertools.product(list_models(), [(7, 7), (30, 30), (28, 28)])))
def test_every_family_takes_any_image_size(name, shape):
    model = make(name, n_codes=None, shape=shape, c=3, n_classes=2)
    x, y, _ = inputs(model, 2)
    lp = model.log_prob(x, y, per_pixel=True)
    assert lp.shape == (2, *shape) and torch.isfinite(lp).all()
    h, w = shape
    for i, j in [(0, 0), (h // 2, w - 1), (h - 1, 0), (h - 1, w - 1)]:  # later pixels do not move earlier ones
        x2 = x.clone()
        x2[:, :, i, j] = (x2[:, :, i, j] + 3) % 8
        lp2 = model.log_prob(x2, y, per_pixel=True)
        before = torch.zeros(shape, dtype=torch.bool)
        before[:i] = True
        before[i, :j] = True
        assert torch.equal(lp[:, before], lp2[:, before])
        assert not torch.equal(lp[:, i, j], lp2[:, i, j])


@pytest.mark.parametrize("name", list_models())
def test_cached_sampling_at_an_odd_size(name):
    model = make(name, n_codes=None, shape=(7, 5), c=3)
    a = pixelmodels.sample(model, 2, generator=torch.Generator().manual_seed(3), cached=True)
    b = pixelmodels.sample(model, 2, generator=torch.Generator().manual_seed(3), cached=False)
    assert a.shape == (2, 3, 7, 5) and torch.equal(a, b)


def test_pixelcnnpp_cached_parameters_at_30x30():
    model = make("pixelcnnpp", n_codes=None, shape=(30, 30), c=3)
    x = torch.randint(0, 8, (1, 3, 30, 30))
    cache = model.sampling_cache(1)
    with torch.no_grad():
        full = model(x)
        for i, j in itertools.product(range(30), range(30)):
            torch.testing.assert_close(cache.step(x, i, j), full[:, :, i, j], atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("k", [2, 512, 1024, 8192])
def test_any_number_of_codes(k):
    model = create_model("gated-pixelcnn", image_shape=(1, 4, 4), n_codes=k, preset="tiny")
    x = torch.randint(0, k, (2, 1, 4, 4))
    bpd = model.bits_per_dim(x)
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    assert model.head.n_values == k and model(x).shape == (2, k, 4, 4)


def test_bits_per_dim_of_codes_is_nll_over_h_w():
    model = make("pixelsnail", cond=None)
    x, _, _ = inputs(model, 2)
    nll = -model.log_prob(x)
    torch.testing.assert_close(model.bits_per_dim(x).double(), nll / (torch.log(torch.tensor(2.0)) * H * W),
                               rtol=1e-6, atol=0)


def test_code_and_condition_errors_are_clear():
    with pytest.raises(PixelModelsError, match="logistic-mixture is for ordinal intensities"):
        create_model("pixelcnnpp", image_shape=(1, 4, 4), n_codes=16, preset="tiny", likelihood="logistic-mixture")
    assert create_model("pixelcnnpp", image_shape=(1, 4, 4), n_codes=16, preset="tiny").options.likelihood \
        == "categorical"
    with pytest.raises(PixelModelsError, match="n_codes.*n_bits|n_bits.*n_codes"):
        create_model("pixelcnn", image_shape=(1, 4, 4), n_codes=16, n_bits=8, preset="tiny")
    with pytest.raises(PixelModelsError, match="1 channel"):
        create_model("pixelcnn", image_shape=(3, 4, 4), n_codes=16, preset="tiny")
    model = make("gated-pixelcnn", cond="map")
    x = torch.randint(0, K, (2, 1, H, W))
    with pytest.raises(PixelModelsError, match=r"cond: expected shape \(2, 2, 3, 3\), found \(2, 2, 4, 4\)"):
        model.log_prob(x, cond=torch.zeros(2, 2, 4, 4))
    with pytest.raises(PixelModelsError, match="give cond"):
        model.log_prob(x)
    with pytest.raises(PixelModelsError, match=r"codes: expected values in 0..299, found 300"):
        model.log_prob(torch.full((2, 1, H, W), K), cond=torch.zeros(2, 2, 3, 3))


def test_temperature_is_the_same_as_rescaled_parameters():
    """Two paths: the head's temperature against parameters rescaled by hand, sampled at T = 1."""
    torch.manual_seed(0)
    t = 0.6
    head = CategoricalHead(1, None, n_values=K)
    params, noise = torch.randn(64, K), head.noise(64)
    assert torch.equal(head.sample(params, noise, t), head.sample(params / t, noise))
    mix = LogisticMixtureHead(3, 8, n_mixtures=4)
    params, noise = torch.randn(64, mix.n_params), mix.noise(64)
    scaled = params.clone()
    scaled[:, :4] /= t  # mixture logits
    scaled[:, 4 + 12: 4 + 24] += torch.log(torch.tensor(t))  # log-scales (above the clamp here)
    assert params[:, 16:28].min() > -7
    assert torch.equal(mix.sample(params, noise, t), mix.sample(scaled, noise))
    assert not torch.equal(mix.sample(params, noise, t), mix.sample(params, noise))
    with pytest.raises(PixelModelsError, match="--temperature"):
        pixelmodels.sample(make("pixelcnn"), 1, temperature=0.0)


# --- a condition that is a map of codes (the top codes of a VQ-VAE-2 bottom prior) ---------------


def one_hot_twin(model_codes, size):
    """A float-map model (CK, *size) with ``model_codes``'s weights: the code table set to the identity (its
    first CK features; the rest zero) and the float map's 1x1 convolution the codes model's first CK columns."""
    twin = create_model(model_codes.config.name, image_shape=model_codes.image_shape, n_codes=K, preset="tiny",
                        n_classes=model_codes.n_classes, cond_shape=(CK, *size)).double().eval()
    state = dict(model_codes.state_dict())
    table = torch.zeros_like(state.pop("conditioning.codes.weight"))
    table[:, :CK] = torch.eye(CK, dtype=table.dtype)
    model_codes.conditioning.codes.weight.data.copy_(table)
    state["conditioning.upsample.inner.weight"] = state["conditioning.upsample.inner.weight"][:, :CK]
    twin.load_state_dict(state)
    return twin


@pytest.mark.parametrize("name,size", list(itertools.product(list_models(), [(3, 3), (H, W), (9, 8)])))
def test_a_code_map_condition_equals_its_one_hot_float_map(name, size):
    """Two independent paths: codes through the learned table (set to the identity), and their one-hot
    float map through the float map's path; coarser, equal and finer than the image; with class labels."""
    model = make(name, cond="codes", cond_shape=size, n_classes=3)
    twin = one_hot_twin(model, size)
    x, y, _ = inputs(model, 3)
    codes = torch.randint(0, CK, (3, *size), generator=torch.Generator().manual_seed(3))
    hot = torch.nn.functional.one_hot(codes, CK).movedim(-1, 1).double()
    torch.testing.assert_close(model(x, y, codes), twin(x, y, hot), rtol=1e-10, atol=1e-10)
    other = (codes + 1) % CK
    assert not torch.allclose(model(x, y, other), twin(x, y, hot))  # the comparison can fail


@pytest.mark.parametrize("name,size,likelihood", [(n, s, lik) for n in list_models()
                                                  for s, lik in [((9, 8), "categorical"), ((H, W), "logistic-mixture")]])
def test_images_conditioned_on_codes_sample_the_same_cached_and_reference(name, size, likelihood):
    model = make(name, n_codes=None, cond="codes", cond_shape=size, n_classes=3, c=3, likelihood=likelihood)
    _, y, c = inputs(model, 2)
    a = pixelmodels.sample(model, 2, y, c, generator=torch.Generator().manual_seed(2), cached=True)
    b = pixelmodels.sample(model, 2, y, c, generator=torch.Generator().manual_seed(2), cached=False)
    assert torch.equal(a, b) and a.dtype == torch.uint8
    one = pixelmodels.sample(model, 2, y, c[0], generator=torch.Generator().manual_seed(2))  # one map for all
    assert one.shape == a.shape


def test_code_map_condition_errors_are_clear():
    model = make("gated-pixelcnn", cond="codes")
    x = torch.randint(0, K, (2, 1, H, W))
    with pytest.raises(PixelModelsError, match=r"cond: expected codes 0..6, found 7"):
        model.log_prob(x, cond=torch.full((2, 3, 3), CK))
    with pytest.raises(PixelModelsError, match=r"cond: expected codes 0..6, found -1"):
        model.log_prob(x, cond=torch.full((2, 3, 3), -1))
    with pytest.raises(PixelModelsError, match=r"maps of 7 codes; expected integers 0..6, found dtype torch.float"):
        model.log_prob(x, cond=torch.zeros(2, 3, 3))
    with pytest.raises(PixelModelsError, match=r"expected maps of 7 codes, shape \(2, 3, 3\), found \(2, 4, 4\)"):
        model.log_prob(x, cond=torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(PixelModelsError, match=r"cond_codes / cond_shape"):
        create_model("pixelcnn", image_shape=(1, 4, 4), n_codes=16, preset="tiny", cond_shape=(3, 3))
    with pytest.raises(PixelModelsError, match=r"cond_codes / cond_shape"):
        create_model("pixelcnn", image_shape=(1, 4, 4), n_codes=16, preset="tiny", cond_shape=(2, 3, 3),
                     cond_codes=5)
    with pytest.raises(PixelModelsError, match=r"cond_codes"):
        create_model("pixelcnn", image_shape=(1, 4, 4), n_codes=16, preset="tiny", cond_shape=(3, 3), cond_codes=1)
