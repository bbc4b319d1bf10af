"""What the cached sampling steps compute and read: ``reads()`` (benchmarks/sampling.py's limits) against two
independent counts (the full forward pass's FLOPs, the parameters), and ``StepMatrix``'s two layouts."""

import pytest
import torch

import pixelmodels
from pixelmodels.flops import count_flops
from pixelmodels.nn.incremental import StepMatrix


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 6)])
@pytest.mark.parametrize("name", pixelmodels.list_models())
def test_cached_steps_of_an_image_do_the_work_of_one_full_pass(name, shape):
    """Every position stepped once computes what one forward pass computes, no more: the per-step FLOPs
    times the positions land between half and 1.1x the full pass's count. Below 1 because the full pass
    also multiplies masked-out taps and padding the cache skips; a per-row share counted per step
    would multiply the total by the width and a forgotten layer would drop it. The weights a step reads
    are at most all of the parameters (work done once per row counts as its share)."""
    torch.manual_seed(0)
    model = pixelmodels.create_model(name, image_shape=shape, n_bits=8, preset="tiny").eval()
    n = 3
    x = torch.randint(0, 256, (n, *shape))
    with torch.no_grad():
        full = count_flops(model, x)
        reads = model.sampling_cache(n).reads()
    positions = shape[1] * shape[2]
    assert 0.5 <= reads.flops * positions / full <= 1.1, (reads.flops * positions, full)
    parameter_bytes = 4 * model.n_parameters()
    assert 0 < reads.weights <= parameter_bytes
    assert reads.activations >= 0


@pytest.mark.parametrize("shape", [(3, 5), (640, 160), (1024, 512)])
def test_both_layouts_of_a_step_product_compute_bias_plus_x_times_w(shape):
    """``StepMatrix`` against the product in float64, in the layout its size picks and in the other one,
    on a strided window like the caches' row buffers."""
    torch.manual_seed(0)
    weight, bias = torch.randn(*shape), torch.randn(16, 4, shape[1])[:, 1]  # bias: a (16, out) view
    x = torch.randn(16, 3, shape[0])[:, 2]  # (16, in), rows 3 * in apart
    expected = (bias.double() + x.double() @ weight.double()).float()
    picked = StepMatrix(weight)
    assert picked.transposed == (weight.numel() >= StepMatrix.TRANSPOSE_AT)
    for transpose_at in (0, weight.numel() + 1):
        StepMatrix.TRANSPOSE_AT, saved = transpose_at, StepMatrix.TRANSPOSE_AT
        try:
            m = StepMatrix(weight)
        finally:
            StepMatrix.TRANSPOSE_AT = saved
        assert m.transposed == (transpose_at == 0)
        assert m.weight.numel() == weight.numel() and m.shape == shape
        torch.testing.assert_close(m.addmm(bias, x), expected, atol=1e-4, rtol=1e-5)


def test_a_step_product_over_many_rows_keeps_the_plain_layout():
    """Only a step of at most ``TRANSPOSE_ROWS`` rows multiplies a large weight transposed; over more rows
    (batch 128, 256) the plain layout is kept, with the same values."""
    torch.manual_seed(0)
    weight = torch.randn(1024, 512)
    assert weight.numel() >= StepMatrix.TRANSPOSE_AT
    assert StepMatrix(weight, 16).transposed and StepMatrix(weight, StepMatrix.TRANSPOSE_ROWS).transposed
    assert StepMatrix(weight).transposed  # rows unknown: a few
    many = StepMatrix(weight, StepMatrix.TRANSPOSE_ROWS + 1)
    assert not many.transposed
    rows = 2 * StepMatrix.TRANSPOSE_ROWS
    x, bias = torch.randn(rows, 1024), torch.randn(rows, 512)
    torch.testing.assert_close(many.addmm(bias, x), (bias.double() + x.double() @ weight.double()).float(),
                               atol=1e-4, rtol=1e-5)


def _sampling_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sampling.py"
    spec = importlib.util.spec_from_file_location("sampling_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timed_products_sees_every_product_and_restores_the_functions():
    """benchmarks/sampling.py's products column: inside ``timed_products`` each product function is counted
    once per call (the tensor method and operator forms too), nothing else is, and afterwards the functions
    are torch's own again."""
    script = _sampling_script()
    before = [getattr(owner, name) for owner, name in script.PRODUCTS]
    a, b, bias = torch.randn(4, 3), torch.randn(3, 5), torch.randn(4, 5)
    with script.timed_products() as total:
        torch.addmm(bias, a, b)
        bias.clone().addmm_(a, b)
        _ = a @ b
        torch.nn.functional.linear(a, b.t())
        torch.nn.functional.conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 2, 2))
        torch.sigmoid(a) + a  # not products
    assert total[1] == 5 and total[0] > 0
    assert [getattr(owner, name) for owner, name in script.PRODUCTS] == before


def test_timed_products_counts_a_cache_step_the_way_reads_does():
    """Over a PixelSNAIL cache's steps the timed calls do happen (the products are where ``reads()`` says the
    FLOPs are): a cache whose step called no listed function would time nothing."""
    script = _sampling_script()
    torch.manual_seed(0)
    model = pixelmodels.create_model("pixelsnail", image_shape=(1, 4, 4), n_bits=8, preset="tiny").eval()
    with script.timed_products() as total:
        seconds = script.cached_seconds_per_step(model, 2, 8)
    assert seconds > 0 and total[1] >= 8 * 4  # several products per step, every step
