"""Flags from declared settings, and library messages retold in flags.

One rule turns a declared setting (:mod:`vitdistill.utils.options`) into a flag: the keyword
with ``-`` for ``_`` (``batch_size`` -> ``--batch-size``), unless the declaration names its own
spelling; a setting that is on by default is turned off by ``--no-KEYWORD``; a percentage
setting takes percentages (``--thresholds 80,90``) where the keyword takes fractions. Each flag's
``dest`` is the keyword and a flag not given is absent from ``args``, so :func:`options_from`
hands the library only what the user typed and every default stays in its declaration.

Library errors name keywords (``'images' must be >= 1``, ``device='cuda'``) and list them in
``UserError.settings``; :func:`retell` puts the command's flag in their place.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from vitdistill.errors import UserError
from vitdistill.utils.options import (
    BOOL,
    FLOAT,
    FLOATS,
    INT,
    STRS,
    Spec,
    check_value,
    defaults,
    describe_range,
    specs,
)


def flag_of(name: str, spec: Spec, default: Any) -> str:
    if spec.flag:
        return "--" + spec.flag
    if spec.kind == BOOL and default is True:
        return "--no-" + name.replace("_", "-")
    return "--" + name.replace("_", "-")


def _shown(default: Any, spec: Spec) -> str:
    if spec.kind == FLOATS:
        return ",".join(f"{v * (100 if spec.percent else 1):g}" for v in default)
    if spec.kind == STRS:
        return ",".join(default)
    if spec.percent:
        return f"{default * 100:g}"
    return str(default)


_METAVARS = {INT: "N", FLOAT: "X", FLOATS: "A,B,...", STRS: "A,B,..."}


def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per declared setting of ``cls`` (``dest`` = the keyword), help from its doc line."""
    values = defaults(cls)
    for name, spec in specs(cls).items():
        default, flag = values[name], flag_of(name, spec, values[name])
        unit = " in percent" if spec.percent else ""
        shown = "" if default is None or spec.kind == BOOL else f" (default {_shown(default, spec)})"
        kw: dict[str, Any] = {"dest": name, "help": f"{spec.doc}{unit}{shown}", "default": argparse.SUPPRESS}
        if spec.kind == BOOL:
            kw["action"] = "store_false" if default is True else "store_true"
        elif spec.choices:
            kw["choices"] = spec.choices
        else:
            kw["metavar"] = spec.metavar or _METAVARS.get(spec.kind) or flag[2:].upper().replace("-", "_")
            if spec.kind in (INT, FLOAT):
                kw["type"] = {INT: int, FLOAT: float}[spec.kind]
        parser.add_argument(flag, **kw)


def options_from(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The declared settings of ``cls`` given on the command line, in the keyword's unit."""
    out = {}
    for name, spec in specs(cls).items():
        if not hasattr(args, name):
            continue
        value = getattr(args, name)
        if spec.kind == FLOATS and isinstance(value, str):
            value = _number_list(value, name, spec)
        if spec.kind == STRS and isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if spec.percent and value is not None:
            value = _from_percent(value, name, spec)
        out[name] = value
    return out


def _number_list(text: str, name: str, spec: Spec) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"'{name}' must be comma-separated percentages like 80,90,95,99 (got {text!r})", settings=(name,)
        ) from None
    if not vals:
        raise UserError(f"'{name}' names no value", settings=(name,))
    return vals


