"""The paper's claims, tested on one run: ``claims_table(results) -> list[ClaimRow]``.

Each claim of Wu, Ma, Luo et al. (arXiv 2510.13796) that a probe run can test is one small
function below, with the paper's result quoted from its blog post, this run's numbers, and a
verdict: ``reproduced``, ``not reproduced`` or ``not testable here`` (with why). The tests read
results only through :mod:`vlground.results` (no torch, no models) and are documented in
``docs/claims.md``; every threshold is a field of :class:`ClaimSettings`.

Conventions: a *group* is what the adapter pools seeds over (an architecture on a corpus); each
claim is tested at one step per group, the group's *tested step*: the last step at which all its
seeds have results (:func:`vlground.stats.final_rows`), so runs ending at different steps are
compared at their last common step and steps are never pooled. The match < mismatch claim quotes
the very verdict row the report's key findings quote (same step, same corrected p). A group's
series is the mean over seeds at each step where all its seeds have results. Effects are in nats;
every p-value read here accounts for word clustering (:mod:`vlground.stats`), except the ablation
probes' p-values, which are item-level (labelled so). R² claims read the words table: R² with a
bootstrap interval over words and a permutation p (:func:`vlground.stats.r2_test`).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable

from vlground.numbers import num, pct, pval, signed  # one number format everywhere (report, terminal, claims)
from vlground.results import Results, seed_summary
from vlground.stats import ALPHA, MIN_EFFECT

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"


@dataclass(frozen=True)
class ClaimSettings:
    """Thresholds of the claim tests (see docs/claims.md for why each is what it is)."""

    min_effect: float = MIN_EFFECT  #: smallest effect of interest, nats (information gain, intervention - control): vlground.stats.MIN_EFFECT
    alpha: float = 1e-3  #: significance level of a per-seed effect (the paper's ***, p < 0.001), in every seed
    correction: str = "holm"  #: correction of the match < mismatch verdicts across each group's steps (as the report's)
    r2_alpha: float = ALPHA  #: an R² regression counts only when its permutation p is below this
    r2_change: float = 0.1  #: an R² rise or fall must be at least this (R² units) to count
    flow_rise: float = 0.1  #: a rise in environment flow must be at least this share of its value at the R² peak
    middle: tuple[float, float] = (1 / 3, 3 / 4)  #: middle layers k of L: lo*L < k <= hi*L (the paper's 7-9 of 12 is inside)


@dataclass
class ClaimRow:
    """One claim about one run group."""

    claim: str  #: short name of the claim
    group: str  #: the run group it was tested on ("" = the whole run)
    paper: str  #: the paper's result, quoted from its blog post
    this_run: str  #: this run's result, with its numbers
    verdict: str  #: reproduced | not reproduced | not testable here
    why: str  #: the test applied, or why it cannot be applied


# -- the paper's words (blog post of arXiv 2510.13796) -----------------------------------------------
PAPER = {
    "match<mismatch": "\"all models show clear separation between match and mismatch conditions\" "
                      "(\"Transformers and Mamba-2 have much clearer separation than LSTM\")",
    "r2 rise-fall": "\"In both the Transformer and Mamba-2, R2 rises sharply during the early training steps but then "
                    "declines, even as grounding information gain continues to increase.\"",
    "r2 lstm": "\"LSTM shows steadily increasing R2 but little growth in grounding information gain\"",
    "flow middle": "\"the saliency at middle layers (Layers 7-9) starts to increase at around 4,500 training steps, "
                   "exactly where the R2 ... starts to drop\"",
    "aggregate causal": "\"only aggregate heads have significant causal effect on grounding performance\" "
                        "(*** = p < 0.001, intervention surprisal above control)",
    "box aggregate causal": "\"aggregate heads are also the key to the performance in realistic vision-language models\"",
    "reverse weaker": "\"surprisal for both match and mismatch conditions increases steadily ... yet the match group "
                      "consistently maintains lower surprisal\"; \"(very weakly) suggests\" a bidirectional mapping",
    "random-init slower": "\"An advantage of the match condition ... was still observed, but it required significantly more "
                          "training steps to approach convergence\"",
}


# -- helpers -------------------------------------------------------------------------------------------
def arch_of(group: str) -> str:
    """The architecture in a group name: ``dinov2:transformer-tiny @ corpus`` (probe groups) and
    ``transformer/childes-drop50`` (sweep and demo groups) -> ``transformer``."""
    name = group.split(" @ ")[0].split(":")[-1].split("/")[0].strip()
    for size in ("-tiny", "-small", "-paper", "-custom"):
        name = name.removesuffix(size)
    return name


def _step(r: dict) -> int:
    """A checkpoint's step; a released model (no step) counts as -1, its run's only checkpoint."""
    return -1 if r.get("step") is None else r["step"]


def tested_steps(rows: list[dict]) -> dict[str, int]:
    """``{group: step}``: per group, the last step (:func:`_step`) at which every run of the group
    has a row -- the same rule as :func:`vlground.stats.final_rows` applies to the verdicts."""
    runs: dict[str, set] = {}
    at: dict[tuple, set] = {}
    for r in rows:
        g = r.get("group") or r["run"]
        runs.setdefault(g, set()).add(r["run"])
        at.setdefault((g, _step(r)), set()).add(r["run"])
    out = {}
    for g, rs in runs.items():
        full = [st for (gg, st), have in at.items() if gg == g and have == rs]
        out[g] = max(full) if full else max(st for (gg, st) in at if gg == g)
    return out


def _finals(res: Results) -> dict[str, list[dict]]:
    """Per group, the checkpoint rows (one per seed) at the group's tested step (:func:`tested_steps`)."""
    rows = res.checkpoint_rows()
    step = tested_steps(rows)
    out: dict[str, list[dict]] = {}
    for r in rows:
        g = r.get("group") or r["run"]
        if _step(r) == step[g]:
            out.setdefault(g, []).append(r)
    return out


