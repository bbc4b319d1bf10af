"""PixelSNAIL: strictly causal attention (no first-row leak), causality of the model, its receptive field."""

import itertools

import pytest
import torch

import pixelmodels.nn.attention
from pixelmodels import create_model
from pixelmodels.errors import PixelModelsError
from pixelmodels.nn import CausalSelfAttention, causal_attention, weight_normed_layers

def qkv(b=2, heads=2, t=9, dk=4, dv=6, dtype=torch.float64):
    return (torch.randn(b, heads, t, dk, dtype=dtype), torch.randn(b, heads, t, dk, dtype=dtype),
            torch.randn(b, heads, t, dv, dtype=dtype))


def direct_attention(q, k, v):
    """Position by position: softmax over keys 0..t-1, zero for t = 0."""
    out = torch.zeros(q.shape[:3] + (v.shape[-1],), dtype=q.dtype)
    for t in range(1, q.shape[2]):
        w = torch.softmax(q[:, :, t, None] @ k[:, :, :t].transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        out[:, :, t] = (w @ v[:, :, :t])[:, :, 0]
    return out


def leaky_attention(q, k, v):
    """The bug of several public ports: mask with a large negative number, first row uniform over all."""
    t = q.shape[2]
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    mask = torch.ones(t, t, dtype=torch.bool).tril(-1)
    return torch.softmax(scores.masked_fill(~mask, -1e10), dim=-1) @ v


@pytest.mark.parametrize("t,heads,dk,dv", [(1, 1, 4, 4), (2, 1, 3, 3), (7, 2, 4, 6), (33, 3, 8, 2), (64, 1, 16, 32)])
def test_attention_equals_the_direct_computation(t, heads, dk, dv):
    q, k, v = qkv(3, heads, t, dk, dv)
    out = causal_attention(q, k, v)
    assert out.shape == (3, heads, t, dv) and out.dtype == torch.float64
    assert torch.allclose(out, direct_attention(q, k, v), atol=1e-12, rtol=1e-10)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))  # exactly zero, not small


def test_output_t_depends_on_keys_and_values_before_t_and_its_own_query_only():
    q, k, v = (a.requires_grad_(True) for a in qkv(1, 2, 6, 4, 5))
    out = causal_attention(q, k, v)
    for t in range(6):
        gq, gk, gv = torch.autograd.grad(out[:, :, t].sum(), (q, k, v), retain_graph=True, allow_unused=False)
        assert gk[:, :, t:].abs().max() == 0 and gv[:, :, t:].abs().max() == 0
        others = torch.ones(6, dtype=torch.bool)
        others[t] = False
        assert gq[:, :, others].abs().max() == 0
        if t == 0:  # the first position depends on nothing at all
            assert gq.abs().max() == 0 and gk.abs().max() == 0 and gv.abs().max() == 0
        else:  # and every earlier position does reach position t
            assert (gv[:, :, :t].abs().sum(-1) > 0).all()
            assert t == 1 or (gk[:, :, :t].abs().sum(-1) > 0).all()  # one key alone: softmax is 1, flat in k


def test_the_last_position_reaches_no_output():
    q, k, v = qkv(2, 2, 16, 4, 4)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 5.0
    v2[:, :, -1] += 100.0
    assert torch.equal(causal_attention(q, k, v), causal_attention(q, k2, v2))
    # the comparison does catch the leak: the large-negative-mask softmax moves its first row
    assert not torch.equal(leaky_attention(q, k, v)[:, :, 0], leaky_attention(q, k2, v2)[:, :, 0])


def test_attention_dropout_only_in_training():
    attn = CausalSelfAttention(5, 7, n_heads=2, key_size=3, value_size=4, dropout=0.5).double()
    a, b = torch.randn(2, 5, 4, 4, dtype=torch.float64), torch.randn(2, 7, 4, 4, dtype=torch.float64)
    out_train = attn(a, b)
    attn.eval()
    out_eval = attn(a, b)
    assert out_eval.shape == (2, 8, 4, 4)
    assert torch.equal(out_eval, attn(a, b))
    assert not torch.allclose(out_train, out_eval)
    k, v = attn.key_value(b).split([2 * 3, 2 * 4], dim=1)
    q, k, v = attn._heads(attn.query(a), 3), attn._heads(k, 3), attn._heads(v, 4)
    assert torch.allclose(out_eval.flatten(2).unflatten(1, (2, 4)).transpose(2, 3), direct_attention(q, k, v))


