"""One declaration per setting: ``setting(default, help, ...)`` gives a dataclass field its default,
its help text and its valid range, and ``check_field`` checks a library call's argument against it.

The CLI derives its flags and their help from these declarations, and every settings class
(``Settings``) validates itself on construction, refusing a value outside its range with one
line, ``--flag-name: expected <the range in words>, found <value>``. So the CLI, ``create_model``,
loading a ``config.json`` and the library calls (``sample``, ``score``, ``compress``) all check
through the same declaration. The settings themselves are in ``pixelmodels.config`` (with the
library calls' options), ``likelihoods.HeadOptions`` and each model family's options dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable

from pixelmodels.errors import PixelModelsError

# Upper bounds that keep an absurd value from allocating or running forever.
MAX_BATCH = 65_536  # images per step or forward pass
MAX_FEATURES = 4096  # channels, filters, state units, key/value sizes
MAX_LAYERS = 256  # layers, blocks
MAX_KERNEL = 63  # convolution kernel side
MAX_MIXTURES = 100  # logistic mixture components
MAX_HEADS = 64  # attention heads
MAX_CLASSES = 100_000  # classes of a conditional model
MAX_CODES = 1 << 20  # codes of a code map
MAX_IMAGE_SIZE = 1024  # side of a 'folder' dataset's images
MAX_COUNT = 10**9  # steps, epochs, images of a dataset, logging intervals
MAX_SAMPLES = 4096  # images sampled or completed by one command
MAX_SEED = 2**32 - 1
MAX_MINUTES = 1_000_000.0  # about two years



@dataclass(frozen=True)
class Check:
    """The valid values of one setting: bounds (ge/gt/le/lt), choices, oddness.

    ``noun`` names a float's kind in messages ("a decay in [0, 1)");
    ``expected`` replaces the generated words altogether ("adam or rmsprop");
    ``test``: a custom check, a function of the value that returns True when it is valid.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    odd: bool = False
    noun: str | None = None
    expected: str | None = None
    test: Callable[[Any], bool] | None = None

    @property
    def low(self):
        return self.ge if self.ge is not None else self.gt

    @property
    def high(self):
        return self.le if self.le is not None else self.lt

    def interval(self) -> str:
        """'[0, 1)', '> 0', '<= 10' or ''."""
        if self.low is not None and self.high is not None:
            left, right = "[" if self.ge is not None else "(", "]" if self.le is not None else ")"
            return f"{left}{_num(self.low)}, {_num(self.high)}{right}"
        if self.low is not None:
            return f"{'>=' if self.ge is not None else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{'<=' if self.le is not None else '<'} {_num(self.high)}"
        return ""

    def int_range(self) -> str:
        """'1 to 4096', 'at least 0', 'at most 99' or '' (ints take ge / le only)."""
        words = (f"{self.ge} to {self.le}" if self.ge is not None and self.le is not None
                 else f"at least {self.ge}" if self.ge is not None
                 else f"at most {self.le}" if self.le is not None else "")
        return f"odd, {words}" if self.odd and words else ("odd" if self.odd else words)

    def words(self, base) -> str:
        """The whole range in words, for help texts."""
        if self.expected is not None:
            return self.expected
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        if base is int:
            return self.int_range()
        if base is float or _tuple_of(base) is float:
            return f"{self.noun or 'a number'} in {self.interval()}" if self.interval() else (self.noun or "")
        return ""

    def problem(self, value, base) -> tuple[str, str] | None:
        """(expected words, allowed-range suffix) when ``value`` (of the right type) is invalid, else None."""
        if self.test is not None and not self.test(value):
            return self.expected or "a valid value", ""
        if self.choices is not None:
            return None if value in self.choices else (self.words(base), "")
        if base is int:
            said = (f"at least {self.ge}" if self.ge is not None and value < self.ge
                    else f"at most {self.le}" if self.le is not None and value > self.le
                    else "an odd integer" if self.odd and value % 2 == 0 else None)
            if said is None:
                return None
            if self.expected is not None:
                return self.expected, ""
            full = self.int_range()
            return said, (f" (allowed: {full})" if full and full != said else "")
        if base is not float and _tuple_of(base) is not float:
            return None
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if not math.isfinite(v) or (self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt) \
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt):
                return self.words(base) or "a finite number", ""
        return None


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _tuple_of(base):
    return typing.get_args(base)[0] if typing.get_origin(base) is tuple else None


