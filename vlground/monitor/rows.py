"""The last query row of attention in chosen layers, with the fused kernel kept in every layer.

The monitor reads, per generated token, the attention of some heads from the predicting position:
one row ``[batch, heads, keys]`` per monitored layer. Eager attention computes (and the prefill
stores) every row of every layer for that. Instead, :func:`rows_kernel` switches the model to the
attention function :data:`IMPLEMENTATION`, registered through transformers' ``AttentionInterface``
(its documented extension point; no library code is patched): every layer runs ``sdpa``, and a layer
whose attention module is being watched (:func:`watch`) also computes its last query row from the
same ``query``/``key`` with the model's own eager formula (its module's ``eager_attention_forward``:
GQA, scaling, soft-capping, float32 softmax) on that one row, ``O(heads x keys)``. Layers nobody
watches pay nothing. A layer whose call ``sdpa`` cannot serve (``softcap``) runs the model's eager
function instead.

The mask is what transformers builds for ``sdpa`` (registered for :data:`IMPLEMENTATION` too): a
boolean ``[batch, 1, queries, keys]`` or None, which for the last query of a causal pass (prefill or
a decoding step: the last query is the last key) means every key.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import nn

__all__ = ["IMPLEMENTATION", "rows_kernel", "watch", "supports_rows_kernel"]

log = logging.getLogger(__name__)

#: the attention implementation name vlground registers with transformers
IMPLEMENTATION = "vlground_rows"

#: attention module -> callback receiving its last query row ``[batch, heads, keys]`` (only inside :func:`watch`)
_WATCHED: "weakref.WeakKeyDictionary[nn.Module, Callable[[torch.Tensor], None]]" = weakref.WeakKeyDictionary()


def _eager_for(module: nn.Module) -> Callable:
    """The eager attention formula of ``module``'s own modelling file (transformers defines one per model)."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return fn if fn is not None else _generic_eager


def _generic_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``softmax(q k^T * scaling + mask) v`` with grouped keys repeated (models without their own formula)."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    w = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        w = w + attention_mask
    w = torch.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """sdpa's boolean mask (True = attend) as eager's additive one; float masks pass unchanged."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _last_row(module, query, key, value, attention_mask, kwargs) -> torch.Tensor:
    """``[batch, heads, keys]``: the eager attention weights of the last query only."""
    q = query[:, :, -1:, :]
    mask = attention_mask[..., -1:, :] if attention_mask is not None and attention_mask.dim() == 4 else attention_mask
    extra = {k: v for k, v in kwargs.items() if k not in ("is_causal", "dropout", "output_attentions")}
    _, w = _eager_for(module)(module, q, key, value, _additive(mask, query.dtype), dropout=0.0, **extra)
    return w[:, :, -1, :]


def _rows_attention(module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: sdpa's output, and the last query row for watched modules."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    callback = _WATCHED.get(module)
    if kwargs.get("softcap") is not None:  # sdpa has no soft-capping: this layer runs the eager formula
        out, w = _eager_for(module)(module, query, key, value, _additive(attention_mask, query.dtype), **kwargs)
        if callback is not None:
            callback(w[:, :, -1, :])
        return out, None
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if callback is not None:
        with torch.no_grad():
            callback(_last_row(module, query, key, value, attention_mask, kwargs))
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, _rows_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def supports_rows_kernel(model: nn.Module) -> bool:
    """Whether ``model`` can switch attention implementations (transformers' AttentionInterface models)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) is not None and hasattr(model, "set_attn_implementation")


@contextlib.contextmanager
def rows_kernel(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with :data:`IMPLEMENTATION` (sdpa + watched rows) inside the block; the earlier
    implementation is restored after, also when the block raises."""
    _register()
    before = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


@contextlib.contextmanager
def watch(modules: dict[nn.Module, Callable[[torch.Tensor], None]]) -> Iterator[None]:
    """Inside the block, each attention module's last query row goes to its callback (under :func:`rows_kernel`)."""
    try:
        for m, cb in modules.items():
            _WATCHED[m] = cb
        yield
    finally:
        for m in modules:
            _WATCHED.pop(m, None)
