"""The head, ablation, lens and flow probes on a tiny trained run follow the definitions of
vlground.mechanism: heads identified in the final checkpoint (by the chosen gather rule) are the
ones counted and zeroed at every checkpoint; ablation rows count every item; layers are 1-based;
the lens is fit on the held-out split's tokens and reports the held-out KL per layer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vlground.adapters.childes import ChildesAdapter
from vlground.errors import InputError
from vlground.mechanism.patterns import GatherAggregateThresholds, classify_heads
from vlground.probes.base import ProbeContext
from vlground.probes.common import saliency_parts
from vlground.probes.runner import run_probes

N_ITEMS = 8


def full_maps(ctx, batch):
    """``[B, L, H, S, S]``: the full saliency maps of a batch (the reference the probes' reductions must match)."""
    return ctx.adapter.saliency(ctx.loaded, batch, predict_row_only=False, kernel="eager")


def final_patterns(adapter, rule):
    """Gather/aggregate heads of the mechanistic items, computed here on the run's last checkpoint."""
    ckpt = adapter.checkpoints()[-1]
    loaded = adapter.load(ckpt)
    ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
    parts = saliency_parts(ctx, N_ITEMS)
    sal = torch.cat([full_maps(ctx, p.batch) for p in parts])
    pos = torch.cat([p.batch.predict_positions.cpu() for p in parts])
    return classify_heads(sal, GatherAggregateThresholds(gather_rule=rule), pos), adapter.attention_site(loaded)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["strip-off-target", "strip", "strip-minus-dot"])
def test_probes_follow_the_definitions_on_a_tiny_run(tiny_runs, tmp_path, rule):
    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu", "pairing": "diagonal"})
    res = run_probes(adapter, ["saliency", "heads", "ablation", "lens"],
                     {"mech_items": N_ITEMS, "gather_rule": rule, "ablation_draws": 2, "lens_steps": 5},
                     out=tmp_path / "o", progress=False)
    pat, site = final_patterns(adapter, rule)
    n_layers = len(site.layers)
    steps = sorted({c["step"] for c in res.checkpoints})
    assert steps == [0, 4, 8, 12]

    # heads: identified at the final checkpoint, for every checkpoint
    for rec in res.records("heads"):
        assert rec["identified_at"].endswith("@12") and rec["gather_rule"] == rule

    # ablation: three rows per checkpoint; counts over all items are those of the final model's heads
    abl = res.rows("ablation")
    assert {r["head_type"] for r in abl} == {"gather", "aggregate", "gather-only"}
    expected = {"gather": pat.gather, "aggregate": pat.aggregate, "gather-only": pat.gather_only}
    for r in abl:
        mask = expected[r["head_type"]]
        k = mask.flatten(1).sum(1)
        assert r["n_items_total"] == N_ITEMS
        assert r["avg_count"] == pytest.approx(float(k.double().mean()))  # same at every step: final-model heads
        testable = int(((k > 0) & (k <= n_layers * site.n_heads - k)).sum())
        assert r["n_items"] == testable and r["n_untestable"] == int((k > n_layers * site.n_heads - k).sum())
        if k.sum():
            layers = torch.tensor([l + 1 for l in site.layers], dtype=torch.float64)[None, :, None].expand(mask.shape)
            assert r["avg_layer"] == pytest.approx(float(layers[mask].mean()))
            assert 1 <= r["avg_layer"] <= n_layers
        if r["n_items"] < 2:
            assert r["p_value"] is None and r["reason"] and r["stars"] == ""
        else:
            assert r["reason"] == "" and 0 <= r["p_value"] <= 1 and r["control_pool"]
    # under the paper's rule every aggregate head is a gather head (thresholds equal)
    if rule == "strip":
        assert bool((pat.aggregate <= pat.gather).all())
    if rule == "strip-off-target":  # the last block's saliency is the loss row only: no gather head there
        assert not pat.gather[:, -1].any()
    for r in res.records("ablation"):
        assert r["gather_rule"] == rule

    # flow: 1-based layer numbers of the attention blocks
    assert sorted({r["layer"] for r in res.rows("flow")}) == [l + 1 for l in site.layers]

    # lens: layers 0 (embeddings) .. L, fit and held-out tokens from the validation split, KL >= 0, 0 at L
    lens = res.rows("lens")
    assert sorted({r["layer"] for r in lens}) == list(range(n_layers + 1))
    run = Path(tiny_runs["transformer"])
    corpus = adapter.load(adapter.checkpoints()[0]).extra["corpus"]
    held = json.loads((run / "split.json").read_text())["val"]
    pad = adapter.load(adapter.checkpoints()[0]).tokenizer.pad_token_id
    total = int((np.asarray(corpus.chunks[held]) != pad).sum())
    for r in lens:
        assert r["held_out_tokens"] > 0 and r["kl"] >= 0
        assert r["fit_tokens"] + r["held_out_tokens"] == total if len(held) > 1 else r["fit_tokens"] == total
        if r["layer"] == n_layers:
            assert r["kl"] == 0


def test_bad_probe_options_fail_in_one_line(tiny_runs, tmp_path):
    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu"})
    with pytest.raises(InputError, match="gather-rule"):
        run_probes(adapter, ["heads"], {"gather_rule": "dots"}, progress=False)
    with pytest.raises(InputError, match="control-pool"):
        run_probes(adapter, ["ablation"], {"control_pool": "any"}, progress=False)
    with pytest.raises(InputError, match="probe-dtype"):
        run_probes(adapter, ["saliency"], {"probe_dtype": "float8"}, progress=False)


