"""Warnings a user would also see fail the test run (pyproject's ``filterwarnings``, issue 23 item 7),
also after the command line has configured its terminal in-process (``vlground.cli.terminal``)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest


def _sqrt_of_negative_in(module: str) -> None:
    """numpy's ``invalid value encountered in sqrt``, issued from code whose module is ``module``."""
    exec(compile("np.sqrt(np.array([-1.0]))", f"<{module}>", "exec"), {"np": np, "__name__": module})


@pytest.mark.parametrize("configured", [False, True], ids=["plain", "after-configure"])
def test_the_warnings_a_user_would_see_are_errors(configured):
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    if configured:
        from vlground.cli.terminal import configure

        configure()  # what every in-process `main([...])` does: it must not switch the errors off
    with pytest.raises(RuntimeWarning, match="invalid value encountered in sqrt"):
        _sqrt_of_negative_in("vlground.planted")
    with pytest.raises(ConvergenceWarning):
        warnings.warn("Maximum Likelihood optimization failed to converge", ConvergenceWarning)
    with pytest.raises(ResourceWarning):
        warnings.warn("unclosed file", ResourceWarning)
    with warnings.catch_warnings(record=True) as caught:  # third-party code's RuntimeWarnings stay warnings
        warnings.simplefilter("default")
        _sqrt_of_negative_in("somebody.else")
    assert [w.category for w in caught] == [RuntimeWarning]


def test_checked_mixed_fit_says_what_happened_and_warns_nothing():
    """Seeds that do not differ (seed variance 0, on the boundary): statsmodels' default optimiser
    does not converge here; the checked fit refits and says so in ``method`` (no warning escapes:
    this test runs with ConvergenceWarning as an error)."""
    import pandas as pd

    from vlground import stats

    rng = np.random.default_rng(0)
    rows = [{"word": f"w{w}", "seed": s, "gain": 1.0 + 0.05 * wn + 0.05 * rng.standard_normal()}
            for w, wn in enumerate(rng.standard_normal(12)) for s in range(3) for _ in range(4)]
    est = stats.mixed_effect(pd.DataFrame(rows))
    assert est.mean == pytest.approx(1.0, abs=0.1) and est.low < est.mean < est.high
    assert "bfgs: did not converge" in est.method and "refit with" in est.method, est.method
