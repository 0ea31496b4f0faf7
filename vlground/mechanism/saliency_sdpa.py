"""The saliency pass with the fused kernel: maps recomputed per layer in the backward pass, never stored.

Eager attention keeps every layer's ``[B, H, S, S]`` map in the autograd graph until the backward
pass reaches it: at 7B and 2,500 tokens about 24-36 GiB per item.  Inside :func:`recompute_kernel`
the model runs the attention function :data:`IMPLEMENTATION`, registered through transformers'
``AttentionInterface`` (its documented extension point; no library code is patched): every layer
runs ``sdpa`` (the graph keeps ``O(S x d)`` per layer), and each chosen layer keeps its ``query``,
``key``, ``value`` and mask (detached) and a hook on its attention output ``O = A V``.  When the
backward pass reaches ``O`` with ``dL/dO``, the hook forms ``dL/dA = dL/dO V^T`` (``A`` enters the
loss only through ``A V``), recomputes ``A`` with the model's own eager formula (its modelling
file's ``eager_attention_forward``: scaling, grouped keys, float32 softmax, soft-capping) from the
kept ``query`` and ``key``, and hands ``(dL/dA, A)`` to the sink, which reduces and frees them.
So one layer's maps exist at a time, a few heads at a time (:data:`CHUNK_BYTES`).  A layer whose call ``sdpa`` cannot serve (``softcap``,
``position_bias``) runs the eager formula in the graph and is hooked on its weights, as in the
eager pass.  The mask is what transformers builds for ``sdpa``: boolean or None, None meaning
causal here (decoder layers).
"""
from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError

__all__ = ["IMPLEMENTATION", "recompute_kernel", "supports_recompute"]

#: the attention implementation name vlground registers with transformers for the saliency pass
IMPLEMENTATION = "vlground_saliency"

#: the backward hook recomputes a layer's maps a few heads at a time, at most this many bytes per float32 map chunk
CHUNK_BYTES = 64 * 2**20

#: attention module -> what a forward call through it appends to (only inside :func:`recompute_kernel`)
_TAPPED: "weakref.WeakKeyDictionary[nn.Module, list]" = weakref.WeakKeyDictionary()


@dataclass
class LayerTap:
    """One attention call of a chosen layer: its inputs (detached) and its output in the graph.

    ``out`` is ``O`` ``[B, S, H, d]`` (sdpa) or, for a layer run eagerly, the weights ``A``
    ``[B, H, S, S]`` themselves (``eager=True``)."""

    module: nn.Module
    query: torch.Tensor | None
    key: torch.Tensor | None
    value: torch.Tensor | None
    mask: torch.Tensor | None
    kwargs: dict
    out: torch.Tensor
    eager: bool = False

    def hook(self, sink, k: int) -> Callable[[torch.Tensor], None]:
        """A tensor hook for ``out``: the layer's ``(dL/dA, A)`` to ``sink`` (layer ``k``), in chunks of
        heads of at most :data:`CHUNK_BYTES` per ``[B, h, S, S]`` float32 map; drops the kept tensors after."""

        def fire(grad: torch.Tensor) -> None:
            with torch.no_grad():
                if self.eager:
                    att = self.out.detach()
                    self._drop()
                    sink.layer(k, grad, att, 0)
                    sink.end_layer(k)
                    return None
                q, key, value, mask, kwargs = self.query, self.key, self.value, self.mask, self.kwargs
                self._drop()
                B, H, S = q.shape[0], q.shape[1], key.shape[-2]
                groups = H // key.shape[1]
                per_head = B * S * S * 4
                step = max(groups, (max(1, CHUNK_BYTES // per_head) // groups) * groups)
                d_out = grad.transpose(1, 2)  # [B, H, S, d]
                for h0 in range(0, H, step):
                    h1 = min(H, h0 + step)
                    kv = slice(h0 // groups, (h1 + groups - 1) // groups)
                    v = _repeat(value[:, kv], h1 - h0)
                    d_att = torch.matmul(d_out[:, h0:h1].to(v.dtype), v.transpose(-1, -2))  # [B, h, S, S]
                    del v
                    att = _eager_weights(self.module, q[:, h0:h1], key[:, kv], value[:, kv], mask, kwargs)
                    sink.layer(k, d_att, att, h0)
                    del d_att, att
                sink.end_layer(k)
            return None

        return fire

    def _drop(self) -> None:
        self.query = self.key = self.value = self.mask = None
        self.out = None


def _repeat(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, KV, S, d]`` -> ``[B, heads, S, d]`` (grouped-query keys and values, as eager repeats them)."""
    groups = heads // x.shape[1]
    return x if groups == 1 else x[:, :, None].expand(x.shape[0], x.shape[1], groups, *x.shape[2:]).reshape(
        x.shape[0], heads, *x.shape[2:])


def _eager_for(module: nn.Module) -> Callable:
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise MechanismError(f"{type(module).__name__}: its modelling file has no eager_attention_forward")
    return fn


def _additive(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """sdpa's mask as eager's additive one: boolean (True = attend) converted, None = causal."""
    dtype = query.dtype
    if mask is None:
        q, k = query.shape[-2], key.shape[-2]
        allowed = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)
        mask = allowed[None, None]
    if mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _eager_weights(module, query, key, value, mask, kwargs) -> torch.Tensor:
    extra = {k: v for k, v in kwargs.items() if k not in ("is_causal", "dropout", "output_attentions")}
    _, w = _eager_for(module)(module, query, key, value, _additive(mask, query, key), dropout=0.0, **extra)
    return w


def _tap_attention(module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: sdpa, with the chosen layers' inputs and output kept."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    taps = _TAPPED.get(module)
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        out, w = _eager_for(module)(module, query, key, value, _additive(attention_mask, query, key), **kwargs)
        if taps is not None:
            taps.append(LayerTap(module, None, None, None, None, {}, w, eager=True))
        return out, None
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if taps is not None:
        taps.append(LayerTap(module, query.detach(), key.detach(), value.detach(),
                             None if attention_mask is None else attention_mask.detach(), dict(kwargs), out))
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, _tap_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def supports_recompute(model: nn.Module, sites=None) -> bool:
    """Whether ``model`` runs on transformers' AttentionInterface and has attention sites (given or registered)."""
    from vlground.mechanism.sites import has_attention_sites

    return (getattr(getattr(model, "config", None), "_attn_implementation", None) is not None
            and hasattr(model, "set_attn_implementation") and (sites is not None or has_attention_sites(model)))


@contextlib.contextmanager
def recompute_kernel(model: nn.Module, layers: Sequence[int], sites=None) -> Iterator[dict[int, list[LayerTap]]]:
    """Run ``model`` with :data:`IMPLEMENTATION` inside the block; yields ``{layer: [LayerTap, ...]}``
    filled by each forward call of the chosen decoder ``layers`` (``sites``: the model's attention sites;
    default: resolved by ``model_type``). Restored in ``finally``."""
    from vlground.mechanism.sites import get_module, resolve_sites

    sites = sites if sites is not None else resolve_sites(model)
    _register()
    taps: dict[int, list[LayerTap]] = {layer: [] for layer in layers}
    modules = {get_module(model, sites.path(layer).rsplit(".", 1)[0]): layer for layer in layers}
    before = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    try:
        for m, layer in modules.items():
            _TAPPED[m] = taps[layer]
        yield taps
    finally:
        for m in modules:
            _TAPPED.pop(m, None)
        model.set_attn_implementation(before)
