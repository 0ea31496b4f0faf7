"""``heads``: gather and aggregate heads (the paper's definitions), identified per item in the
run's **final checkpoint** (``--identify-at``), and the share of saliency they carry at every
checkpoint.

For one item, head ``(l, h)`` has the saliency map ``I = |dL/dA * A|`` (``[S, S]``, causal).
* **gather** head: one strip (one row ``i``: all earlier tokens flowing into position ``i``) at a
  position other than the predicted one holds ``>= gather_threshold`` of the head's saliency mass
  (``--gather-rule strip-off-target``, the default: the predicted position's row is salient by
  construction of the loss, in the last block it is the only row); or any row does
  (``--gather-rule strip``, the paper's literal rule), or does so without its largest cell
  (``--gather-rule strip-minus-dot``, so a lone dot is not a strip); see
  :func:`vlground.mechanism.patterns.classify_heads`.
* **aggregate** head: one cell ``(i, j)`` holds ``>= aggregate_threshold`` of the mass.
Identification happens once per run, at the reference checkpoint (``final``: the run's last
step; a step number; or ``each`` for per-checkpoint identification, a labelled variant). The
tracked share at a checkpoint is the saliency mass of the item's identified heads over the mass
of all heads, averaged over items (``gather_share``, ``aggregate_share``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlground.engine.adapter import Capability
from vlground.errors import InputError
from vlground.lazy import torch
from vlground.probes.base import Probe, ProbeContext, ProbeResult, RunReference
from vlground.probes.common import MAP_TOKENS_MAX, head_number, layer_number, saliency_parts

REFERENCE = "heads"


@dataclass
class HeadDefinition:
    """The options every head probe shares (one flag each)."""

    mech_items: int = 48  #: match items (env2lan) per checkpoint for the saliency probes, spread over frames and words
    gather_threshold: float = 0.3  #: gather head: one strip holds >= this share of the head's saliency
    aggregate_threshold: float = 0.3  #: aggregate head: one cell holds >= this share of the head's saliency
    gather_rule: str = "strip-off-target"  #: gather rule: strip-off-target (a row other than the predicted position's holds >= the threshold; docs/mechanism.md), strip (the paper's literal rule: any row) or strip-minus-dot (a row without its largest cell)
    probe_dtype: str = "float32"  #: dtype of the saliency pass: float32, or bfloat16 (autocast; faster on GPU, may change a few heads' labels)
    identify_at: str = "final"  #: where heads are identified: final (each run's last step), a step number, or each (per checkpoint)

    def check(self) -> None:
        if self.identify_at not in ("final", "each") and not self.identify_at.isdigit():
            raise InputError(f"--identify-at: {self.identify_at!r} is not final, each or a step number")
        from vlground.mechanism.patterns import GATHER_RULES
        from vlground.probes.common import PROBE_DTYPES

        if self.probe_dtype not in PROBE_DTYPES:
            raise InputError(f"--probe-dtype: {self.probe_dtype!r} is not one of {', '.join(PROBE_DTYPES)}")

        if self.gather_rule not in GATHER_RULES:
            raise InputError(f"--gather-rule: {self.gather_rule!r} is not one of {', '.join(GATHER_RULES)}")
        for name in ("gather_threshold", "aggregate_threshold"):
            if not 0 < getattr(self, name) <= 1:
                raise InputError(f"--{name.replace('_', '-')}: must be in (0, 1]")


def classify(summary, opts: HeadDefinition, predict_positions: torch.Tensor | None = None):
    """Per-item head types from the saliency reductions of a batch (:class:`SaliencySummary`, maps
    ``[B, L, H, S, S]`` reduced per layer) -> HeadPatterns (bool ``[B, L, H]``); ``predict_positions [B]``:
    each item's predicted position (the loss row). Same result as
    :func:`vlground.mechanism.patterns.classify_heads` on the full maps."""
    from vlground.mechanism.patterns import GatherAggregateThresholds
    from vlground.mechanism.saliency_summary import classify_from_summary

    th = GatherAggregateThresholds(gather=opts.gather_threshold, aggregate=opts.aggregate_threshold, gather_rule=opts.gather_rule)
    pp = None if predict_positions is None else predict_positions.detach().cpu().long()
    return classify_from_summary(summary, th, pp)


def identify_heads(ctx: ProbeContext, opts: HeadDefinition) -> RunReference:
    """Gather/aggregate heads of every mechanistic item at this (the reference) checkpoint."""
    ids, gather, aggregate = [], [], []
    for part in saliency_parts(ctx, opts.mech_items, opts.probe_dtype):
        pat = classify(part.summary, opts, part.batch.predict_positions)
        ids.extend(it.item_id for it in part.batch.items)
        gather.append(pat.gather.numpy())
        aggregate.append(pat.aggregate.numpy())
    if not ids:
        raise InputError(f"{ctx.key}: no match items to identify heads on")
    return RunReference(
        checkpoint_key=ctx.key,
        item_ids=ids,
        arrays={"gather": np.concatenate(gather), "aggregate": np.concatenate(aggregate)},
        meta={"gather_threshold": opts.gather_threshold, "aggregate_threshold": opts.aggregate_threshold, "gather_rule": opts.gather_rule, "probe_dtype": opts.probe_dtype},
    )


def reference_masks(ctx: ProbeContext, opts: HeadDefinition, items: list) -> tuple[dict[str, torch.Tensor], np.ndarray, str]:
    """``({"gather", "aggregate"}: bool [n, L, H], found [n], where)`` for ``items``: the heads
    identified at the reference checkpoint (or at this one with ``identify_at=each``)."""
    if opts.identify_at == "each" or REFERENCE not in ctx.references:
        ref = identify_heads(ctx, opts)
    else:
        ref = ctx.references[REFERENCE]
    rows = ref.rows_for([it.item_id for it in items])
    found = rows >= 0
    out = {}
    for k in ("gather", "aggregate"):
        a = ref.arrays[k]
        m = np.zeros((len(items),) + a.shape[1:], dtype=bool)
        m[found] = a[rows[found]]
        out[k] = torch.from_numpy(m)
    return out, found, ref.checkpoint_key


class HeadProbeBase(Probe):
    """A probe over the shared head definition and the run's reference heads."""

    needs = frozenset({Capability.ATTENTION})
    reference = (REFERENCE, lambda ctx, options: identify_heads(ctx, options))
    Options = HeadDefinition

    def uses_reference(self) -> bool:
        return self.options.identify_at != "each"

    def reference_at(self) -> str:
        """``last`` or a step number: the checkpoint of each run where heads are identified."""
        return "last" if self.options.identify_at == "final" else self.options.identify_at


