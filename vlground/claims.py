"""The paper's claims, tested on one run: ``claims_table(results) -> list[ClaimRow]``.

Each claim of Wu, Ma, Luo et al. (arXiv 2510.13796) that a probe run can test is one small
function below, with the paper's result quoted from its blog post, this run's numbers, and a
verdict: ``reproduced``, ``not reproduced`` or ``not testable here`` (with why). The tests read
results only through :mod:`vlground.results` (no torch, no models) and are documented in
``docs/claims.md``; every threshold is a field of :class:`ClaimSettings`.

Conventions: a run's *final* checkpoint is its largest step; a *group* is what the adapter pools
seeds over (an architecture on a corpus); a group's series is the mean over seeds at each step
(:func:`vlground.results.seed_summary`). Effects are in nats; a claim of an effect needs both a
p-value below ``alpha`` in every seed *and* an effect of at least ``min_effect`` (mean over seeds).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable

from vlground.results import Results, seed_summary
from vlground.stats import MIN_EFFECT

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE = "reproduced", "not reproduced", "not testable here"


@dataclass(frozen=True)
class ClaimSettings:
    """Thresholds of the claim tests (see docs/claims.md for why each is what it is)."""

    min_effect: float = MIN_EFFECT  #: smallest effect of interest, nats (information gain, intervention - control): vlground.stats.MIN_EFFECT
    alpha: float = 1e-3  #: significance level of an effect (the paper's ***, p < 0.001), in every seed
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
    """The architecture in a group name (``dinov2:transformer-tiny @ corpus`` -> ``transformer``)."""
    name = group.split(" @ ")[0].split(":")[-1]
    for size in ("-tiny", "-small", "-paper", "-custom"):
        name = name.removesuffix(size)
    return name


def _step(r: dict) -> int:
    """A checkpoint's step; a released model (no step) counts as -1, its run's only checkpoint."""
    return -1 if r.get("step") is None else r["step"]


def _finals(res: Results) -> dict[str, list[dict]]:
    """Per group, the final-checkpoint row of each run (largest step)."""
    last: dict[str, dict] = {}
    for r in res.checkpoint_rows():
        if r["run"] not in last or _step(r) > _step(last[r["run"]]):
            last[r["run"]] = r
    out: dict[str, list[dict]] = {}
    for r in last.values():
        out.setdefault(r.get("group") or r["run"], []).append(r)
    return out


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else math.nan


def _series(summary: list[dict], group: str, field: str) -> list[tuple[int, float]]:
    return [(s["step"], s[field]) for s in summary if s["group"] == group and s.get(field) is not None and s["step"] is not None]


def _p(p) -> str:
    from vlground.numbers import pval  # one number format everywhere

    return pval(p)


def _effect(vals: list[float], ps: list, s: ClaimSettings) -> tuple[bool, float, float]:
    """(significant with the minimum effect, mean effect, largest p) over seeds."""
    mean = _mean(vals)
    worst = max((p if p is not None else 1.0) for p in ps) if ps else 1.0
    return (math.isfinite(mean) and mean >= s.min_effect and worst < s.alpha), mean, worst


# -- the claims ----------------------------------------------------------------------------------------
def final_verdicts(res: Results, finals: dict[str, list[dict]], s: ClaimSettings) -> dict:
    """``{group: vlground.stats.Verdict}`` of the information gain pooled over each group's final
    checkpoints (one per seed), from the per-item rows (:func:`vlground.stats.group_verdicts`:
    a mixed model with random intercepts for word and seed); empty without item rows."""
    keys = {r["key"] for rs in finals.values() for r in rs}
    items = [r for r in res.rows("items") if r.get("key") in keys]
    if not items:
        return {}
    from vlground.stats import group_verdicts, item_gains

    gains = item_gains(items)
    if gains.empty:
        return {}
    gains["step"] = -1  # each run's final checkpoint, whatever its step
    return {g: v for (g, _), v in group_verdicts(gains, min_effect=s.min_effect).items()}


def claim_match_lt_mismatch(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group, at each run's final checkpoint. With per-item rows: the verdict of
    :func:`vlground.stats.verdict` on the gain pooled over seeds ("grounded" = significant after
    correction and >= min_effect). Without them: mean gain over seeds >= min_effect and the paired
    test p < alpha in every seed."""
    rows = []
    finals = _finals(res)
    verdicts = final_verdicts(res, finals, s)
    for group, fin in sorted(finals.items()):
        ig = [r.get("info_gain") for r in fin]
        if all(v is None for v in ig):
            continue
        ok, mean, worst = _effect(ig, [r.get("p_value") for r in fin], s)
        m, mm = _mean(r.get("match_surprisal") for r in fin), _mean(r.get("mismatch_surprisal") for r in fin)
        steps = sorted({"final" if r["step"] is None else r["step"] for r in fin}, key=str)
        desc = (f"final step {'/'.join(map(str, steps))}, {len(fin)} seed(s): match {m:.3f}, mismatch {mm:.3f}, "
                f"information gain {mean:+.3f} nats, largest per-seed p {_p(worst)}")
        why = f"information gain >= {s.min_effect} nats (mean over seeds) and p < {s.alpha:g} in every seed"
        if group in verdicts:
            v = verdicts[group]
            ok = v.label == "grounded"
            desc += f"; pooled: {v.line()}"
            why = f"vlground.stats verdict 'grounded' (p < {v.alpha:g} and the estimate >= {v.min_effect} nats)"
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


