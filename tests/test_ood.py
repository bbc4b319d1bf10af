"""The AUROC and the input perturbation of benchmarks/ood.py (the benchmark itself trains for minutes)."""

import importlib.util
import itertools
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ood.py"
_spec = importlib.util.spec_from_file_location("ood_benchmark", _PATH)
ood = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ood  # dataclasses look their module up there
_spec.loader.exec_module(ood)


def brute_force_auroc(a, b) -> Fraction:
    """Count every (in, out) pair: 1 when in > out, 1/2 when equal."""
    wins = sum(Fraction(1) if x > y else Fraction(1, 2) if x == y else Fraction(0)
               for x, y in itertools.product(a, b))
    return wins / (len(a) * len(b))


@pytest.mark.parametrize("n_in, n_out, n_values", [(1, 1, 2), (7, 3, 3), (40, 25, 5), (60, 90, 1000), (13, 13, 1)])
def test_auroc_equals_the_pair_count(n_in, n_out, n_values):
    gen = torch.Generator().manual_seed(n_in * 1000 + n_out)
    # few distinct values: many ties, within and across the two sets
    a = torch.randint(0, n_values, (n_in,), generator=gen).double() / 4
    b = torch.randint(0, n_values, (n_out,), generator=gen).double() / 4 + 0.25
    expected = brute_force_auroc(a.tolist(), b.tolist())
    assert ood.auroc(a, b) == pytest.approx(float(expected), abs=1e-12)


def test_auroc_extremes_and_symmetry():
    assert ood.auroc([3.0, 4.0], [1.0, 2.0, 2.5]) == 1.0
    assert ood.auroc([1.0, 2.0, 2.5], [3.0, 4.0]) == 0.0
    assert ood.auroc([2.0] * 5, [2.0] * 3) == 0.5
    a, b = torch.randn(30), torch.randn(20)
    assert ood.auroc(a, b) + ood.auroc(b, a) == pytest.approx(1.0, abs=1e-12)
    assert ood.auroc(-a, -b) == pytest.approx(ood.auroc(b, a), abs=1e-12)


def test_auroc_refuses_empty_and_nan():
    with pytest.raises(ValueError, match="both sets"):
        ood.auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        ood.auroc([1.0, float("nan")], [0.0])


def test_perturb_keeps_shape_dtype_range_and_input():
    x = torch.randint(0, 8, (64, 1, 28, 28), dtype=torch.uint8)
    before = x.clone()
    y = ood.perturb(x, 0.5, 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert int(y.max()) < 8
    assert torch.equal(x, before)
    assert torch.equal(ood.perturb(x, 0.0, 3), x)


def test_perturb_replaces_a_fraction_mu_with_uniform_values():
    n_bits, mu = 8, 0.3
    x = torch.full((200, 1, 28, 28), 17, dtype=torch.uint8)
    y = ood.perturb(x, mu, n_bits, torch.Generator().manual_seed(1))
    n = x.numel()
    changed = (y != x).double().mean().item()
    expected = mu * (1 - 2**-n_bits)  # a replacement may draw the old value
    assert abs(changed - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    # mu = 1: every value is a fresh uniform draw, whatever the input
    z = ood.perturb(torch.zeros(4000, 1, 4, 4, dtype=torch.uint8), 1.0, 3, torch.Generator().manual_seed(2))
    counts = torch.bincount(z.flatten().long(), minlength=8).double()
    expected_count = z.numel() / 8
    chi2 = ((counts - expected_count) ** 2 / expected_count).sum().item()
    assert chi2 < 30.0  # chi-square with 7 degrees of freedom: p < 1e-4 beyond 30


def test_perturb_draws_afresh_and_repeats_with_the_seed():
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(3)
    first, second = ood.perturb(x, 0.2, 8, gen), ood.perturb(x, 0.2, 8, gen)
    assert not torch.equal(first, second)
    assert torch.equal(first, ood.perturb(x, 0.2, 8, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="mu"):
        ood.perturb(x, 1.5, 8)
