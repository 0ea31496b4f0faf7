"""What the head and flow probes read from saliency, reduced per layer inside the backward pass.

A saliency map ``I = dL/dA * A`` is ``[seq, seq]`` per head; the probes read only a few sums of
it.  :func:`saliency_summary` runs the same one forward and backward pass as
:func:`vlground.mechanism.saliency.attention_saliency` and, as each layer's gradient arrives,
keeps these reductions of the layer's maps and frees them (``M = |I|`` on the causal lower
triangle ``j <= i``, ``t`` = the item's predicted position):

* ``row`` ``[B, L, H, S]``: ``I[t, :]``, signed (the flows into the predicted position);
* ``row_mass`` ``[B, L, H, S]``: ``sum_j M[i, j]`` per row ``i`` (strips, every gather rule);
* ``row_max`` ``[B, L, H, S]``: ``max_j M[i, j]`` per row (``strip-minus-dot``);
* ``total`` ``[B, L, H]``: ``sum_ij M[i, j]``, the head's mass;
* ``dot`` / ``dot_index`` ``[B, L, H]``: the largest cell of ``M`` and its flat index ``i * S + j``;
* ``layer_row`` ``[B, L, S]``: ``|sum_h I|[t, :]`` and ``layer_mass`` ``[B, L]``: ``sum |sum_h I|``
  over the causal pairs of valid positions (Wang et al.'s per-layer flows, :func:`flow_from_summary`);
* ``map_mean`` ``[L, H, n, n]`` (only when asked): the mean map of a few items cropped to ``n``
  tokens, for the report's head-map plot.

Everything is float32 on the CPU: ``O(L * H * S)`` per item instead of ``O(L * H * S^2)``.
:func:`classify_from_summary`, :func:`flow_from_summary` and :func:`mechanism_share_from_summary`
give what :func:`~vlground.mechanism.patterns.classify_heads`,
:func:`~vlground.mechanism.flow.flow_into` and :func:`~vlground.mechanism.patterns.mechanism_share`
give on the full maps, to float tolerance (sums taken in another order).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.flow import LayerFlow, positions_mask
from vlground.mechanism.patterns import (
    GatherAggregateThresholds,
    HeadPatterns,
    patterns_from_rows,
)
from vlground.mechanism.saliency import SaliencySink, saliency_pass

__all__ = [
    "SaliencySummary",
    "saliency_summary",
    "classify_from_summary",
    "flow_from_summary",
    "mechanism_share_from_summary",
]


@dataclass(frozen=True)
class SaliencySummary:
    """Per-layer reductions of a batch's saliency maps (see the module docstring for each field).

    Shapes: ``B`` items, ``L`` chosen layers, ``H`` heads, ``S`` tokens; float32 (``dot_index``:
    long) on the CPU.  ``predict_positions`` ``[B]``: the rows ``row`` and ``layer_row`` were read at.
    """

    row: torch.Tensor
    row_mass: torch.Tensor
    row_max: torch.Tensor
    total: torch.Tensor
    dot: torch.Tensor
    dot_index: torch.Tensor
    layer_row: torch.Tensor
    layer_mass: torch.Tensor
    predict_positions: torch.Tensor
    map_mean: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.row.shape[0]

    @property
    def seq(self) -> int:
        return self.row.shape[-1]

    def nbytes(self) -> int:
        """Bytes held by the summary's tensors."""
        return sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, torch.Tensor))


