"""What a null result could have detected: the power statement beside every non-"grounded" verdict.

A verdict of "no meaningful effect" or "no significant effect" at 2.5M tokens says *not at this
budget*, not *no grounding*; how much it says depends on how precise the estimate was. Two
numbers, both from the verdict's 95 % interval (so they need nothing but the verdict row):

* **detectable effect** (minimum detectable effect, MDE): the smallest true information gain that
  the verdict's one-sided test would have found significant with probability ``power`` (80 %),
  at level ``alpha / n_tests`` (the p-values are corrected across the ``n_tests`` probed steps of
  a group; Holm's first step, the strictest, is Bonferroni's ``alpha / n_tests``)::

      SE  = (ci_high - ci_low) / (2 z_{(1 + confidence) / 2})      # the interval's standard error
      MDE = (z_{1 - alpha / n_tests} + z_{power}) * SE

  This treats the estimate as normal with the interval's width as its spread (a Wald interval is
  exactly that; a percentile bootstrap interval approximately). It is a property of the run's
  precision, not of the estimate, so it does not use the estimate itself.
* **CI upper bound**: gains above ``ci_high`` are not compatible with the data (95 %).

:func:`power_note` puts both in words: ``not at this budget: could have detected >= 0.012 nats
(80% power, alpha 0.05/12); gains above +0.004 nats excluded (95% CI)``. The grounding
verdict itself (``vlground.stats.verdict``) still needs the minimum effect of interest, so a
detectable effect below it means the run could have seen any effect that matters.
"""
from __future__ import annotations

import math

from vlground.stats import ALPHA

#: power of the detectable-effect statement
POWER = 0.8


def detectable_effect(ci_low: float, ci_high: float, *, n_tests: int = 1, alpha: float = ALPHA,
                      power: float = POWER, confidence: float = 0.95) -> float:
    """Minimum detectable information gain (nats) of a one-sided test at ``alpha / n_tests`` with
    ``power``, from a ``confidence`` interval ``[ci_low, ci_high]`` (see the module docstring);
    NaN when the interval is not finite."""
    from scipy.stats import norm

    if not (math.isfinite(ci_low) and math.isfinite(ci_high)) or ci_high < ci_low:
        return math.nan
    if not 0 < alpha < 1 or not 0 < power < 1 or not 0 < confidence < 1 or n_tests < 1:
        raise ValueError("detectable_effect: alpha, power and confidence in (0, 1), n_tests >= 1")
    se = (ci_high - ci_low) / (2 * norm.ppf(0.5 + confidence / 2))
    return float((norm.ppf(1 - alpha / n_tests) + norm.ppf(power)) * se)


def _nats(x: float) -> str:
    from vlground.numbers import num  # one number format everywhere: the report's "detectable" column reads the same

    return num(x)


def power_note(detectable: float, ci_high: float, *, n_tests: int = 1, alpha: float = ALPHA, power: float = POWER) -> str:
    """``not at this budget: could have detected >= X nats (80% power, alpha 0.05/N); gains above
    +Y nats excluded (95% CI)``; empty when neither number is finite."""
    from vlground.numbers import signed

    parts = []
    if math.isfinite(detectable):
        level = f"alpha {alpha:g}" + (f"/{n_tests}" if n_tests > 1 else "")
        parts.append(f"could have detected >= {_nats(detectable)} nats ({power:.0%} power, {level})")
    if math.isfinite(ci_high):
        parts.append(f"gains above {signed(ci_high)} nats excluded (95% CI)")  # as the CI's upper end reads
    return ("not at this budget: " + "; ".join(parts)) if parts else ""


def with_power(rows: list[dict], *, alpha: float = ALPHA, power: float = POWER) -> list[dict]:
    """Verdict rows (``vlground.report.verdicts.verdict_table``) with ``detectable`` (nats) and
    ``power_note`` added; the note is empty for "grounded" rows. ``n_tests`` is the number of
    steps of the row's group (the p-values are corrected across them)."""
    n_steps: dict = {}
    for r in rows:
        n_steps[r.get("group")] = n_steps.get(r.get("group"), 0) + 1
    out = []
    for r in rows:
        n = n_steps[r.get("group")] if r.get("correction", "holm") != "none" else 1
        lo, hi = _float(r.get("ci_low")), _float(r.get("ci_high"))
        d = detectable_effect(lo, hi, n_tests=n, alpha=alpha, power=power)
        note = "" if r.get("verdict") == "grounded" else power_note(d, hi, n_tests=n, alpha=alpha, power=power)
        out.append({**r, "detectable": d, "power_note": note})
    return out


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan
