"""Calibration of the tests behind every verdict: type-I error on null data sets shaped like probe
items (words x frames x seeds, word-level random effects, no effect), power at a planted effect,
and no mixed-model fit that failed its checks reaching a verdict.

The simulated data (:mod:`vlground.simulate`) have a known answer, so a test of the right size
rejects about 5% of null data sets at alpha = 0.05; the bounds [0.02, 0.08] hold a correct test
with > 99% probability over 500 data sets (binomial sd 0.0097).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vlground import clustered, stats
from vlground.simulate import Design, draw, rejection_rates

DEMO = Design(words=40, frames=16, seeds=3)  # the demo's items: 40 object words x 16 frame pairs x 3 seeds
ONE = Design(words=40, frames=16, seeds=1)  # one checkpoint (the behaviour probe's word_p_value)


@pytest.mark.parametrize("design", [ONE, DEMO], ids=["one-seed", "demo"])
def test_word_t_has_the_right_size(design):
    rate = rejection_rates(design, ("word-t",), n_sets=1000, seed=11)["word-t"]
    assert 0.02 <= rate <= 0.08


@pytest.mark.slow
@pytest.mark.parametrize("design", [ONE, DEMO], ids=["one-seed", "demo"])
def test_cluster_bootstrap_has_the_right_size(design):
    rate = rejection_rates(design, ("bootstrap",), n_sets=500, seed=12, n_boot=499)["bootstrap"]
    assert 0.02 <= rate <= 0.08


@pytest.mark.slow
def test_checked_mixed_model_has_the_right_size():
    """The verdict's test with several seeds: checked MixedLM on word x seed means (fallback included)."""
    rate = rejection_rates(DEMO, ("mixed",), n_sets=500, seed=13, n_boot=499)["mixed"]
    assert 0.02 <= rate <= 0.08


def test_item_level_test_is_far_too_liberal():
    """Why the behaviour probe's Wilcoxon over item pairs is no longer a verdict's p-value: on the
    same null data it rejects several times more often than alpha."""
    assert rejection_rates(ONE, ("item-wilcoxon",), n_sets=300, seed=14)["item-wilcoxon"] > 0.15


def test_power_grows_with_a_planted_effect():
    """word-t at a planted effect of 3 standard errors of the mean rejects most data sets, more than at 1."""
    d = ONE
    se = math.sqrt(d.word_sd**2 / d.words + d.word_seed_sd**2 / d.words + d.item_sd**2 / (d.words * d.frames))
    low = rejection_rates(d, ("word-t",), effect=1 * se, n_sets=1000, seed=15)["word-t"]
    high = rejection_rates(d, ("word-t",), effect=3 * se, n_sets=1000, seed=16)["word-t"]
    # one-sided t(39) at a noncentrality of 1 and 3: power ~0.26 and ~0.91
    assert 0.15 < low < 0.4 and 0.84 < high < 0.97


def test_word_t_matches_an_independent_reference():
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(3)
    v, w = rng.normal(0.02, 0.1, 90), np.repeat(np.arange(30), 3)
    ref = ttest_1samp(pd.Series(v).groupby(w).mean(), 0.0, alternative="greater").pvalue
    assert stats.word_test(v, w).p_value == pytest.approx(ref)


def _cells(effect=0.0, seed=0):
    g = draw(DEMO, 1, effect, seed)[0].mean(axis=2)  # [words, seeds] cell means
    w, s = np.meshgrid(np.arange(DEMO.words), np.arange(DEMO.seeds), indexing="ij")
    return pd.DataFrame({"gain": g.ravel(), "word": w.ravel(), "seed": s.ravel()})


def test_a_fit_that_fails_its_checks_never_reaches_a_verdict(monkeypatch):
    """Every optimiser reports non-convergence: the estimate is the cluster bootstrap's and says so."""
    real = clustered._fit

    def failing(df, value, terms, method):
        fit, _ = real(df, value, terms, method)
        return fit, ["did not converge"]

    monkeypatch.setattr(clustered, "_fit", failing)
    monkeypatch.setattr(clustered, "_zero_component", lambda fit: None)
    cells = _cells(0.3)
    e = stats.mixed_effect(cells)
    assert "pigeonhole bootstrap" in e.method and "mixed model not accepted" in e.method
    assert all(m in e.method for m in clustered.OPTIMISERS)
    assert e.p_value < 0.05 and e.low < 0.3 < e.high
    assert math.isnan(stats.mixed_effect(cells, fallback=False).mean)
    v = stats.group_verdicts(cells.assign(group="g", step=5), n_boot=200)[("g", 5)]
    assert "mixed model not accepted" in v.estimate.method and "bootstrap" in v.line()


def test_a_failed_fit_is_refitted_with_the_next_optimiser(monkeypatch):
    real = clustered._fit
    calls = []

    def first_fails(df, value, terms, method):
        calls.append(method)
        fit, problems = real(df, value, terms, method)
        return (fit, ["Hessian not positive definite"]) if len(calls) == 1 else (fit, problems)

    monkeypatch.setattr(clustered, "_fit", first_fails)
    monkeypatch.setattr(clustered, "_zero_component", lambda fit: None)
    e = stats.mixed_effect(_cells(0.3, seed=1))
    assert calls[:2] == list(clustered.OPTIMISERS[:2])
    assert f"{clustered.OPTIMISERS[0]}: Hessian not positive definite; refit with {clustered.OPTIMISERS[1]}" in e.method
    assert e.low < 0.3 < e.high


def test_statsmodels_warnings_are_read_not_suppressed():
    """A real statsmodels fit: its ConvergenceWarnings are classified (boundary = fine, Hessian = not)."""
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    class W:
        def __init__(self, cat, msg):
            self.category, self.message = cat, msg

    class Fit:
        converged = True
        fe_params = np.array([0.1])
        bse_fe = np.array([0.02])

    ok = clustered._problems(Fit(), [W(ConvergenceWarning, "The MLE may be on the boundary of the parameter space.")])
    bad = clustered._problems(Fit(), [W(ConvergenceWarning, "The Hessian matrix at the estimated parameter values is not positive definite.")])
    assert ok == [] and bad == ["Hessian not positive definite"]
    Fit.bse_fe = np.array([float("nan")])
    assert "non-finite standard error" in clustered._problems(Fit(), [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mixed_effect itself leaks no warning
        stats.mixed_effect(_cells(0.0, seed=2))


def test_satterthwaite_df_limits():
    # a dominant seed variance with 2 seeds -> ~1 df; a dominant word variance with 40 words -> ~39
    assert clustered.satterthwaite_df({"word": 1e-9, "seed": 1.0, "residual": 1e-9}, {"word": 40, "seed": 2}, 80) == pytest.approx(1, abs=0.01)
    assert clustered.satterthwaite_df({"word": 1.0, "seed": 1e-9, "residual": 1e-9}, {"word": 40, "seed": 2}, 80) == pytest.approx(39, abs=0.1)
