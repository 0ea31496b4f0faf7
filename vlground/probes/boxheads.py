"""``boxheads``: per head, the share of its image-to-word saliency that comes from inside the
object's box, and the box aggregate heads (the paper's realistic-setting criterion).

For each match item, the saliency ``dL/dA * A`` of every head from each image token into the
position just before the object's name (the loss is the name's first sub-token). A head's
*inside share* is the share of its image-to-word saliency mass from image tokens inside the box
(``env_mask``, over ``env_span``). A head is aggregate at level ``t`` for an item when its inside
share is ``>= t`` (``--box-thresholds``, default 70% and 90%); the ``heads`` table lists it as
``aggregate@t`` for the highest level it meets on at least half of the items.

Only the saliency row of the predicted position is kept (``[items, layers, heads, seq]``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlground.engine.adapter import Capability
from vlground.errors import InputError
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.common import batched, layer_number, mech_items


@dataclass
class BoxDefinition:
    """Options the box probes share."""

    mech_items: int = 48  #: match items (env2lan) per checkpoint for the saliency probes, spread over frames and words
    box_thresholds: tuple[float, ...] = (0.7, 0.9)  #: aggregate head (images): inside-box share thresholds

    def check(self) -> None:
        if not self.box_thresholds or not all(0 < t <= 1 for t in self.box_thresholds):
            raise InputError("--box-thresholds: each threshold must be in (0, 1]")

    @property
    def levels(self) -> list[float]:
        return sorted({float(t) for t in self.box_thresholds})


class NoImages(Exception):
    """The items have no image tokens to read box shares from."""


def box_saliency(ctx: ProbeContext, n_items: int) -> list[tuple]:
    """``[(batch, rows [B, L_att, H, S])]``: saliency into each item's predicted position, memoised."""
    from vlground.mechanism.saliency import attention_saliency

    key = f"box_saliency:{n_items}"
    if key in ctx.memo:
        return ctx.memo[key]
    adapter, loaded = ctx.adapter, ctx.loaded
    out = []
    for chunk in batched(mech_items(ctx.items, n_items), adapter.options.batch_size):
        batch = adapter.batch(loaded, chunk)
        dev = batch.to(loaded.device)
        inputs = dict(dev.model_inputs)
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask", None)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(loaded.model.dtype)
        rows = attention_saliency(loaded.model, ids, dev.predict_positions.contiguous(), dev.target_ids[:, 0].contiguous(), mask,
                                  predict_row_only=True, **inputs)
        out.append((batch, rows))
    ctx.memo[key] = out
    return out


def head_inside_shares(rows: torch.Tensor, env_mask: torch.Tensor, env_span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rows ``[B, L, H, S]``, env_mask / env_span bool ``[B, S]`` -> ``(share [B, L, H], mass [B, L, H])``;
    ``share = sum_inside |I| / sum_image |I|``."""
    from vlground.mechanism.patterns import inside_share

    shares, masses = [], []
    for b in range(rows.shape[0]):
        span = env_span[b].nonzero()[:, 0]
        r = rows[b][..., span]  # [L, H, n_image]
        shares.append(inside_share(r, env_mask[b][span]))
        masses.append(r.abs().sum(-1))
    return torch.stack(shares), torch.stack(masses)


def box_aggregate_heads(shares: torch.Tensor, levels: list[float]) -> dict[float, torch.Tensor]:
    """``{level: shares >= level}`` (bool, the shape of ``shares``): the paper's aggregate criterion."""
    from vlground.mechanism.patterns import BoxThresholds, box_aggregate

    return box_aggregate(shares, BoxThresholds(tuple(levels)))


def shares(ctx: ProbeContext, n_items: int):
    """``(parts, share [N, L, H], mass [N, L, H])`` over the mechanistic items; raises :class:`NoImages`."""
    parts = box_saliency(ctx, n_items)
    if not parts:
        raise NoImages("no match items")
    if any(b.env_span is None for b, _ in parts):
        raise NoImages(f"adapter {ctx.adapter.name} marks no image tokens (env_span)")
    res = [head_inside_shares(r, b.env_mask, b.env_span) for b, r in parts]
    return parts, torch.cat([s for s, _ in res]), torch.cat([m for _, m in res])


@dataclass
class BoxHeadRow:
    layer: int  #: 1-based block number
    head: int  #: 0-based head index
    kind: str  #: aggregate@t for the highest level met on >= half the items, else none
    inside_share: float  #: mean share of its image-to-word saliency from inside the box
    saliency_share: float  #: its share of all heads' image-to-word saliency, mean over items
    aggregate_frac: dict = field(default_factory=dict)  #: level -> share of items on which it is aggregate


class BoxHeadsProbe(Probe):
    name = "boxheads"
    needs = frozenset({Capability.ATTENTION})
    doc = "per head: share of image-to-word saliency from inside the object's box; box aggregate heads"
    Options = BoxDefinition

    def run(self, ctx: ProbeContext) -> ProbeResult:
        site = ctx.adapter.attention_site(ctx.loaded)
        levels = self.options.levels
        try:
            parts, share, mass = shares(ctx, self.options.mech_items)
        except NoImages as exc:
            return ProbeResult(notes=[f"boxheads: skipped for {ctx.key} ({exc})"])
        n = share.shape[0]
        agg = box_aggregate_heads(share, levels)
        frac = {t: m.float().mean(0) for t, m in agg.items()}  # [L, H]
        mean_share = share.mean(0)
        mass_share = (mass / mass.sum((-1, -2), keepdim=True).clamp_min(1e-30)).mean(0)
        rows = []
        for k, layer in enumerate(site.layers):
            for h in range(site.n_heads):
                met = [t for t in levels if frac[t][k, h] >= 0.5]
                rows.append(BoxHeadRow(layer_number(layer), h, f"aggregate@{max(met):g}" if met else "none",
                                       float(mean_share[k, h]), float(mass_share[k, h]),
                                       {f"{t:g}": float(frac[t][k, h]) for t in levels}))
        record = {"box_items": n}
        record.update({f"box_aggregate_heads@{t:g}": sum(r.aggregate_frac[f"{t:g}"] >= 0.5 for r in rows) for t in levels})
        words = sorted({it.word for b, _ in parts for it in b.items})
        notes = [f"boxheads: {n} match item(s) ({len(words)} word(s)); saliency from every image token into the position "
                 "before the object's name (first sub-token's loss); a head is aggregate@t on an item when >= t of its "
                 "image-to-word saliency comes from image tokens inside the box, and listed as such when it is on >= half the items"]
        return ProbeResult(record=record, tables={"heads": rows}, arrays={"inside_share": share.numpy()}, notes=notes)
