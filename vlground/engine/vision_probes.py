"""Image probes through the adapter interface: patch-to-word saliency per head, box aggregate
heads (the paper's realistic-setting criterion), and their ablation against random control heads.

* ``boxheads``: for each match item, the saliency ``dL/dA * A`` (:func:`attention_saliency`, with
  the batch's ``pixel_values``) of every head from each image token into the position just before
  the object's name (the loss is the name's first sub-token). A head's *inside share* is the share
  of its image-to-word saliency mass coming from patches inside the object's box
  (:func:`~vlground.mechanism.patterns.inside_share`, over ``env_span``, inside = ``env_mask``).
  A head is aggregate at level ``t`` for an item when its inside share is ``>= t`` (``--box-thresholds``,
  default 70% and 90%). Rows of the ``heads`` table: one per head, ``kind`` = ``aggregate@t`` for the
  highest level it meets on at least half of the items (else ``none``), its mean ``inside_share``,
  the fraction of items it is aggregate on at each level, and its share of all image-to-word saliency.
* ``boxablation``: per item, zero the heads aggregate at level ``t`` for that item, or as many random
  heads aggregate at no level, with :func:`~vlground.mechanism.ablation.ablation_test` (the text
  testbed's code), one item at a time so each forward pass is one item; the items' original,
  intervention and control surprisals are then pooled into one one-sided paired test per level.

Only the saliency row of the predicted position is kept (``[items, layers, heads, seq]``), so an
item of 600 tokens costs ``layers x heads x 600`` floats on the CPU, not ``x 600`` again.
"""
from __future__ import annotations

import logging

import torch

from vlground.engine.adapter import Adapter, Capability, LoadedModel, ProbeBatch, ProbeItem
from vlground.engine.behaviour import ProbeOutput, batched
from vlground.engine.mechanistic import _num, _opt, mech_items
from vlground.engine.runner import PROBES, ProbeSpec

log = logging.getLogger(__name__)


def _levels(cfg) -> list[float]:
    return sorted({float(t) for t in _opt(cfg, "box_thresholds")})


