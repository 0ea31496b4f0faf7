"""The probing engine: the adapter interface, the adapter registry and the checkpoint sweep.

Names are imported lazily (PEP 562): ``vlground.engine.registry`` (adapter names, for ``--help``
and ``vlground list``) does not load torch; ``vlground.engine.Adapter`` does.
"""
from __future__ import annotations

import importlib

_WHERE = {
    **{n: "vlground.engine.adapter" for n in ("Adapter", "AttentionSites", "Capability", "Checkpoint", "LoadedModel",
                                               "ProbeBatch", "ProbeItem", "gather_target_logprobs")},
    **{n: "vlground.engine.registry" for n in ("get_adapter_class", "known_adapters", "register_adapter")},
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vlground.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
