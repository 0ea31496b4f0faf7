"""The behavioural probe: surprisal of the target, match vs mismatch, information gain,
the paired test and R² against cumulative co-occurrence, in both directions.

A probe is a function ``(adapter, loaded, items, config) -> ProbeOutput``; sweeping over
checkpoints, caching and progress live in :mod:`vlground.engine.runner`.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vlground import metrics
from vlground.engine.adapter import Adapter, LoadedModel, ProbeItem

DIRECTIONS = {"env2lan": "", "lan2env": "reverse_"}


@dataclass
class ProbeOutput:
    """What one probe returns for one checkpoint.

    ``record``: fields merged into the checkpoint's record in ``results.json["checkpoints"]``.
    ``tables``: top-level lists of ``results.json`` (``flow``, ``heads``...) to extend; the runner
    adds ``run``, ``seed`` and ``step`` to every row.
    """

    record: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def batched(seq: list, size: int):
    for i in range(0, len(seq), max(1, size)):
        yield seq[i : i + size]


def item_surprisals(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem]) -> np.ndarray:
    """float64 [len(items)]: surprisal (nats) of each item's target, batched."""
    out = []
    for chunk in batched(items, adapter.options.batch_size):
        lp = adapter.target_logprobs(loaded, adapter.batch(loaded, chunk))
        out.append(-lp.double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def summarise(items: list[ProbeItem], surprisal: np.ndarray, cooc: dict[str, int] | None) -> tuple[dict, list[dict]]:
    """Per-direction summary fields and the per-word table for one checkpoint.

    Information gain of a word = mean over its pairs of (mismatch - match) surprisal; the
    checkpoint's ``info_gain`` is the mean over items pairs; ``p_value`` is the one-sided
    Wilcoxon test over pairs; ``r2_cooc`` is R² of per-word information gain on per-word
    cumulative co-occurrence.
    """
    record: dict[str, Any] = {}
    words: dict[str, dict] = defaultdict(dict)
    for direction, prefix in DIRECTIONS.items():
        pairs: dict[str, dict[str, float]] = defaultdict(dict)
        word_of: dict[str, str] = {}
        for it, s in zip(items, surprisal):
            if it.direction == direction:
                pairs[it.pair_id][it.condition] = float(s)
                word_of[it.pair_id] = it.word
        complete = [p for p, v in pairs.items() if "match" in v and "mismatch" in v]
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
            words[w].update({f"{prefix}match": a, f"{prefix}mismatch": b, f"{prefix}info_gain": b - a})
        ig_words = sorted(per_word)
        r2 = math.nan
        if cooc is not None:
            r2 = metrics.r_squared([cooc.get(w, 0) for w in ig_words], [words[w][f"{prefix}info_gain"] for w in ig_words])
        record.update(
            {
                f"{prefix}match_surprisal": float(m.mean()),
                f"{prefix}mismatch_surprisal": float(mm.mean()),
                f"{prefix}info_gain": float((mm - m).mean()),
                f"{prefix}p_value": metrics.paired_test(m, mm),
                f"{prefix}r2_cooc": r2,
                f"{prefix}n_pairs": len(complete),
            }
        )
    table = []
    for w in sorted(words):
        row = {"word": w, **words[w]}
        if cooc is not None:
            row["cooc"] = int(cooc.get(w, 0))
        table.append(row)
    return record, table


def behaviour_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], config=None) -> ProbeOutput:
    surprisal = item_surprisals(adapter, loaded, items)
    cooc = adapter.cooccurrence(loaded, sorted({it.word for it in items}))
    record, table = summarise(items, surprisal, cooc)
    record["n_items"] = len(items)
    record["words"] = table
    return ProbeOutput(record=record)