def box_saliency(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> list[tuple[ProbeBatch, torch.Tensor]]:
    """``[(batch, rows [B, L_att, H, S])]``: saliency into each item's predicted position, memoised on ``loaded``."""
    from vlground.mechanism.saliency import attention_saliency

    if "_box_saliency" in loaded.extra:
        return loaded.extra["_box_saliency"]
    out = []
    for chunk in batched(mech_items(items, _opt(cfg, "mech_items")), adapter.options.batch_size):
        batch = adapter.batch(loaded, chunk)
        dev = batch.to(loaded.device)
        inputs = dict(dev.model_inputs)
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask", None)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
        rows = attention_saliency(loaded.model, ids, dev.predict_positions.contiguous(), dev.target_ids[:, 0].contiguous(), mask,
                                  predict_row_only=True, **inputs)
        out.append((batch, rows))
    loaded.extra["_box_saliency"] = out
    return out


def head_inside_shares(rows: torch.Tensor, env_mask: torch.Tensor, env_span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inside-box share and image-to-word saliency mass of every head.

    rows ``[B, L, H, S]`` (saliency into the predicted position), env_mask / env_span bool ``[B, S]``
    -> ``(share [B, L, H], mass [B, L, H])``; ``share = sum_inside |I| / sum_image |I|``.
    """
    from vlground.mechanism.patterns import inside_share

    shares, masses = [], []
    for b in range(rows.shape[0]):
        span = env_span[b].nonzero()[:, 0]
        r = rows[b][..., span]  # [L, H, n_image]
        shares.append(inside_share(r, env_mask[b][span]))
        masses.append(r.abs().sum(-1))
    return torch.stack(shares), torch.stack(masses)


class _NoImages(Exception):
    """The items have no image tokens to read box shares from."""


def box_aggregate_heads(shares: torch.Tensor, levels: list[float]) -> dict[float, torch.Tensor]:
    """``{level: shares >= level}`` (bool, the shape of ``shares``): the paper's aggregate criterion."""
    from vlground.mechanism.patterns import BoxThresholds, box_aggregate

    return box_aggregate(shares, BoxThresholds(tuple(levels)))


def _shares(adapter, loaded, items, cfg):
    parts = box_saliency(adapter, loaded, items, cfg)
    if not parts:
        raise _NoImages("no match items")
    if any(b.env_span is None for b, _ in parts):
        raise _NoImages(f"adapter {adapter.name} marks no image tokens (env_span)")
    res = [head_inside_shares(r, b.env_mask, b.env_span) for b, r in parts]
    return parts, torch.cat([s for s, _ in res]), torch.cat([m for _, m in res])


def boxheads_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    site = adapter.attention_site(loaded)
    levels = _levels(cfg)
    try:
        parts, shares, mass = _shares(adapter, loaded, items, cfg)
    except _NoImages as exc:
        return ProbeOutput(notes=[f"boxheads: skipped for {loaded.checkpoint.key} ({exc})"])
    n = shares.shape[0]
    agg = box_aggregate_heads(shares, levels)
    frac = {t: m.float().mean(0) for t, m in agg.items()}  # [L, H]
    mean_share = shares.mean(0)
    mass_share = (mass / mass.sum((-1, -2), keepdim=True).clamp_min(1e-30)).mean(0)
    rows = []
    for k, layer in enumerate(site.layers):
        for h in range(site.n_heads):
            met = [t for t in levels if frac[t][k, h] >= 0.5]
            row = {"layer": int(layer), "head": h, "kind": f"aggregate@{max(met):g}" if met else "none",
                   "inside_share": float(mean_share[k, h]), "saliency_share": float(mass_share[k, h])}
            row.update({f"aggregate_frac@{t:g}": float(frac[t][k, h]) for t in levels})
            rows.append(row)
    record = {"box_items": n}
    record.update({f"box_aggregate_heads@{t:g}": sum(r[f"aggregate_frac@{t:g}"] >= 0.5 for r in rows) for t in levels})
    words = sorted({it.word for b, _ in parts for it in b.items})
    notes = [f"boxheads: {n} match item(s) ({len(words)} word(s)); saliency from every image token into the position "
             "before the object's name (first sub-token's loss); a head is aggregate@t on an item when >= t of its "
             "image-to-word saliency comes from patches inside the box, and listed as such when it is on >= half the items"]
    return ProbeOutput(record=record, tables={"heads": rows}, notes=notes)


def boxablation_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    from vlground.mechanism.ablation import _paired_test, ablation_test, stars

    site = adapter.attention_site(loaded)
    levels = _levels(cfg)
    try:
        parts, shares, _ = _shares(adapter, loaded, items, cfg)
    except _NoImages as exc:
        return ProbeOutput(notes=[f"boxablation: skipped for {loaded.checkpoint.key} ({exc})"])
    chosen = [it for b, _ in parts for it in b.items]
    agg = box_aggregate_heads(shares, levels)
    control_pool = ~agg[levels[0]]  # aggregate at no level
    singles: dict[int, ProbeBatch] = {}
    rows, notes = [], []
    for t in levels:
        heads = agg[t]
        counts = heads.flatten(1).sum(1)
        fits = counts <= (control_pool & ~heads).flatten(1).sum(1)
        if not fits.all():
            notes.append(f"boxablation aggregate@{t:g}: {int((~fits).sum())} item(s) left out (fewer control heads than aggregate heads)")
        original, intervention, control, layers = [], [], [], []
        for i, it in enumerate(chosen):
            if counts[i] == 0 or not fits[i]:
                continue
            if i not in singles:
                singles[i] = adapter.batch(loaded, [it])
            single = singles[i]
            res = ablation_test(lambda model, b=single: -adapter.target_logprobs(loaded, b), loaded.model, heads[i:i + 1],
                                control_pool[i:i + 1], n_draws=_opt(cfg, "ablation_draws"), seed=i, sites=site,
                                head_type=f"aggregate@{t:g}")
            original.append(res.original)
            intervention.append(res.intervention)
            control.append(res.control)
            layers.extend(int(site.layers[k]) for k, _ in heads[i].nonzero().tolist())
        tested = len(original)
        row = {"head_type": f"aggregate@{t:g}", "avg_count": float(counts.float().mean()) if len(counts) else 0.0,
               "avg_layer": sum(layers) / len(layers) if layers else None, "n_items": tested, "test": "wilcoxon"}
        if tested:
            o, iv, c = torch.cat(original), torch.cat(intervention), torch.cat(control)
            p = _paired_test(iv, c, "wilcoxon")
            row.update({"intervention_surprisal": float(iv.mean()), "control_surprisal": float(c.mean()),
                        "original_surprisal": float(o.mean()), "p_value": _num(p), "stars": stars(p)})
        else:
            row.update({"intervention_surprisal": None, "control_surprisal": None, "original_surprisal": None,
                        "p_value": None, "stars": ""})
        rows.append(row)
    return ProbeOutput(tables={"ablation": rows}, notes=notes)


ATT = frozenset({Capability.ATTENTION})
PROBES.update(
    {
        "boxheads": ProbeSpec(boxheads_probe, ATT, "per head: share of image-to-word saliency from inside the object's box; box aggregate heads"),
        "boxablation": ProbeSpec(boxablation_probe, ATT, "zero box aggregate heads vs random control heads, per threshold"),
    }
)

__all__ = ["box_saliency", "head_inside_shares", "box_aggregate_heads", "boxheads_probe", "boxablation_probe"]
