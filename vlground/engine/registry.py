"""Adapter registry: built-ins and third-party adapters register through the entry-point group
``vlground.adapters`` (``name = "package.module:ClassName"``); ``package.module:ClassName`` also
works directly. Nothing is imported until an adapter is asked for.
"""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from vlground.errors import InputError

log = logging.getLogger(__name__)

GROUP = "vlground.adapters"

#: adapters registered in this process with :func:`register_adapter` (tests, notebooks)
_LOCAL: dict[str, object] = {}


def register_adapter(name: str, target=None):
    """Register ``target`` (a class or ``"module:Class"``) as ``name``; usable as a decorator.

    A second registration of the same name raises ``ValueError``.
    """

    def deco(obj):
        if name in _LOCAL or name in _entry_points():
            raise ValueError(f"adapter {name!r} is already registered")
        _LOCAL[name] = obj
        return obj

    return deco if target is None else deco(target)


def unregister_adapter(name: str) -> None:
    _LOCAL.pop(name, None)


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def known_adapters() -> list[str]:
    """Sorted names of every registered adapter (entry points and local registrations)."""
    return sorted(set(_entry_points()) | set(_LOCAL))


def _import(spec: str, shown: str):
    module, _, attr = spec.partition(":")
    if not attr:
        raise InputError(f"adapter {shown!r}: expected 'package.module:ClassName'")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"adapter {shown!r}: cannot import {module} ({exc})") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise InputError(f"adapter {shown!r}: {module} has no {attr}") from None


def get_adapter_class(name: str):
    """The adapter class for a registered name or a ``module:Class`` path.

    An unknown name raises :class:`InputError` listing the known names.
    """
    from vlground.engine.adapter import Adapter

    if name in _LOCAL:
        obj = _LOCAL[name]
        cls = _import(obj, name) if isinstance(obj, str) else obj
    elif name in (eps := _entry_points()):
        cls = _import(eps[name], name)
    elif ":" in name:
        cls = _import(name, name)
    else:
        raise InputError(f"unknown adapter {name!r}; known adapters: {', '.join(known_adapters()) or '(none)'}")
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise InputError(f"adapter {name!r}: {cls!r} is not a vlground.engine.Adapter subclass")
    return cls
