"""Mechanistic probes through the adapter interface: saliency flow, gather/aggregate heads,
head ablation against random controls, and the tuned lens.

They run on the *match* items of the ``env2lan`` direction (at most ``mech_items`` of them,
spread evenly over frames and words). Heads are identified per item at each checkpoint.
The model-level work is in :mod:`vlground.mechanism`; this module only feeds it batches from
the adapter and turns its tensors into result rows.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlground.engine.adapter import Adapter, Capability, LoadedModel, ProbeBatch, ProbeItem
from vlground.engine.behaviour import ProbeOutput, batched
from vlground.engine.runner import PROBES, ProbeSpec

log = logging.getLogger(__name__)

DEFAULTS = {
    "mech_items": 48,  # items for saliency/heads/ablation per checkpoint
    "gather_threshold": 0.3,
    "aggregate_threshold": 0.3,
    "box_thresholds": [0.7, 0.9],
    "ablation_draws": 10,
    "lens_steps": 150,
}


def _opt(cfg: dict | None, key: str):
    return (cfg or {}).get(key, DEFAULTS[key])


def mech_items(items: list[ProbeItem], n: int) -> list[ProbeItem]:
    """Match items of the env2lan direction, at most ``n``, spread evenly."""
    pool = [it for it in items if it.condition == "match" and it.direction == "env2lan"]
    if len(pool) <= n:
        return pool
    idx = np.linspace(0, len(pool) - 1, n).round().astype(int)
    return [pool[i] for i in sorted(set(idx))]


def _saliency(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg) -> list[tuple[ProbeBatch, torch.Tensor]]:
    """``[(batch, saliency [B, L_att, H, S, S])]`` for the mechanistic items, memoised on ``loaded``."""
    from vlground.mechanism.saliency import attention_saliency

    if "_saliency" in loaded.extra:
        return loaded.extra["_saliency"]
    out = []
    chosen = mech_items(items, _opt(cfg, "mech_items"))
    for chunk in batched(chosen, max(1, adapter.options.batch_size // 2)):
        batch = adapter.batch(loaded, chunk).to(loaded.device)
        inputs = dict(batch.model_inputs)
        ids = inputs.pop("input_ids", None)
        embeds = inputs.pop("inputs_embeds", None)
        mask = inputs.pop("attention_mask", None)
        sal = attention_saliency(
            loaded.model, ids, batch.predict_positions, batch.target_ids[:, 0], mask, inputs_embeds=embeds, **inputs
        )
        out.append((batch.to("cpu"), sal))
    loaded.extra["_saliency"] = out
    return out


def saliency_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    """Per layer: S_env (environment -> position before the target) and S_rest (Wang et al.)."""
    from vlground.mechanism.flow import flow_into

    site = adapter.attention_site(loaded)
    env, rest = [], []
    for batch, sal in _saliency(adapter, loaded, items, cfg):
        mask = batch.model_inputs.get("attention_mask")
        fl = flow_into(sal, batch.predict_positions, batch.env_mask, valid=mask)
        env.append(fl.env)
        rest.append(fl.rest)
    s_env, s_rest = torch.cat(env).mean(0), torch.cat(rest).mean(0)
    rows = [
        {"layer": int(layer), "s_env": float(e), "s_rest": float(r), "env_flow": float(e / r) if r > 0 else None}
        for layer, e, r in zip(site.layers, s_env, s_rest)
    ]
    return ProbeOutput(tables={"flow": rows})


def heads_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    """Gather/aggregate classification per item and head; shares of saliency they carry; the
    mean per-head saliency maps of the first frame (for the head grids)."""
    from vlground.mechanism.patterns import GatherAggregateThresholds, classify_heads, mechanism_share

    th = GatherAggregateThresholds(gather=_opt(cfg, "gather_threshold"), aggregate=_opt(cfg, "aggregate_threshold"))
    site = adapter.attention_site(loaded)
    g_frac, a_frac, mass_share, g_share, a_share, flow = [], [], [], [], [], []
    maps, tokens = None, None
    for batch, sal in _saliency(adapter, loaded, items, cfg):
        pat = classify_heads(sal, th)
        g_frac.append(pat.gather.float())
        a_frac.append(pat.aggregate.float())
        per_head = sal.abs().sum((-1, -2))
        mass_share.append(per_head / per_head.sum((-1, -2), keepdim=True).clamp_min(1e-30))
        g_share.append(mechanism_share(sal, pat.gather))
        a_share.append(mechanism_share(sal, pat.aggregate))
        rows = torch.arange(sal.shape[0])
        into = sal.abs()[rows, :, :, batch.predict_positions]  # [B, L, H, S]
        flow.append((into * batch.env_mask[:, None, None, :]).sum(-1) / into.sum(-1).clamp_min(1e-30))
        if maps is None:
            same = [b for b, it in enumerate(batch.items) if it.template == batch.items[0].template]
            length = int(batch.predict_positions[0]) + 1
            maps = sal[same, :, :, :length, :length].mean(0)
            if "input_ids" in batch.model_inputs and loaded.tokenizer is not None:
                tokens = loaded.tokenizer.convert_ids_to_tokens(batch.model_inputs["input_ids"][0, :length].tolist())
    g_frac, a_frac = torch.cat(g_frac).mean(0), torch.cat(a_frac).mean(0)
    mass_share, flow = torch.cat(mass_share).mean(0), torch.cat(flow).mean(0)
    rows = []
    for k, layer in enumerate(site.layers):
        for h in range(site.n_heads):
            g, a = float(g_frac[k, h]), float(a_frac[k, h])
            kind = "both" if g >= 0.5 and a >= 0.5 else "gather" if g >= 0.5 else "aggregate" if a >= 0.5 else "none"
            rows.append({"layer": int(layer), "head": h, "kind": kind, "gather_frac": g, "aggregate_frac": a,
                         "saliency_share": float(mass_share[k, h]), "env_share": float(flow[k, h])})
    record = {"gather_saliency_share": float(torch.cat(g_share).mean()), "aggregate_saliency_share": float(torch.cat(a_share).mean())}
    tables = {"heads": rows}
    if maps is not None:
        tables["head_maps"] = [{"layers": list(site.layers), "tokens": tokens, "maps": maps.tolist()}]
    return ProbeOutput(record=record, tables=tables)


def ablation_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    """Zero each item's gather (resp. aggregate) heads vs as many random heads of neither kind."""
    from vlground.mechanism.ablation import ablation_test
    from vlground.mechanism.patterns import GatherAggregateThresholds, classify_heads

    th = GatherAggregateThresholds(gather=_opt(cfg, "gather_threshold"), aggregate=_opt(cfg, "aggregate_threshold"))
    site = adapter.attention_site(loaded)
    parts = _saliency(adapter, loaded, items, cfg)
    batches = [b for b, _ in parts]
    pats = [classify_heads(s, th) for _, s in parts]
    gather = torch.cat([p.gather for p in pats])
    aggregate = torch.cat([p.aggregate for p in pats])
    neither = torch.cat([p.neither for p in pats])

    items_flat = [it for b in batches for it in b.items]

    def surprisal(model, indices=None) -> torch.Tensor:
        if indices is None:
            return torch.cat([-adapter.target_logprobs(loaded, b) for b in batches])
        return -adapter.target_logprobs(loaded, adapter.batch(loaded, [items_flat[i] for i in indices]))

    rows, notes = [], []
    for kind, heads in (("gather", gather), ("aggregate", aggregate)):
        if not heads.any():
            rows.append({"head_type": kind, "avg_count": 0.0, "avg_layer": None, "intervention_surprisal": None,
                         "control_surprisal": None, "original_surprisal": None, "p_value": None, "stars": "", "n_items": 0})
            continue
        # items with more identified heads than control candidates cannot be tested fairly
        ok = heads.flatten(1).sum(1) <= (neither & ~heads).flatten(1).sum(1)
        if not ok.all():
            notes.append(f"ablation {kind}: {int((~ok).sum())} item(s) left out (fewer control heads than {kind} heads)")
        res = ablation_test(surprisal, loaded.model, heads & ok[:, None, None], neither, n_draws=_opt(cfg, "ablation_draws"),
                            seed=0, sites=site, head_type=kind)
        rows.append({"head_type": kind, "avg_count": res.avg_count, "avg_layer": _num(res.avg_layer),
                     "intervention_surprisal": _num(res.intervention_surprisal), "control_surprisal": _num(res.control_surprisal),
                     "original_surprisal": _num(res.original_surprisal), "p_value": _num(res.p_value), "stars": res.stars,
                     "n_items": res.n_items, "test": res.test})
    return ProbeOutput(tables={"ablation": rows}, notes=notes)


