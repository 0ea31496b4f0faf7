"""Model-level mechanism analyses on Hugging Face models (no adapters).

Saliency (:mod:`.saliency`; per-layer reductions :mod:`.saliency_summary`; the sdpa pass
:mod:`.saliency_sdpa`), flows and head grids (:mod:`.flow`), gather/aggregate heads
(:mod:`.patterns`), head ablation (:mod:`.ablation`), tuned lens (:mod:`.lens`, :mod:`.unembed`),
attention sites per architecture (:mod:`.sites`), PNG helpers (:mod:`.plots`).  See docs/mechanism.md.  Names are imported lazily so that
``import vlground.mechanism`` does not import torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "attention_saliency": "saliency",
    "eager_attention": "saliency",
    "target_loss": "saliency",
    "saliency_pass": "saliency",
    "SaliencySummary": "saliency_summary",
    "saliency_summary": "saliency_summary",
    "classify_from_summary": "saliency_summary",
    "flow_from_summary": "saliency_summary",
    "mechanism_share_from_summary": "saliency_summary",
    "AttentionSites": "sites",
    "resolve_sites": "sites",
    "attention_layer_indices": "sites",
    "register_sites": "sites",
    "MechanismError": "errors",
    "get_module": "sites",
    "LayerFlow": "flow",
    "flow_into": "flow",
    "head_grid": "flow",
    "normalize_maps": "flow",
    "normalize_grid": "flow",
    "positions_mask": "flow",
    "GatherAggregateThresholds": "patterns",
    "HeadPatterns": "patterns",
    "classify_heads": "patterns",
    "mechanism_share": "patterns",
    "BoxThresholds": "patterns",
    "inside_share": "patterns",
    "box_aggregate": "patterns",
    "Head": "ablation",
    "zero_heads": "ablation",
    "heads_by_layer": "ablation",
    "AblationResult": "ablation",
    "ablation_test": "ablation",
    "stars": "ablation",
    "Unembedding": "unembed",
    "resolve_unembedding": "unembed",
    "register_unembedding": "unembed",
    "LensConfig": "lens",
    "LensTrainConfig": "lens",
    "LensBatch": "lens",
    "TunedLens": "lens",
    "fit_lens": "lens",
    "lens_kl": "lens",
    "lens_surprisal": "lens",
    "hf_lens_batches": "lens",
    "HiddenStateCache": "lens_cache",
    "attention_kernel": "kernels",
    "plot_head_maps": "plots",
    "plot_head_grid": "plots",
}

__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    return __all__


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vlground.mechanism' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vlground.mechanism.{_EXPORTS[name]}"), name)
