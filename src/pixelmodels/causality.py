"""Causality as a check a user runs: ``check_causality(model)`` says whether any output of a model depends
on an input it must not, and where.

The rule (DESIGN.md): the distribution of sub-pixel (c, i, j) depends only on the pixels before (i, j) in
raster order and on the channels before c of pixel (i, j); no image of a batch depends on another. The
outputs checked are the network's parameters ``model.network(model.embed(x), model.condition(...))``
(B, head.n_params, H, W). On a channel-masked network those of position (i, j) are grouped by the image
channel they belong to (``model.head.param_groups()``), and group c may see channels < c of (i, j); on
any other network they form one group that may see strictly earlier pixels only.

Two probes, each in train and eval mode (dropout draws the same masks in the passes it compares: the
random generator is seeded before each forward pass, and passes compared have one shape):

* gradient: the gradient of a random combination of one output group's parameters with respect to the
  network's input ``model.embed(x)`` (for code maps, the absolute gradient summed over the embedding's
  features: the dependence on the code); every example of a batch carries another output, so one backward
  pass checks a batch of outputs. A separate pass checks that the first and the last example's outputs
  have zero gradient with respect to every other example's input.
* perturbation: one integer sub-pixel changed to another valid value, and every output that must not see
  it compared with that of the unchanged image (largest absolute change of a parameter of the group).
  Every example of a batch perturbs another sub-pixel of one image; example 0 is left unchanged and must
  stay equal to the unchanged batch's (the batch check).

The check runs on a copy of the model, float64 on the CPU by default, where a correct mask gives exact
zeros, so the default tolerance is 0; the model, its mode and the global random state stay as they were.
A non-finite output counts as an infinite dependence. Both probes read the model at the inputs probed: a
dependence that vanishes there (a ReLU off) is not seen, so more inputs (``x``, ``seed``) probe more.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from pixelmodels.errors import PixelModelsError
from pixelmodels.devices import resolve_device
from pixelmodels.models.base import AutoregressiveModel

PROBES = ("gradient", "perturbation")
MODES = ("train", "eval")


@dataclass(frozen=True)
class Leak:
    """An output that depends on an input it must not: the output's channel group (None: the whole pixel,
    on a network that is not channel-masked) and position, the input sub-pixel it depends on most (channel
    0 of a code map is the code), that dependence, and the probe and mode that found it."""

    channel: int | None
    row: int
    col: int
    input_channel: int
    input_row: int
    input_col: int
    value: float
    probe: str
    mode: str

    def describe(self) -> str:
        out = "all channels" if self.channel is None else f"channel {self.channel}"
        return (f"output ({out}, row {self.row}, col {self.col}) depends on input (channel {self.input_channel}, "
                f"row {self.input_row}, col {self.input_col}): {self.value:.3g} ({self.probe} probe, "
                f"{self.mode} mode)")


@dataclass
class CausalityReport:
    """What ``check_causality`` found.

    Attributes:
        dependence: (groups, H, W) float64, each output's largest dependence on an input it must not see, over
            the probes and modes (groups: the image channels of a channel-masked network, else 1); NaN where
            no probe checked the output (a subset of ``positions``).
        leaks: every (output, probe, mode) whose forbidden dependence is above the tolerance, worst first.
        within: the largest forbidden dependence within an image, per (probe, mode).
        across: the largest dependence of an image's outputs on another image's input, per (probe, mode).
        tolerance: the largest dependence taken as none.
        n_positions: the positions probed (every one, or the subset ``positions`` asked for).
    """

    dependence: torch.Tensor
    leaks: list[Leak]
    within: dict[tuple[str, str], float]
    across: dict[tuple[str, str], float]
    tolerance: float
    n_positions: int

    @property
    def batch_leak(self) -> float:
        """The largest dependence of an image's outputs on another image of the batch."""
        return max(self.across.values())

    @property
    def max_leak(self) -> float:
        """The largest forbidden dependence found, within an image or across the batch."""
        return max(*self.within.values(), self.batch_leak)

    @property
    def ok(self) -> bool:
        """True when no forbidden dependence is above the tolerance."""
        return self.max_leak <= self.tolerance

    @property
    def by_probe(self) -> dict[str, float]:
        """The largest forbidden dependence (within an image or across the batch) each probe found."""
        found: dict[str, float] = {}
        for (probe, _), value in [*self.within.items(), *self.across.items()]:
            found[probe] = max(found.get(probe, 0.0), value)
        return found

    @property
    def n_outputs(self) -> int:
        """Outputs (channel group, row, col) checked."""
        return int((~self.dependence.isnan()).sum())

    @property
    def n_leaking(self) -> int:
        """Outputs whose forbidden dependence is above the tolerance."""
        return int((self.dependence > self.tolerance).sum())

    def summary(self) -> str:
        """The verdict in one line."""
        if self.ok:
            probes = sorted({p for p, _ in self.within}, key=PROBES.index)
            modes = sorted({m for _, m in self.within}, key=MODES.index)
            every = self.dependence[0].numel()
            scope = f"{self.n_outputs} outputs" if self.n_positions == every else \
                f"{self.n_positions} of {every} positions"
            return (f"causal: no output depends on an input it must not ({scope} x {len(probes)} "
                    f"probe{'s' * (len(probes) > 1)} x {'/'.join(modes)}; largest forbidden dependence "
                    f"{self.max_leak:.3g})")
        leaking = f"{self.n_leaking} of {self.n_outputs} outputs leak"
        if self.batch_leak > self.tolerance:
            (probe, mode), value = max(self.across.items(), key=lambda item: item[1])
            return (f"LEAK across the batch: an image's outputs depend on another image's input: {value:.3g} "
                    f"({probe} probe, {mode} mode)" + (f"; {leaking} too (the probes share a batch)" if self.leaks
                                                       else ""))
        return f"LEAK: {self.leaks[0].describe()}; {leaking}"


