"""Command-line flags from settings dataclasses: one flag per field, its help and range from the field's
declaration (``pixelmodels.settings.setting``), and a parser whose errors are one line.

A flag the user does not give is absent from the namespace (``given`` collects those that were), so the
dataclass's own default applies and ``--resume`` can tell an override from a default.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

from pixelmodels.errors import PixelModelsError
from pixelmodels.settings import field_types, flag_name

NEGATIVE_NUMBER = re.compile(r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: a ``PixelModelsError`` the CLI's ``main`` prints, exit 2.

    It takes ``--lr -1e-3`` or ``--lr -inf`` as a (negative) value, not as an unknown flag.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        raise PixelModelsError(message.removeprefix("argument "))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None


# How a flag's text becomes the field's type; the range is checked when the dataclass is built.
PARSE = {int: _integer, float: _number, str: str}


def add_dataclass_flags(parser, cls, *, skip=(), only=None, show_default: bool = True) -> None:
    """One flag per field of settings dataclass ``cls``, its help and range from the field's declaration.

    Args:
        parser: an ArgumentParser or one of its groups.
        skip / only: field names to leave out / to take alone.
        show_default: append the field's default to its help.
    """
    kinds = field_types(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        base, _ = kinds[field.name]
        check = field.metadata.get("check")
        shown = "" if check is None or check.choices is not None else check.words(base)  # choices: the metavar
        text = "; ".join(t for t in (field.metadata.get("help", ""), shown) if t)
        if show_default and field.default not in (None, dataclasses.MISSING):
            text += f" (default: {field.default})"
        kw = dict(default=argparse.SUPPRESS, help=text, dest=field.name)
        if base is bool:
            parser.add_argument(flag_name(field), action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(base) is tuple:
            parts = typing.get_args(base)
            parser.add_argument(flag_name(field), type=PARSE[parts[0]], nargs=len(parts), **kw)
        elif check is not None and check.choices is not None:
            metavar = "{" + ",".join(map(str, check.choices)) + "}"
            parser.add_argument(flag_name(field), type=PARSE[base], metavar=metavar, **kw)
        else:
            metavar = flag_name(field).lstrip("-").replace("-", "_").upper()
            parser.add_argument(flag_name(field), type=PARSE.get(base, str), metavar=metavar, **kw)


def given(ns: argparse.Namespace, cls) -> dict:
    """The fields of settings dataclass ``cls`` whose flags were given, by field name."""
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
