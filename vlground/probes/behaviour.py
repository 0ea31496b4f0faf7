"""``behaviour``: surprisal of the target, match vs mismatch, information gain, the paired test
and R² against cumulative co-occurrence, in both directions.

Definitions (the paper's): an item's surprisal is ``-log p(target | context)`` in nats (see
:mod:`vlground.engine.adapter`). A pair's information gain is ``mismatch - match`` surprisal. A
word's information gain is the mean over its pairs; the checkpoint's ``info_gain`` is the mean
over pairs; ``word_p_value`` is the one-sided t-test over per-word mean gains (gain > 0; words
are the independent units, :func:`vlground.stats.word_test`), ``item_p_value`` the one-sided
Wilcoxon signed-rank test over item pairs (mismatch > match), which treats the pairs of one word
as independent and is kept, labelled item-level, for comparison only; ``r2_cooc`` is R² of the per-word information gain regressed on the word's cumulative
co-occurrence (both forms in one training chunk) up to the checkpoint's step. Fields of the
reverse direction (``lan2env``) carry the prefix ``reverse_``.

Tables: ``words`` (per word and checkpoint) and ``items`` (per item: the data a mixed-effects
model needs).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlground import metrics, stats
from vlground.engine.adapter import Adapter, LoadedModel, ProbeItem
from vlground.lazy import torch
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched, num

DIRECTIONS = {"env2lan": "", "lan2env": "reverse_"}


@dataclass
class ItemRow:
    """One probe item at one checkpoint."""

    item_id: str
    pair_id: str
    word: str  #: the target word
    env_word: str | None  #: the word whose referent the environment holds
    condition: str  #: match | mismatch
    direction: str  #: env2lan | lan2env
    template: int  #: index of the (environment, linguistic) frame pair
    surprisal: float  #: nats
    layout: str | None = None  #: images: the views and token grids (``image 8x12 (merge 2)``; ``base 24x24 + tiles 48x36 ...``)
    n_image_tokens: int | None = None  #: images: image tokens of the item (grids, prefix, separators)
    n_inside: int | None = None  #: images: image tokens inside the object's box


@dataclass
class WordRow:
    """One word at one checkpoint (``None`` where a direction was not probed)."""

    word: str
    match: float | None = None
    mismatch: float | None = None
    info_gain: float | None = None
    reverse_match: float | None = None
    reverse_mismatch: float | None = None
    reverse_info_gain: float | None = None
    cooc: int | None = None  #: cumulative co-occurrence up to this step


def item_surprisals(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem]) -> np.ndarray:
    """float64 [len(items)]: surprisal (nats) of each item's target, batched."""
    out = []
    for chunk in batched(items, adapter.options.batch_size):
        lp = adapter.target_logprobs(loaded, adapter.batch(loaded, chunk))
        out.append(-lp.double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def summarise(items: list[ProbeItem], surprisal: np.ndarray, cooc: dict[str, int] | None) -> tuple[dict, list[WordRow]]:
    """Per-direction summary fields and the per-word rows for one checkpoint."""
    record: dict[str, Any] = {}
    words: dict[str, WordRow] = {}
    for direction, prefix in DIRECTIONS.items():
        pairs: dict[str, dict[str, float]] = defaultdict(dict)
        word_of: dict[str, str] = {}
        for it, s in zip(items, surprisal):
            if it.direction == direction:
                pairs[it.pair_id][it.condition] = float(s)
                word_of[it.pair_id] = it.word
        complete = sorted(p for p, v in pairs.items() if "match" in v and "mismatch" in v)
        if not complete:
            continue
        m = np.array([pairs[p]["match"] for p in complete])
        mm = np.array([pairs[p]["mismatch"] for p in complete])
        per_word: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for p, a, b in zip(complete, m, mm):
            per_word[word_of[p]].append((a, b))
        for w, vals in per_word.items():
            a = float(np.mean([v[0] for v in vals]))
            b = float(np.mean([v[1] for v in vals]))
            row = words.setdefault(w, WordRow(word=w))
            setattr(row, f"{prefix}match", a)
            setattr(row, f"{prefix}mismatch", b)
            setattr(row, f"{prefix}info_gain", b - a)
        ig_words = sorted(per_word)
        r2 = math.nan
        if cooc is not None:
            r2 = metrics.r_squared([cooc.get(w, 0) for w in ig_words], [getattr(words[w], f"{prefix}info_gain") for w in ig_words])
        record.update(
            {
                f"{prefix}match_surprisal": float(m.mean()),
                f"{prefix}mismatch_surprisal": float(mm.mean()),
                f"{prefix}info_gain": float((mm - m).mean()),
                f"{prefix}word_p_value": num(stats.word_test(mm - m, [word_of[p] for p in complete]).p_value),
                f"{prefix}item_p_value": num(metrics.paired_test(m, mm)),
                f"{prefix}r2_cooc": num(r2),
                f"{prefix}n_pairs": len(complete),
            }
        )
    rows = [words[w] for w in sorted(words)]
    if cooc is not None:
        for r in rows:
            r.cooc = int(cooc.get(r.word, 0))
    return record, rows


def layout_columns(it: ProbeItem) -> tuple:
    """``(layout, n_image_tokens, n_inside)`` of an image item (its ``ImageTokenLayout`` summary), else Nones."""
    obj = it.meta.get("object") if it.meta else None
    lay = getattr(obj, "layout", None) or {}
    if not lay:
        return None, None, None
    grids = " + ".join(f"{g['name']} {g['rows']}x{g['cols']}" + (f" (merge {g['merge']})" if g.get("merge", 1) > 1 else "")
                       + (f" ({g['crops']} crops)" if g.get("crops", 1) > 1 else "") for g in lay["grids"])
    return grids, int(lay["n_image_tokens"]), int(lay["n_inside"])


class BehaviourProbe(Probe):
    name = "behaviour"
    doc = "surprisal match vs mismatch, information gain, word-level test, R² vs co-occurrence (both directions)"

    @dataclass
    class Options:
        pass

    def run(self, ctx: ProbeContext) -> ProbeResult:
        surprisal = item_surprisals(ctx.adapter, ctx.loaded, ctx.items)
        cooc = ctx.adapter.cooccurrence(ctx.loaded, sorted({it.word for it in ctx.items}))
        record, words = summarise(ctx.items, surprisal, cooc)
        record["n_items"] = len(ctx.items)
        items = [
            ItemRow(it.item_id, it.pair_id, it.word, it.env_word, it.condition, it.direction, int(it.template), float(s),
                    *layout_columns(it))
            for it, s in zip(ctx.items, surprisal)
        ]
        return ProbeResult(record=record, tables={"words": words, "items": items})
