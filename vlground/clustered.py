"""Tests of a mean information gain that account for word clustering (and seeds).

Items of one word are not independent: a probe's 16 frame pairs of ``ball`` share ``ball``, and
the seeds of a group share the words. A test that counts items as independent observations is
anti-conservative (too many significant results under the null). Three tests here, each
one-sided (H1: mean gain > 0); :mod:`vlground.stats` decides which one a verdict uses:

* :func:`word_t_test` -- Student's t over per-word means (``df = words - 1``). With several
  seeds a word's mean is over its seeds, so seeds are treated as fixed.
* :func:`cluster_bootstrap` -- a bootstrap-t over words (one seed), or a pigeonhole bootstrap
  over words and seeds independently (several seeds; Owen 2007), of the item mean.
* :func:`fit_mixed` -- ``gain ~ 1 + (1 | word) [+ (1 | seed)]`` by statsmodels ``MixedLM``
  (REML). A fit is accepted only when the optimiser converged, no singular-matrix or
  non-positive-definite-Hessian warning was raised and the standard error is finite; otherwise it
  is refitted with the next optimiser of :data:`OPTIMISERS`; a variance component estimated at
  zero whose Hessian entry is what breaks the fit is dropped (the fixed effect is the same).
  If no fit is accepted the result says why (:class:`MixedFit.failure`) and the caller falls back
  to :func:`cluster_bootstrap`. The p-value uses a t reference with Satterthwaite-style degrees of
  freedom from the variance components (:func:`satterthwaite_df`): with two seeds and a real seed
  variance the reference is a t with ~1 df, not the normal.

The frames (templates) are treated as fixed: the estimand is the gain averaged over the given
frames, as the paper's claims are about its templates.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: optimisers tried in turn by :func:`fit_mixed` (statsmodels ``MixedLM.fit(method=...)``)
OPTIMISERS = ("bfgs", "lbfgs", "cg", "powell", "nm")


@dataclass(frozen=True)
class TestResult:
    """A one-sided test of mean > 0 with an interval."""

    mean: float  #: the estimate (nats)
    low: float  #: lower end of the interval
    high: float  #: upper end of the interval
    p_value: float  #: one-sided p-value, mean > 0
    method: str  #: how it was computed


def _t_p(t: float, df: float) -> float:
    from scipy.stats import t as student

    if not math.isfinite(t) or not df > 0:
        return math.nan
    return float(student.sf(t, df))


def word_t_test(values, words, confidence: float = 0.95) -> TestResult:
    """One-sided Student t over per-word means of ``values`` (NaNs dropped); ``df = words - 1``."""
    from scipy.stats import t as student

    v = np.asarray(values, dtype=float)
    w = np.asarray(words)
    ok = np.isfinite(v)
    v, w = v[ok], w[ok]
    _, inv = np.unique(w, return_inverse=True)
    n_w = int(inv.max()) + 1 if v.size else 0
    if n_w < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, "t-test over word means (too few words)")
    means = np.bincount(inv, weights=v) / np.bincount(inv)
    m, se = float(means.mean()), float(means.std(ddof=1) / math.sqrt(n_w))
    q = float(student.ppf(0.5 + confidence / 2, n_w - 1))
    p = _t_p(m / se, n_w - 1) if se > 0 else (0.0 if m > 0 else 1.0 if m < 0 else math.nan)
    return TestResult(m, m - q * se, m + q * se, p, f"t-test over {n_w} word means")


def word_t_test_batch(cells: np.ndarray) -> np.ndarray:
    """Vectorised :func:`word_t_test` p-values for balanced data: ``cells`` is ``[n_sets, words, ...]``
    (trailing axes averaged into the word mean). Returns ``[n_sets]`` one-sided p-values."""
    from scipy.stats import t as student

    means = cells.reshape(cells.shape[0], cells.shape[1], -1).mean(axis=2)
    n_w = means.shape[1]
    t = means.mean(1) / (means.std(1, ddof=1) / math.sqrt(n_w))
    return student.sf(t, n_w - 1)


def _pigeonhole(sums: np.ndarray, counts: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """Bootstrap means ``[n_boot]`` of a word x seed table of item sums and counts, drawing words
    and seeds independently with replacement (multiplicities ``a[b, w]`` and ``c[b, s]``)."""
    n_w, n_s = sums.shape
    a = np.stack([np.bincount(r, minlength=n_w) for r in rng.integers(0, n_w, size=(n_boot, n_w))]).astype(float)
    c = np.stack([np.bincount(r, minlength=n_s) for r in rng.integers(0, n_s, size=(n_boot, n_s))]).astype(float)
    num = np.einsum("bw,ws,bs->b", a, sums, c)
    den = np.einsum("bw,ws,bs->b", a, counts, c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def cluster_bootstrap(values, words, seeds=None, *, n_boot: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> TestResult:
    """Item mean with a one-sided p-value (mean > 0) and interval from a cluster bootstrap.

    One seed (``seeds`` None or one level): a bootstrap-t over words -- words are drawn with
    replacement, the statistic is ``(m* - m) / se*`` with ``se*`` the cluster (word-level)
    standard error of the drawn words; ``p = (1 + #{t* >= t}) / (n_boot + 1)``; the interval is
    the bootstrap-t interval. Several seeds: words and seeds are drawn independently (pigeonhole
    bootstrap), ``p = (1 + #{m* - m >= m}) / (n_boot + 1)`` and a percentile interval.
    """
    v = np.asarray(values, dtype=float)
    w = np.asarray(words)
    s = np.zeros(v.size, dtype=int) if seeds is None else np.asarray(seeds)
    ok = np.isfinite(v)
    v, w, s = v[ok], w[ok], s[ok]
    _, wi = np.unique(w, return_inverse=True)
    _, si = np.unique(s, return_inverse=True)
    n_w = int(wi.max()) + 1 if v.size else 0
    n_s = int(si.max()) + 1 if v.size else 0
    if n_w < 2:
        return TestResult(math.nan, math.nan, math.nan, math.nan, "cluster bootstrap (too few words)")
    rng = np.random.default_rng(seed)
    m = float(v.mean())
    tail = (1 - confidence) / 2
    if n_s < 2:
        sums = np.bincount(wi, weights=v, minlength=n_w)
        cnt = np.bincount(wi, minlength=n_w).astype(float)

        def se_of(S, C, Q, R, mean, k):  # cluster SE of a ratio mean from drawn sums
            ss = Q - 2 * mean * R + mean**2 * k
            return np.sqrt(np.maximum(ss, 0) * n_w / (n_w - 1)) / C

        idx = rng.integers(0, n_w, size=(n_boot, n_w))
        S, C = sums[idx].sum(1), cnt[idx].sum(1)
        Q, R, K = (sums**2)[idx].sum(1), (sums * cnt)[idx].sum(1), (cnt**2)[idx].sum(1)
        mb = S / C
        seb = se_of(S, C, Q, R, mb, K)
        se = float(se_of(sums.sum(), cnt.sum(), (sums**2).sum(), (sums * cnt).sum(), m, (cnt**2).sum()))
        with np.errstate(invalid="ignore", divide="ignore"):
            tb = (mb - m) / seb
        tb = tb[np.isfinite(tb)]
        if se <= 0 or tb.size == 0:
            return TestResult(m, m, m, 0.0 if m > 0 else 1.0, f"bootstrap-t over {n_w} words (no spread)")
        t = m / se
        p = (1 + int((tb >= t).sum())) / (tb.size + 1)
        qlo, qhi = np.quantile(tb, [tail, 1 - tail])
        return TestResult(m, float(m - qhi * se), float(m - qlo * se), float(p), f"bootstrap-t over {n_w} words")
    sums = np.zeros((n_w, n_s))
    cnt = np.zeros((n_w, n_s))
    np.add.at(sums, (wi, si), v)
    np.add.at(cnt, (wi, si), 1.0)
    mb = _pigeonhole(sums, cnt, n_boot, rng)
    mb = mb[np.isfinite(mb)]
    p = (1 + int((mb - m >= m).sum())) / (mb.size + 1)
    lo, hi = np.quantile(mb, [tail, 1 - tail])
    return TestResult(m, float(lo), float(hi), float(p), f"pigeonhole bootstrap over {n_w} words and {n_s} seeds")


def satterthwaite_df(components: dict[str, float], levels: dict[str, int], n_obs: int) -> float:
    """Degrees of freedom of the intercept's t reference, Satterthwaite-style.

    ``components``: variance components ``{"word": s2_w, "seed": s2_s, "residual": s2_e}``;
    ``levels``: levels of each random term. The intercept's variance is approximated by the
    balanced-design sum ``c_k = s2_k / n_k`` (residual: ``s2_e / n_obs``), each with ``n_k - 1``
    degrees of freedom (residual: ``n_obs - sum(n_k - 1) - 1``); ``df = (sum c)^2 / sum(c^2 / df)``.
    A dominant seed term with two seeds gives ~1 df; a dominant word term ``words - 1``.
    """
    terms = []
    used = 0
    for k, s2 in components.items():
        if k == "residual" or not s2 > 0:
            continue
        n = levels[k]
        terms.append((s2 / n, max(n - 1, 1)))
        used += n - 1
    res = components.get("residual", 0.0)
    if res > 0:
        terms.append((res / n_obs, max(n_obs - used - 1, 1)))
    if not terms:
        return math.nan
    tot = sum(c for c, _ in terms)
    return float(tot**2 / sum(c**2 / d for c, d in terms))


@dataclass
class MixedFit:
    """An accepted ``MixedLM`` fit of the intercept, or why none was accepted."""

    mean: float = math.nan  #: fixed intercept (nats)
    se: float = math.nan  #: its standard error
    df: float = math.nan  #: degrees of freedom of the t reference (:func:`satterthwaite_df`)
    terms: tuple = ()  #: random terms kept ("word", "seed")
    optimiser: str = ""  #: the optimiser of the accepted fit
    notes: list[str] = field(default_factory=list)  #: refits and dropped terms, in order
    failure: str = ""  #: non-empty when no fit was accepted

    @property
    def ok(self) -> bool:
        return not self.failure

    def p_value(self) -> float:
        return _t_p(self.mean / self.se, self.df) if self.se > 0 else math.nan


def _problems(fit, caught) -> list[str]:
    """What is wrong with a fit: optimiser not converged, singular or non-PD Hessian, bad SE."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    out = []
    for w in caught:
        msg = str(w.message)
        if issubclass(w.category, ConvergenceWarning):
            if "boundary" in msg or "Retrying" in msg:
                continue  # a variance estimated at 0 is a legitimate estimate; a retry is followed up below
            out.append("Hessian not positive definite" if "Hessian" in msg else "did not converge")
        elif "singular" in msg.lower():
            out.append("singular covariance")
    if not getattr(fit, "converged", False):
        out.append("did not converge")
    b, se = float(np.asarray(fit.fe_params)[0]), float(np.asarray(fit.bse_fe)[0])
    if not (math.isfinite(b) and math.isfinite(se) and se > 0):
        out.append("non-finite standard error")
    return sorted(set(out))


def _fit(df, value: str, terms: tuple, method: str):
    """One REML fit of ``value ~ 1`` with crossed variance components ``terms`` (0/1 design
    matrices, one all-encompassing group, as statsmodels documents crossed effects)."""
    import pandas as pd
    from statsmodels.regression.mixed_linear_model import MixedLM

    vc = {}
    for t in terms:
        codes, _ = pd.factorize(df[t])
        vc[t] = {1: (codes[:, None] == np.arange(codes.max() + 1)).astype(float)}
    n = len(df)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = MixedLM(df[value].to_numpy(float), np.ones((n, 1)), groups=np.ones(n), exog_vc=vc).fit(reml=True, method=[method])
        except (np.linalg.LinAlgError, ValueError) as exc:
            return None, [f"failed ({type(exc).__name__})"]
    return fit, _problems(fit, caught)


def fit_mixed(data, value: str = "gain", word: str = "word", seed: str | None = "seed",
              optimisers: tuple = OPTIMISERS) -> MixedFit:
    """Fit ``value ~ 1 + (1 | word) [+ (1 | seed)]`` (crossed variance components, REML), checking
    each fit and refitting as described in the module docstring. ``data``: a DataFrame."""
    import pandas as pd

    df = pd.DataFrame(data)[[c for c in (value, word, seed) if c]].dropna()
    df = df.rename(columns={word: "word", **({seed: "seed"} if seed else {})}).assign(_all=1)
    levels = {"word": int(df["word"].nunique())}
    if seed and df["seed"].nunique() > 1:
        levels["seed"] = int(df["seed"].nunique())
    if levels["word"] < 2:
        return MixedFit(failure="fewer than 2 words")
    terms = tuple(levels)
    notes: list[str] = []
    failed: list[tuple[str, str]] = []
    queue = list(optimisers)
    while queue:
        method = queue.pop(0)
        fit, problems = _fit(df, value, terms, method)
        if fit is not None and not problems:
            comps = dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp)))
            comps["residual"] = float(fit.scale)
            mean, se = float(np.asarray(fit.fe_params)[0]), float(np.asarray(fit.bse_fe)[0])
            dfree = satterthwaite_df({k: float(v) for k, v in comps.items()}, levels, len(df))
            if failed:
                notes.append(f"{', '.join(f'{m}: {p}' for m, p in failed)}; refit with {method}")
            return MixedFit(mean, se, dfree, terms, method, notes)
        failed.append((method, "; ".join(problems) if problems else "failed"))
        zero = _zero_component(fit) if fit is not None and len(terms) > 1 else None
        if zero is not None:
            # a variance at zero makes the Hessian singular in its direction: drop the term, start again
            notes.append(f"{', '.join(f'{m}: {p}' for m, p in failed)}; {zero} variance estimated at 0: term dropped")
            terms, failed, queue = tuple(t for t in terms if t != zero), [], list(optimisers)
    why = "; ".join(f"{m}: {p}" for m, p in failed)
    log.info("mixed model not accepted (%s)", why)
    return MixedFit(terms=terms, notes=notes, failure=why)


