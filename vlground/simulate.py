"""Simulated probe items with a known answer: the type-I error and power of each test of
:mod:`vlground.stats`.

A data set is shaped like a group's items at one step: ``words x frames x seeds`` pair gains

    gain[w, k, s] = effect + frame[k] + word[w] + seed[s] + word_seed[w, s] + item[w, k, s]

with ``word ~ N(0, word_sd)`` (a word that is easier in every seed), ``seed ~ N(0, seed_sd)``,
``word_seed ~ N(0, word_seed_sd)`` (a word easier in one seed only), ``item ~ N(0, item_sd)`` and
fixed, centred frame offsets (the frames are the design, not a sample). ``effect = 0`` is the
null. :func:`rejection_rates` runs each method on ``n_sets`` data sets and returns the share with
p < ``alpha``: the type-I error under the null, the power under a planted effect.

Methods (:data:`METHODS`) are the tests the verdicts use: ``word-t`` (one seed: t over word
means), ``bootstrap`` (cluster bootstrap: bootstrap-t over words with one seed, pigeonhole over
words and seeds with several), ``mixed`` (several seeds: the checked ``MixedLM`` on word x seed
means, as :func:`vlground.stats.step_estimate`, with its bootstrap fallback), and for comparison
``item-wilcoxon`` (the item-level test the behaviour probe used to report as ``p_value``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Design:
    """The shape and variance components of one simulated group at one step (nats)."""

    words: int = 40  #: target words
    frames: int = 16  #: frame pairs per word (the bundled templates: 4 ENV x 4 LAN)
    seeds: int = 3  #: seeds (runs) pooled
    word_sd: float = 0.05  #: SD of a word's gain shared by all seeds
    seed_sd: float = 0.0  #: SD of a seed's gain shared by all words
    word_seed_sd: float = 0.05  #: SD of a word's gain in one seed only
    item_sd: float = 0.1  #: SD of one pair's gain around its word x seed mean
    frame_sd: float = 0.05  #: spread of the fixed frame offsets


def draw(design: Design, n_sets: int, effect: float = 0.0, seed: int = 0) -> np.ndarray:
    """``[n_sets, words, seeds, frames]`` pair gains of ``n_sets`` independent data sets."""
    d = design
    rng = np.random.default_rng(seed)
    frame = np.random.default_rng(12345).normal(0, d.frame_sd, d.frames)
    frame -= frame.mean()
    shape = (n_sets, d.words, d.seeds)
    g = (effect + rng.normal(0, d.word_sd, (n_sets, d.words, 1)) + rng.normal(0, d.seed_sd, (n_sets, 1, d.seeds))
         + rng.normal(0, d.word_seed_sd, shape))[..., None]
    return g + frame + rng.normal(0, d.item_sd, (*shape, d.frames))


def _long(gains: np.ndarray):
    """One data set ``[words, seeds, frames]`` as (values, words, seeds) flat arrays."""
    w, s, _ = np.meshgrid(*(np.arange(n) for n in gains.shape), indexing="ij")
    return gains.ravel(), w.ravel(), s.ravel()


def p_values(method: str, sets: np.ndarray, *, n_boot: int = 999) -> np.ndarray:
    """One-sided p-values (mean gain > 0) of ``method`` on each data set of ``sets``."""
    from scipy.stats import wilcoxon

    from vlground.clustered import cluster_bootstrap, word_t_test_batch

    n_seeds = sets.shape[2]
    if method == "word-t":
        return word_t_test_batch(sets)
    if method == "bootstrap":
        out = []
        for i, g in enumerate(sets):
            v, w, s = _long(g)
            out.append(cluster_bootstrap(v, w, s if n_seeds > 1 else None, n_boot=n_boot, seed=i).p_value)
        return np.array(out)
    if method == "mixed":
        import pandas as pd

        from vlground.stats import step_estimate

        out = []
        for i, g in enumerate(sets):
            v, w, s = _long(g)
            est, _ = step_estimate(pd.DataFrame({"gain": v, "word": w, "seed": s}), n_boot=n_boot, seed=i)
            out.append(est.p_value)
        return np.array(out)
    if method == "item-wilcoxon":
        return np.array([wilcoxon(g.ravel(), alternative="greater").pvalue for g in sets])
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


#: the tests the verdicts use, and the item-level test for comparison
METHODS = ("word-t", "bootstrap", "mixed", "item-wilcoxon")


def rejection_rates(design: Design, methods=METHODS, *, effect: float = 0.0, n_sets: int = 500,
                    alpha: float = 0.05, seed: int = 0, n_boot: int = 999) -> dict[str, float]:
    """``{method: share of n_sets data sets with p < alpha}`` at a planted ``effect`` (0: the null)."""
    sets = draw(design, n_sets, effect, seed)
    return {m: float((p_values(m, sets, n_boot=n_boot) < alpha).mean()) for m in methods}