class _Probe:
    """The model copy under test, its inputs and the rule of which input each output may see."""

    def __init__(self, model: AutoregressiveModel, x, y, cond, batch_size: int, seed: int,
                 gen: torch.Generator, device: torch.device):
        self.model, self.batch_size, self.seed, self.gen, self.device = model, batch_size, seed, gen, device
        self.x, self.y, self.cond = x, y, cond
        c, self.h, self.w = model.image_shape
        self.top = model.n_codes or 2**model.n_bits
        self.masked = model.channel_masked
        self.param_groups = model.head.param_groups() if self.masked else torch.zeros(model.head.n_params,
                                                                                     dtype=torch.long)
        self.n_groups, self.n_in = (c if self.masked else 1), c
        self.rank = torch.arange(self.h * self.w).view(self.h, self.w)  # raster order of each position

    def forward(self, idx: torch.Tensor, x: torch.Tensor | None = None, embedded: torch.Tensor | None = None):
        """Parameters (k, n_params, H, W) of examples ``idx`` (or of ``x`` with their labels and conditions)."""
        m = self.model
        y = None if self.y is None else self.y[idx]
        cond = None if self.cond is None else self.cond[idx]
        torch.random.default_generator.manual_seed(self.seed)  # dropout: the same masks in every pass
        if self.device.type == "cuda":  # of this shape
            torch.cuda.default_generators[self.device.index].manual_seed(self.seed)
        inputs = m.embed(self.x[idx] if x is None else x) if embedded is None else embedded
        return m.network(inputs, m.condition(y, len(idx), cond))

    def forbidden_inputs(self, group: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(k, C, H, W): the inputs outputs (group, raster position pos) must not see."""
        later = self.rank[None] > pos[:, None, None]  # (k, H, W)
        here = self.rank[None] == pos[:, None, None]
        channels = torch.arange(self.n_in)[None]  # (1, C)
        own = channels >= group[:, None] if self.masked else torch.ones(len(group), self.n_in, dtype=torch.bool)
        return later[:, None] | (here[:, None] & own[:, :, None, None])

    def forbidden_outputs(self, channel: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(k, groups, H, W): the outputs that must not see input (channel, raster position pos)."""
        earlier = self.rank[None] < pos[:, None, None]
        here = self.rank[None] == pos[:, None, None]
        groups = torch.arange(self.n_groups)[None]
        own = groups <= channel[:, None] if self.masked else torch.ones(len(channel), 1, dtype=torch.bool)
        return earlier[:, None] | (here[:, None] & own[:, :, None, None])

    def gradient(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The gradient probe over the outputs at ``positions`` (raster indices): per output (groups, H*W) the
        largest forbidden dependence (NaN: not checked) and the flat index (c*H*W + raster) of its input; and
        the largest dependence across the batch."""
        value = torch.full((self.n_groups, self.h * self.w), float("nan"), dtype=torch.float64)
        where = torch.zeros(self.n_groups, self.h * self.w, dtype=torch.long)
        groups, pos = torch.cartesian_prod(torch.arange(self.n_groups), positions).unbind(1)
        for start in range(0, len(pos), self.batch_size):
            g, p = groups[start:start + self.batch_size], pos[start:start + self.batch_size]
            k = len(p)
            idx = torch.arange(k) % len(self.x)
            xe = self.model.embed(self.x[idx]).detach().requires_grad_(True)  # (k, E, H, W)
            at = self.forward(idx, embedded=xe).flatten(2)[torch.arange(k), :, p.to(xe.device)]  # (k, n_params)
            weights = torch.randn(at.shape, generator=self.gen, dtype=torch.float64)
            weights = weights * (self.param_groups[None] == g[:, None])  # the output's group only
            (grad,) = torch.autograd.grad((at * weights.to(at)).sum(), xe)
            dep = self.input_dependence(grad)
            leak = torch.where(self.forbidden_inputs(g, p), dep, 0).flatten(1)  # (k, C*H*W)
            value[g, p], where[g, p] = leak.max(1)
        return value, where, self.across_gradient()

    def input_dependence(self, grad: torch.Tensor) -> torch.Tensor:
        """|gradient| w.r.t. the embedded input (k, E, H, W) as a dependence on each input sub-pixel
        (k, C, H, W), in float64 on the CPU: a code's is summed over its embedding's features."""
        dep = grad.abs().double().cpu().nan_to_num(nan=float("inf"))
        return dep.sum(1, keepdim=True) if self.model.n_codes else dep

    def across_gradient(self) -> float:
        """The largest gradient of the first and the last example's outputs w.r.t. another example's input,
        in a batch of (up to) 4."""
        k = max(2, min(4, len(self.x)))
        idx = torch.arange(k) % len(self.x)
        xe = self.model.embed(self.x[idx]).detach().requires_grad_(True)
        params = self.forward(idx, embedded=xe)
        found = 0.0
        for b in (0, k - 1):
            weights = torch.randn(params.shape[1:], generator=self.gen, dtype=torch.float64).to(params)
            (grad,) = torch.autograd.grad((params[b] * weights).sum(), xe, retain_graph=b == 0)
            others = torch.arange(k) != b
            found = max(found, self.input_dependence(grad)[others].max().item())
        return found

    def group_max(self, params: torch.Tensor) -> torch.Tensor:
        """(m, n_params, H, W) -> (m, groups, H, W): the largest value of each output group's parameters."""
        if self.n_groups == 1:
            return params.amax(1, keepdim=True)
        return torch.stack([params[:, self.param_groups == g].amax(1) for g in range(self.n_groups)], 1)

    @torch.no_grad()
    def perturbation(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """The perturbation probe over every input sub-pixel at ``positions``: as ``gradient`` returns."""
        value = torch.full((self.n_groups, self.h, self.w), float("nan"), dtype=torch.float64)
        where = torch.zeros(self.n_groups, self.h, self.w, dtype=torch.long)
        channels, pos = torch.cartesian_prod(torch.arange(self.n_in), positions).unbind(1)
        chunks = -(-len(pos) // (self.batch_size - 1))
        k = -(-len(pos) // chunks) + 1  # example 0 is the unchanged control; chunks of equal size
        idx = torch.zeros(k, dtype=torch.long)  # one image, repeated
        base = self.forward(idx)  # (k, n_params, H, W)
        across = 0.0
        for start in range(0, len(pos), k - 1):
            c, p = channels[start:start + k - 1], pos[start:start + k - 1]
            m = len(p)
            x = self.x[idx]  # a copy
            rows, cols = torch.arange(1, m + 1), (p // self.w, p % self.w)
            shift = torch.randint(1, self.top, (m,), generator=self.gen)
            x[rows, c, cols[0], cols[1]] = (x[rows, c, cols[0], cols[1]] + shift.to(x)) % self.top
            change = (self.forward(idx, x) - base).abs_().nan_to_num_(nan=float("inf"))  # (k, n_params, H, W)
            across = max(across, change[0].max().item())
            per_group = self.group_max(change[1:m + 1]).double().cpu()  # (m, groups, H, W)
            forbidden = self.forbidden_outputs(c, p)
            leak, which = torch.where(forbidden, per_group, -1.0).max(0)  # (groups, H, W)
            better = forbidden.any(0) & ~(leak <= value)  # checked here, and larger or not checked before
            value = torch.where(better, leak, value)
            where = torch.where(better, (c * self.h * self.w + p)[which], where)
        return value.flatten(1), where.flatten(1), across


def check_causality(model: AutoregressiveModel, x: torch.Tensor | None = None, y=None, cond=None, *,
                    positions: int | None = None, probes: tuple[str, ...] = PROBES, modes: tuple[str, ...] = MODES,
                    dtype: torch.dtype = torch.float64, device="cpu", tolerance: float = 0.0,
                    batch_size: int = 64, seed: int = 0) -> CausalityReport:
    """Check that no output of ``model`` depends on an input it must not (see the module docstring).

    Args:
        model: a model ``create_model`` or ``load`` gives; it is not changed (a copy is checked).
        x: integer inputs (N, C, H, W) to probe at (default: ``batch_size`` random ones); the perturbation
            probe perturbs the first. ``y``, ``cond``: their labels and condition (default: random, for a
            model that takes them).
        positions: None to check every output position (and perturb every input sub-pixel), or N to check
            N random positions, the first and the last pixel among them (for large models).
        probes: a subset of ("gradient", "perturbation"); modes: a subset of ("train", "eval").
        dtype, device: the copy checked (float64 on the CPU: a correct mask gives exact zeros).
        tolerance: the largest dependence taken as none (0 for float64; e.g. 1e-5 for float32).
        batch_size: outputs checked (or sub-pixels perturbed) per forward pass.
        seed: of the random inputs, the positions, the perturbations and the dropout masks.
    """
    model = getattr(model, "_orig_mod", model)  # a compiled model's own
    if not isinstance(model, AutoregressiveModel):
        raise PixelModelsError(f"model: expected a pixelmodels model (create_model, load or load_pretrained "
                               f"gives one), found {type(model).__name__}")
    _, h, w = model.image_shape
    _check_arguments(probes, modes, tolerance, batch_size, positions, h * w, dtype)
    device = _device(device)
    net = copy.deepcopy(model).to(device=device, dtype=dtype)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the global random state
        gen = torch.Generator().manual_seed(seed)  # is left as it was
        probe = _Probe(net, *_inputs(net, x, y, cond, batch_size, gen, device), batch_size, seed, gen, device)
        if positions is None or positions == h * w:
            chosen = torch.arange(h * w)
        else:
            middle = torch.randperm(h * w - 2, generator=gen)[: positions - 2] + 1
            chosen = torch.cat([torch.tensor([0, h * w - 1]), middle]).sort().values
        within, across, leaks = {}, {}, []
        dependence = torch.full((probe.n_groups, h * w), float("nan"), dtype=torch.float64)
        for mode in modes:
            net.train(mode == "train")
            for name in probes:
                value, where, across[name, mode] = getattr(probe, name)(chosen)
                dependence = torch.fmax(dependence, value)
                within[name, mode] = float(value.nan_to_num(0.0).max())
                for g, q in (value > tolerance).nonzero().tolist():
                    src = int(where[g, q])
                    leaks.append(Leak(g if probe.masked else None, q // w, q % w, src // (h * w),
                                      src % (h * w) // w, src % w, float(value[g, q]), name, mode))
    leaks.sort(key=lambda leak: -leak.value)
    return CausalityReport(dependence.view(-1, h, w), leaks, within, across, float(tolerance), len(chosen))


def _device(device) -> torch.device:
    """``device`` (a name or a torch.device) as a torch.device, a CUDA device with its index."""
    device = resolve_device(str(device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_arguments(probes, modes, tolerance, batch_size, positions, n_positions: int, dtype) -> None:
    """Refuse an argument of ``check_causality`` it cannot take, naming it."""
    for given, allowed, what in ((probes, PROBES, "probes"), (modes, MODES, "modes")):
        if not isinstance(given, (tuple, list)) or not given or not set(given) <= set(allowed):
            raise PixelModelsError(f"{what}: expected a non-empty tuple of {allowed}, found {given!r}")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance < float("inf"):
        raise PixelModelsError(f"tolerance: expected a number >= 0 (the largest dependence taken as none), "
                               f"found {tolerance!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise PixelModelsError(f"batch_size: expected an integer >= 2, found {batch_size!r}")
    low = min(2, n_positions)
    if positions is not None and (isinstance(positions, bool) or not isinstance(positions, int)
                                  or not low <= positions <= n_positions):
        raise PixelModelsError(f"positions: expected an integer from {low} to {n_positions} (the first and the last "
                               f"pixel are always among them), or None for every position; found {positions!r}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise PixelModelsError(f"dtype: expected a floating point dtype, found {dtype!r}")


def _inputs(net: AutoregressiveModel, x, y, cond, n: int, gen: torch.Generator, device: torch.device) -> tuple:
    """The integer inputs, labels and conditions to probe at: those given (checked) or random ones."""
    if x is None:
        x = torch.randint(0, net.n_codes or 2**net.n_bits, (n, *net.image_shape), generator=gen)
    x = torch.as_tensor(x)
    net.check_images(x, "x")
    n = len(x)
    if net.n_classes and y is None:
        y = torch.randint(0, net.n_classes, (n,), generator=gen)
    if net.cond_shape is not None and cond is None:
        cond = (torch.randint(0, net.cond_codes, (n, *net.cond_shape), generator=gen) if net.cond_codes
                else torch.randn(n, *net.cond_shape, generator=gen, dtype=torch.float64))
    return (x.long().to(device), net.check_labels(y, n, device),
            net.check_cond(None if cond is None else torch.as_tensor(cond).to(device), n, device))
