"""Options declared once: each field of an options dataclass carries its default, doc and check.

A field made with :func:`option` is the whole declaration of a setting: the Python keyword is
the field name, and the metadata holds the documentation line, the allowed values or bounds,
the unit the command line speaks in and the name of the command-line flag when it is not the
keyword's own. :func:`validate` checks every field of an instance by those declarations,
:func:`from_keywords` builds an instance from keyword arguments (an unknown keyword names the
closest ones). The command line builds its flags, their help and the documentation table from
the same fields (``vitdistill.commands.flags``), so a setting is declared in one place.

Errors name the keyword in quotes (``'images' must be >= 1``) or as an assignment
(``device='cuda'``) and list it in :attr:`vitdistill.errors.UserError.settings`; the command line
retells those names as its flags.

This module imports neither torch nor numpy: the command-line parser is built from it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from vitdistill.errors import UserError, closest_names

INT, FLOAT, STR, BOOL, FLOATS, STRS, ANY = "int", "float", "str", "bool", "floats", "strs", "any"
SEQUENCES = (FLOATS, STRS)
INT64 = 2**63
SEED_LIMIT = 2**32  # seeds lie in [0, SEED_LIMIT): numpy's seed range


@dataclass(frozen=True)
class Spec:
    """How one setting is declared (kept in the dataclass field's metadata)."""

    doc: str
    kind: str
    choices: tuple | None = None
    low: float | None = None  # inclusive lower bound
    above: float | None = None  # exclusive lower bound
    high: float | None = None  # inclusive upper bound
    below: float | None = None  # exclusive upper bound
    hint: str = ""  # appended to a range error
    percent: bool = False  # the command line gives percentages of this fraction (or list of them)
    flag: str | None = None  # the command-line spelling when it is not the keyword's own
    metavar: str | None = None
    check: Callable[[str, Any], None] | None = None  # a further check: (keyword, value) -> raise
    result: bool = True  # changes the numbers (part of a resumable run's fingerprint)


def option(default: Any, doc: str, kind: str, **spec: Any) -> Any:
    """A dataclass field declaring one setting (see :class:`Spec` for ``spec``)."""
    if isinstance(default, list | dict | set):
        raise TypeError("mutable defaults are not options")
    return field(default=default, metadata={"option": Spec(doc, kind, **spec)})


def specs(cls_or_obj) -> dict[str, Spec]:
    """Keyword -> declaration, in declaration order."""
    return {f.name: f.metadata["option"] for f in fields(cls_or_obj) if "option" in f.metadata}


def defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in fields(cls) if "option" in f.metadata}


def from_keywords(cls, kwargs: dict[str, Any]):
    """``cls(**kwargs)`` validated; an unknown keyword is a TypeError naming the closest ones."""
    known = specs(cls)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        near = closest_names(unknown[0], known, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise TypeError(f"unknown {cls.__name__} keyword(s): {', '.join(unknown)}{hint}")
    obj = cls(**kwargs)
    validate(obj)
    return obj


def validate(obj) -> None:
    """Check every declared field of ``obj``; the first bad one is a UserError naming its keyword."""
    for name, spec in specs(obj).items():
        check_value(name, spec, getattr(obj, name))


def check_value(name: str, spec: Spec, value: Any) -> None:
    if value is None and spec.kind in SEQUENCES:
        return
    values = value if spec.kind in SEQUENCES else (value,)
    if spec.kind in SEQUENCES and (isinstance(value, str) or not hasattr(value, "__len__")):
        raise UserError(
            f"'{name}' must be a sequence of {_KIND_NAMES[spec.kind]} (got {value!r})", settings=(name,)
        )
    if spec.kind in SEQUENCES and not len(values):
        raise UserError(f"'{name}' names no value", settings=(name,))
    for v in values:
        if v is None and spec.kind not in SEQUENCES:
            continue
        _check_type(name, spec, v)
        if spec.kind == INT and not -INT64 <= v < INT64:  # what torch, numpy and islice can hold
            raise UserError(f"'{name}' must fit in a signed 64-bit integer (got {v})", settings=(name,))
        if spec.choices is not None and v not in spec.choices:
            raise UserError(
                f"'{name}' must be one of {', '.join(map(str, spec.choices))} (got {v!r})", settings=(name,)
            )
        if not _in_range(spec, v):
            hint = f"; {spec.hint}" if spec.hint else ""
            raise UserError(f"'{name}' must be {describe_range(spec)}{hint} (got {v:g})", settings=(name,))
    if spec.check is not None and value is not None:
        spec.check(name, value)


def _check_type(name: str, spec: Spec, v: Any) -> None:
    number = isinstance(v, numbers.Real) and not isinstance(v, bool)
    ok = {
        INT: lambda: isinstance(v, numbers.Integral) and not isinstance(v, bool),
        FLOAT: lambda: number,
        FLOATS: lambda: number,
        STRS: lambda: isinstance(v, str),
        BOOL: lambda: isinstance(v, bool),
        STR: lambda: isinstance(v, str),
        ANY: lambda: True,
    }[spec.kind]()
    if not ok:
        raise UserError(f"'{name}' must be {_KIND_NAMES[spec.kind]} (got {v!r})", settings=(name,))


_KIND_NAMES = {
    INT: "an integer",
    FLOAT: "a number",
    FLOATS: "numbers",
    STRS: "strings",
    BOOL: "True or False",
    STR: "a string",
}


def _in_range(spec: Spec, v: Any) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return True
    if v != v:  # NaN is in no range
        return spec.low is None and spec.above is None and spec.high is None and spec.below is None
    return not (
        (spec.low is not None and v < spec.low)
        or (spec.above is not None and v <= spec.above)
        or (spec.high is not None and v > spec.high)
        or (spec.below is not None and v >= spec.below)
    )


def describe_range(spec: Spec, scale: float = 1.0) -> str:
    """``>= 0``, ``in (0, 1]`` ... in the keyword's unit (``scale=100`` for percentages)."""
    lo = spec.low if spec.low is not None else spec.above
    hi = spec.high if spec.high is not None else spec.below
    if lo is not None and hi is not None:
        left = "[" if spec.low is not None else "("
        right = "]" if spec.high is not None else ")"
        return f"in {left}{_bound(lo * scale)}, {_bound(hi * scale)}{right}"
    if lo is not None:
        return f"{'>=' if spec.low is not None else '>'} {_bound(lo * scale)}"
    if hi is not None:
        return f"{'<=' if spec.high is not None else '<'} {_bound(hi * scale)}"
    return "any value"


def _bound(x: float) -> str:
    """A bound as typed: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def fingerprint_fields(obj) -> dict[str, Any]:
    """The settings that change the numbers (``result=True``), as a plain dict."""
    keep = {name for name, s in specs(obj).items() if s.result}
    return {k: v for k, v in dataclasses.asdict(obj).items() if k in keep}
