"""How well a score detects hallucinated words: AUROC and AUPRC with seeded bootstrap CIs (numpy only).

Every detector is oriented *before* looking at labels: a larger detector value means "more likely
hallucinated". The grounding score, the word's probability and the image-attention shares enter
negated (low grounding flags a word); the predictive entropy enters as is. An AUROC below 0.5 is
reported as it is, never flipped.

* :func:`auroc`: the Mann-Whitney statistic, ``P(d_pos > d_neg) + P(d_pos = d_neg) / 2``.
* :func:`auprc`: average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct thresholds
  (tied values form one threshold), as scikit-learn's ``average_precision_score``; chance is the
  share of positives.
* :func:`bootstrap`: percentile CIs from resampling *groups* (images) with replacement, since the
  words of one image are not independent; resamples with a single class are redrawn. Paired
  differences (monitor minus baseline) use the same resamples for both detectors.

scikit-learn is not a dependency (it was not installed here); both metrics are a few lines and are
checked against hand-computed values in the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata


def auroc(labels: np.ndarray, detector: np.ndarray) -> float:
    """Area under the ROC curve of ``detector`` (larger = positive) for boolean ``labels``; nan if one class."""
    y = np.asarray(labels, dtype=bool)
    d = np.asarray(detector, dtype=float)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(d)  # average ranks for ties
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auprc(labels: np.ndarray, detector: np.ndarray) -> float:
    """Average precision of ``detector`` for boolean ``labels`` (ties are one threshold); nan without positives."""
    y = np.asarray(labels, dtype=bool)
    d = np.asarray(detector, dtype=float)
    n1 = int(y.sum())
    if n1 == 0 or len(y) == 0:
        return float("nan")
    order = np.argsort(-d, kind="mergesort")
    d, y = d[order], y[order]
    last = np.r_[np.nonzero(np.diff(d))[0], len(d) - 1]  # last index of each distinct threshold
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n1
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(labels: np.ndarray, detector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(labels, dtype=bool)
    d = np.asarray(detector, dtype=float)
    order = np.argsort(-d, kind="mergesort")
    d, y = d[order], y[order]
    last = np.r_[np.nonzero(np.diff(d))[0], len(d) - 1] if len(d) else np.array([], dtype=int)
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]


@dataclass
class Interval:
    value: float  #: the statistic on all words
    low: float  #: 2.5th percentile of the bootstrap resamples
    high: float  #: 97.5th percentile


def _resamples(labels: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Index arrays of ``n_boot`` cluster resamples holding both classes (seeded)."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.nonzero(inverse == g)[0] for g in range(len(uniq))]
    out, tries = [], 0
    while len(out) < n_boot and tries < 20 * n_boot:
        tries += 1
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        if labels[idx].any() and not labels[idx].all():
            out.append(idx)
    return out


def bootstrap(labels, detectors: Mapping[str, np.ndarray], groups=None, metric: Callable = auroc, n_boot: int = 1000,
              seed: int = 0, reference: str | None = None, level: float = 0.95) -> dict[str, dict[str, Interval]]:
    """``{name: {"value": Interval, "diff": Interval | None}}`` for each detector.

    ``detectors``: name -> ``[n]`` detector values, or ``[n, draws]`` (random head sets: the statistic is the
    mean over draws). ``groups``: ``[n]`` cluster ids (default: each word its own). ``reference``: the
    detector the paired differences ``reference - other`` are computed against (its own diff is None).
    """
    y = np.asarray(labels, dtype=bool)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    idx = _resamples(y, g, n_boot, seed)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def stat(d: np.ndarray, rows=slice(None)) -> float:
        d = np.asarray(d, dtype=float)
        if d.ndim == 1:
            return metric(y[rows], d[rows])
        return float(np.mean([metric(y[rows], d[rows, k]) for k in range(d.shape[1])]))

    boots = {name: np.array([stat(d, i) for i in idx]) for name, d in detectors.items()}
    full = {name: stat(d) for name, d in detectors.items()}
    out: dict[str, dict[str, Interval | None]] = {}
    for name in detectors:
        b = boots[name]
        value = Interval(full[name], *(np.nanpercentile(b, [lo_q, hi_q]) if len(b) else (np.nan, np.nan)))
        diff = None
        if reference is not None and name != reference and reference in detectors:
            db = boots[reference] - b
            diff = Interval(full[reference] - full[name], *(np.nanpercentile(db, [lo_q, hi_q]) if len(db) else (np.nan, np.nan)))
        out[name] = {"value": value, "diff": diff}
    return out


def evaluation_rows(labels, detectors: Mapping[str, np.ndarray], groups=None, n_boot: int = 1000, seed: int = 0,
                    reference: str | None = None, descriptions: Mapping[str, str] | None = None) -> list[dict]:
    """One row per detector: AUROC and AUPRC with CIs, the paired AUROC difference to ``reference``, counts."""
    y = np.asarray(labels, dtype=bool)
    roc = bootstrap(y, detectors, groups, auroc, n_boot, seed, reference)
    prc = bootstrap(y, detectors, groups, auprc, n_boot, seed, reference)
    rows = []
    for name in detectors:
        a, p, d = roc[name]["value"], prc[name]["value"], roc[name]["diff"]
        rows.append({
            "detector": name, "description": (descriptions or {}).get(name, ""),
            "auroc": a.value, "auroc_low": a.low, "auroc_high": a.high,
            "auprc": p.value, "auprc_low": p.low, "auprc_high": p.high, "auprc_chance": float(y.mean()) if len(y) else float("nan"),
            "auroc_diff_vs_reference": None if d is None else d.value,
            "auroc_diff_low": None if d is None else d.low, "auroc_diff_high": None if d is None else d.high,
            "n_words": int(len(y)), "n_hallucinated": int(y.sum()),
            "n_groups": int(len(np.unique(np.arange(len(y)) if groups is None else np.asarray(groups)))),
            "n_boot": n_boot, "seed": seed,
        })
    return rows


def fraction_beaten(labels, reference: np.ndarray, draws: np.ndarray) -> float:
    """Share of random head sets whose AUROC is >= the reference detector's (a permutation-style p-value)."""
    ref = auroc(labels, reference)
    vals = [auroc(labels, draws[:, k]) for k in range(draws.shape[1])]
    return float(np.mean([v >= ref for v in vals])) if vals else float("nan")


def describe(values: Sequence[float]) -> dict[str, float]:
    """Mean and quartiles of a score (for the report's distributions)."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        return {}
    q = np.percentile(v, [25, 50, 75])
    return {"mean": float(v.mean()), "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]), "n": int(len(v))}
