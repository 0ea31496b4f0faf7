"""Planted-answer tests of the paper-claims table: synthetic results whose answer is known."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlground.claims import (
    NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, ClaimSettings, arch_of, claims_table, first_step_reaching,
    middle_layers, render_claims_html, rise_then_fall,
)
from vlground.results import Results

TF = "transformer-tiny @ corpus"
LSTM = "lstm-tiny @ corpus"
STEPS = [0, 100, 200, 300, 400]


def _ck(group, seed, step):
    run = f"{group.split('-')[0]}/seed-{seed}"
    return {"key": f"{run}@{step}", "run": run, "group": group, "seed": seed, "step": step}


def _word_rows(c: dict, r2: float, ig: float, n_words: int, scale: float = 0.2) -> list[dict]:
    """Per-word rows whose R² of gain on co-occurrence is exactly ``r2`` and whose mean gain is ``ig``."""
    import numpy as np

    rng = np.random.default_rng(n_words)
    cooc = np.arange(1, n_words + 1, dtype=float) * 10
    z = (cooc - cooc.mean()) / cooc.std()
    e = rng.standard_normal(n_words)
    e -= e.mean() + (e @ z) / (z @ z) * z
    e /= e.std()
    gain = ig + scale * (np.sqrt(r2) * z + np.sqrt(1 - r2) * e)
    return [{**c, "word": f"w{i}", "info_gain": float(g), "cooc": int(x)} for i, (g, x) in enumerate(zip(gain, cooc))]


def make_results(groups: dict, flow=None, ablation=None, boxablation=None, n_words: int = 30) -> Results:
    """``groups``: group -> {"r2": [...], "ig": [...], "p": float, "rev": float, "rev_p": float}
    (one value per step of STEPS, the same for seeds 0 and 1). ``p`` and ``rev_p`` are the records'
    clustered p-values (t-test over word means); the words table holds ``n_words`` words per
    checkpoint with exactly the planted R² and mean gain."""
    cks, recs, words = [], [], []
    for g, spec in groups.items():
        for seed in (0, 1):
            for i, step in enumerate(STEPS):
                c = _ck(g, seed, step)
                cks.append(c)
                ig = spec["ig"][i]
                recs.append({**c, "match_surprisal": 3.0, "mismatch_surprisal": 3.0 + ig, "info_gain": ig,
                             "word_p_value": spec.get("p", 1e-6), "r2_cooc": spec["r2"][i],
                             "reverse_info_gain": spec.get("rev"), "reverse_word_p_value": spec.get("rev_p")})
                words.extend(_word_rows(c, spec["r2"][i], ig, n_words))
    probes = {"behaviour": {"records": recs, "tables": {"words": words}, "notes": []}}
    if flow is not None:
        probes["saliency"] = {"records": [], "tables": {"flow": flow}, "notes": []}
    if ablation is not None:
        probes["ablation"] = {"records": [], "tables": {"ablation": ablation}, "notes": []}
    if boxablation is not None:
        probes["boxablation"] = {"records": [], "tables": {"ablation": boxablation}, "notes": []}
    return Results(settings={}, checkpoints=cks, probes=probes)


RISE_FALL = [0.0, 0.6, 0.8, 0.4, 0.2]
FLAT = [0.3, 0.3, 0.3, 0.3, 0.3]
RISING_IG = [0.0, 0.2, 0.4, 0.8, 1.2]


def by_claim(rows, start):
    return {r.group: r for r in rows if r.claim.startswith(start)}


# -- helpers with hand-computed answers --------------------------------------------------------------
def test_rise_then_fall_planted():
    s = ClaimSettings()
    assert rise_then_fall(list(zip(STEPS, RISE_FALL)), s) == (200, 0.8, 0.8, pytest.approx(0.6))
    assert rise_then_fall(list(zip(STEPS, FLAT)), s) is None
    assert rise_then_fall(list(zip(STEPS, [0.0, 0.2, 0.4, 0.6, 0.8])), s) is None  # monotone: peak at the end
    assert rise_then_fall(list(zip(STEPS, [0.5, 0.55, 0.58, 0.55, 0.52])), s) is None  # wiggle below r2_change


def test_middle_layers_and_arch():
    s = ClaimSettings()
    assert middle_layers(12, s) == [5, 6, 7, 8, 9]  # contains the paper's 7-9
    assert middle_layers(4, s) == [2, 3]
    assert arch_of("dinov2-random:transformer-tiny @ corpus") == "transformer"
    assert arch_of("hybrid-even-small @ c") == "hybrid-even"
    assert first_step_reaching([(0, 0.0), (10, 0.3), (20, 0.6)], 0.5) == 20
    assert first_step_reaching([(0, 0.0)], 0.5) is None


# -- behaviour ---------------------------------------------------------------------------------------
def test_match_mismatch_needs_effect_and_p():
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG, "p": 1e-6},
                        LSTM: {"r2": FLAT, "ig": [0, 0.01, 0.02, 0.03, 0.05], "p": 1e-6}})
    rows = by_claim(claims_table(res), "match < mismatch")
    assert rows[TF].verdict == REPRODUCED and "information gain +1.20 nats" in rows[TF].this_run
    assert rows[LSTM].verdict == NOT_REPRODUCED  # significant but 0.05 nats < the minimum effect
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG, "p": 0.01}})
    assert by_claim(claims_table(res), "match < mismatch")[TF].verdict == NOT_REPRODUCED  # p not < 0.001


def test_r2_rise_fall_vs_flat():
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})
    assert by_claim(claims_table(res), "R²")[TF].verdict == REPRODUCED
    res = make_results({TF: {"r2": FLAT, "ig": RISING_IG}})
    assert by_claim(claims_table(res), "R²")[TF].verdict == NOT_REPRODUCED
    # R² rises and falls but information gain stalls after the peak
    res = make_results({TF: {"r2": RISE_FALL, "ig": [0, 0.5, 1.0, 1.02, 1.0]}})
    assert by_claim(claims_table(res), "R²")[TF].verdict == NOT_REPRODUCED


def test_r2_lstm_contrast():
    res = make_results({LSTM: {"r2": [0.1, 0.2, 0.3, 0.4, 0.5], "ig": [0, 0.3, 0.35, 0.38, 0.4]}})
    assert by_claim(claims_table(res), "LSTM")[LSTM].verdict == REPRODUCED
    res = make_results({LSTM: {"r2": RISE_FALL, "ig": RISING_IG}})  # behaves like the Transformer
    assert by_claim(claims_table(res), "LSTM")[LSTM].verdict == NOT_REPRODUCED


def test_r2_is_not_read_on_noise():
    """An LSTM whose gains are ~1e-5 nats: R² rises as the paper's, but of per-word noise -> not testable."""
    res = make_results({LSTM: {"r2": [0.1, 0.2, 0.3, 0.4, 0.5], "ig": [0, 1e-5, 1e-5, 2e-5, 1e-5]}})
    r = by_claim(claims_table(res), "LSTM")[LSTM]
    assert r.verdict == NOT_TESTABLE and "noise" in r.why
    # a rise-then-fall of R² over 4 words is not significant (the permutation p cannot go below 1/24)
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}, n_words=4)
    r = by_claim(claims_table(res), "R²")[TF]
    assert r.verdict == NOT_REPRODUCED and "permutation p" in r.this_run
    # the reported R² carries a bootstrap interval over words and a permutation p
    r = by_claim(claims_table(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})), "R²")[TF]
    assert r.verdict == REPRODUCED and "peak R² 0.800 [95% CI" in r.this_run and "permutation p 5.0e-04" in r.this_run


