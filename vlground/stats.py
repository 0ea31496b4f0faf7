"""Statistics behind a verdict: bootstrap CIs, mixed-effects estimates, multiple-testing
correction, seed bands that stay in the valid range, and the verdict itself.

Conventions
-----------
* Information gain of an item = mismatch surprisal - match surprisal (nats); positive means the
  matched context predicts the word better (grounding).
* :func:`bootstrap_ci` resamples *words*, then *items within each drawn word* (a two-stage
  cluster bootstrap), because items of one word are not independent. Seeded; percentile interval.
* :func:`mixed_effect` fits ``gain ~ 1 + (1 | word) + (1 | seed)`` with statsmodels ``MixedLM``
  (random intercepts for word and seed, crossed); the fixed intercept is the mean gain. A fit that
  did not converge or has a singular / non-positive-definite Hessian is refitted, else replaced by
  a cluster bootstrap, and ``method`` says so (:mod:`vlground.clustered`).
* :func:`word_test`: the t-test over per-word means, the clustered test of one checkpoint.
* Every p-value here accounts for word clustering; ``docs/statistics.md`` gives the type-I error
  and power of each test on simulated null and planted data (``scripts/power.py``).
* :func:`correct` adjusts p-values across checkpoints (Holm by default).
* :func:`verdict`: "grounded" only when the corrected p-value is below ``alpha`` *and* the
  estimate reaches ``min_effect`` (the minimum effect of interest, default
  :data:`MIN_EFFECT` = 0.1 nats); a significant effect below it is "no meaningful effect".
* :func:`seed_band` never leaves ``[min, max]`` of the seed values, so a band of surprisals is
  never negative and a band of R² never leaves ``[0, 1]``.

Every function takes plain arrays (or a pandas DataFrame where stated) and returns floats or
small dataclasses, so each can be checked by hand.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

#: the minimum effect of interest (nats of information gain) below which no effect is "meaningful"
MIN_EFFECT = 0.1
#: family-wise error rate / false discovery rate of the verdicts
ALPHA = 0.05
#: version of the verdict rows' definition (a cached verdict table of another version is recomputed)
VERDICTS_VERSION = 2
#: --correction name -> statsmodels ``multipletests`` method
CORRECTIONS = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh", "by": "fdr_by", "hommel": "hommel", "none": None}


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval."""

    mean: float  #: the estimate (nats)
    low: float  #: lower end of the interval
    high: float  #: upper end of the interval
    n: int  #: observations it rests on (items, or words for a word-level summary)
    method: str = ""  #: how the interval was made (e.g. "bootstrap over words and items")
    p_value: float = math.nan  #: one-sided p-value for mean > 0, when the method gives one

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_ci(values: Sequence[float], clusters: Sequence | None = None, *, n_boot: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval.

    With ``clusters`` (one label per value, e.g. the word of each item) the bootstrap has two
    stages: draw clusters with replacement, then values within each drawn cluster with
    replacement; the statistic is the mean over all drawn values. Without clusters, values are
    drawn directly. NaN values are dropped. ``seed`` makes the interval reproducible.
    """
    v = np.asarray(values, dtype=float)
    labels = np.zeros(v.size, dtype=int) if clusters is None else np.asarray(clusters)
    if labels.shape != v.shape:
        raise ValueError(f"bootstrap_ci: {v.size} values but {labels.size} cluster labels")
    ok = np.isfinite(v)
    v, labels = v[ok], labels[ok]
    if v.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "bootstrap")
    rng = np.random.default_rng(seed)
    mean = float(v.mean())
    if clusters is None:
        idx = rng.integers(0, v.size, size=(n_boot, v.size))
        boots = v[idx].mean(axis=1)
        method = "bootstrap over items"
    else:
        _, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")  # each cluster's values, in input order
        groups = np.split(v[order], np.cumsum(np.bincount(inverse))[:-1])
        # sums[b, w]: the sum over a within-cluster resample of cluster w in replicate b
        sums = np.stack([g[rng.integers(0, g.size, size=(n_boot, g.size))].sum(axis=1) for g in groups], axis=1)
        counts = np.array([g.size for g in groups], dtype=float)
        draw = rng.integers(0, len(groups), size=(n_boot, len(groups)))
        boots = np.take_along_axis(sums, draw, axis=1).sum(axis=1) / counts[draw].sum(axis=1)
        method = "bootstrap over words and items"
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return Estimate(mean, float(low), float(high), int(v.size), method)


def mixed_effect(data, value: str = "gain", word: str = "word", seed: str | None = "seed",
                 confidence: float = 0.95, *, fallback: bool = True, n_boot: int = 2000, boot_seed: int = 0) -> Estimate:
    """Fixed intercept of ``value ~ 1 + (1 | word) + (1 | seed)`` (statsmodels ``MixedLM``, REML).

    ``data`` is a pandas DataFrame with one row per item (or per word x seed cell). Word and seed
    enter as crossed random intercepts; the seed term is left out with one seed (or
    ``seed=None``). Every fit is checked (:func:`vlground.clustered.fit_mixed`: optimiser
    converged, no singular / non-positive-definite Hessian, finite standard error) and refitted
    with other optimisers when it fails; a variance estimated at 0 that breaks the Hessian drops
    its term. The interval and the one-sided p-value (intercept > 0) use a t reference with
    Satterthwaite-style degrees of freedom. When no fit is accepted and ``fallback`` is true, the
    estimate is the cluster bootstrap's (:func:`vlground.clustered.cluster_bootstrap`) and
    ``method`` says so; with ``fallback=False`` the estimate is NaN. ``method`` always names
    refits and dropped terms. NaN estimate with fewer than 2 words.
    """
    import pandas as pd
    from scipy.stats import t as student

    from vlground.clustered import cluster_bootstrap, fit_mixed

    df = pd.DataFrame(data)[[c for c in (value, word, seed) if c]].dropna()
    if df[word].nunique() < 2:
        return Estimate(math.nan, math.nan, math.nan, len(df), "mixed model (too few words)")
    fit = fit_mixed(df, value, word, seed)
    if fit.ok:
        q = float(student.ppf(0.5 + confidence / 2, fit.df)) if fit.df > 0 else math.nan
        terms = " and ".join(fit.terms)
        notes = "".join(f"; {n}" for n in fit.notes)
        return Estimate(fit.mean, fit.mean - q * fit.se, fit.mean + q * fit.se, len(df),
                        f"mixed model, random intercepts for {terms}, t({fit.df:.1f}){notes}", fit.p_value())
    if not fallback:
        return Estimate(math.nan, math.nan, math.nan, len(df), f"mixed model not accepted ({fit.failure})")
    b = cluster_bootstrap(df[value], df[word], df[seed] if seed else None, n_boot=n_boot, seed=boot_seed, confidence=confidence)
    return Estimate(b.mean, b.low, b.high, len(df), f"{b.method} (mixed model not accepted: {fit.failure})", b.p_value)


def word_test(values: Sequence[float], words: Sequence, confidence: float = 0.95) -> Estimate:
    """Mean of the per-word means with a t interval and one-sided p (mean > 0) over words
    (``df = words - 1``): the clustered test of one checkpoint (one seed). For a balanced design it
    is the exact REML test of the intercept of ``value ~ 1 + (1 | word)``."""
    from vlground.clustered import word_t_test

    r = word_t_test(values, words, confidence)
    return Estimate(r.mean, r.low, r.high, int(np.isfinite(np.asarray(values, dtype=float)).sum()), r.method, r.p_value)


def seed_test(seed_means: Sequence[float]) -> float:
    """One-sided Student t p-value (mean > 0) over per-seed means (``df = seeds - 1``); NaN with < 2 seeds."""
    from vlground.clustered import word_t_test

    v = np.asarray(seed_means, dtype=float)
    return word_t_test(v, np.arange(v.size)).p_value


def correct(pvalues: Sequence[float | None], method: str = "holm") -> list[float]:
    """Adjust p-values for multiple comparisons (``method`` one of :data:`CORRECTIONS`).

    NaN / None entries stay NaN and do not count as tests.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; known: {', '.join(CORRECTIONS)}")
    p = np.array([math.nan if x is None else x for x in pvalues], dtype=float)
    out = p.copy()
    ok = np.isfinite(p)
    if method == "holm" and ok.any():
        out[ok] = _holm(p[ok])
    elif CORRECTIONS[method] and ok.any():
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(p[ok], method=CORRECTIONS[method])[1]
    return [float(x) for x in out]


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, ``p_(i) * (m - i)`` (i from 0),
    made non-decreasing, capped at 1, back in input order. statsmodels' ``multipletests``
    computes the same (tests/test_stats.py checks them against each other) but its Holm branch
    calls ``gc.collect()``: ~90 ms per call in a process holding torch and pandas, and a report
    corrects every run group in both directions."""
    order = np.argsort(p, kind="mergesort")
    m = p.size
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out


def seed_band(values: Sequence[float], method: str = "minmax", *, confidence: float = 0.95,
              n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` over seeds; the band stays inside ``[min, max]`` of the values.

    ``minmax``: the range of the seeds. ``bootstrap``: percentile interval of the mean of seeds
    drawn with replacement. One value gives a zero-width band; NaNs are ignored.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(v.mean())
    if v.size == 1:
        return (m, m, m)
    if method == "minmax":
        return (m, float(v.min()), float(v.max()))
    if method == "bootstrap":
        boots = v[np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(boots, [tail, 100 - tail])
        return (m, float(low), float(high))
    raise ValueError(f"unknown seed band {method!r}; known: minmax, bootstrap")


def _nats(x: float) -> str:
    """``+0.812``, or two significant digits below 0.01 (``+0.00055``) so a tiny effect never prints as 0."""
    from vlground.numbers import signed  # one number format everywhere (vlground.numbers)

    return signed(x)


@dataclass(frozen=True)
class Verdict:
    """The claim about one run group at one checkpoint."""

    label: str  #: "grounded", "no meaningful effect" or "no significant effect"
    estimate: Estimate  #: effect size (nats) with its interval
    p_corrected: float  #: p-value after correction across checkpoints
    correction: str  #: the correction used
    n_seeds: int  #: seeds the estimate rests on
    min_effect: float  #: the minimum effect of interest (nats)
    alpha: float = ALPHA  #: significance level

    def line(self) -> str:
        """One human line: effect, interval, corrected p, label."""
        e = self.estimate
        seeds = f"{self.n_seeds} seeds" if self.n_seeds > 1 else "1 seed"
        from vlground.numbers import ci, p_text

        corr = "uncorrected" if self.correction == "none" else f"{self.correction.capitalize()}-corrected"
        return (f"information gain {_nats(e.mean)} nats [95% CI {ci(e.low, e.high)[1:]} ({e.method}; {seeds}), "
                f"{corr} {p_text(self.p_corrected)} -> {self.label}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["line"] = self.line()
        return d


def verdict(estimate: Estimate, p_corrected: float, *, n_seeds: int = 1, min_effect: float = MIN_EFFECT,
            alpha: float = ALPHA, correction: str = "holm") -> Verdict:
    """Decide the label: significant (``p_corrected < alpha``) and ``estimate.mean >= min_effect``
    -> "grounded"; significant but smaller than ``min_effect``, or an interval entirely below
    ``min_effect`` -> "no meaningful effect"; otherwise "no significant effect"."""
    sig = math.isfinite(p_corrected) and p_corrected < alpha
    if sig and estimate.mean >= min_effect:
        label = "grounded"
    elif sig or (math.isfinite(estimate.high) and estimate.high < min_effect):
        label = "no meaningful effect"
    else:
        label = "no significant effect"
    return Verdict(label, estimate, p_corrected, correction, n_seeds, min_effect, alpha)


def step_estimate(sdf, *, value: str = "gain", word: str = "word", seed_col: str = "seed", n_boot: int = 2000,
                  seed: int = 0) -> tuple[Estimate, int]:
    """``(estimate with its one-sided p, seeds)`` of one (group, step) of a per-item DataFrame.

    One seed: the item mean with the two-stage bootstrap interval over words and items
    (:func:`bootstrap_ci`) and the p-value of the t-test over word means (:func:`word_test`).
    Several seeds: :func:`mixed_effect` (crossed word and seed intercepts, checked fit, cluster
    bootstrap fallback) on the per-(word, seed) mean gains; ``n`` counts the items.
    """
    n_seeds = int(sdf[seed_col].nunique()) if seed_col in sdf else 1
    if n_seeds > 1:  # crossed word x seed fit on cell means: items enter through them (fast)
        cells = sdf.groupby([word, seed_col], as_index=False)[value].mean()
        mixed = mixed_effect(cells, value, word, seed_col, n_boot=n_boot, boot_seed=seed)
        return replace(mixed, n=len(sdf), method=f"{mixed.method} (on word x seed means)"), n_seeds
    boot = bootstrap_ci(sdf[value], sdf[word], n_boot=n_boot, seed=seed)
    wt = word_test(sdf[value], sdf[word])
    return Estimate(boot.mean, boot.low, boot.high, boot.n, f"{boot.method}; p: {wt.method}", wt.p_value), 1


def group_verdicts(items, *, min_effect: float = MIN_EFFECT, correction: str = "holm", alpha: float = ALPHA,
                   n_boot: int = 2000, seed: int = 0, group: str = "group", step: str = "step",
                   value: str = "gain", word: str = "word", seed_col: str = "seed") -> dict:
    """Verdicts for every (group, step) of a per-item DataFrame.

    ``items`` has one row per item and seed with columns ``group, step, seed, word, gain``; each
    (group, step) is tested by :func:`step_estimate` (never pooling steps), and the p-values are
    corrected across the steps of each group. Returns ``{(group, step): Verdict}``.
    """
    import pandas as pd

    df = pd.DataFrame(items)
    out: dict = {}
    for g, gdf in df.groupby(group, sort=True, dropna=False):
        keys, ests, seeds = [], [], []
        for s, sdf in gdf.groupby(step, sort=True, dropna=False):
            est, n_seeds = step_estimate(sdf, value=value, word=word, seed_col=seed_col, n_boot=n_boot, seed=seed)
            keys.append(s)
            ests.append(est)
            seeds.append(n_seeds)
        for s, est, p, n in zip(keys, ests, correct([e.p_value for e in ests], correction), seeds):
            out[(g, None if isinstance(s, float) and math.isnan(s) else s)] = verdict(
                est, p, n_seeds=n, min_effect=min_effect, alpha=alpha, correction=correction)
    return out


def verdict_rows(items, *, min_effect: float = MIN_EFFECT, correction: str = "holm", direction: str = "env2lan",
                 n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """The verdict table of a long items table (:func:`item_gains` -> :func:`group_verdicts`):
    rows ``{group, step, n_seeds, n_pairs, effect, ci_low, ci_high, method, p_value, p_corrected,
    correction, min_effect, verdict, line}``, groups sorted, steps ascending (a released model,
    step None, last). The report's key findings and the claims table both read these rows."""
    gains = item_gains(items, direction)
    if gains.empty:
        return []
    if "group" not in gains:
        gains["group"] = gains["run"] if "run" in gains else "all"
    gains["seed"] = gains["seed"].fillna(-1) if "seed" in gains else 0
    found = _memo_group_verdicts(gains, min_effect=min_effect, correction=correction, n_boot=n_boot, seed=seed)
    rows = []
    for (g, st), v in sorted(found.items(), key=lambda kv: (str(kv[0][0]), math.inf if kv[0][1] is None else kv[0][1])):
        e = v.estimate
        rows.append({"group": g, "step": None if st is None else int(st), "n_seeds": v.n_seeds, "n_pairs": e.n,
                     "effect": e.mean, "ci_low": e.low, "ci_high": e.high, "method": e.method, "p_value": e.p_value,
                     "p_corrected": v.p_corrected, "correction": correction, "min_effect": min_effect,
                     "verdict": v.label, "line": v.line()})
    return rows


#: the last few group_verdicts results of this process, keyed by a hash of the data they were computed from
_VERDICT_MEMO: dict = {}
_VERDICT_MEMO_SIZE = 8


def _memo_group_verdicts(gains, **options) -> dict:
    """:func:`group_verdicts`, remembered for identical inputs within the process: the report, the
    claims table and the demo's terminal lines all read the same verdicts, and each costs thousands
    of bootstrap draws per step. The key is a SHA-256 of every value the verdicts depend on (group,
    step, seed, word, gain, row order) and the options, so another input can never hit."""
    import hashlib

    import pandas as pd

    cols = [c for c in ("group", "step", "seed", "word", "gain") if c in gains]
    digest = hashlib.sha256(pd.util.hash_pandas_object(gains[cols], index=False).to_numpy().tobytes())
    digest.update(repr((cols, len(gains), [str(gains[c].dtype) for c in cols])).encode())
    key = (digest.hexdigest(), tuple(sorted(options.items())))
    if key not in _VERDICT_MEMO:
        if len(_VERDICT_MEMO) >= _VERDICT_MEMO_SIZE:
            _VERDICT_MEMO.pop(next(iter(_VERDICT_MEMO)))
        _VERDICT_MEMO[key] = group_verdicts(gains, **options)
    return dict(_VERDICT_MEMO[key])  # Verdicts are frozen; the dict is the caller's


def final_rows(rows: list[dict]) -> list[dict]:
    """Each group's *tested step*: the last step at which the group has all its seeds (the largest
    ``n_seeds`` of any of its steps), so runs that end at different steps are compared at their last
    common step and never pooled; a released model (step None) when the group has one. ``rows``:
    :func:`verdict_rows`. Returned groups sorted."""
    by: dict = {}
    for r in rows:
        by.setdefault(r["group"], []).append(r)
    out = []
    for g in sorted(by, key=str):
        rs = by[g]
        full = max(r["n_seeds"] for r in rs)
        released = [r for r in rs if r["step"] is None and r["n_seeds"] == full]
        common = [r for r in rs if r["step"] is not None and r["n_seeds"] == full]
        out.append(released[0] if released else max(common, key=lambda r: r["step"]))
    return out


def item_gains(items, direction: str = "env2lan"):
    """Per-pair information gain from a long items table (one row per item).

    ``items``: a DataFrame with ``pair_id, word, condition (match|mismatch), direction,
    surprisal`` and the checkpoint fields (``key, run, group, seed, step``). Returns one row per
    complete pair: the checkpoint fields, ``pair_id``, ``word`` and ``gain`` = mismatch - match.
    """
    import pandas as pd

    df = pd.DataFrame(items)
    if df.empty or "condition" not in df:
        return pd.DataFrame(columns=["group", "step", "seed", "word", "gain"])
    if "direction" in df:
        df = df[df["direction"] == direction]
    keys = [c for c in ("key", "run", "group", "seed", "step", "pair_id", "word") if c in df]
    wide = df.groupby(keys + ["condition"], dropna=False)["surprisal"].mean().unstack("condition").reset_index()
    if "match" not in wide or "mismatch" not in wide:
        return pd.DataFrame(columns=[*keys, "gain"])
    wide["gain"] = wide["mismatch"] - wide["match"]
    return wide.dropna(subset=["gain"])


def r2_test(cooc, gain, *, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0):
    """R² of per-word information gain on co-occurrence (``[seeds, words]`` each), mean over seeds,
    with a bootstrap interval over words and a permutation p-value
    (:func:`vlground.clustered.r2_over_words`; returns its ``R2Result``)."""
    from vlground.clustered import r2_over_words

    return r2_over_words(cooc, gain, n_boot=n_boot, n_perm=n_perm, seed=seed)
