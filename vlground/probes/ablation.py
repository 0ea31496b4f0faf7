"""``ablation``: zero each item's identified heads vs as many random control heads, the paper's table.

For each head type (``gather``, ``aggregate`` and ``gather-only`` = gather and not aggregate) and
each item: the item's heads of that type, identified at the run's reference checkpoint (see
:mod:`vlground.probes.heads`), are zeroed and the target's surprisal is read; the control zeroes
as many heads drawn at random (``--ablation-draws`` draws, seeded) from the item's heads of
*neither* type, or, when the item has fewer of those than heads to zero, from the heads not of
the tested type (the row records how many items used that pool; ``--control-pool other`` always
draws from the heads not of the tested type). The paired one-sided Wilcoxon
test compares intervention with control over the tested items (items with at least one head of
the type). Columns as in the paper: Avg. Count and Avg. Layer (1-based) over *all* items,
Interv. Sps., Ctrl. Sps., Original, p, and ``***`` for p < 0.001 with intervention > control.
A row with nothing to test carries its reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlground.errors import InputError
from vlground.lazy import torch
from vlground.probes.base import ProbeContext, ProbeResult
from vlground.probes.common import num, saliency_parts
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
    control_pool: str  #: the pool(s) controls were drawn from, with item counts when mixed, e.g. "neither (40), not gather (8)"
    n_untestable: int  #: items with more heads of this type than heads not of it (no control possible; not tested)
    reason: str  #: why the row has no test, else ""


class AblationProbe(HeadProbeBase):
    name = "ablation"
    doc = "zero gather / aggregate / gather-only heads vs random control heads"

    @dataclass
    class Options(HeadDefinition):
        ablation_draws: int = 10  #: random control-head draws per item
        control_pool: str = "neither-then-other"  #: controls from heads of neither type (too few: heads not of the tested type), or other (always heads not of the tested type)
        ablation_batch: int = 16  #: (item, head set) rows per forward pass, each zeroing its own heads (1 = single-item passes)

        def check(self) -> None:
            super().check()
            if self.control_pool not in ("neither-then-other", "other"):
                raise InputError(f"--control-pool: {self.control_pool!r} is not neither-then-other or other")
            if self.ablation_draws < 1 or self.ablation_batch < 1:
                raise InputError("--ablation-draws and --ablation-batch must be >= 1")

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.ablation import HEAD_TYPES, ablation_test

        opts = self.options
        site = ctx.adapter.attention_site(ctx.loaded)
        parts = saliency_parts(ctx, opts.mech_items, opts.probe_dtype)
        batches = [p.batch for p in parts]
        items = [it for b in batches for it in b.items]
        if not items:
            return ProbeResult(notes=[f"ablation: skipped for {ctx.key} (no match items)"])
        ref, found, ref_key = reference_masks(ctx, opts, items)
        gather, aggregate = ref["gather"], ref["aggregate"]
        masks = {"gather": gather, "aggregate": aggregate, "gather-only": gather & ~aggregate}
        neither = ~gather & ~aggregate
        adapter, loaded = ctx.adapter, ctx.loaded

        def surprisal(model, indices=None) -> torch.Tensor:
            if indices is None:
                return torch.cat([-adapter.target_logprobs(loaded, b) for b in batches])
            return -adapter.target_logprobs(loaded, adapter.batch(loaded, [items[i] for i in indices]))

        with torch.no_grad():
            original = surprisal(loaded.model).detach().float().cpu()
        rows = []
        for kind in HEAD_TYPES:
            heads = masks[kind]
            primary = (neither if opts.control_pool == "neither-then-other" else ~heads) & ~heads
            res = ablation_test(surprisal, loaded.model, heads, primary, n_draws=opts.ablation_draws, seed=0, sites=site,
                                head_type=kind, fallback_control_heads=~heads, batch_size=opts.ablation_batch, original=original,
                                primary_pool="neither" if opts.control_pool == "neither-then-other" else f"not {kind}")
            reason = res.reason or ""
            if res.n_items == 0 and not found.any():
                reason = f"no item has heads identified at {ref_key}"
            elif reason.startswith("no item has a"):
                reason += f" at {ref_key}"
            tested = res.n_items > 0
            rows.append(AblationRow(
                head_type=kind, avg_count=res.avg_count, avg_layer=num(res.avg_layer),
                intervention_surprisal=num(res.intervention_surprisal) if tested else None,
                control_surprisal=num(res.control_surprisal) if tested else None,
                original_surprisal=num(res.original_surprisal) if tested else None,
                p_value=num(res.p_value), stars=res.stars, n_items=res.n_items, n_items_total=res.n_total,
                n_fallback_pool=res.n_fallback_pool, control_pool=res.control_pool if tested else "", n_untestable=res.n_untestable,
                reason=reason,
            ))
        return ProbeResult(record={"gather_rule": opts.gather_rule, "control_pool": opts.control_pool, "identified_at": ref_key},
                           tables={"ablation": rows})
