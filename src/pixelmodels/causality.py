"""Causality as a check a user runs: ``check_causality(model)`` says whether any output of a model, or of a
network of the user's own, depends on an input it must not, and where.

The rule (DESIGN.md): the distribution of sub-pixel (c, i, j) depends only on the pixels before (i, j) in
raster order and on the channels before c of pixel (i, j); no image of a batch depends on another. Two kinds
of subject, one mechanism:

* a pixelmodels model (``create_model``, ``load``, ``load_pretrained``): the outputs checked are its
  network's parameters ``model.network(model.embed(x), model.condition(...))`` (B, head.n_params, H, W)
  for integer inputs ``x``. On a channel-masked network those of position (i, j) are grouped by the image
  channel they belong to (``model.head.param_groups()``), and group c may see channels < c of (i, j); on
  any other network they form one group that may see strictly earlier pixels only.
* a plain network (an ``nn.Module`` or any callable, say from another codebase): float images
  (B, C, H, W) in, outputs (B, C, H, W) or (B, F, C, H, W) out (F outputs per sub-pixel, e.g. the logits
  of its values); output [.., c, i, j] is group c, and may see the pixels before (i, j) and channels < c of
  (i, j). Its inputs: the example batch ``x`` given, or random images uniform in [-1, 1] of
  ``image_shape``; the perturbation probe adds +-[0.5, 1.5) to one value.

Two probes, each in train and eval mode (dropout draws the same masks in the passes it compares: the
random generator is seeded before each forward pass, and passes compared have one shape):

* gradient: the gradient of a random combination of one output group's outputs with respect to the
  network's input (for code maps, the absolute gradient summed over the embedding's features: the
  dependence on the code); every example of a batch carries another output, so one backward pass checks
  a batch of outputs. A separate pass checks that the first and the last example's outputs have zero
  gradient with respect to every other example's input.
* perturbation: one input sub-pixel changed (an integer to another valid value, a float by a random
  amount), and every output that must not see it compared with that of the unchanged image (largest
  absolute change of an output of the group). Every example of a batch perturbs another sub-pixel of one
  image; example 0 is left unchanged and must stay equal to the unchanged batch's (the batch check).

The check runs on a copy of the model or module, float64 on the CPU by default, where a correct mask gives
exact zeros, so the default tolerance is 0; the model, its mode and the global random state stay as they
were (a callable that is not an ``nn.Module`` cannot be copied: it is called as it is, with inputs in
``dtype`` on ``device``). A non-finite output counts as an infinite dependence. Both probes read the
network at the inputs probed: a dependence that vanishes there (a ReLU off) is not seen, so more inputs
(``x``, ``seed``) probe more.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from pixelmodels.devices import resolve_device
from pixelmodels.errors import PixelModelsError
from pixelmodels.models.base import AutoregressiveModel
from pixelmodels.settings import SettingError

PROBES = ("gradient", "perturbation")
MODES = ("train", "eval")


@dataclass(frozen=True)
class Leak:
    """An output that depends on an input it must not: the output's channel group (None: the whole pixel,
    on a model whose network is not channel-masked) and position, the input sub-pixel it depends on most (channel
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
            the probes and modes (groups: the image channels of a channel-masked or a plain network, else 1);
            NaN where no probe checked the output (a subset of ``positions``).
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


class _Model:
    """A pixelmodels model under test: integer inputs, its network's parameters grouped by image channel."""

    def __init__(self, model: AutoregressiveModel, y, cond):
        self.module, self.y, self.cond = model, y, cond
        self.image_shape = tuple(model.image_shape)
        self.masked = model.channel_masked
        self.param_groups = model.head.param_groups() if self.masked else torch.zeros(model.head.n_params,
                                                                                     dtype=torch.long)
        self.n_groups = self.image_shape[0] if self.masked else 1
        self.codes = model.n_codes is not None
        self.top = model.n_codes or 2**model.n_bits

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.embed(x)

    def outputs(self, inputs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Parameters (k, n_params, H, W) of the network's inputs of examples ``idx``, their labels and conditions."""
        m = self.module
        y = None if self.y is None else self.y[idx]
        cond = None if self.cond is None else self.cond[idx]
        return m.network(inputs, m.condition(y, len(idx), cond))

    def perturbed(self, values: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Each integer value changed to another valid one."""
        shift = torch.randint(1, self.top, values.shape, generator=gen)
        return (values + shift.to(values)) % self.top


class _Network:
    """A plain network under test: float images in, its outputs (B, C, H, W) or (B, F, C, H, W) as
    (B, F * C, H, W), output f * C + c in group c."""

    def __init__(self, net, image_shape: tuple[int, int, int], n_features: int):
        self.module, self.image_shape = net, image_shape
        self.masked, self.codes = True, False
        self.n_groups = image_shape[0]
        self.param_groups = torch.arange(n_features * self.n_groups) % self.n_groups

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def outputs(self, inputs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = self.module(inputs)
        _features(out, tuple(inputs.shape))
        return out.reshape(len(inputs), -1, *inputs.shape[2:])  # (k, F * C, H, W)

    def perturbed(self, values: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Each value moved by a random amount of 0.5 to 1.5, up or down."""
        sign = torch.randint(0, 2, values.shape, generator=gen) * 2 - 1
        return values + (sign * (0.5 + torch.rand(values.shape, generator=gen, dtype=torch.float64))).to(values)


def _features(out, shape: tuple[int, ...]) -> int:
    """F of a plain network's output for inputs of ``shape`` (B, C, H, W): 1 for (B, C, H, W), F for
    (B, F, C, H, W); else a one-line error saying what it is."""
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        found = tuple(out.shape)
        if found == shape:
            return 1
        if len(found) == 5 and found[0] == shape[0] and found[2:] == shape[1:]:
            return found[1]
        what = str(found)
    else:
        what = (f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                else f"a {type(out).__name__}")
    raise PixelModelsError(f"model: expected output (B, C, H, W) or (B, F, C, H, W) for input (B, C, H, W) = "
                           f"{shape}, found {what}")


def _gradient(out: torch.Tensor, inputs: torch.Tensor, retain: bool = False) -> torch.Tensor:
    """d out / d inputs: zeros where autograd sees no path (the perturbation probe still sees a dependence
    a network hides from autograd, by rounding or detaching)."""
    grad = None
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out, inputs, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


class _Probe:
    """The subject under test (a ``_Model`` or a ``_Network``), its inputs and the rule of which input each
    output may see."""

    def __init__(self, subject, x: torch.Tensor, batch_size: int, seed: int, gen: torch.Generator,
                 device: torch.device):
        self.subject, self.x, self.batch_size = subject, x, batch_size
        self.seed, self.gen, self.device = seed, gen, device
        self.n_in, self.h, self.w = subject.image_shape
        self.masked, self.n_groups, self.param_groups = subject.masked, subject.n_groups, subject.param_groups
        self.rank = torch.arange(self.h * self.w).view(self.h, self.w)  # raster order of each position

    def forward(self, idx: torch.Tensor, x: torch.Tensor | None = None, embedded: torch.Tensor | None = None):
        """Outputs (k, n_params, H, W) of examples ``idx`` (or of ``x`` with their labels and conditions)."""
        torch.random.default_generator.manual_seed(self.seed)  # dropout: the same masks in every pass
        if self.device.type == "cuda":  # of this shape
            torch.cuda.default_generators[self.device.index].manual_seed(self.seed)
        inputs = self.subject.embed(self.x[idx] if x is None else x) if embedded is None else embedded
        return self.subject.outputs(inputs, idx)

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
            xe = self.subject.embed(self.x[idx]).detach().requires_grad_(True)  # (k, E, H, W)
            at = self.forward(idx, embedded=xe).flatten(2)[torch.arange(k), :, p.to(xe.device)]  # (k, n_params)
            weights = torch.randn(at.shape, generator=self.gen, dtype=torch.float64)
            weights = weights * (self.param_groups[None] == g[:, None])  # the output's group only
            dep = self.input_dependence(_gradient((at * weights.to(at)).sum(), xe))
            leak = torch.where(self.forbidden_inputs(g, p), dep, 0).flatten(1)  # (k, C*H*W)
            value[g, p], where[g, p] = leak.max(1)
        return value, where, self.across_gradient()

    def input_dependence(self, grad: torch.Tensor) -> torch.Tensor:
        """|gradient| w.r.t. the network's input (k, E, H, W) as a dependence on each input sub-pixel
        (k, C, H, W), in float64 on the CPU: a code's is summed over its embedding's features."""
        dep = grad.abs().double().cpu().nan_to_num(nan=float("inf"))
        return dep.sum(1, keepdim=True) if self.subject.codes else dep

    def across_gradient(self) -> float:
        """The largest gradient of the first and the last example's outputs w.r.t. another example's input,
        in a batch of (up to) 4."""
        k = max(2, min(4, len(self.x)))
        idx = torch.arange(k) % len(self.x)
        xe = self.subject.embed(self.x[idx]).detach().requires_grad_(True)
        outputs = self.forward(idx, embedded=xe)
        found = 0.0
        for b in (0, k - 1):
            weights = torch.randn(outputs.shape[1:], generator=self.gen, dtype=torch.float64).to(outputs)
            grad = _gradient((outputs[b] * weights).sum(), xe, retain=b == 0)
            others = torch.arange(k) != b
            found = max(found, self.input_dependence(grad)[others].max().item())
        return found

    def group_max(self, outputs: torch.Tensor) -> torch.Tensor:
        """(m, n_params, H, W) -> (m, groups, H, W): the largest value of each output group's outputs."""
        if self.n_groups == 1:
            return outputs.amax(1, keepdim=True)
        return torch.stack([outputs[:, self.param_groups == g].amax(1) for g in range(self.n_groups)], 1)

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
            x[rows, c, cols[0], cols[1]] = self.subject.perturbed(x[rows, c, cols[0], cols[1]], self.gen)
            change = (self.forward(idx, x) - base).abs_().nan_to_num_(nan=float("inf"))  # (k, n_params, H, W)
            across = max(across, change[0].max().item())
            per_group = self.group_max(change[1:m + 1]).double().cpu()  # (m, groups, H, W)
            forbidden = self.forbidden_outputs(c, p)
            leak, which = torch.where(forbidden, per_group, -1.0).max(0)  # (groups, H, W)
            better = forbidden.any(0) & ~(leak <= value)  # checked here, and larger or not checked before
            value = torch.where(better, leak, value)
            where = torch.where(better, (c * self.h * self.w + p)[which], where)
        return value.flatten(1), where.flatten(1), across


def check_causality(model, x: torch.Tensor | None = None, y=None, cond=None, *,
                    image_shape: tuple[int, int, int] | None = None, positions: int | None = None,
                    probes: tuple[str, ...] = PROBES, modes: tuple[str, ...] = MODES,
                    dtype: torch.dtype = torch.float64, device="cpu", tolerance: float = 0.0,
                    batch_size: int = 64, seed: int = 0) -> CausalityReport:
    """Check that no output of ``model`` depends on an input it must not (see the module docstring).

    ``check_causality(model)`` checks a pixelmodels model; ``check_causality(net, image_shape=(C, H, W))``
    or ``check_causality(net, x)`` a plain network: float images (B, C, H, W) in, outputs (B, C, H, W) or
    (B, F, C, H, W) out, output [.., c, i, j] seeing only the pixels before (i, j) in raster order and the
    channels before c of (i, j), and no other image of the batch.

    Args:
        model: a model ``create_model`` or ``load`` gives, or a plain network (an ``nn.Module`` or a
            callable); a model or module is not changed (a copy is checked).
        x: a model's integer inputs (N, C, H, W) to probe at (default: ``batch_size`` random ones), or a
            plain network's float images (N, C, H, W) (default: ``batch_size`` random ones uniform in
            [-1, 1]); the perturbation probe perturbs the first. ``y``, ``cond``: a model's labels and
            condition (default: random, for a model that takes them).
        image_shape: (C, H, W) of a plain network's images, when ``x`` is not given.
        positions: None to check every output position (and perturb every input sub-pixel), or N to check
            N random positions, the first and the last pixel among them (for large models).
        probes: a subset of ("gradient", "perturbation"); modes: a subset of ("train", "eval").
        dtype, device: the copy checked (float64 on the CPU: a correct mask gives exact zeros).
        tolerance: the largest dependence taken as none (0 for float64; e.g. 1e-5 for float32).
        batch_size: outputs checked (or sub-pixels perturbed) per forward pass.
        seed: of the random inputs, the positions, the perturbations and the dropout masks.
    """
    model = getattr(model, "_orig_mod", model)  # a compiled model's own
    c, h, w = _image_shape(model, x, y, cond, image_shape)
    _check_arguments(probes, modes, tolerance, batch_size, positions, h * w, dtype)
    device = _device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the global random state
        gen = torch.Generator().manual_seed(seed)  # is left as it was
        net = copy.deepcopy(model).to(device=device, dtype=dtype) if isinstance(model, nn.Module) else model
        if isinstance(net, AutoregressiveModel):
            x, y, cond = _inputs(net, x, y, cond, batch_size, gen, device)
            subject = _Model(net, y, cond)
        else:
            if x is None:
                x = torch.rand(batch_size, c, h, w, generator=gen, dtype=torch.float64) * 2 - 1
            x = torch.as_tensor(x).to(device=device, dtype=dtype)
            with torch.no_grad():
                subject = _Network(net, (c, h, w), _features(net(x), tuple(x.shape)))
        probe = _Probe(subject, x, batch_size, seed, gen, device)
        if positions is None or positions == h * w:
            chosen = torch.arange(h * w)
        else:
            middle = torch.randperm(h * w - 2, generator=gen)[: positions - 2] + 1
            chosen = torch.cat([torch.tensor([0, h * w - 1]), middle]).sort().values
        within, across, leaks = {}, {}, []
        dependence = torch.full((probe.n_groups, h * w), float("nan"), dtype=torch.float64)
        for mode in modes:
            if isinstance(net, nn.Module):
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


def _image_shape(model, x, y, cond, image_shape) -> tuple[int, int, int]:
    """(C, H, W) of the images ``model`` takes: a model's own, or a plain network's from ``x`` or
    ``image_shape``; refuses what is neither a model nor a network, and arguments that do not fit it."""
    if isinstance(model, AutoregressiveModel):
        if image_shape is not None and tuple(image_shape) != tuple(model.image_shape):
            raise SettingError("image_shape", "image_shape", f"the model's (C, H, W) {tuple(model.image_shape)} "
                               "or None", image_shape)
        return tuple(model.image_shape)
    if not callable(model):
        raise PixelModelsError(f"model: expected a pixelmodels model (create_model, load or load_pretrained gives "
                               f"one) or a network (an nn.Module or a callable of float images (B, C, H, W)), "
                               f"found {type(model).__name__}")
    for given, what in ((y, "y"), (cond, "cond")):
        if given is not None:
            raise PixelModelsError(f"{what}: a plain network takes images only; give {what} to a pixelmodels model")
    if x is not None:
        x = torch.as_tensor(x)
        if x.dim() != 4 or not x.is_floating_point() or 0 in x.shape:
            raise PixelModelsError(f"x: expected a float batch (B, C, H, W) for a network, found a {x.dtype} "
                                   f"tensor of shape {tuple(x.shape)}")
        if image_shape is not None and tuple(image_shape) != tuple(x.shape[1:]):
            raise SettingError("image_shape", "image_shape", f"None or x's (C, H, W) {tuple(x.shape[1:])}",
                               image_shape)
        return tuple(x.shape[1:])
    if image_shape is None:
        raise PixelModelsError("image_shape: a network's images are not known; give image_shape=(C, H, W) or an "
                               "example batch x")
    if not (isinstance(image_shape, (tuple, list)) and len(image_shape) == 3 and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_shape)):
        raise SettingError("image_shape", "image_shape", "(C, H, W), three positive integers", image_shape)
    return tuple(image_shape)


def _device(device) -> torch.device:
    """``device`` (a name or a torch.device) as a torch.device, a CUDA device with its index."""
    device = resolve_device(str(device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_arguments(probes, modes, tolerance, batch_size, positions, n_positions: int, dtype) -> None:
    """Refuse an argument of ``check_causality`` it cannot take, naming it (``SettingError``: a command that
    passes one on names its flag)."""
    for given, allowed, what in ((probes, PROBES, "probes"), (modes, MODES, "modes")):
        if not isinstance(given, (tuple, list)) or not given or not set(given) <= set(allowed):
            raise SettingError(what, what, f"a non-empty tuple of {allowed}", given)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0 <= tolerance < float("inf"):
        raise SettingError("tolerance", "tolerance", "a number >= 0 (the largest dependence taken as none)",
                           tolerance)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise SettingError("batch_size", "batch_size", "an integer >= 2", batch_size)
    low = min(2, n_positions)
    if positions is not None and (isinstance(positions, bool) or not isinstance(positions, int)
                                  or not low <= positions <= n_positions):
        raise SettingError("positions", "positions", f"an integer from {low} to {n_positions} (the first and the "
                           "last pixel are always among them) or None (every position)", positions)
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise SettingError("dtype", "dtype", "a floating point dtype", dtype)


def _inputs(net: AutoregressiveModel, x, y, cond, n: int, gen: torch.Generator, device: torch.device) -> tuple:
    """A model's integer inputs, labels and conditions to probe at: those given (checked) or random ones."""
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
