"""Probe registry: one module per analysis, registered by name.

Built-in probes are lazy ``"module:Class"`` entries (nothing heavy is imported until a probe is
asked for); third-party packages add probes through the entry-point group ``vlground.probes``
(``name = "package.module:ClassName"``); :func:`register_probe` registers one in-process (a
decorator, for tests and notebooks). A duplicate name is an error; an unknown name lists the
known ones. The runner imports only this module.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from vlground.errors import InputError

GROUP = "vlground.probes"

#: the built-in probes, in the order the report shows them
BUILTIN: dict[str, str] = {
    "behaviour": "vlground.probes.behaviour:BehaviourProbe",
    "saliency": "vlground.probes.flow:FlowProbe",
    "heads": "vlground.probes.heads:HeadsProbe",
    "ablation": "vlground.probes.ablation:AblationProbe",
    "lens": "vlground.probes.lens:LensProbe",
    "boxheads": "vlground.probes.boxheads:BoxHeadsProbe",
    "boxablation": "vlground.probes.boxablation:BoxAblationProbe",
}

_LOCAL: dict[str, object] = {}


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in BUILTIN}


def known_probes() -> list[str]:
    """Every registered probe name: built-ins first (in report order), then the others sorted."""
    extra = sorted((set(_entry_points()) | set(_LOCAL)) - set(BUILTIN))
    return list(BUILTIN) + extra


def register_probe(name: str | None = None):
    """Class decorator: register a :class:`~vlground.probes.base.Probe` subclass under ``name``
    (default: the class's ``name``). A name already registered raises ``ValueError``."""

    def deco(cls):
        key = name or cls.name
        if not key:
            raise ValueError(f"{cls!r} has no probe name")
        if key in BUILTIN or key in _LOCAL or key in _entry_points():
            raise ValueError(f"probe {key!r} is already registered")
        _LOCAL[key] = cls
        return cls

    return deco


def unregister_probe(name: str) -> None:
    _LOCAL.pop(name, None)


def _import(spec: str, shown: str):
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # a missing dependency is named, never shown as "unknown probe"
        raise InputError(f"probe {shown!r}: cannot import {module} ({exc})") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise InputError(f"probe {shown!r}: {module} has no {attr}") from None


def get_probe_class(name: str):
    """The probe class for ``name``; an unknown name raises :class:`InputError` listing the known ones."""
    from vlground.probes.base import Probe

    if name in BUILTIN:
        cls = _import(BUILTIN[name], name)
    elif name in _LOCAL:
        obj = _LOCAL[name]
        cls = _import(obj, name) if isinstance(obj, str) else obj
    elif name in (eps := _entry_points()):
        cls = _import(eps[name], name)
    else:
        raise InputError(f"unknown probe {name!r}; known probes: {', '.join(known_probes())}")
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise InputError(f"probe {name!r}: {cls!r} is not a vlground.probes.base.Probe subclass")
    return cls


__all__ = ["GROUP", "BUILTIN", "known_probes", "register_probe", "unregister_probe", "get_probe_class"]