@dataclass
class HeadRow:
    layer: int  #: 1-based layer (block) number, as the paper counts (docs/probes.md, Numbering)
    head: int  #: 1-based head number within the layer (``L{layer}.H{head}``)
    kind: str  #: gather / aggregate / both / none: the type it has on >= half the items (reference checkpoint)
    gather_frac: float  #: share of items on which it is a gather head (reference checkpoint)
    aggregate_frac: float  #: share of items on which it is an aggregate head (reference checkpoint)
    gather_frac_here: float  #: the same, identified at this checkpoint (per-checkpoint variant)
    aggregate_frac_here: float  #: the same, identified at this checkpoint (per-checkpoint variant)
    saliency_share: float  #: its share of the model's saliency mass, mean over items
    env_share: float  #: share of its saliency into the predicted position that comes from the environment
    layer_index: int = -1  #: 0-based block index (hooks, TransformerLens ``blocks.{layer_index}``, HF ``output_attentions[layer_index]``)
    head_index: int = -1  #: 0-based head index


def _kind(g: float, a: float) -> str:
    return "both" if g >= 0.5 and a >= 0.5 else "gather" if g >= 0.5 else "aggregate" if a >= 0.5 else "none"


class HeadsProbe(HeadProbeBase):
    name = "heads"
    doc = "gather and aggregate heads identified in the final model, their saliency share over training, head grids"

    def run(self, ctx: ProbeContext) -> ProbeResult:
        from vlground.mechanism.saliency_summary import mechanism_share_from_summary as mechanism_share

        opts = self.options
        site = ctx.adapter.attention_site(ctx.loaded)
        parts = saliency_parts(ctx, opts.mech_items, opts.probe_dtype)
        if not parts:
            return ProbeResult(notes=[f"heads: skipped for {ctx.key} (no match items)"])
        items = [it for p in parts for it in p.batch.items]
        ref, found, ref_key = reference_masks(ctx, opts, items)
        g_here, a_here, mass_share, g_share, a_share, go_share, flow = [], [], [], [], [], [], []
        start = 0
        maps, tokens, notes = None, None, []
        for part in parts:
            sal, batch = part.summary, part.batch
            n = len(sal)
            pat = classify(sal, opts, batch.predict_positions)
            g_here.append(pat.gather.float())
            a_here.append(pat.aggregate.float())
            per_head = sal.total
            mass_share.append(per_head / per_head.sum((-1, -2), keepdim=True).clamp_min(1e-30))
            g_share.append(mechanism_share(sal, ref["gather"][start : start + n]))
            a_share.append(mechanism_share(sal, ref["aggregate"][start : start + n]))
            go_share.append(mechanism_share(sal, (ref["gather"] & ~ref["aggregate"])[start : start + n]))
            into = sal.row.abs()  # [B, L, H, S]: flows into the predicted position
            flow.append((into * batch.env_mask.cpu()[:, None, None, :]).sum(-1) / into.sum(-1).clamp_min(1e-30))
            if start == 0:
                length = int(batch.predict_positions[0]) + 1
                if sal.map_mean is not None:
                    maps = sal.map_mean
                    if "input_ids" in batch.model_inputs and ctx.loaded.tokenizer is not None:
                        tokens = ctx.loaded.tokenizer.convert_ids_to_tokens(batch.model_inputs["input_ids"][0, :length].tolist())
                else:
                    notes.append(f"heads: no head-map plot for {ctx.key} (the prompt has {length} tokens; "
                                 f"maps are kept up to {MAP_TOKENS_MAX})")
            start += n
        fnd = torch.from_numpy(found)
        g_ref = ref["gather"][fnd].float().mean(0) if fnd.any() else torch.zeros(len(site.layers), site.n_heads)
        a_ref = ref["aggregate"][fnd].float().mean(0) if fnd.any() else torch.zeros_like(g_ref)
        g_here_m, a_here_m = torch.cat(g_here).mean(0), torch.cat(a_here).mean(0)
        mass, fl = torch.cat(mass_share).mean(0), torch.cat(flow).mean(0)
        rows = [
            HeadRow(layer_number(layer), head_number(h), _kind(float(g_ref[k, h]), float(a_ref[k, h])), float(g_ref[k, h]),
                    float(a_ref[k, h]), float(g_here_m[k, h]), float(a_here_m[k, h]), float(mass[k, h]), float(fl[k, h]),
                    layer_index=int(layer), head_index=h)
            for k, layer in enumerate(site.layers)
            for h in range(site.n_heads)
        ]
        gs, as_, gos = torch.cat(g_share)[fnd], torch.cat(a_share)[fnd], torch.cat(go_share)[fnd]
        record = {
            "identified_at": ref_key,
            "gather_rule": opts.gather_rule,
            "gather_only_share": float(gos.mean()) if len(gos) else None,
            "items_with_reference": int(found.sum()),
            "gather_share": float(gs.mean()) if len(gs) else None,
            "aggregate_share": float(as_.mean()) if len(as_) else None,
            "map_layers": [layer_number(x) for x in site.layers],
            "map_tokens": tokens,
        }
        if not found.all():
            notes.append(f"heads: {int((~found).sum())} item(s) at {ctx.key} have no heads identified at {ref_key} (not in its items)")
        arrays = {"maps": maps.numpy().astype(np.float32)} if maps is not None else {}
        return ProbeResult(record=record, tables={"heads": rows}, arrays=arrays, notes=notes)
