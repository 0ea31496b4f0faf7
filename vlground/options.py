"""Options dataclasses -> command-line flags, so that every default lives in one place.

An options class is a dataclass whose fields carry a ``#:`` comment (or ``metadata={"help": ...}``)::

    @dataclass
    class Options:
        draws: int = 10  #: random control-head draws per item

:func:`add_arguments` turns each field into ``--draws`` (``int``, help from the comment, the
default shown); :func:`build` makes an instance from parsed flags, keeping defaults for flags
the user did not give. Supported field types: ``int``, ``float``, ``str``, ``bool`` (a
``--flag``/``--no-flag`` pair), ``Literal[...]`` (choices) and ``tuple[float, ...]`` /
``tuple[int, ...]`` / ``tuple[str, ...]`` (comma lists).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from functools import lru_cache
from typing import Any, Literal, get_args, get_origin

from vlground.errors import InputError

_COMMENT = re.compile(r"^\s*(\w+)\s*:[^=#]*(?:=[^#]*)?#:\s*(.+?)\s*$")


@lru_cache(maxsize=None)
def field_help(cls: type) -> dict[str, str]:
    """``{field: help}`` from ``metadata["help"]`` or the field's ``#:`` comment in the class source."""
    out: dict[str, str] = {}
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        src = ""
    for line in src.splitlines():
        m = _COMMENT.match(line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            out[f.name] = f.metadata["help"]
    return out


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _comma_list(item_type, name: str):
    def parse(text: str):
        try:
            return tuple(item_type(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag(name)}: expected a comma list of {item_type.__name__}, got {text!r}") from None

    return parse


def _show(v) -> str:
    if isinstance(v, tuple):
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    return str(v)


def argument_spec(cls: type, f: dataclasses.Field) -> tuple[list[str], dict[str, Any]]:
    """The ``add_argument`` call (flags, kwargs) for one field; every default is ``None`` (unset)."""
    hint = _hints(cls)[f.name]
    origin, args = get_origin(hint), get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":  # Optional[X] -> X
        non_none = [a for a in args if a is not type(None)]
        hint = non_none[0] if len(non_none) == 1 else str
        origin, args = get_origin(hint), get_args(hint)
    default = _default(f)
    text = field_help(cls).get(f.name, "")
    kw: dict[str, Any] = {"dest": f.name, "default": None}
    if hint is bool:
        return [flag(f.name)], {**kw, "action": argparse.BooleanOptionalAction, "help": f"{text} (default: {default})"}
    if origin is Literal:
        kw.update(choices=list(args), type=type(args[0]))
    elif origin is tuple:
        kw.update(type=_comma_list(args[0], f.name), metavar="A,B")
    elif hint in (int, float, str):
        kw.update(type=hint)
    else:
        kw.update(type=str)
    kw["help"] = f"{text} (default: {_show(default)})" if default is not None else text
    return [flag(f.name)], kw


def add_arguments(parser: argparse._ActionsContainer, cls: type, seen: dict[str, Any] | None = None) -> None:
    """Add one flag per field of ``cls``. ``seen`` maps field names already added (by another
    options class) to their default; a shared name adds no second flag, and a shared name with
    another default or type raises ``ValueError`` (one flag must mean one thing)."""
    seen = {} if seen is None else seen
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in seen:
            if seen[f.name] != (_default(f), hints[f.name]):
                raise ValueError(f"option {f.name!r} of {cls.__qualname__} has another default or type than the flag {flag(f.name)} already defined")
            continue
        seen[f.name] = (_default(f), hints[f.name])
        names, kw = argument_spec(cls, f)
        parser.add_argument(*names, **kw)


def build(cls: type, values: dict[str, Any] | argparse.Namespace | None):
    """An instance of ``cls`` from flag values; ``None`` values keep the field's default.

    Values of the wrong kind raise :class:`InputError` naming the flag.
    """
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    values = values or {}
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        v = values.get(f.name)
        if v is None:
            continue
        hint = hints[f.name]
        if get_origin(hint) is tuple and isinstance(v, (list, tuple)):
            v = tuple(v)
        elif get_origin(hint) is tuple and isinstance(v, str):
            v = _comma_list(get_args(hint)[0], f.name)(v)
        if get_origin(hint) is Literal and v not in get_args(hint):
            raise InputError(f"{flag(f.name)}: {v!r} is not one of {', '.join(map(str, get_args(hint)))}")
        kwargs[f.name] = v
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{cls.__qualname__}: {exc}") from None
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


def to_dict(obj) -> dict[str, Any]:
    """JSON-able dict of an options instance (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}