def model(c=1, n_classes=None, likelihood="logistic-mixture", h=8, w=8, **kw):
    m = create_model("pixelsnail", image_shape=(c, h, w), n_bits=3, n_classes=n_classes, preset="tiny",
                     likelihood=likelihood, **kw)
    with torch.no_grad():  # away from zero-initialized class biases
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.double()


@pytest.mark.parametrize("likelihood,c,n_classes,train",
                         list(itertools.product(["logistic-mixture", "categorical"], [1, 3], [None, 4], [True, False])))
def test_model_is_causal_first_and_last_pixel(likelihood, c, n_classes, train):
    m = model(c, n_classes, likelihood).train(train)
    x = torch.randint(0, 8, (2, c, 8, 8))
    y = torch.tensor([1, 3]) if n_classes else None
    xs = m.embed(x).requires_grad_(True)
    torch.manual_seed(1)
    params = m.network(xs, m.condition(y))
    for i, j in [(0, 0), (0, 1), (3, 5), (7, 7)]:
        (g,) = torch.autograd.grad(params[1, :, i, j].sum(), xs, retain_graph=True)
        seen = g.abs().sum(1) > 0  # (B, H, W)
        expected = torch.zeros(2, 8, 8, dtype=torch.bool)
        expected[1, :i] = True
        expected[1, i, :j] = True
        assert torch.equal(seen, expected)  # exactly the earlier pixels of the same image
    for i, j in [(0, 0), (7, 7)]:  # perturb the first pixel, then the last
        x2 = x.clone()
        x2[:, :, i, j] = (x2[:, :, i, j] + 3) % 8
        torch.manual_seed(1)
        params2 = m.network(m.embed(x2), m.condition(y))
        later = torch.zeros(8, 8, dtype=torch.bool)
        later[i, j + 1:] = True
        later[i + 1:] = True
        assert torch.equal(params[..., ~later].detach(), params2[..., ~later])
        assert later.any() == (not torch.equal(params.detach(), params2))  # the first pixel does move later ones


def test_attention_gives_every_earlier_pixel_to_a_late_one(monkeypatch):
    m = model(1, h=16, w=16, n_blocks=1).eval()
    i, j = 15, 8

    def field():
        xs = m.embed(torch.randint(0, 8, (1, 1, 16, 16))).requires_grad_(True)
        (g,) = torch.autograd.grad(m.network(xs, None)[0, :, i, j].sum(), xs)
        return g[0, 0] != 0

    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:i] = True
    expected[i, :j] = True
    assert torch.equal(field(), expected)
    # the convolutions alone reach three rows up
    monkeypatch.setattr(pixelmodels.nn.attention, "causal_attention", lambda q, k, v, p: v * 0)
    local = field()
    assert not local[:i - 3].any() and local[i - 3].any() and not local[0, 15]


def test_first_rows_alone_give_the_same_outputs():
    """The sampler runs the network on rows 0..i (``receptive_rows = H - 1``): same outputs there."""
    m = model(3, h=6, w=5).eval()
    xs = m.embed(torch.randint(0, 8, (2, 3, 6, 5)))
    assert m.receptive_rows == 5
    full = m.network(xs, None)
    for rows in (1, 3):
        assert torch.allclose(m.network(xs[:, :, :rows], None), full[:, :, :rows], atol=1e-12)


def test_the_model_with_sdpa_equals_the_model_with_direct_attention(monkeypatch):
    m = model(3, 4)
    x = torch.randint(0, 8, (2, 3, 8, 8))
    y = torch.tensor([0, 2])
    m.eval()
    a = m.log_prob(x, y, per_pixel=True)
    calls = []
    monkeypatch.setattr(pixelmodels.nn.attention, "causal_attention",
                        lambda q, k, v, p: calls.append(p) or direct_attention(q, k, v))
    b = m.log_prob(x, y, per_pixel=True)
    assert calls == [0.0] * len(m.blocks)  # the direct computation did run, in every block
    assert torch.allclose(a, b, atol=1e-10)


