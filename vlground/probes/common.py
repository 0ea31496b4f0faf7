"""Helpers several probes share: chunking, the mechanistic item subset, the memoised saliency pass."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from vlground.engine.adapter import ProbeBatch, ProbeItem
from vlground.lazy import torch
from vlground.probes.base import ProbeContext


def batched(seq: list, size: int) -> Iterator[list]:
    for i in range(0, len(seq), max(1, size)):
        yield seq[i : i + size]


def num(x: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


from vlground.numbering import head_number, layer_number  # noqa: E402,F401  (the one numbering: vlground/numbering.py)


def mech_items(items: list[ProbeItem], n: int) -> list[ProbeItem]:
    """Match items of the env2lan direction, at most ``n``, spread evenly (deterministic)."""
    pool = [it for it in items if it.condition == "match" and it.direction == "env2lan"]
    if len(pool) <= n:
        return pool
    idx = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in sorted(set(idx))]


@dataclass
class SaliencyPart:
    """One chunk of the saliency pass: the batch (on the CPU) and the per-layer reductions of its maps
    (:class:`vlground.mechanism.saliency_summary.SaliencySummary`: ``[B, L_att, H, S]`` rows, strip and
    dot masses, per-layer flows), never the ``[B, L_att, H, S, S]`` maps themselves."""

    batch: ProbeBatch
    summary: Any


#: probe dtypes: the saliency pass in the model's float32, or under bf16 autocast (not a default:
#: on a trained tiny Transformer bf16 changed the gather label of 1-2% of heads, see docs/mechanism.md)
PROBE_DTYPES = ("float32", "bfloat16")

#: the heads probe's mean head map (the report's plot) is kept for prompts up to this many tokens
MAP_TOKENS_MAX = 256


def map_request(batch: ProbeBatch) -> tuple[list[int], int] | None:
    """``(items, length)`` of the report's mean head map: the batch's items of its first item's template,
    cropped to that item's prompt (up to its predicted position); None past :data:`MAP_TOKENS_MAX` tokens."""
    if not batch.items:
        return None
    length = int(batch.predict_positions[0]) + 1
    if length > MAP_TOKENS_MAX:
        return None
    same = [b for b, it in enumerate(batch.items) if it.template == batch.items[0].template]
    return same, length


def saliency_parts(ctx: ProbeContext, n_items: int, dtype: str = "float32") -> list[SaliencyPart]:
    """All-head saliency ``dL/dA * A`` of the mechanistic items, reduced per layer inside the backward
    pass (:meth:`Adapter.saliency_summary`), memoised per checkpoint; the first chunk also keeps the
    mean map of :func:`map_request` (the heads probe's plot).

    The pass runs through the adapter's one forward path (:meth:`Adapter.model_inputs`), so a model
    that needs extra inputs (M-RoPE positions, token types) gets the same ones as in scoring.
    """
    key = f"saliency:{n_items}:{dtype}"
    if key in ctx.memo:
        return ctx.memo[key]
    adapter, loaded = ctx.adapter, ctx.loaded
    out = []
    for chunk in batched(mech_items(ctx.items, n_items), max(1, adapter.options.batch_size // 2)):
        batch = adapter.batch(loaded, chunk)
        autocast = None if dtype == "float32" else getattr(torch, dtype)
        req = map_request(batch) if not out else None
        summary = adapter.saliency_summary(loaded, batch, dtype=autocast, map_items=req[0] if req else None,
                                           map_length=req[1] if req else None)
        out.append(SaliencyPart(batch, summary))
    ctx.memo[key] = out
    return out