def setting(default=MISSING, help: str = "", *, default_factory=MISSING, flag: str | None = None,
            ge=None, gt=None, le=None, lt=None, choices=None, odd: bool = False, noun: str | None = None,
            expected: str | None = None, test: Callable[[Any], bool] | None = None):
    """Declare a settings field once: its default, help text and valid range.

    Args:
        default / default_factory: as ``dataclasses.field``. A default of None (with an
            ``X | None`` annotation) means "the preset's / model's value" and is always valid.
        help: the flag's help text (the CLI appends the range and the default).
        flag: the name messages use (default: ``--field-name``).
        ge, gt, le, lt: closed / open lower and upper bounds (ints take ge / le).
        choices: the valid values.
        odd: an int must be odd (kernel sizes).
        noun: a float's kind in messages, e.g. "a decay" -> "a decay in [0, 1)".
        expected: words that replace the generated range in messages and help.
        test: a custom check, value -> bool (with ``expected`` saying what it wants).

    Floats must be finite; a tuple's elements are checked one by one; an int is never a bool.
    """
    check = Check(ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices is not None else None, odd=odd,
                  noun=noun, expected=expected, test=test)
    metadata = {"help": help, "check": check, "flag": flag}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class SettingError(PixelModelsError):
    """A setting outside its declared range: which one, what was expected, what was found."""

    def __init__(self, name: str, flag: str, expected: str, found, allowed: str = ""):
        self.name, self.flag, self.expected, self.found, self.allowed = name, flag, expected, found, allowed
        super().__init__(f"{flag}: {self.detail}")

    @property
    def detail(self) -> str:
        return f"expected {self.expected}, found {self.found!r}{self.allowed}"


def flag_name(f: dataclasses.Field) -> str:
    """The kebab-case flag of a field (or its declared ``flag``)."""
    name = f.metadata.get("flag") or f.name.replace("_", "-")
    return name if name.startswith("-") or "_" in name else "--" + name


@functools.cache
def field_types(cls) -> dict[str, tuple[Any, bool]]:
    """Field name -> (base type, None allowed) of a settings dataclass."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
            out[name] = (next(a for a in args if a is not type(None)), type(None) in args)
        else:
            out[name] = (hint, False)
    return out


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a dict"}


def _typed(value, base):
    """``value`` as ``base`` (an int as a float, a list as a tuple, a NumPy number as a Python one), or raise
    TypeError."""
    element = _tuple_of(base)
    if element is not None:
        n = len(typing.get_args(base))
        if not isinstance(value, (tuple, list)) or len(value) != n:
            raise TypeError(f"{n} numbers" if element in (int, float) else f"{n} values")
        return tuple(_typed(v, element) for v in value)
    origin = typing.get_origin(base) or base
    if origin is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if origin is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if origin in (bool, str, dict) and isinstance(value, origin):
        return value
    if origin not in (int, float, bool, str, dict):
        return value
    raise TypeError(_TYPE_WORDS[origin])


def check_field(cls, name: str, value):
    """``value`` checked against field ``name`` of settings class ``cls`` (its declaration, its flag in the
    message) and normalized as ``Settings`` does: for library calls that take one setting as an argument."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _checked(cls, f, value)


def _checked(cls, f: dataclasses.Field, value):
    check = f.metadata.get("check")
    if check is None:
        return value
    base, optional = field_types(cls)[f.name]
    if value is None and optional:
        return value
    try:
        typed = value if check.test is not None else _typed(value, base)
    except TypeError as e:
        words = check.words(base)
        raise SettingError(f.name, flag_name(f), f"{e}" + (f" ({words})" if words else ""), value) from None
    problem = check.problem(typed, base)
    if problem is not None:
        raise SettingError(f.name, flag_name(f), problem[0], typed, problem[1])
    return typed


class Settings:
    """Base of settings dataclasses: every declared field is checked (type, range, choices) on construction
    and ``dataclasses.replace``, and normalized in place (an int given for a float becomes a float, a list
    for a tuple a tuple).

    Raises:
        SettingError: one line, ``--flag-name: expected <the range in words>, found <value>``.
    """

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            typed = _checked(type(self), f, value)
            if typed is not value:
                object.__setattr__(self, f.name, typed)
