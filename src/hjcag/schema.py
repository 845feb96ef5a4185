"""Check a YAML mapping against a frozen dataclass, key by key, before anything uses it.

The dataclass is the schema: its fields are the known keys (an unknown one gets a close-match suggestion), its
annotations the value types (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``dict[str, X]``,
``tuple[X, ...]``, nested dataclasses, ``Any``), so a field added later is checked without a second list. Ranges and
choices are a :data:`Rule` the field carries itself (:func:`ruled`); a number without a rule must be >= 0 (every
number in params.yaml is a size, a count, a rate or a fraction). A ``dict`` field whose default is non-empty takes
only the default's keys (``model.widths``: t, a, v).

:func:`check_mapping` returns a plain copy with the values coerced (``1e-3``, which PyYAML reads as a string,
becomes a float; lists become tuples where the field is a tuple) and appends every problem it finds, each a
one-line message naming the dotted location, the value and what it takes. A :class:`Checked` dataclass runs the
same checks on itself when it is built, so an instance that exists is valid however it was made
(``dataclasses.replace`` included).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from hjcag.errors import ConfigError

# A rule gets a value that already has the field's type and says what it must be when it is not ("> 0"), else None.
Rule = Callable[[Any], str | None]
# A parser replaces the type check of a field altogether: (value, location, problems) -> the coerced value.
Parser = Callable[[Any, str, list["Problem"]], Any]
RULE = "rule"  # the key of a field's Rule (or Parsed) in its metadata

_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)")  # what YAML 1.1 leaves a string: 1e-3, 5E+2


@dataclass(frozen=True)
class Problem:
    where: str
    message: str


@dataclass(frozen=True)
class Parsed:
    """A field whose value a function of its own checks (e.g. ``tune.space``)."""

    parse: Parser


def ruled(default: Any = dataclasses.MISSING, rule: Rule | Parsed | None = None, *,
          factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field (default `default`, or `factory`) whose value must also pass `rule` (beyond its type)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={RULE: rule})


def rule_of(field: dataclasses.Field[Any]) -> Rule | Parsed | None:
    return field.metadata.get(RULE)


class Checked:
    """A frozen dataclass that checks its own fields when it is built, with the rules and the messages of
    :func:`check_mapping` at `SECTION` (its place in params.yaml): the first problem raises ConfigError.
    A subclass with checks across fields runs them in its own ``__post_init__`` after ``super().__post_init__()``."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        check_mapping(_as_document(self), type(self), self.SECTION, problems, built=True)
        raise_first(problems)


def raise_first(problems: Sequence[Problem], source: str = "") -> None:
    """One line: the first problem, then where the others are (a user fixes one file in one go)."""
    if not problems:
        return
    others = [p.where for p in problems[1:]]
    also = f" (also check {', '.join(others[:5])}{', ...' if len(others) > 5 else ''})" if others else ""
    text = f"{source + ': ' if source else ''}{problems[0].message}{also}"
    raise ConfigError(text if text.endswith((".", "?")) else text + ".")


def at_least(low: float) -> Rule:
    return lambda v: None if v >= low else f">= {low}"


def positive(v: Any) -> str | None:
    return None if v > 0 else "> 0"


