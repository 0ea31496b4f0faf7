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

__all__ = ["__version__", "load_checkpoint"]


def load_checkpoint(path, **kwargs):
    """Load a checkpoint folder written by ``vlground train``; returns ``(model, tokenizer)``."""
    from vlground.train.checkpoint import load_checkpoint as _load

    return _load(path, **kwargs)