def test_bf16_probe_dtype_runs_the_saliency_pass_under_autocast(tiny_runs, tmp_path):
    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu", "pairing": "diagonal"})
    ckpt = adapter.checkpoints()[-1]
    loaded = adapter.load(ckpt)
    ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
    f32 = torch.cat([p.summary.row for p in saliency_parts(ctx, 4)])
    bf = torch.cat([p.summary.row for p in saliency_parts(ctx, 4, "bfloat16")])
    assert bf.dtype == torch.float32 and bf.shape == f32.shape and not torch.equal(bf, f32)
    assert float((bf - f32).norm() / f32.norm()) < 0.1
    assert set(ctx.memo) == {"saliency:4:float32", "saliency:4:bfloat16"}  # never one for the other


@pytest.mark.parametrize("rule", ["strip-off-target", "strip-minus-dot"])
def test_heads_and_flow_probes_equal_their_full_map_computation(tiny_runs, rule):
    """The heads and saliency probes read per-layer reductions; their tables and head maps equal what
    the full maps give (the probes' computation at commit 77239e9, on maps from Adapter.saliency)."""
    from vlground.mechanism.flow import flow_into
    from vlground.mechanism.patterns import mechanism_share
    from vlground.probes.runner import build_probes

    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu", "pairing": "diagonal"})
    loaded = adapter.load(adapter.checkpoints()[-1])
    ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
    heads_probe, flow_probe = build_probes(["heads", "saliency"], {"mech_items": N_ITEMS, "gather_rule": rule, "identify_at": "each"})
    heads, flow = heads_probe.run(ctx), flow_probe.run(ctx)
    parts = saliency_parts(ctx, N_ITEMS)
    th = GatherAggregateThresholds(gather_rule=rule)
    gather, aggregate, share, env_share, s_env, s_rest, g_share = [], [], [], [], [], [], []
    for p in parts:
        sal, b = full_maps(ctx, p.batch), p.batch
        pat = classify_heads(sal, th, b.predict_positions.cpu())
        gather.append(pat.gather.float())
        aggregate.append(pat.aggregate.float())
        per_head = sal.abs().sum((-1, -2))
        share.append(per_head / per_head.sum((-1, -2), keepdim=True))
        into = sal.abs()[torch.arange(len(b)), :, :, b.predict_positions]
        env_share.append((into * b.env_mask[:, None, None, :]).sum(-1) / into.sum(-1).clamp_min(1e-30))
        fl = flow_into(sal, b.predict_positions, b.env_mask, valid=b.model_inputs.get("attention_mask"))
        s_env.append(fl.env)
        s_rest.append(fl.rest)
        g_share.append(mechanism_share(sal, pat.gather))
        if p is parts[0]:
            same = [i for i, it in enumerate(b.items) if it.template == b.items[0].template]
            n = int(b.predict_positions[0]) + 1
            maps = sal[same, :, :, :n, :n].mean(0)
    site = adapter.attention_site(loaded)
    want = {"gather_frac_here": torch.cat(gather).mean(0), "aggregate_frac_here": torch.cat(aggregate).mean(0),
            "saliency_share": torch.cat(share).mean(0), "env_share": torch.cat(env_share).mean(0)}
    rows = heads.tables["heads"]
    assert len(rows) == len(site.layers) * site.n_heads
    for r in rows:
        k = site.layers.index(r.layer_index)
        for col, ref in want.items():
            assert getattr(r, col) == pytest.approx(float(ref[k, r.head_index]), rel=1e-5, abs=1e-7), col
    assert heads.record["gather_share"] == pytest.approx(float(torch.cat(g_share).mean()), rel=1e-5)
    np.testing.assert_allclose(heads.arrays["maps"], maps.numpy(), rtol=1e-5, atol=1e-7)
    env, rest = torch.cat(s_env).mean(0), torch.cat(s_rest).mean(0)
    for r in flow.tables["flow"]:
        k = site.layers.index(r.layer_index)
        assert r.s_env == pytest.approx(float(env[k]), rel=1e-5, abs=1e-9)
        assert r.s_rest == pytest.approx(float(rest[k]), rel=1e-5, abs=1e-9)
    assert any(r.s_env for r in flow.tables["flow"]) and float(want["saliency_share"].sum()) > 0


def test_a_saved_lens_is_reused_only_for_the_same_fit(tiny_runs, tmp_path):
    from vlground.probes.lens import FIT_INFO

    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["lstm"])], "device": "cpu", "pairing": "diagonal"})
    ckpt = Path(adapter.checkpoints()[0].path)
    opts = {"lens_steps": 3, "lens_tokens": 200}
    first = run_probes(adapter, ["lens"], opts, progress=False)
    info = json.loads((ckpt / "tuned-lens" / FIT_INFO).read_text())
    assert info["lens_tokens"] == 200 and info["fit_tokens"] == first.rows("lens")[0]["fit_tokens"] > 0
    again = run_probes(adapter, ["lens"], opts, progress=False)
    assert not any("not reused" in n for n in again.all_notes())
    other = run_probes(adapter, ["lens"], {"lens_steps": 3, "lens_tokens": 100_000}, progress=False)
    assert any("not reused" in n for n in other.all_notes())
    assert json.loads((ckpt / "tuned-lens" / FIT_INFO).read_text())["lens_tokens"] == 100_000