def fraction(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "in [0, 1] (a fraction: 0.63 is 63 %)"


def below_one(v: Any) -> str | None:
    return None if 0 <= v < 1 else "in [0, 1)"


def open_fraction(v: Any) -> str | None:
    return None if 0 < v < 1 else "in (0, 1), both ends excluded"


def one_of(choices: Sequence[str], pattern: str = "", shown: str = "") -> Rule:
    """One of `choices`, or a match of the regular expression `pattern` (`shown` in messages, e.g. cuda:N)."""
    words = f"one of {list(choices)}" + (f" (or {shown or pattern})" if pattern else "")
    return lambda v: None if v in choices or (pattern and re.fullmatch(pattern, str(v))) else words


def suggestion(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"


def check_mapping(values: Any, cls: type, where: str, problems: list[Problem], noun: str = "key",
                  built: bool = False) -> dict[str, Any]:
    """`values` (a YAML mapping, or None for none) checked against the fields of dataclass `cls` at `where`.
    `built`: the values of an instance being built (:class:`Checked`), not a document's: nothing is coerced, a
    :class:`Parsed` field is checked by its type and a nested dataclass is an instance (which checked itself)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        problems.append(Problem(where, f"{where or 'the file'} is {_show(values)}; it takes a mapping of "
                                       f"{', '.join(_fields(cls))}"))
        return {}
    fields, hints = _fields(cls), _hints(cls)
    nested: Mapping[str, str] = getattr(cls, "NESTED_PREFIXES", {})  # e.g. features.finetune.lr -> finetune_lr
    out: dict[str, Any] = {}
    for key, value in values.items():
        name, at = str(key), f"{where}.{key}" if where else str(key)
        if name in nested and (isinstance(value, Mapping) or value is None):
            prefix = nested[name]
            sub = {k[len(prefix):]: f for k, f in fields.items() if k.startswith(prefix)}
            out[name] = {}
            for k, v in (value or {}).items():
                if str(k) not in sub:
                    problems.append(Problem(f"{at}.{k}", f"unknown key '{k}' in {at}; {suggestion(str(k), sub)}"))
                else:
                    out[name][k] = _check_field(v, sub[str(k)], hints, f"{at}.{k}", problems, built)
        elif name not in fields:
            inside = f" in {where}" if where else ""
            problems.append(Problem(at, f"unknown {noun} '{name}'{inside}; {suggestion(name, list(fields))}"))
        else:
            out[name] = _check_field(value, fields[name], hints, at, problems, built)
    return out


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """The dataclass `cls` from values :func:`check_mapping` returned (nested dataclasses built from their mappings)."""
    hints = _hints(cls)
    kwargs = {k: build(hints[k], v) if dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping) else v
              for k, v in values.items()}
    return cls(**kwargs)


def _as_document(obj: Any) -> dict[str, Any]:
    """A dataclass instance's fields as the mapping a document holds (``finetune_lr`` under ``finetune: {lr}``)."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for name, prefix in getattr(obj, "NESTED_PREFIXES", {}).items():
        values[name] = {k[len(prefix):]: values.pop(k) for k in list(values) if k.startswith(prefix)}
    return values


def _check_field(value: Any, field: dataclasses.Field[Any], hints: Mapping[str, Any], where: str,
                 problems: list[Problem], built: bool) -> Any:
    spec = rule_of(field)
    if isinstance(spec, Parsed):
        if not built:
            return spec.parse(value, where, problems)
        spec = None
    default = _default(field)  # cached: read, never changed
    keys = tuple(default) if isinstance(default, dict) and default else None
    return _check_value(value, hints[field.name], where, spec, default, keys, problems, built)


def _check_value(value: Any, tp: Any, where: str, rule: Rule | None, default: Any, keys: tuple[str, ...] | None,
                 problems: list[Problem], built: bool) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], where, rule, default, keys, problems, built) if len(inner) == 1 \
            else value
    if dataclasses.is_dataclass(tp):
        if built:  # an instance, which checked itself
            if not isinstance(value, tp):
                problems.append(Problem(where, f"{where} is {_show(value)}; it takes a {tp.__name__}"))
            return value
        return check_mapping(value, tp, where, problems)
    if origin is dict:
        if not isinstance(value, Mapping):
            return _wrong(value, tp, where, default, problems)
        out = {}
        for k, v in value.items():
            if keys is not None and str(k) not in keys:
                problems.append(Problem(f"{where}.{k}", f"unknown key '{k}' in {where}; {suggestion(str(k), keys)}"))
            else:
                out[k] = _check_value(v, args[1], f"{where}.{k}", rule, None, None, problems, built)
        return out
    if origin is tuple:
        fixed = not (len(args) == 2 and args[1] is Ellipsis)
        if not isinstance(value, list | tuple) or (fixed and len(value) != len(args)):
            return _wrong(value, tp, where, default, problems)
        return tuple(_check_value(v, args[i] if fixed else args[0], f"{where}[{i}]", rule, None, None, problems,
                                  built) for i, v in enumerate(value))
    scalar = _scalar(value, tp, built)
    if scalar is None:
        return _wrong(value, tp, where, default, problems)
    if rule is None and tp in (int, float):
        rule = at_least(0)
    need = rule(scalar) if rule is not None else None
    if need:
        problems.append(Problem(where, f"{where} is {_show(value)}; it must be {need}"))
    return scalar


def _scalar(value: Any, tp: Any, built: bool = False) -> Any:
    """`value` as a `tp` (bool, int, float, str), or None when it is not one (`built`: a float is not text)."""
    if tp is bool:
        return value if isinstance(value, bool) else None
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if tp is float:
        if isinstance(value, str) and not built and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        return None
    if tp is str:
        return value if isinstance(value, str) else None
    return value  # a type this schema does not describe further


def _wrong(value: Any, tp: Any, where: str, default: Any, problems: list[Problem]) -> None:
    example = f" (default: {_show(default)})" if default is not None and default != {} else ""
    problems.append(Problem(where, f"{where} is {_show(value)}; it takes {describe(tp)}{example}"))


def describe(tp: Any, many: bool = False) -> str:
    """How a message names a type: 'a whole number', 'a list of 2 numbers', 'a string or null' (`many`: plural)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [describe(a, many) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if dataclasses.is_dataclass(tp):
        return f"{'mappings' if many else 'a mapping'} of {', '.join(_fields(tp))}"
    if origin is dict:
        return f"{'mappings' if many else 'a mapping'} to {describe(args[1], True)}"
    if origin is tuple:
        size = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        return f"{'lists' if many else 'a list'} of {size}{describe(args[0], True)}"
    one, plural = _NAMES.get(tp, (str(tp), str(tp)))
    return plural if many else one


_NAMES = {int: ("a whole number", "whole numbers"), float: ("a number", "numbers"),
          bool: ("true or false", "true/false values"),
          str: ("a string (quote it if YAML reads it as something else)", "strings")}


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: strings quoted, true/false/null, lists in brackets."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


@cache
def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


@cache
def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)