def _zero_component(fit) -> str | None:
    """The random term whose variance ``fit`` puts at ~0 (relative to the residual), if any."""
    comps = dict(zip(fit.model.exog_vc.names, np.atleast_1d(fit.vcomp)))
    small = [k for k, v in comps.items() if not v > 1e-6 * max(float(fit.scale), 1e-300)]
    return small[0] if small else None


@dataclass(frozen=True)
class R2Result:
    """R² of per-word information gain on co-occurrence, mean over seeds, with its uncertainty."""

    r2: float  #: mean over seeds of each seed's R² (the behaviour probe's ``r2_cooc``)
    low: float  #: percentile bootstrap interval over words (the same words drawn in every seed)
    high: float
    p_value: float  #: permutation p: co-occurrence counts shuffled over words (one shuffle for all seeds)
    n_words: int
    n_seeds: int


def _r2_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared Pearson correlation along the last axis (NaN where x or y is constant)."""
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
    return r**2


def r2_over_words(x, y, *, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0, confidence: float = 0.95) -> R2Result:
    """R² of ``y ~ a + b x`` per seed, averaged over seeds; ``x`` and ``y`` are ``[seeds, words]``
    (co-occurrence counts and per-word information gains, words aligned across seeds).

    Interval: words drawn with replacement (the same draw in every seed), percentile. p-value: the
    word labels of ``x`` permuted (the same permutation in every seed),
    ``p = (1 + #{R²_perm >= R²}) / (n_perm + 1)``: the chance of an R² this large when gains and
    co-occurrence are unrelated across words.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    n_s, n_w = y.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no seed with an R² (constant x or y)
        obs = float(np.nanmean(_r2_rows(x, y))) if n_w >= 3 else math.nan
    if not math.isfinite(obs):
        return R2Result(math.nan, math.nan, math.nan, math.nan, n_w, n_s)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_w, size=(n_boot, n_w))
    perm = np.argsort(rng.random((n_perm, n_w)), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a draw of one repeated word has no R²
        boots = np.nanmean(_r2_rows(x[:, idx], y[:, idx]), axis=0)
        null = np.nanmean(_r2_rows(x[:, perm], y[:, None, :]), axis=0)
    tail = (1 - confidence) / 2
    lo, hi = np.nanquantile(boots, [tail, 1 - tail])
    p = (1 + int((null >= obs - 1e-12).sum())) / (n_perm + 1)
    return R2Result(obs, float(lo), float(hi), float(p), n_w, n_s)
