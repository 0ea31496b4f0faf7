"""``ablation``: zero each item's identified heads vs as many random control heads, the paper's table.

For each head type (``gather``, ``aggregate`` and ``gather-only`` = gather and not aggregate) and
each item: the item's heads of that type, identified at the run's reference checkpoint (see
:mod:`vlground.probes.heads`), are zeroed and the target's surprisal is read; the control zeroes
as many heads drawn at random (``--ablation-draws`` draws, seeded) from the item's heads of
*neither* type, or, when the item has fewer of those than heads to zero, from the heads not of
the tested type (the row records how many items used that pool). The paired one-sided Wilcoxon
test compares intervention with control over the tested items (items with at least one head of
the type). Columns as in the paper: Avg. Count and Avg. Layer (1-based) over *all* items,
Interv. Sps., Ctrl. Sps., Original, p, and ``***`` for p < 0.001 with intervention > control.
A row with nothing to test carries its reason.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlground.probes.base import ProbeContext, ProbeResult
from vlground.probes.common import layer_number, num, saliency_parts
from vlground.probes.heads import HeadDefinition, HeadProbeBase, reference_masks


@dataclass
class AblationRow:
    head_type: str  #: gather | aggregate | gather-only
    avg_count: float  #: mean number of heads of this type per item, over all items
    avg_layer: float | None  #: mean 1-based layer of those heads, over all items
    intervention_surprisal: float | None  #: mean surprisal with the item's heads zeroed (tested items)
    control_surprisal: float | None  #: mean surprisal with as many random control heads zeroed (tested items)
    original_surprisal: float | None  #: mean surprisal of the intact model (tested items)
    p_value: float | None  #: one-sided paired Wilcoxon, intervention > control
    stars: str  #: *** p < 0.001, ** < 0.01, * < 0.05, with intervention > control
    n_items: int  #: items tested (those with at least one head of this type)
    n_items_total: int  #: items considered
    n_fallback_pool: int  #: tested items whose controls came from the heads not of this type
    n_untestable: int  #: items with more heads of this type than heads not of it (no control possible; not tested)
    reason: str  #: why the row has no test, else ""


class AblationProbe(HeadProbeBase):
    name = "ablation"
    doc = "zero gather / aggregate / gather-only heads vs random control heads"

    @dataclass
    class Options(HeadDefinition):
        ablation_draws: int = 10  #: random control-head draws per item

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.ablation import ablation_test

        opts = self.options
        site = ctx.adapter.attention_site(ctx.loaded)
        parts = saliency_parts(ctx, opts.mech_items)
        batches = [p.batch for p in parts]
        items = [it for b in batches for it in b.items]
        if not items:
            return ProbeResult(notes=[f"ablation: skipped for {ctx.key} (no match items)"])
        ref, found, ref_key = reference_masks(ctx, opts, items)
        gather, aggregate = ref["gather"], ref["aggregate"]
        neither = ~gather & ~aggregate
        adapter, loaded = ctx.adapter, ctx.loaded

        def surprisal(model, indices=None) -> torch.Tensor:
            if indices is None:
                return torch.cat([-adapter.target_logprobs(loaded, b) for b in batches])
            return -adapter.target_logprobs(loaded, adapter.batch(loaded, [items[i] for i in indices]))

        rows = []
        for kind, heads in (("gather", gather), ("aggregate", aggregate), ("gather-only", gather & ~aggregate)):
            counts = heads.flatten(1).sum(1)
            layer_ids = torch.tensor([layer_number(x) for x in site.layers], dtype=torch.float64)
            per_layer = heads.sum((0, 2)).double()
            avg_layer = float((per_layer * layer_ids).sum() / per_layer.sum()) if per_layer.sum() > 0 else None
            pool = neither & ~heads
            short = counts > pool.flatten(1).sum(1)
            pool = torch.where(short[:, None, None], ~heads, pool)
            untestable = counts > (~heads).flatten(1).sum(1)
            heads = heads & ~untestable[:, None, None]
            tested = heads.flatten(1).any(1)
            base = dict(head_type=kind, avg_count=float(counts.double().mean()), avg_layer=avg_layer,
                        n_items_total=len(items), n_fallback_pool=int((short & tested).sum()), n_untestable=int(untestable.sum()))
            if not tested.any():
                reason = (f"no item has heads identified at {ref_key}" if not found.any()
                          else f"every item with {kind} heads has too few other heads for a control" if untestable.any()
                          else f"no item has a {kind} head at {ref_key}")
                rows.append(AblationRow(**base, intervention_surprisal=None, control_surprisal=None, original_surprisal=None,
                                        p_value=None, stars="", n_items=0, reason=reason))
                continue
            res = ablation_test(surprisal, loaded.model, heads, pool, n_draws=opts.ablation_draws, seed=0, sites=site, head_type=kind)
            rows.append(AblationRow(**base, intervention_surprisal=num(res.intervention_surprisal), control_surprisal=num(res.control_surprisal),
                                    original_surprisal=num(res.original_surprisal), p_value=num(res.p_value), stars=res.stars,
                                    n_items=int(res.n_items), reason=""))
        return ProbeResult(tables={"ablation": rows})
