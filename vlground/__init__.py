"""vlground: find where and when symbol grounding happens inside a model.

The pipeline, one folder per stage::

    CHAT (vlground.chat) -> corpus (vlground.corpus, vlground.datasets)
      -> training (vlground.train) -> checkpoints
      -> probes through an adapter (vlground.engine, vlground.adapters, vlground.mechanism)
      -> report (vlground.report)

Heavy modules (torch, transformers) are imported lazily: ``import vlground`` is cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"


def _source_tree_subpackages() -> None:
    """Map the top-level ``adapters/`` and ``datasets/`` folders of a source tree to
    ``vlground.adapters`` / ``vlground.datasets``.

    Those folders have no ``__init__.py`` on purpose: a folder without one is only a
    namespace-package candidate, so when Python starts in the project root (``''`` first on
    ``sys.path``) a real ``datasets`` or ``adapters`` package installed from PyPI still wins.
    A built wheel copies them into ``vlground/adapters`` and ``vlground/datasets`` (the
    ``package-dir`` mapping of pyproject.toml), so nothing is done there; an editable install
    (whose finder only maps folders with an ``__init__.py``) or a bare source checkout gets
    them here, as namespace packages whose one location is that folder.
    """
    import sys
    from importlib.machinery import ModuleSpec
    from importlib.util import module_from_spec
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for name in ("adapters", "datasets"):
        full = f"{__name__}.{name}"
        folder = here.parent / name
        if full in sys.modules or (here / name).is_dir() or not folder.is_dir():
            continue
        spec = ModuleSpec(full, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        module = module_from_spec(spec)
        sys.modules[full] = module
        globals()[name] = module


_source_tree_subpackages()

__all__ = ["__version__", "load_checkpoint"]


def load_checkpoint(path, **kwargs):
    """Load a checkpoint folder written by ``vlground train``; returns ``(model, tokenizer)``."""
    from vlground.train.checkpoint import load_checkpoint as _load

    return _load(path, **kwargs)
