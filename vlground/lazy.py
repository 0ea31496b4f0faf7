"""Heavy modules imported on first use, so that reading a probe's ``Options`` (``vlground probe
--help``, ``vlground list``) does not import torch.

``from vlground.lazy import torch`` binds a stand-in whose first attribute access
(``torch.cat``, ``torch.no_grad()``) imports torch through the ordinary import system and
returns the real attribute; nothing is put in ``sys.modules`` until then, so
``"torch" in sys.modules`` keeps telling whether torch was imported. Use it only in modules whose
top level does not touch torch (annotations are strings under ``from __future__ import
annotations``); a module-level ``@torch.no_grad()`` would import torch at once, which is correct
but no longer lazy.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["LazyModule", "torch"]


class LazyModule:
    """A module imported on its first attribute access (see the module docstring)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        return importlib.import_module(self._name)  # after the first call: a dict look-up in sys.modules

    def __getattr__(self, attr: str):
        return getattr(self._module(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


#: torch, imported on first use
torch = LazyModule("torch")