def _at(step: int) -> str:
    return "the released model" if step == -1 else f"step {step}"


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else math.nan


def _series(summary: list[dict], group: str, field: str) -> list[tuple[int, float]]:
    """(step, seed mean) of ``field`` at the steps where the group has all its seeds."""
    full = max((x["n_seeds"] for x in summary if x["group"] == group), default=0)
    return [(x["step"], x[field]) for x in summary if x["group"] == group and x.get(field) is not None
            and x["step"] is not None and x["n_seeds"] == full]


def _p(p) -> str:
    return pval(p)


def _effect(vals: list[float], ps: list, s: ClaimSettings) -> tuple[bool, float, float]:
    """(significant with the minimum effect, mean effect, largest p) over seeds."""
    mean = _mean(vals)
    worst = max((p if p is not None else 1.0) for p in ps) if ps else 1.0
    return (math.isfinite(mean) and mean >= s.min_effect and worst < s.alpha), mean, worst


def verdict_rows(res: Results, s: ClaimSettings, direction: str = "env2lan") -> list[dict]:
    """:func:`vlground.stats.verdict_rows` of ``res``'s items (empty without item rows)."""
    items = res.frame("items")
    if items.empty:
        return []
    from vlground.stats import verdict_rows as rows_of

    return rows_of(items, min_effect=s.min_effect, correction=s.correction, direction=direction)


def tested_verdicts(rows: list[dict]) -> dict[str, dict]:
    """``{group: verdict row at its tested step}`` (:func:`vlground.stats.final_rows`)."""
    from vlground.stats import final_rows

    return {r["group"]: r for r in final_rows(rows)} if rows else {}


def _seed_words_p(fin: list[dict], prefix: str = "") -> list:
    """The clustered per-checkpoint p-values (t-test over word means) of the behaviour records."""
    return [r.get(f"{prefix}word_p_value") for r in fin]