class _Reductions(SaliencySink):
    """Fills a :class:`SaliencySummary` layer by layer; each layer's maps are freed once reduced."""

    def __init__(self, predict_positions: torch.Tensor, valid: torch.Tensor | None,
                 map_items: Sequence[int] | None, map_length: int | None):
        self.t = predict_positions.long().cpu()
        self.valid = None if valid is None else valid.bool().cpu()
        self.map_items = list(map_items) if map_items else None
        self.map_length = map_length
        self.parts: dict[str, torch.Tensor] = {}
        self._masks: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._acc: torch.Tensor | None = None  #: the layer's ``sum_h I`` ``[B, S, S]`` while its chunks arrive

    def start(self, batch: int, layers: int, heads: int, seq: int) -> None:
        f32 = dict(dtype=torch.float32)
        self.parts = {
            "row": torch.zeros(batch, layers, heads, seq, **f32),
            "row_mass": torch.zeros(batch, layers, heads, seq, **f32),
            "row_max": torch.zeros(batch, layers, heads, seq, **f32),
            "total": torch.zeros(batch, layers, heads, **f32),
            "dot": torch.zeros(batch, layers, heads, **f32),
            "dot_index": torch.zeros(batch, layers, heads, dtype=torch.long),
            "layer_row": torch.zeros(batch, layers, seq, **f32),
            "layer_mass": torch.zeros(batch, layers, **f32),
        }
        if self.map_items:
            n = min(int(self.map_length or seq), seq)
            self.parts["map_mean"] = torch.zeros(layers, heads, n, n, **f32)
        valid = torch.ones(batch, seq, dtype=torch.bool) if self.valid is None else self.valid
        if valid.shape != (batch, seq):
            raise MechanismError(f"attention mask of shape {tuple(valid.shape)} for maps of {batch} x {seq}")
        self.valid = valid

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(causal [S, S], pairs [B, S, S])`` on ``device``: the lower triangle, and its valid pairs."""
        if device not in self._masks:
            seq = self.valid.shape[1]
            causal = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()
            valid = self.valid.to(device)
            self._masks[device] = (causal, causal & valid[:, :, None] & valid[:, None, :])
        return self._masks[device]

    def layer(self, k: int, grad: torch.Tensor, att: torch.Tensor, h0: int = 0) -> None:
        p = self.parts
        dev = grad.device
        causal, _ = self._on(dev)
        prod = grad.float() * att.float()  # [B, h, S, S]: heads h0 .. h0 + h
        del grad, att
        B, h, S, _ = prod.shape
        heads = slice(h0, h0 + h)
        b = torch.arange(B, device=dev)
        t = self.t.to(dev)
        p["row"][:, k, heads] = prod[b, :, t].cpu()
        if self._acc is None or self._acc.device != dev:
            self._acc = torch.zeros(B, S, S, dtype=torch.float32, device=dev)
        self._acc += prod.sum(1)  # sum_h I over the layer's heads, chunk by chunk
        if "map_mean" in p:
            n = p["map_mean"].shape[-1]
            p["map_mean"][k, heads] = prod[self.map_items, :, :n, :n].mean(0).cpu()
        mass = prod.abs_().masked_fill_(~causal, 0.0)  # in place: M = |I| on the causal triangle
        p["total"][:, k, heads] = mass.sum((-1, -2)).cpu()
        p["row_mass"][:, k, heads] = mass.sum(-1).cpu()
        p["row_max"][:, k, heads] = mass.amax(-1).cpu()
        dot, idx = mass.flatten(-2).max(dim=-1)
        p["dot"][:, k, heads], p["dot_index"][:, k, heads] = dot.cpu(), idx.cpu()

    def end_layer(self, k: int) -> None:
        p, layer = self.parts, self._acc.abs_()  # [B, S, S]: |sum_h I|, Wang et al.'s per-layer map
        self._acc = None
        _, pairs = self._on(layer.device)
        b = torch.arange(layer.shape[0], device=layer.device)
        p["layer_row"][:, k] = layer[b, self.t.to(layer.device)].cpu()
        p["layer_mass"][:, k] = layer.masked_fill_(~pairs, 0.0).sum((-1, -2)).cpu()

    def result(self) -> SaliencySummary:
        return SaliencySummary(predict_positions=self.t, **self.parts)


def saliency_summary(
    model: nn.Module,
    input_ids: torch.Tensor | None,
    predict_positions: torch.Tensor | Sequence[int],
    target_ids: torch.Tensor | Sequence[int],
    attention_mask: torch.Tensor | None = None,
    *,
    inputs_embeds: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    map_items: Sequence[int] | None = None,
    map_length: int | None = None,
    kernel: str = "eager",
    sites=None,
    **model_kwargs,
) -> SaliencySummary:
    """The probes' reductions of every chosen head's saliency, from one forward and backward pass.

    Arguments as :func:`vlground.mechanism.saliency.attention_saliency` (``attention_mask`` also
    marks the valid positions of ``layer_mass``); ``map_items``: items (indices into the batch)
    whose mean map, cropped to the first ``map_length`` tokens, is kept as ``map_mean``; ``kernel``:
    ``"eager"`` or ``"sdpa"`` (no map in the autograd graph), see
    :func:`vlground.mechanism.saliency.saliency_pass`.
    Returns :class:`SaliencySummary` (float32, CPU).
    """
    pp = torch.as_tensor(predict_positions, dtype=torch.long)
    sink = _Reductions(pp, attention_mask, map_items, map_length)
    saliency_pass(model, input_ids, predict_positions, target_ids, attention_mask, sink, inputs_embeds=inputs_embeds,
                  layers=layers, dtype=dtype, kernel=kernel, sites=sites, **model_kwargs)
    return sink.result()


def classify_from_summary(summary: SaliencySummary, thresholds: GatherAggregateThresholds = GatherAggregateThresholds(),
                          predict_positions: torch.Tensor | int | None = None) -> HeadPatterns:
    """:func:`vlground.mechanism.patterns.classify_heads` from the reductions: ``[B, L, H]``.

    ``predict_positions`` as there (None: the last row holding any mass)."""
    total = summary.total.clamp_min(1e-30)
    return patterns_from_rows(summary.row_mass, summary.row_max, total, summary.dot / total, summary.dot_index,
                              summary.seq, thresholds, predict_positions)


def flow_from_summary(summary: SaliencySummary, source_positions: torch.Tensor | Sequence[Sequence[int]],
                      valid: torch.Tensor | None = None) -> LayerFlow:
    """:func:`vlground.mechanism.flow.flow_into` from the reductions (``target_pos`` = the summary's
    predicted positions; ``valid`` the attention mask the pass ran with)."""
    B, S = len(summary), summary.seq
    env = positions_mask(source_positions, B, S).cpu()
    valid = torch.ones(B, S, dtype=torch.bool) if valid is None else valid.bool().cpu()
    t = summary.predict_positions
    rows = torch.arange(B)
    causal_row = torch.arange(S)[None, :] <= t[:, None]  # [B, S]: j <= t
    env_pairs = env & valid & causal_row & valid[rows, t][:, None]  # [B, S]
    n_env = env_pairs.sum(-1).to(torch.float32)  # [B]
    n_valid = valid.sum(-1).to(torch.float64)
    # causal pairs (j <= i) of valid positions: n (n + 1) / 2 for n valid positions
    n_pairs = (n_valid * (n_valid + 1) / 2).to(torch.float32)
    env_sum = (summary.layer_row * env_pairs[:, None, :]).sum(-1)  # [B, L]
    env_mean = env_sum / n_env.clamp_min(1)[:, None]
    rest_mean = (summary.layer_mass - env_sum) / (n_pairs - n_env).clamp_min(1)[:, None]
    return LayerFlow(env=env_mean, rest=rest_mean)


def mechanism_share_from_summary(summary: SaliencySummary, heads: torch.Tensor) -> torch.Tensor:
    """:func:`vlground.mechanism.patterns.mechanism_share` from the reductions: ``[B]``."""
    per_head = summary.total
    heads = heads.to(per_head.device).expand_as(per_head)
    return (per_head * heads).sum((-1, -2)) / per_head.sum((-1, -2)).clamp_min(1e-30)