def test_sweep_and_demo_group_names_have_an_architecture():
    assert arch_of("transformer/childes") == "transformer"
    assert arch_of("lstm/childes-drop50") == "lstm"
    assert arch_of("mamba2-tiny @ c") == "mamba2"
    res = make_results({"transformer/childes": {"r2": RISE_FALL, "ig": RISING_IG}})
    assert by_claim(claims_table(res), "R²")["transformer/childes"].verdict == REPRODUCED


def test_claims_never_pool_steps():
    """Seed 1 ends at step 300, seed 0 at 400: every claim is read at step 300, the last common step."""
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})
    drop = {c["key"] for c in res.checkpoints if c["seed"] == 1 and c["step"] == 400}
    res.checkpoints = [c for c in res.checkpoints if c["key"] not in drop]
    beh = res.probes["behaviour"]
    beh["records"] = [r for r in beh["records"] if r["key"] not in drop]
    beh["tables"]["words"] = [r for r in beh["tables"]["words"] if r["key"] not in drop]
    r = by_claim(claims_table(res), "match < mismatch")[TF]
    assert r.this_run.startswith("step 300") and "+0.800" in r.this_run
    r = by_claim(claims_table(res), "R²")[TF]
    assert "(step 300)" in r.this_run and "(step 400)" not in r.this_run