# -- the claims ----------------------------------------------------------------------------------------
def claim_match_lt_mismatch(res: Results, s: ClaimSettings, verdicts: list[dict] | None = None) -> list[ClaimRow]:
    """Per group at its tested step. With per-item rows: the verdict row the report's key findings
    quote (:func:`vlground.stats.verdict_rows`, Holm-corrected across the group's steps; "grounded"
    = significant and >= min_effect). Without them: mean gain over seeds >= min_effect and the
    clustered per-checkpoint p (t-test over word means) < alpha in every seed."""
    rows = []
    finals = _finals(res)
    found = tested_verdicts(verdict_rows(res, s) if verdicts is None else verdicts)
    for group, fin in sorted(finals.items()):
        ig = [r.get("info_gain") for r in fin]
        if all(v is None for v in ig) and group not in found:
            continue
        st = _step(fin[0])
        m, mm = _mean(r.get("match_surprisal") for r in fin), _mean(r.get("mismatch_surprisal") for r in fin)
        if group in found:
            v = found[group]
            ok = v["verdict"] == "grounded"
            desc = (f"{_at(-1 if v['step'] is None else v['step'])} (the last step with all {v['n_seeds']} seed(s)): "
                    f"match {num(m)}, mismatch {num(mm)}; {v['line']}")
            why = (f"vlground.stats verdict 'grounded' (p < {ALPHA:g} after {s.correction} correction across the group's steps, "
                   f"and the estimate >= {s.min_effect} nats): the report's key finding for this group")
        else:
            ps = _seed_words_p(fin)
            if all(p is None for p in ps):
                rows.append(ClaimRow("match < mismatch", group, PAPER["match<mismatch"],
                                     f"{_at(st)}: information gain {signed(_mean(ig))} nats, no clustered p-value", NOT_TESTABLE,
                                     "needs per-item rows or the behaviour probe's word_p_value (re-probe)"))
                continue
            ok, mean, worst = _effect(ig, ps, s)
            desc = (f"{_at(st)}, {len(fin)} seed(s): match {num(m)}, mismatch {num(mm)}, information gain {signed(mean)} nats, "
                    f"largest per-seed p {_p(worst)} (t-test over word means)")
            why = f"information gain >= {s.min_effect} nats (mean over seeds) and p < {s.alpha:g} in every seed (clustered by word)"
        rows.append(ClaimRow("match < mismatch", group, PAPER["match<mismatch"], desc, REPRODUCED if ok else NOT_REPRODUCED, why))
    return rows


def rise_then_fall(r2: list[tuple[int, float]], s: ClaimSettings) -> tuple[int, float, float, float] | None:
    """``(peak step, peak, rise, fall)`` of an R² series when its maximum is interior and it rises
    and falls by at least ``r2_change``; else None."""
    if len(r2) < 3:
        return None
    k = max(range(len(r2)), key=lambda i: r2[i][1])
    peak = r2[k][1]
    rise, fall = peak - r2[0][1], peak - r2[-1][1]
    if 0 < k < len(r2) - 1 and rise >= s.r2_change and fall >= s.r2_change:
        return r2[k][0], peak, rise, fall
    return None


def r2_by_step(res: Results, group: str, prefix: str = "") -> dict[int, tuple]:
    """``{step: (cooc [seeds, words], gain [seeds, words])}`` from the words table, at the steps
    where every run of ``group`` has per-word rows (words present in all of them)."""
    ck = {c["key"]: c for c in res.checkpoints if (c.get("group") or c["run"]) == group}
    runs = {c["run"] for c in ck.values()}
    by: dict[int, dict[str, dict[str, tuple]]] = {}
    for w in res.rows("words"):
        c = ck.get(w.get("key"))
        if c is None or c.get("step") is None or w.get("cooc") is None or w.get(f"{prefix}info_gain") is None:
            continue
        by.setdefault(c["step"], {}).setdefault(c["run"], {})[w["word"]] = (float(w["cooc"]), float(w[f"{prefix}info_gain"]))
    out = {}
    for st, per_run in sorted(by.items()):
        if set(per_run) != runs:
            continue
        words = sorted(set.intersection(*(set(d) for d in per_run.values())))
        order = sorted(per_run)
        x = [[per_run[r][w][0] for w in words] for r in order]
        y = [[per_run[r][w][1] for w in words] for r in order]
        out[st] = (x, y)
    return out


