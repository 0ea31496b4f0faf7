"""``boxablation``: per item, zero the heads aggregate at level ``t`` for that item (box criterion,
see :mod:`vlground.probes.boxheads`), or as many random heads aggregate at no level, with
:func:`vlground.mechanism.ablation.ablation_test`, one item at a time; the items' original,
intervention and control surprisals are pooled into one one-sided paired test per level.
Avg. Count is over all items; Avg. Layer is 1-based.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.engine.adapter import Capability, ProbeBatch
from vlground.lazy import torch
from vlground.probes.base import Probe, ProbeContext, ProbeResult
from vlground.probes.boxheads import BoxDefinition, NoImages, box_aggregate_heads, shares
from vlground.probes.common import layer_number, num


@dataclass
class BoxAblationRow:
    head_type: str  #: aggregate@t
    avg_count: float  #: mean number of such heads per item, over all items
    avg_layer: float | None  #: mean 1-based layer of those heads
    intervention_surprisal: float | None
    control_surprisal: float | None
    original_surprisal: float | None
    p_value: float | None  #: one-sided paired Wilcoxon, intervention > control
    stars: str
    n_items: int  #: items tested
    n_items_total: int  #: items considered
    reason: str  #: why nothing was tested, else ""


class BoxAblationProbe(Probe):
    name = "boxablation"
    needs = frozenset({Capability.ATTENTION})
    doc = "zero box aggregate heads vs random control heads, per threshold"

    @dataclass
    class Options(BoxDefinition):
        ablation_draws: int = 10  #: random control-head draws per item

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.ablation import _paired_test, ablation_test, stars

        adapter, loaded = ctx.adapter, ctx.loaded
        site = adapter.attention_site(loaded)
        levels = self.options.levels
        try:
            parts, share, _ = shares(ctx, self.options.mech_items)
        except NoImages as exc:
            return ProbeResult(notes=[f"boxablation: skipped for {ctx.key} ({exc})"])
        chosen = [it for b, *_ in parts for it in b.items]
        agg = box_aggregate_heads(share, levels)
        control_pool = ~agg[levels[0]]  # aggregate at no level
        singles: dict[int, ProbeBatch] = {}
        rows, notes = [], []
        for t in levels:
            heads = agg[t]
            counts = heads.flatten(1).sum(1)
            short = counts > (control_pool & ~heads).flatten(1).sum(1)
            if short.any():
                notes.append(f"boxablation aggregate@{t:g}: {int(short.sum())} item(s) not tested (fewer control heads than aggregate heads)")
            original, intervention, control, layers = [], [], [], []
            for i, it in enumerate(chosen):
                layers.extend(layer_number(site.layers[k]) for k, _ in heads[i].nonzero().tolist())
                if counts[i] == 0 or short[i]:
                    continue
                if i not in singles:
                    singles[i] = adapter.batch(loaded, [it])
                single = singles[i]
                res = ablation_test(lambda model, b=single: -adapter.target_logprobs(loaded, b), loaded.model, heads[i : i + 1],
                                    control_pool[i : i + 1], n_draws=self.options.ablation_draws, seed=i, sites=site,
                                    head_type=f"aggregate@{t:g}")
                original.append(res.original)
                intervention.append(res.intervention)
                control.append(res.control)
            tested = len(original)
            row = dict(head_type=f"aggregate@{t:g}", avg_count=float(counts.float().mean()) if len(counts) else 0.0,
                       avg_layer=sum(layers) / len(layers) if layers else None, n_items=tested, n_items_total=len(chosen))
            if tested:
                o, iv, c = torch.cat(original), torch.cat(intervention), torch.cat(control)
                p = _paired_test(iv, c, "wilcoxon")
                rows.append(BoxAblationRow(**row, intervention_surprisal=float(iv.mean()), control_surprisal=float(c.mean()),
                                           original_surprisal=float(o.mean()), p_value=num(p), stars=stars(p), reason=""))
            else:
                reason = "no item has such heads" if not (counts > 0).any() else "no item with such heads has enough control heads"
                rows.append(BoxAblationRow(**row, intervention_surprisal=None, control_surprisal=None, original_surprisal=None,
                                           p_value=None, stars="", reason=reason))
        return ProbeResult(tables={"ablation": rows}, notes=notes)