def test_reverse_weaker():
    res = make_results({TF: {"r2": FLAT, "ig": RISING_IG, "rev": 0.3, "rev_p": 1e-3}})
    assert by_claim(claims_table(res), "the reverse")[TF].verdict == REPRODUCED
    res = make_results({TF: {"r2": FLAT, "ig": RISING_IG, "rev": 1.5, "rev_p": 1e-3}})  # stronger, not weaker
    assert by_claim(claims_table(res), "the reverse")[TF].verdict == NOT_REPRODUCED
    res = make_results({TF: {"r2": FLAT, "ig": RISING_IG, "rev": -0.1, "rev_p": 0.9}})  # no reverse effect at all
    assert by_claim(claims_table(res), "the reverse")[TF].verdict == NOT_REPRODUCED


# -- flow --------------------------------------------------------------------------------------------
def _flow(peaks: dict[int, int], rise_after: bool):
    """Flow rows for TF, 4 layers; at each step the env_flow of ``peaks[step]`` is high."""
    rows = []
    for seed in (0, 1):
        for step in (0, 200, 400):
            for layer in range(1, 5):
                v = 1.0 + (3.0 if layer == peaks[step] else 0.0)
                if step == 400 and rise_after and layer in (2, 3):
                    v += 2.0
                rows.append({**_ck(TF, seed, step), "layer": layer, "env_flow": v})
    return rows


def test_flow_middle_after_r2_drop():
    s = by_claim(claims_table(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}, flow=_flow({0: 1, 200: 3, 400: 3}, True))), "environment flow")
    assert s[TF].verdict == REPRODUCED, s[TF]
    # peak in the first layer: not reproduced
    s = by_claim(claims_table(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}, flow=_flow({0: 1, 200: 1, 400: 1}, False))), "environment flow")
    assert s[TF].verdict == NOT_REPRODUCED and "layer 1 of 4" in s[TF].this_run
    # middle peak, but flat afterwards
    s = by_claim(claims_table(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}, flow=_flow({0: 3, 200: 3, 400: 3}, False))), "environment flow")
    assert s[TF].verdict == NOT_REPRODUCED
    # middle peak but no R² drop: timing not testable
    s = by_claim(claims_table(make_results({TF: {"r2": FLAT, "ig": RISING_IG}}, flow=_flow({0: 1, 200: 3, 400: 3}, True))), "environment flow")
    assert s[TF].verdict == NOT_TESTABLE


# -- heads -------------------------------------------------------------------------------------------
def _abl(agg=(3.5, 3.0, 1e-5, 20), go=(3.05, 3.0, 0.4, 20)):
    rows = []
    for seed in (0, 1):
        for kind, (i, c, p, n) in (("aggregate", agg), ("gather-only", go), ("gather", go)):
            rows.append({**_ck(TF, seed, 400), "head_type": kind, "avg_count": 2.0, "intervention_surprisal": i if n else None,
                         "control_surprisal": c if n else None, "p_value": p if n else None, "n_items": n,
                         "reason": "" if n else "no item has a gather-only head at x"})
        # an earlier checkpoint that must be ignored (only the final one counts)
        rows.append({**_ck(TF, seed, 0), "head_type": "aggregate", "avg_count": 0.0, "intervention_surprisal": 3.0,
                     "control_surprisal": 3.0, "p_value": 0.9, "n_items": 20, "reason": ""})
    return rows