def _r2_txt(t) -> str:
    return f"R² {num(t.r2)} [95% CI {num(t.low)}, {num(t.high)}], permutation p {_p(t.p_value)}, {t.n_words} words"


def claim_r2(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group, from the words table (R² of per-word information gain on cumulative
    co-occurrence, mean over seeds, at steps with all seeds). Transformer / Mamba-2 groups: R² has
    an interior peak with a rise and a fall of at least ``r2_change``, the regression at the peak is
    significant (permutation p < ``r2_alpha``), and information gain grows by at least
    ``min_effect`` from the R² peak to the last step. LSTM: "not testable" when the final gain is
    below ``min_effect`` (an R² over per-word gains of noise says nothing); otherwise the final
    regression is significant, R² ends above its start and falls < ``r2_change`` from its peak, and
    the gain grows < ``min_effect`` over the second half of the run."""
    from vlground.stats import r2_test

    summary = seed_summary(res)
    rows = []
    for group in sorted({x["group"] for x in summary}):
        arch = arch_of(group)
        if arch not in ("transformer", "mamba2", "lstm"):
            continue
        claim = "R² rises then falls, info gain keeps rising" if arch != "lstm" else "LSTM: R² rises, info gain barely grows"
        paper = PAPER["r2 lstm" if arch == "lstm" else "r2 rise-fall"]
        data = r2_by_step(res, group)
        ig = _series(summary, group, "info_gain")
        if len(data) < 3 or not ig:
            rows.append(ClaimRow(claim, group, paper, f"{len(data)} step(s) with per-word rows of every seed", NOT_TESTABLE,
                                 "needs the behaviour probe's words table (co-occurrence and gain per word) at 3 or more steps"))
            continue
        tests = {st: r2_test(*xy) for st, xy in data.items()}
        r2 = [(st, t.r2) for st, t in tests.items() if math.isfinite(t.r2)]
        if len(r2) < 3:
            rows.append(ClaimRow(claim, group, paper, "R² undefined (constant co-occurrence or gain)", NOT_TESTABLE,
                                 "needs R² at 3 or more steps"))
            continue
        ig_at = dict(ig)
        k = max(range(len(r2)), key=lambda i: r2[i][1])
        peak_step, first, last = r2[k][0], r2[0][0], r2[-1][0]
        desc = (f"R² {num(r2[0][1])} (step {first}) -> peak {_r2_txt(tests[peak_step])} (step {peak_step}) -> "
                f"{_r2_txt(tests[last])} (step {last}); information gain {signed(ig_at.get(first))} -> "
                f"{signed(ig_at.get(peak_step))} -> {signed(ig_at.get(last))} nats")
        final_gain = ig_at.get(last, math.nan)
        if arch == "lstm":
            if not final_gain >= s.min_effect:
                rows.append(ClaimRow(claim, group, paper, desc, NOT_TESTABLE,
                                     f"the final information gain is below {s.min_effect} nats: an R² over per-word gains "
                                     "of noise is not read"))
                continue
            mid = min((st for st, _ in ig if st >= last / 2), default=last)
            grow = final_gain - ig_at.get(mid, math.nan)
            ok = (tests[last].p_value < s.r2_alpha and r2[k][1] - r2[-1][1] < s.r2_change and r2[-1][1] - r2[0][1] > 0
                  and grow < s.min_effect)
            why = (f"final regression significant (permutation p < {s.r2_alpha:g}); R² ends above its start and falls "
                   f"< {s.r2_change} from its peak; information gain grows < {s.min_effect} nats from step {mid} to {last} "
                   f"(the second half); the final gain is >= {s.min_effect} nats")
        else:
            rf = rise_then_fall(r2, s)
            ok = (rf is not None and tests[peak_step].p_value < s.r2_alpha
                  and final_gain - ig_at.get(peak_step, math.inf) >= s.min_effect)
            why = (f"R² peaks inside the run, rising and falling by >= {s.r2_change}, with the regression at the peak "
                   f"significant (permutation p < {s.r2_alpha:g}); information gain grows >= {s.min_effect} nats from the "
                   "R² peak to the last step")
        rows.append(ClaimRow(claim, group, paper, desc, REPRODUCED if ok else NOT_REPRODUCED, why))
    return rows


def middle_layers(n_layers: int, s: ClaimSettings) -> list[int]:
    """1-based middle layers: ``lo * L < k <= hi * L`` (12 layers: 5-9; 4 layers: 2-3)."""
    lo, hi = s.middle
    return [k for k in range(1, n_layers + 1) if lo * n_layers < k <= hi * n_layers]


def claim_flow(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group with saliency rows: (a) at the final step, the layer with the largest environment
    flow (``env_flow`` = S_env / S_rest, seed mean) is a middle layer; (b) the middle layers' flow
    rises by at least ``flow_rise`` (relative) from the step of the R² peak to the final step. (b)
    is not testable when R² has no rise-then-fall."""
    flow = res.rows("flow", "saliency")
    if not flow:
        return []
    summary = seed_summary(res)
    by: dict[str, dict[int, dict[int, list[float]]]] = {}
    for r in flow:
        if r.get("env_flow") is not None and r.get("step") is not None:
            by.setdefault(r["group"], {}).setdefault(r["step"], {}).setdefault(r["layer"], []).append(r["env_flow"])
    last_of = tested_steps([r for r in flow if r.get("env_flow") is not None and r.get("step") is not None])
    rows = []
    for group, steps in sorted(by.items()):
        last = last_of[group]
        steps = {st: v for st, v in steps.items() if st <= last}
        layers = {k: _mean(v) for k, v in steps[last].items()}
        n = max(layers)
        mid = middle_layers(n, s)
        peak_layer = max(layers, key=layers.get)
        mid_txt = f"{mid[0]}-{mid[-1]}" if mid else "none"
        desc = f"step {last}: environment flow peaks at layer {peak_layer} of {n} ({num(layers[peak_layer])}x the rest; middle = {mid_txt})"
        if peak_layer not in mid:
            rows.append(ClaimRow("environment flow peaks in middle layers after the R² drop", group, PAPER["flow middle"], desc,
                                 NOT_REPRODUCED, f"peak layer outside the middle layers {mid_txt}"))
            continue
        rf = rise_then_fall(_series(summary, group, "r2_cooc"), s)
        if rf is None:
            rows.append(ClaimRow("environment flow peaks in middle layers after the R² drop", group, PAPER["flow middle"],
                                 desc + "; R² has no rise-then-fall", NOT_TESTABLE,
                                 "the peak is in the middle layers, but with no R² drop its timing cannot be compared"))
            continue
        at = min((st for st in steps if st >= rf[0]), default=None)

        def mid_flow(st):
            return _mean(_mean(steps[st][k]) for k in mid if k in steps[st])

        if at is None or at == last:
            rows.append(ClaimRow("environment flow peaks in middle layers after the R² drop", group, PAPER["flow middle"],
                                 desc + f"; R² peaks at step {rf[0]}, no saliency checkpoint between it and the end", NOT_TESTABLE,
                                 "needs a saliency checkpoint at or after the R² peak and before the final step"))
            continue
        before, after = mid_flow(at), mid_flow(last)
        ok = after - before >= s.flow_rise * abs(before)
        rows.append(ClaimRow("environment flow peaks in middle layers after the R² drop", group, PAPER["flow middle"],
                             desc + f"; middle-layer flow {num(before)} at step {at} (R² peak {rf[0]}) -> {num(after)} at step {last}",
                             REPRODUCED if ok else NOT_REPRODUCED,
                             f"peak layer in the middle and middle-layer flow rises >= {pct(s.flow_rise)} after the R² peak"))
    return rows


def _ablation_rows(res: Results, probe: str) -> dict[str, dict[str, list[dict]]]:
    """group -> head_type -> the rows at the group's tested ablation step (the last with every run)."""
    rows = res.rows("ablation", probe)
    last = tested_steps(rows)
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        if _step(r) == last[r.get("group") or r["run"]]:
            out.setdefault(r.get("group") or r["run"], {}).setdefault(r["head_type"], []).append(r)
    return out


def _ablation_effect(rs: list[dict], s: ClaimSettings) -> tuple[bool | None, str]:
    """(significant with the minimum effect, description); None when no seed tested an item."""
    tested = [r for r in rs if r.get("n_items") and r.get("intervention_surprisal") is not None]
    if not tested:
        reasons = sorted({r.get("reason") or "no items tested" for r in rs})
        return None, "; ".join(reasons)
    d = [r["intervention_surprisal"] - r["control_surprisal"] for r in tested]
    ok, mean, worst = _effect(d, [r.get("p_value") for r in tested], s)
    ok = ok and len(tested) == len(rs)
    n = sum(r["n_items"] for r in tested)
    return ok, (f"interv. - ctrl. {signed(mean)} nats, largest item-level p {_p(worst)}, {n} items over {len(tested)}/{len(rs)} seed(s), "
                f"avg. count {num(_mean(r['avg_count'] for r in rs))}")


def claim_heads(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group, at each run's final ablation checkpoint: zeroing aggregate heads raises the
    target's surprisal above the control by >= min_effect with p < alpha in every seed, and
    zeroing gather-only heads does not. Vision (``boxablation``): aggregate heads at any box level."""
    out = []
    name = "aggregate, not gather(-only), heads are causal"
    for group, kinds in sorted(_ablation_rows(res, "ablation").items()):
        agg, agg_txt = _ablation_effect(kinds.get("aggregate", []), s)
        go, go_txt = _ablation_effect(kinds.get("gather-only", []), s)
        desc = f"aggregate: {agg_txt}; gather-only: {go_txt}"
        if agg is None:
            verdict, why = NOT_TESTABLE, "no aggregate head was tested"
        elif not agg:
            verdict, why = NOT_REPRODUCED, "aggregate heads are not causal by the test"
        elif go is None:
            verdict, why = NOT_TESTABLE, "aggregate heads are causal, but no gather-only head was tested"
        else:
            verdict, why = (NOT_REPRODUCED, "gather-only heads are causal too") if go else (REPRODUCED, "")
        test = (f"causal = intervention - control >= {s.min_effect} nats and p < {s.alpha:g} in every seed "
                "(the ablation probe's item-level Wilcoxon p, not clustered by word)")
        out.append(ClaimRow(name, group, PAPER["aggregate causal"], desc, verdict, f"{why}{'; ' if why else ''}{test}"))
    for group, kinds in sorted(_ablation_rows(res, "boxablation").items()):
        results = {k: _ablation_effect(v, s) for k, v in sorted(kinds.items())}
        desc = "; ".join(f"{k}: {t}" for k, (_, t) in results.items())
        oks = [ok for ok, _ in results.values() if ok is not None]
        verdict = NOT_TESTABLE if not oks else REPRODUCED if any(oks) else NOT_REPRODUCED
        out.append(ClaimRow("box aggregate heads are causal", group, PAPER["box aggregate causal"], desc, verdict,
                            f"intervention - control >= {s.min_effect} nats and p < {s.alpha:g} in every seed, at some box level"))
    return out


def claim_reverse(res: Results, s: ClaimSettings, verdicts: list[dict] | None = None) -> list[ClaimRow]:
    """Per group at its tested step: the reverse (LAN -> ENV) information gain is below the forward
    one by >= min_effect, and still positive (match lower) with p < 0.05 by a clustered test: with
    per-item rows the test of :func:`vlground.stats.step_estimate` pooled over seeds at that step
    (uncorrected: one test); without them the behaviour records' t-test over word means, in every seed."""
    rows = []
    rev_found = tested_verdicts(verdict_rows(res, s, "lan2env"))
    for group, finals in sorted(_finals(res).items()):
        rev = [r.get("reverse_info_gain") for r in finals]
        if all(v is None for v in rev) and group not in rev_found:
            continue
        fwd, back = _mean(r.get("info_gain") for r in finals), _mean(rev)
        v = rev_found.get(group)
        if v is not None and v["step"] == (None if _step(finals[0]) == -1 else _step(finals[0])):
            back, p = v["effect"], v["p_value"]
            test = f"{v['method']}, p {_p(p)}"
        else:
            ps = _seed_words_p(finals, "reverse_")
            if all(x is None for x in ps):
                rows.append(ClaimRow("the reverse direction is weaker", group, PAPER["reverse weaker"],
                                     f"information gain forward {signed(fwd)}, reverse {signed(back)} nats; no clustered p-value",
                                     NOT_TESTABLE, "needs per-item rows or the behaviour probe's reverse_word_p_value (re-probe)"))
                continue
            p = max((x if x is not None else 1.0) for x in ps)
            test = f"largest per-seed p {_p(p)} (t-test over word means)"
        weaker = fwd - back >= s.min_effect
        still = back > 0 and p < 0.05
        rows.append(ClaimRow(
            "the reverse direction is weaker", group, PAPER["reverse weaker"],
            f"{_at(_step(finals[0]))}: information gain forward {signed(fwd)}, reverse {signed(back)} nats (reverse: {test})",
            REPRODUCED if weaker and still else NOT_REPRODUCED,
            f"forward - reverse >= {s.min_effect} nats and reverse gain > 0 with p < 0.05, clustered by word"))
    return rows


def first_step_reaching(series: list[tuple[int, float]], level: float) -> int | None:
    """The first step at which a (step, value) series reaches ``level``; None if never."""
    return next((st for st, v in series if v >= level), None)


def claim_random_init(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """For each pretrained vision group ``dinov2:X`` with a control ``dinov2-random:X``: the
    control reaches half of the pretrained group's final information gain (seed means) later, or
    never; the pretrained group's final gain must be >= min_effect."""
    summary = seed_summary(res)
    groups = {x["group"] for x in summary}
    name = "random-init DINOv2 control is slower"
    rows = []
    for g in sorted(groups):
        if not g.startswith("dinov2:"):
            continue
        ctrl = "dinov2-random:" + g.split(":", 1)[1]
        if ctrl not in groups:
            rows.append(ClaimRow(name, g, PAPER["random-init slower"], "no random-init control group", NOT_TESTABLE,
                                 f"needs runs on a corpus built with vision_init=random ({ctrl})"))
            continue
        pre, rnd = _series(summary, g, "info_gain"), _series(summary, ctrl, "info_gain")
        if not pre or not rnd:
            continue
        level = pre[-1][1] / 2
        a, b = first_step_reaching(pre, level), first_step_reaching(rnd, level)
        desc = (f"final information gain {signed(pre[-1][1])} (pretrained) vs {signed(rnd[-1][1])} (random init); half of the "
                f"pretrained final ({signed(level)}) reached at step {a} vs {'never' if b is None else b}")
        if pre[-1][1] < s.min_effect:
            rows.append(ClaimRow(name, g, PAPER["random-init slower"], desc, NOT_TESTABLE,
                                 f"the pretrained group's final gain is below {s.min_effect} nats"))
            continue
        ok = b is None or (a is not None and b > a)
        rows.append(ClaimRow(name, g, PAPER["random-init slower"], desc, REPRODUCED if ok else NOT_REPRODUCED,
                             "the control reaches half the pretrained final gain later (or never)"))
    if not rows:
        rows.append(ClaimRow(name, "", PAPER["random-init slower"], "no vision runs", NOT_TESTABLE,
                             "needs dinov2 and dinov2-random run groups (vlground demo --vision)"))
    return rows


CLAIMS: list[Callable[[Results, ClaimSettings], list[ClaimRow]]] = [
    claim_match_lt_mismatch, claim_r2, claim_flow, claim_heads, claim_reverse, claim_random_init,
]


def claims_table(results: Results, settings: ClaimSettings | None = None, *,
                 verdicts: list[dict] | None = None) -> list[ClaimRow]:
    """Every testable claim of the paper on ``results``, one row per (claim, group). A claim with
    no data at all gets one ``not testable here`` row saying what it needs. ``verdicts``: the
    report's verdict rows (:func:`vlground.stats.verdict_rows` with the same ``min_effect`` and
    ``correction``), so the match < mismatch rows quote them; computed from ``results`` when None."""
    s = settings or ClaimSettings()
    needs = {
        claim_match_lt_mismatch: "the behaviour probe", claim_r2: "the behaviour probe's words table on 3 or more checkpoints",
        claim_flow: "the saliency probe", claim_heads: "the ablation probe", claim_reverse: "reverse (lan2env) items",
    }
    names = {claim_match_lt_mismatch: ("match < mismatch", "match<mismatch"),
             claim_r2: ("R² rises then falls, info gain keeps rising", "r2 rise-fall"),
             claim_flow: ("environment flow peaks in middle layers after the R² drop", "flow middle"),
             claim_heads: ("aggregate, not gather(-only), heads are causal", "aggregate causal"),
             claim_reverse: ("the reverse direction is weaker", "reverse weaker")}
    rows: list[ClaimRow] = []
    for fn in CLAIMS:
        got = fn(results, s, verdicts) if fn is claim_match_lt_mismatch else fn(results, s)
        if not got and fn in names:
            title, key = names[fn]
            got = [ClaimRow(title, "", PAPER[key], "no data", NOT_TESTABLE, f"needs {needs[fn]}")]
        rows.extend(got)
    return rows


def render_claims_html(rows: list[ClaimRow], heading: bool = True) -> str:
    """The claims table as HTML: an ``<h2>`` and a ``<table>`` (only the table with ``heading=False``).

    Columns in reading order (claim, verdict, this run's numbers, the criterion, the paper's words),
    widths fixed so the table wraps inside the page instead of running past its right edge."""
    colour = {REPRODUCED: "#d9f2d9", NOT_REPRODUCED: "#f8d7d7", NOT_TESTABLE: "#eeeeee"}
    body = "".join(
        f"<tr style=\"background:{colour.get(r.verdict, '#fff')}\"><td>{html.escape(r.claim)}"
        f"{'<br><small>' + html.escape(r.group) + '</small>' if r.group else ''}</td><td><b>{html.escape(r.verdict)}</b></td>"
        f"<td>{html.escape(r.this_run)}</td><td class=crit>{html.escape(r.why)}</td><td class=quote>{html.escape(r.paper)}</td></tr>"
        for r in rows
    )
    return (("<h2>The paper's claims on this run</h2>" if heading else "") +
            "<table class=\"claims wrap\"><colgroup><col style=\"width:14%\"><col style=\"width:9%\"><col style=\"width:29%\">"
            "<col style=\"width:24%\"><col style=\"width:24%\"></colgroup>"
            "<thead><tr><th>claim (group)</th><th>verdict</th><th>this run</th><th>criterion (what the verdict tests)</th>"
            f"<th>paper (blog post)</th></tr></thead><tbody>{body}</tbody></table>")


def render_claims_text(rows: list[ClaimRow]) -> str:
    """The claims table as plain text lines (for the terminal): the verdict and this run's numbers,
    then the criterion on its own labelled line (never read as a result)."""
    return "\n".join(f"  [{r.verdict}] {r.claim}{' (' + r.group + ')' if r.group else ''}: {r.this_run}"
                     + f"\n      criterion: {r.why}" for r in rows)
