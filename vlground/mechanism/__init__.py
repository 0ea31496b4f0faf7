"""Model-level mechanism analyses on Hugging Face models (no adapters).

Saliency (:mod:`.saliency`), flows and head grids (:mod:`.flow`), gather/aggregate heads
(:mod:`.patterns`), head ablation (:mod:`.ablation`), tuned lens (:mod:`.lens`), attention
sites per architecture (:mod:`.sites`).  Names are imported lazily so that
``import vlground.mechanism`` does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "attention_saliency": "saliency",
    "eager_attention": "saliency",
    "target_loss": "saliency",
    "AttentionSites": "sites",
    "resolve_sites": "sites",
    "attention_layer_indices": "sites",
    "register_sites": "sites",
    "MechanismError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vlground.mechanism' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vlground.mechanism.{_EXPORTS[name]}"), name)