def test_class_conditioning_reaches_every_residual_layer():
    m = model(3, 4, n_blocks=2, n_res_layers=2).float()
    m.bits_per_dim(torch.randint(0, 8, (2, 3, 8, 8)), torch.tensor([1, 2])).sum().backward()
    for block in m.blocks:
        layers = [*block.res, block.kv_in, block.q_in, block.out]
        assert len(layers) == 5
        for layer in layers:
            g = layer.class_bias.embedding.weight.grad
            assert g[[1, 2]].abs().sum(1).min() > 0 and g[[0, 3]].abs().max() == 0


def test_data_dependent_init_standardizes_every_layer_and_stays_finite():
    m = create_model("pixelsnail", image_shape=(3, 8, 8), n_bits=8, preset="tiny", n_filters=8, n_classes=3)
    x = torch.randint(0, 256, (32, 3, 8, 8))
    y = torch.randint(0, 3, (32,))
    layers = weight_normed_layers(m)
    stats = {}
    handles = [layer.register_forward_hook(lambda l, _i, o: stats.__setitem__(l, o.std(dim=(0, 2, 3))))
               for layer in layers]
    m.initialize_from_data(x, y)
    stats.clear()
    with torch.no_grad():
        bpd = m.eval().bits_per_dim(x, y)
    for h in handles:
        h.remove()
    assert torch.isfinite(bpd).all()
    attention_layers = {m.blocks[0].attention.query.conv, m.blocks[0].attention.key_value.conv}
    assert attention_layers <= set(layers) and len(stats) == len(layers)
    for layer in layers:
        assert torch.allclose(stats[layer], torch.full_like(stats[layer], layer.init_scale), rtol=1e-3)


def test_bad_attention_option_is_a_clear_error():
    with pytest.raises(PixelModelsError, match=r"pixelsnail: unknown options \['attention'\]"):
        create_model("pixelsnail", image_shape=(1, 8, 8), preset="tiny", attention="explicit")
    # a config of an earlier version holds attention="sdpa", what every model now computes: it loads
    assert create_model("pixelsnail", image_shape=(1, 8, 8), preset="tiny", attention="sdpa").n_parameters() > 0
    with pytest.raises(PixelModelsError, match="--key-size: expected at least 1, found 0"):
        create_model("pixelsnail", image_shape=(1, 8, 8), preset="tiny", key_size=0)


def test_sdpa_needs_no_t_by_t_memory_on_cpu():
    """Different key and value sizes still take the linear-memory kernel (padded), not the math fallback."""
    q, k, v = (a.float() for a in qkv(1, 1, 2048, 16, 64))
    with torch.profiler.profile(profile_memory=True) as prof:
        causal_attention(q, k, v)
    peak = max(e.cpu_memory_usage for e in prof.key_averages())
    assert peak < 2048 * 2048 * 4 / 4  # a quarter of one materialized float32 (T, T) matrix
    with torch.profiler.profile(profile_memory=True) as prof:
        scores = (q @ k.transpose(-2, -1)).masked_fill(~torch.ones(2048, 2048, dtype=torch.bool).tril(-1), -1e9)
        torch.softmax(scores, dim=-1) @ v  # the materialized computation
    assert max(e.cpu_memory_usage for e in prof.key_averages()) >= 2048 * 2048 * 4


def test_checkpointed_blocks_give_the_same_loss_and_gradients():
    """checkpoint_activations recomputes each block in the backward pass: same loss, same gradients,
    dropout included (the recomputation draws the same masks)."""
    x, y = torch.randint(0, 8, (2, 3, 8, 8)), torch.tensor([0, 2])
    grads, saved = [], []
    for recompute in (False, True):
        torch.manual_seed(0)
        m = model(3, 4, dropout=0.5, attn_dropout=0.1, checkpoint_activations=recompute).train()
        torch.manual_seed(1)
        count = [0]
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.__setitem__(0, count[0] + 1) or t, lambda t: t):
            loss = m.bits_per_dim(x, y).sum()
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in m.parameters()]))
        saved.append(count[0])
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert saved[1] < saved[0] / 2  # the blocks' activations were not kept
    assert torch.equal(loss_a, loss_b)
    assert len(grad_a) == len(grad_b) and all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grad_a, grad_b))
    assert all(g.abs().sum() > 0 for g in grad_a[:4])