def test_heads_aggregate_not_gather():
    base = {TF: {"r2": FLAT, "ig": RISING_IG}}
    assert by_claim(claims_table(make_results(base, ablation=_abl())), "aggregate")[TF].verdict == REPRODUCED
    r = by_claim(claims_table(make_results(base, ablation=_abl(go=(3.6, 3.0, 1e-6, 20)))), "aggregate")[TF]
    assert r.verdict == NOT_REPRODUCED and "gather-only heads are causal" in r.why
    r = by_claim(claims_table(make_results(base, ablation=_abl(agg=(3.02, 3.0, 1e-6, 20)))), "aggregate")[TF]
    assert r.verdict == NOT_REPRODUCED  # significant but below the minimum effect
    r = by_claim(claims_table(make_results(base, ablation=_abl(go=(0, 0, 1, 0)))), "aggregate")[TF]
    assert r.verdict == NOT_TESTABLE and "no item has a gather-only head" in r.this_run


def test_released_model_without_steps():
    """A released model (step None, one checkpoint) is its own final checkpoint."""
    rows = [{"key": "m", "run": "m", "group": "llava", "seed": None, "step": None, "head_type": "aggregate@0.7",
             "avg_count": 1.0, "intervention_surprisal": 4.0, "control_surprisal": 3.0, "p_value": 1e-5, "n_items": 30}]
    res = Results(settings={}, checkpoints=[{"key": "m", "run": "m", "group": "llava", "seed": None, "step": None}],
                  probes={"boxablation": {"records": [], "tables": {"ablation": rows}, "notes": []}})
    assert by_claim(claims_table(res), "box aggregate")["llava"].verdict == REPRODUCED


def test_box_ablation():
    rows = [{**_ck("dinov2:" + TF, s, 400), "head_type": "aggregate@0.7", "avg_count": 1.0, "intervention_surprisal": 4.0,
             "control_surprisal": 3.0, "p_value": 1e-5, "n_items": 30} for s in (0, 1)]
    res = make_results({"dinov2:" + TF: {"r2": FLAT, "ig": RISING_IG}}, boxablation=rows)
    assert by_claim(claims_table(res), "box aggregate")["dinov2:" + TF].verdict == REPRODUCED


# -- random-init control -----------------------------------------------------------------------------
def test_random_init_slower():
    pre, rnd = "dinov2:" + TF, "dinov2-random:" + TF
    res = make_results({pre: {"r2": FLAT, "ig": RISING_IG}, rnd: {"r2": FLAT, "ig": [0, 0.05, 0.1, 0.2, 0.7]}})
    assert by_claim(claims_table(res), "random-init")[pre].verdict == REPRODUCED
    res = make_results({pre: {"r2": FLAT, "ig": RISING_IG}, rnd: {"r2": FLAT, "ig": [0, 0.9, 1.0, 1.1, 1.2]}})
    assert by_claim(claims_table(res), "random-init")[pre].verdict == NOT_REPRODUCED
    res = make_results({TF: {"r2": FLAT, "ig": RISING_IG}})
    assert by_claim(claims_table(res), "random-init")[""].verdict == NOT_TESTABLE


# -- table and rendering -----------------------------------------------------------------------------
def test_every_claim_has_a_row_and_html_escapes():
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})
    rows = claims_table(res)
    claims = {r.claim for r in rows}
    assert {"match < mismatch", "environment flow peaks in middle layers after the R² drop",
            "aggregate, not gather(-only), heads are causal", "random-init DINOv2 control is slower"} <= claims
    assert all(r.verdict in (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE) for r in rows)
    assert all(r.paper.startswith('"') for r in rows)
    page = render_claims_html(rows)
    assert page.count("<tr") == len(rows) + 1 and "&quot;" in page and "<b>reproduced</b>" in page