def _from_percent(value, name: str, spec: Spec):
    """Percentages (checked as such, so the message speaks the flag's unit) -> fractions."""
    vals = value if spec.kind == FLOATS else (value,)
    for v in vals:
        try:
            check_value(name, spec, (v / 100,) if spec.kind == FLOATS else v / 100)
        except UserError:
            hint = f"; {spec.hint}" if spec.hint else ""
            raise UserError(
                f"'{name}' must be a percentage {describe_range(spec, 100)}{hint} (got {v:g})",
                settings=(name,),
            ) from None
    return tuple(v / 100 for v in vals) if spec.kind == FLOATS else value / 100


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Keyword or config key (the action's dest) -> the flag that sets it, for every optional."""
    return {
        a.dest.removeprefix("shortcut:"): max(a.option_strings, key=len)
        for a in parser._actions
        if a.option_strings
    }


def unknown_arguments(
    extra: list[str], flags: dict[str, str], set_keys: dict[str, str], not_here: dict[str, str] | None = None
) -> str:
    """``unrecognized arguments: ...`` naming the closest flag, or the ``--set`` key a flag-like
    spelling stands for (``set_keys``: key -> an example value, e.g. ``log.tensorboard`` -> ``true``),
    or why a flag of another command does not apply here (``not_here``: flag -> reason)."""
    import difflib

    message = f"unrecognized arguments: {' '.join(extra)}"
    given = next((a for a in extra if a.startswith("--") and len(a) > 2), None)
    if given is None:
        return message
    name = given[2:].split("=", 1)[0].lower().replace("_", "-")
    if not_here and f"--{name}" in not_here:  # a flag of another command, with the reason
        return f"{message} (--{name}: {not_here[f'--{name}']})"
    spelled = {f.removeprefix("--"): f for f in flags.values() if f.startswith("--")}
    for key in set_keys:  # a key as a flag would spell it, whole and by its last part
        for form in (key, key.rsplit(".", 1)[-1]):
            spelled.setdefault(form.replace(".", "-").replace("_", "-"), f"--set {key}={set_keys[key]}")
    near = difflib.get_close_matches(name, list(spelled), n=1, cutoff=0.6)
    return f"{message} (did you mean {spelled[near[0]]}?)" if near else message


def _flag_value(flag: str, value: str) -> str:
    value = value.strip("'\"")
    return flag if value == "True" else f"{flag} {value}"


_QUOTED = "'{}'"
_ASSIGNED = r"(?<![\w.]){}=('[^']*'|\"[^\"]*\"|[^\s,;:)]+)"


def retell(message: str, settings: tuple[str, ...], flags: dict[str, str]) -> str:
    """``message`` with each named setting written as its flag: ``'images'`` -> ``--images``,
    ``device='cuda'`` -> ``--device cuda``, ``fresh=True`` -> ``--fresh``."""
    for name in settings:
        flag = flags.get(name)
        if flag is None:
            continue
        message = message.replace(_QUOTED.format(name), flag)
        message = re.sub(
            _ASSIGNED.format(re.escape(name)), lambda m, f=flag: _flag_value(f, m.group(1)), message
        )
    return message


def add_set_option(parser: argparse.ArgumentParser, what: str, example: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option (into ``args.overrides``), worded for its command."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{what}, read by the one --set rule (YAML values), e.g. {example} (repeatable)",
    )


def markdown(cls) -> str:
    """The documentation table of ``cls``'s settings: flag, keyword, default, meaning."""
    lines = ["| flag | keyword | default | meaning |", "|---|---|---|---|"]
    values = defaults(cls)
    for name, spec in specs(cls).items():
        default = values[name]
        shown = "" if default is None else f"`{_shown(default, spec)}`"
        if spec.kind == BOOL:
            shown = "on" if default else "off"
        unit = " (the flag in percent, the keyword in fractions)" if spec.percent else ""
        allowed = f": {' / '.join(map(str, spec.choices))}" if spec.choices else ""
        rng = describe_range(spec, 100 if spec.percent else 1)
        rng = f" ({rng})" if rng != "any value" and not spec.percent else ""
        flag = flag_of(name, spec, default)
        lines.append(f"| `{flag}` | `{name}` | {shown} | {spec.doc}{allowed}{rng}{unit} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    from vitdistill.analysis.options import AnalysisOptions
    from vitdistill.utils.eval_options import EvalOptions
    from vitdistill.utils.inspect_options import InspectOptions

    tables = {"analyze": AnalysisOptions, "eval": EvalOptions, "inspect": InspectOptions}
    print(markdown(tables[sys.argv[1] if len(sys.argv) > 1 else "analyze"]))


def add_shortcuts(parser: argparse.ArgumentParser, shortcuts: dict[str, str], switches=()) -> None:
    """Flags that stand for config keys: ``--FLAG VALUE`` is ``--set KEY=VALUE`` (read by the same
    rule); a switch (a key in ``switches``) takes no value and sets its key to true."""
    group = parser.add_argument_group(
        "shortcuts", "each --FLAG VALUE is --set KEY=VALUE for the key named (the flag wins over --set)"
    )
    for flag, key in shortcuts.items():
        dest = "shortcut:" + key
        if key in switches:
            group.add_argument(
                "--" + flag, dest=dest, action="store_true", default=None, help=f"--set {key}=true"
            )
        else:
            group.add_argument("--" + flag, dest=dest, metavar="VALUE", help=f"--set {key}=VALUE")


def shortcut_overrides(args: argparse.Namespace, shortcuts: dict[str, str]) -> list[str]:
    """The ``KEY=VALUE`` overrides the shortcut flags in ``args`` stand for."""
    out = []
    for flag, key in shortcuts.items():
        value = getattr(args, "shortcut:" + key, None)
        if isinstance(value, str) and not value.strip():  # `--lr ""` would be `optim.lr=` (null)
            raise UserError(f"--{flag} needs a value (to set {key} to null, use --set {key}=null)")
        if value is not None:
            out.append(f"{key}={'true' if value is True else value}")
    return out