def claim_r2(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group (seed means over steps). Transformer / Mamba-2 / vision groups: R² has an interior
    peak with a rise and a fall of at least ``r2_change``, and information gain grows by at least
    ``min_effect`` from the R² peak to the last step. LSTM: the contrast (R² does not fall by
    ``r2_change`` and information gain grows by less than ``min_effect`` over the run)."""
    summary = seed_summary(res)
    rows = []
    for group in sorted({x["group"] for x in summary}):
        arch = arch_of(group)
        if arch not in ("transformer", "mamba2", "lstm"):
            continue
        r2, ig = _series(summary, group, "r2_cooc"), _series(summary, group, "info_gain")
        claim = "R² rises then falls, info gain keeps rising" if arch != "lstm" else "LSTM: R² rises, info gain barely grows"
        paper = PAPER["r2 lstm" if arch == "lstm" else "r2 rise-fall"]
        if len(r2) < 3 or not ig:
            rows.append(ClaimRow(claim, group, paper, f"{len(r2)} checkpoint(s) with R²", NOT_TESTABLE,
                                 "needs R² at 3 or more steps (behaviour probe over a checkpoint trajectory)"))
            continue
        ig_at = dict(ig)
        k = max(range(len(r2)), key=lambda i: r2[i][1])
        peak_step, peak = r2[k]
        desc = (f"R² {r2[0][1]:.2f} (step {r2[0][0]}) -> peak {peak:.2f} (step {peak_step}) -> {r2[-1][1]:.2f} "
                f"(step {r2[-1][0]}); information gain {ig[0][1]:+.3f} -> {ig_at.get(peak_step, math.nan):+.3f} "
                f"-> {ig[-1][1]:+.3f} nats")
        if arch == "lstm":
            ok = (peak - r2[-1][1]) < s.r2_change and r2[-1][1] - r2[0][1] > 0 and (ig[-1][1] - ig[0][1]) < s.min_effect
            why = f"R² ends above its start and falls < {s.r2_change} from its peak; information gain grows < {s.min_effect} nats"
        else:
            rf = rise_then_fall(r2, s)
            ok = rf is not None and ig[-1][1] - ig_at.get(rf[0], math.inf) >= s.min_effect
            why = (f"R² peaks inside the run, rising and falling by >= {s.r2_change}; information gain grows "
                   f">= {s.min_effect} nats from the R² peak to the last step")
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
    rows = []
    for group, steps in sorted(by.items()):
        last = max(steps)
        layers = {k: _mean(v) for k, v in steps[last].items()}
        n = max(layers)
        mid = middle_layers(n, s)
        peak_layer = max(layers, key=layers.get)
        mid_txt = f"{mid[0]}-{mid[-1]}" if mid else "none"
        desc = f"step {last}: environment flow peaks at layer {peak_layer} of {n} ({layers[peak_layer]:.2f}x the rest; middle = {mid_txt})"
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
                             desc + f"; middle-layer flow {before:.2f} at step {at} (R² peak {rf[0]}) -> {after:.2f} at step {last}",
                             REPRODUCED if ok else NOT_REPRODUCED,
                             f"peak layer in the middle and middle-layer flow rises >= {s.flow_rise:.0%} after the R² peak"))
    return rows


def _ablation_rows(res: Results, probe: str) -> dict[str, dict[str, list[dict]]]:
    """group -> head_type -> the rows at each run's final ablation checkpoint."""
    rows = res.rows("ablation", probe)

    last: dict[str, int] = {}
    for r in rows:
        last[r["run"]] = max(last.get(r["run"], _step(r)), _step(r))
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        if _step(r) == last[r["run"]]:
            out.setdefault(r["group"], {}).setdefault(r["head_type"], []).append(r)
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
    return ok, (f"interv. - ctrl. {mean:+.3f} nats, largest p {_p(worst)}, {n} items over {len(tested)}/{len(rs)} seed(s), "
                f"avg. count {_mean(r['avg_count'] for r in rs):.1f}")


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
        test = f"causal = intervention - control >= {s.min_effect} nats and p < {s.alpha:g} in every seed"
        out.append(ClaimRow(name, group, PAPER["aggregate causal"], desc, verdict, f"{why}{'; ' if why else ''}{test}"))
    for group, kinds in sorted(_ablation_rows(res, "boxablation").items()):
        results = {k: _ablation_effect(v, s) for k, v in sorted(kinds.items())}
        desc = "; ".join(f"{k}: {t}" for k, (_, t) in results.items())
        oks = [ok for ok, _ in results.values() if ok is not None]
        verdict = NOT_TESTABLE if not oks else REPRODUCED if any(oks) else NOT_REPRODUCED
        out.append(ClaimRow("box aggregate heads are causal", group, PAPER["box aggregate causal"], desc, verdict,
                            f"intervention - control >= {s.min_effect} nats and p < {s.alpha:g} in every seed, at some box level"))
    return out


def claim_reverse(res: Results, s: ClaimSettings) -> list[ClaimRow]:
    """Per group at the final checkpoints: the reverse (LAN -> ENV) information gain is below the
    forward one by >= min_effect, and still positive (match lower) with p < 0.05 in every seed."""
    rows = []
    for group, finals in sorted(_finals(res).items()):
        rev = [r.get("reverse_info_gain") for r in finals]
        if all(v is None for v in rev):
            continue
        fwd, back = _mean(r.get("info_gain") for r in finals), _mean(rev)
        worst = max((r.get("reverse_p_value") if r.get("reverse_p_value") is not None else 1.0) for r in finals)
        weaker = fwd - back >= s.min_effect
        still = back > 0 and worst < 0.05
        rows.append(ClaimRow(
            "the reverse direction is weaker", group, PAPER["reverse weaker"],
            f"information gain forward {fwd:+.3f}, reverse {back:+.3f} nats (reverse: largest p {_p(worst)})",
            REPRODUCED if weaker and still else NOT_REPRODUCED,
            f"forward - reverse >= {s.min_effect} nats and reverse gain > 0 with p < 0.05 in every seed"))
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
        desc = (f"final information gain {pre[-1][1]:+.3f} (pretrained) vs {rnd[-1][1]:+.3f} (random init); half of the "
                f"pretrained final ({level:+.3f}) reached at step {a} vs {'never' if b is None else b}")
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


def claims_table(results: Results, settings: ClaimSettings | None = None) -> list[ClaimRow]:
    """Every testable claim of the paper on ``results``, one row per (claim, group). A claim with
    no data at all gets one ``not testable here`` row saying what it needs."""
    s = settings or ClaimSettings()
    needs = {
        claim_match_lt_mismatch: "the behaviour probe", claim_r2: "the behaviour probe on 3 or more checkpoints",
        claim_flow: "the saliency probe", claim_heads: "the ablation probe", claim_reverse: "reverse (lan2env) items",
    }
    names = {claim_match_lt_mismatch: ("match < mismatch", "match<mismatch"),
             claim_r2: ("R² rises then falls, info gain keeps rising", "r2 rise-fall"),
             claim_flow: ("environment flow peaks in middle layers after the R² drop", "flow middle"),
             claim_heads: ("aggregate, not gather(-only), heads are causal", "aggregate causal"),
             claim_reverse: ("the reverse direction is weaker", "reverse weaker")}
    rows: list[ClaimRow] = []
    for fn in CLAIMS:
        got = fn(results, s)
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