def test_claims_read_results_from_disk_without_torch(tmp_path):
    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})
    (tmp_path / "results.json").write_text(json.dumps(res.to_json()))
    code = ("import sys, vlground.results as r, vlground.claims as c; "
            f"rows = c.claims_table(r.load({str(tmp_path)!r})); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(len(rows))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 6


def test_report_opens_with_the_claims_table(tmp_path):
    from vlground.report import write_report

    res = make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}})
    (tmp_path / "results.json").write_text(json.dumps(res.to_json()))
    page = write_report(tmp_path).read_text()
    first = page.index("<section")
    assert page.index("claims on this run", first) < page.index("</section>", first)  # the first section
    assert page.count("<table class=\"claims") == 1


def _with_items(res: Results, gain: float, spread: float = 0.05) -> Results:
    """Per-item rows at each run's final checkpoint: 8 words x 4 pairs, gain = ``gain`` +- spread."""
    import numpy as np

    rng = np.random.default_rng(0)
    items = []
    for c in res.checkpoints:
        if c["step"] != STEPS[-1]:
            continue
        for w in range(8):
            for k in range(4):
                pid = f"p{w}-{k}"
                g = gain + spread * rng.standard_normal()
                for cond, sps in (("match", 3.0), ("mismatch", 3.0 + g)):
                    items.append({**c, "item_id": f"{pid}-{cond}", "pair_id": pid, "word": f"w{w}", "condition": cond,
                                  "direction": "env2lan", "surprisal": sps})
    res.columnar["items"] = items
    return res


def test_match_mismatch_uses_the_stats_verdict_on_items():
    res = _with_items(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}), gain=0.5)
    r = by_claim(claims_table(res), "match < mismatch")[TF]
    assert r.verdict == REPRODUCED and "information gain +0.5" in r.this_run and "key finding" in r.why
    # the records say 1.2 nats, but the items (the data the statistics rest on) say 0.02: not reproduced
    res = _with_items(make_results({TF: {"r2": RISE_FALL, "ig": RISING_IG}}), gain=0.02, spread=0.01)
    assert by_claim(claims_table(res), "match < mismatch")[TF].verdict == NOT_REPRODUCED


def test_one_number_format_in_key_findings_claims_and_tables(tmp_path):
    """One formatter (vlground.numbers): for the same group and step, the information gain, its
    interval and p read the same in the key findings, the claims row and the behaviour section's
    verdict table, and the match surprisal the same in the claims row and the mean-over-seeds table.
    The lstm group's tiny gain (2e-4 nats) is where own formats used to differ (+0.000 vs 2.00e-04)."""
    import html
    import re

    from test_report import _planted

    from vlground import numbers
    from vlground.report import write_report

    res = _planted(tmp_path, groups={"transformer": 1.0, "lstm": 2e-4})
    page = write_report(tmp_path, res).read_text()
    findings = page[page.index('id="key-findings"'):]
    for group in ("transformer", "lstm"):
        li = html.unescape(re.search(rf"<li><strong>{group}</strong>(.*?)</li>", findings, re.S).group(1))
        m = re.search(r"at step (\d+) .*?information gain (\S+) nats \[95% CI (.+?)\] \(.*?\), \S+ (p (?:=|<) \S+)", li)
        step, gain, interval, p = m.groups()
        row = re.search(rf"<td>match &lt; mismatch<br><small>{group}</small></td><td><b>[^<]+</b></td><td>(.*?)</td>", page, re.S)
        claim = html.unescape(row.group(1))
        assert f"step {step}" in claim and f"information gain {gain} nats [95% CI {interval}] (" in claim and p in claim, (li, claim)
        sec = page[page.index(f'id="behaviour-{group}"'):]
        sec = sec[:sec.index("</section>")]
        verdict_row = re.search(rf"<tr><td>{step}</td>(.*?)</tr>", sec).group(1)  # the verdict table comes first
        cells = [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", verdict_row)]
        assert gain in cells and f"[{interval}]" in cells, cells
        match = re.search(r"match (\S+), mismatch (\S+);", claim).group(1)
        at = [c for c in res.checkpoint_rows() if c["group"] == group and c["step"] == int(step)]
        assert match == numbers.num(sum(c["match_surprisal"] for c in at) / len(at))
        mean_rows = re.findall(rf"<tr><td>{step}</td>.*?</tr>", sec)
        assert any(f"<td>{match}</td>" in r for r in mean_rows), mean_rows
