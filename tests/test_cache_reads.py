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
