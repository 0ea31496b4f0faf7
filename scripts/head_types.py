"""Share of heads of each type per layer at one checkpoint of a trained run, under every gather rule.

    python scripts/head_types.py RUN [--step N] [--mech-items 48] [--json OUT.json]

For each gather rule (``vlground.mechanism.patterns.GATHER_RULES``) and each 1-based layer: the mean
over the mechanistic items (the ``heads`` probe's items) of the share of the layer's heads that are
gather, aggregate, gather-only and neither, at the run's last checkpoint (or ``--step``). The same
saliency pass and predicted positions as ``vlground probe --probes heads``.
"""
from __future__ import annotations

import argparse
import json
import sys


def head_type_shares(run: str, step: int | None = None, mech_items: int = 48) -> dict:
    import torch

    from vlground.adapters.childes import ChildesAdapter
    from vlground.mechanism.patterns import GATHER_RULES, GatherAggregateThresholds
    from vlground.mechanism.saliency_summary import classify_from_summary
    from vlground.numbering import layer_number
    from vlground.probes.base import ProbeContext
    from vlground.probes.common import saliency_parts

    adapter = ChildesAdapter.from_options({"runs": [run], "device": "cpu"})
    ckpts = adapter.checkpoints()
    ckpt = ckpts[-1] if step is None else next(c for c in ckpts if c.step == step)
    loaded = adapter.load(ckpt)
    site = adapter.attention_site(loaded)
    ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
    parts = saliency_parts(ctx, mech_items)  # batches of items, each padded to its own length
    types = ("gather", "aggregate", "gather-only", "neither")
    out = {"run": run, "step": ckpt.step, "items": sum(len(p.summary) for p in parts),
           "heads_per_layer": site.n_heads, "rules": {}}
    for rule in GATHER_RULES:
        th = GatherAggregateThresholds(gather_rule=rule)
        pats = [classify_from_summary(p.summary, th, p.batch.predict_positions.cpu()) for p in parts]
        masks = {t: torch.cat([pt.mask(t) for pt in pats]) for t in types}  # bool [items, L, H]
        per = {}
        for k, layer in enumerate(site.layers):
            per[layer_number(layer)] = {t: float(m[:, k].float().mean()) for t, m in masks.items()}
        per["all"] = {t: float(m.float().mean()) for t, m in masks.items()}
        per["gather_heads_per_item"] = float(masks["gather"].flatten(1).sum(1).float().mean())
        out["rules"][rule] = per
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--step", type=int)
    ap.add_argument("--mech-items", type=int, default=48)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    res = head_type_shares(a.run, a.step, a.mech_items)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(f"{res['run']} step {res['step']}: {res['items']} items, {res['heads_per_layer']} heads per layer")
    for rule, per in res["rules"].items():
        print(f"  {rule}: {per['gather_heads_per_item']:.2f} gather heads per item")
        for layer, s in per.items():
            if isinstance(s, dict):
                print(f"    layer {layer}: " + ", ".join(f"{t} {v:.2f}" for t, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
