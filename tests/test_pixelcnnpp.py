"""PixelCNN++ specifics: data-dependent initialization, sizes, the full receptive field."""

import torch

from pixelmodels import create_model
from pixelmodels.nn import weight_normed_layers


def test_data_dependent_init_standardizes_every_layer_on_the_init_batch():
    model = create_model("pixelcnnpp", image_shape=(3, 8, 8), n_bits=8, preset="tiny", n_filters=8, n_classes=3)
    x = torch.randint(0, 256, (64, 3, 8, 8))
    y = torch.randint(0, 3, (64,))
    layers = weight_normed_layers(model)
    stats = {}

    def record(layer, _inputs, out):
        stats[layer] = (out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3)))

    def measure():
        handles = [layer.register_forward_hook(record) for layer in layers]
        with torch.no_grad():
            model.eval()(x, y)
        for h in handles:
            h.remove()

    measure()
    before = [stats[layer][1] for layer in layers]
    model.initialize_from_data(x, y)
    measure()
    assert len(layers) > 20
    for layer, std_before in zip(layers, before):
        mean, std = stats[layer]
        assert mean.abs().max() < 1e-4
        assert torch.allclose(std, torch.full_like(std, layer.init_scale), rtol=1e-3)
    assert any(not torch.allclose(s, torch.full_like(s, 1.0), rtol=0.1) for s in before)  # it did change things
    assert {layer.init_scale for layer in layers} == {1.0, 0.1}


def test_any_image_size_is_padded_inside_to_multiples_of_4():
    """Issue 14 lifted the old limit (sides divisible by 4); tests/test_priors.py checks causality and the cache."""
    model = create_model("pixelcnnpp", image_shape=(1, 30, 28), preset="tiny")
    assert model.network_size == (32, 28) and model(torch.zeros(2, 1, 30, 28, dtype=torch.long)).shape[2:] == (30, 28)


def test_receptive_field_covers_every_earlier_pixel():
    model = create_model("pixelcnnpp", image_shape=(1, 8, 8), n_bits=3, preset="tiny", n_blocks=2).double()
    for i, j in [(7, 7), (7, 0), (4, 3)]:
        x = model.embed(torch.randint(0, 8, (1, 1, 8, 8))).requires_grad_(True)
        (g,) = torch.autograd.grad(model.network(x, None)[0, :, i, j].sum(), x)
        field = g[0, 0] != 0
        expected = torch.zeros(8, 8, dtype=torch.bool)
        expected[:i] = True
        expected[i, :j] = True
        assert torch.equal(field, expected)