def lens_probe(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem], cfg=None) -> ProbeOutput:
    """Tuned lens per layer, fit once per checkpoint on held-out chunks and saved beside it
    (``<checkpoint>/tuned-lens/``, reused when its unembedding hash matches); then the
    target's surprisal per layer in the match condition (env2lan), and the held-out KL."""
    from vlground.mechanism.errors import MechanismError
    from vlground.mechanism.lens import LazyLensBatches, LensTrainConfig, TunedLens, fit_lens, lens_kl, lens_surprisal, split_held_out

    unembedding = adapter.unembed(loaded)
    inputs = adapter.lens_batches(loaded)
    if unembedding is None or not inputs:
        return ProbeOutput(notes=[f"lens: skipped for {loaded.checkpoint.key} (no unembedding or no held-out text)"])

    batches = LazyLensBatches(loaded.model, inputs, loaded.device)  # activations computed per step, not kept
    train, held = split_held_out(batches)
    first = batches[0]
    n_layers, d_model = len(first.hidden_states) - 1, first.hidden_states[0].shape[-1]
    lens_dir = Path(loaded.checkpoint.path) / "tuned-lens"
    lens, notes = None, []
    if lens_dir.is_dir():
        try:
            lens = TunedLens.load(lens_dir, unembedding)
        except (MechanismError, OSError, ValueError) as exc:
            notes.append(f"lens: {lens_dir} not reused ({exc}); retrained")
    if lens is None:
        lens = TunedLens.for_unembedding(n_layers, d_model, unembedding)
        fit_lens(lens, unembedding, train, LensTrainConfig(steps=_opt(cfg, "lens_steps")))
        try:
            lens.save(lens_dir)
        except OSError as exc:
            notes.append(f"lens: cannot save beside the checkpoint ({exc})")
    kl = lens_kl(lens, unembedding, held)

    chosen = [it for it in items if it.condition == "match" and it.direction == "env2lan"]
    sps = []
    for chunk in batched(chosen, adapter.options.batch_size):
        b = adapter.batch(loaded, chunk).to(loaded.device)
        with torch.no_grad():
            out = adapter.forward(loaded, b, output_hidden_states=True)
        sps.append(lens_surprisal(lens, unembedding, out.hidden_states, b.predict_positions, b.target_ids[:, 0]))
    sp = torch.cat(sps).mean(0)
    rows = [{"layer": layer, "surprisal": float(sp[layer]), "kl": float(kl[layer]) if layer < n_layers else 0.0} for layer in range(n_layers + 1)]
    return ProbeOutput(tables={"lens": rows}, notes=notes)


def _num(x: Any):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


ATT = frozenset({Capability.ATTENTION})
PROBES.update(
    {
        "saliency": ProbeSpec(saliency_probe, ATT, "saliency flow from the environment into the position before the target, per layer"),
        "heads": ProbeSpec(heads_probe, ATT, "gather and aggregate heads, their saliency share, head grids"),
        "ablation": ProbeSpec(ablation_probe, ATT, "zero gather/aggregate heads vs random control heads"),
        "lens": ProbeSpec(lens_probe, frozenset({Capability.HIDDEN_STATES}), "tuned lens: target surprisal per layer"),
    }
)
