"""Planted-answer tests of vlground.stats: data are drawn from a known model, so the right
answer (effect, interval coverage, corrected p-values) is known before the code runs."""
import math

import numpy as np
import pandas as pd
import pytest

from vlground import stats


def _hierarchical(rng, mu, n_words=20, n_items=10, word_sd=0.3, item_sd=1.0):
    word_eff = rng.normal(0, word_sd, n_words)
    words = np.repeat(np.arange(n_words), n_items)
    return mu + word_eff[words] + rng.normal(0, item_sd, words.size), words


def test_bootstrap_recovers_a_planted_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    v, w = _hierarchical(rng, 0.5, n_words=40)
    a = stats.bootstrap_ci(v, w, seed=3)
    assert a == stats.bootstrap_ci(v, w, seed=3)
    assert a != stats.bootstrap_ci(v, w, seed=4)
    assert a.low < 0.5 < a.high and a.low < a.mean < a.high
    assert a.mean == pytest.approx(v.mean())
    assert a.method == "bootstrap over words and items" and a.n == v.size


def test_cluster_bootstrap_is_wider_than_item_bootstrap_when_words_differ():
    rng = np.random.default_rng(2)
    v, w = _hierarchical(rng, 0.0, word_sd=2.0, item_sd=0.2)
    clustered = stats.bootstrap_ci(v, w)
    naive = stats.bootstrap_ci(v)
    assert (clustered.high - clustered.low) > 3 * (naive.high - naive.low)


@pytest.mark.parametrize("clustered", [True, False])
def test_bootstrap_ci_coverage_is_near_nominal(clustered):
    """95% intervals over 300 simulated data sets contain the true mean about 95% of the time."""
    rng = np.random.default_rng(7)
    mu, hits, reps = 0.25, 0, 300
    for r in range(reps):
        if clustered:
            v, w = _hierarchical(rng, mu, n_words=25, n_items=6, word_sd=0.5, item_sd=0.5)
        else:
            v, w = rng.normal(mu, 1.0, 80), None
        e = stats.bootstrap_ci(v, w, n_boot=400, seed=r)
        hits += e.low <= mu <= e.high
    # binomial sd at 0.95 and 300 reps is ~0.013; percentile bootstraps run a little narrow at small n
    assert 0.89 <= hits / reps <= 0.99


def test_bootstrap_handles_nan_and_empty():
    e = stats.bootstrap_ci([1.0, float("nan"), 3.0], ["a", "a", "b"])
    assert e.n == 2 and e.mean == 2.0
    assert math.isnan(stats.bootstrap_ci([], []).mean)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([1.0, 2.0], ["a"])


def test_holm_and_bonferroni_match_hand_computation():
    p = [0.01, 0.04, float("nan"), 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    holm = stats.correct(p, "holm")
    assert holm[0] == pytest.approx(0.03) and holm[1] == pytest.approx(0.06) and holm[3] == pytest.approx(0.06)
    assert holm[4] == pytest.approx(0.02) and math.isnan(holm[2])
    assert stats.correct(p, "bonferroni") == pytest.approx([0.04, 0.16, float("nan"), 0.12, 0.02], nan_ok=True)
    # Benjamini-Hochberg: sorted p*m/rank = 0.02, 0.02, 0.04, 0.04, step-up minimum from the top
    assert stats.correct(p, "bh") == pytest.approx([0.02, 0.04, float("nan"), 0.04, 0.02], nan_ok=True)
    assert stats.correct([0.2, None], "none")[0] == 0.2
    with pytest.raises(ValueError, match="known"):
        stats.correct(p, "holmes")


def test_holm_equals_statsmodels_and_the_bootstrap_its_per_cluster_reference():
    """Our Holm (no gc.collect) against statsmodels' on ties, extremes and sizes 1-40; the
    clustered bootstrap against a draw-by-draw loop that uses the same random numbers."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    cases = [rng.uniform(0, 1, n) for n in (1, 2, 7, 40)] + [rng.uniform(0, 0.05, 12), np.array([0.01, 0.01, 0.01, 0.5, 1.0, 0.0])]
    for p in cases:
        assert np.allclose(stats.correct(p, "holm"), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    v = rng.normal(0, 1, 57)
    words = rng.choice(list("abcdefg"), 57)
    est = stats.bootstrap_ci(v, words, n_boot=50, seed=5)
    r = np.random.default_rng(5)
    groups = [v[words == w] for w in sorted(set(words))]
    sums = np.stack([g[r.integers(0, g.size, size=(50, g.size))].sum(axis=1) for g in groups], axis=1)
    draw = r.integers(0, len(groups), size=(50, len(groups)))
    counts = np.array([g.size for g in groups], dtype=float)
    boots = np.take_along_axis(sums, draw, axis=1).sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1 - 0.95) / 2 * 100  # as bootstrap_ci computes it (2.4999999999999982)
    assert (est.low, est.high) == tuple(float(x) for x in np.percentile(boots, [tail, 100 - tail]))


def test_mixed_model_recovers_a_planted_fixed_effect():
    rng = np.random.default_rng(11)
    n_words, n_items, seeds = 30, 8, [0, 1, 2]
    word_eff = rng.normal(0, 0.5, n_words)
    rows = []
    for s in seeds:
        seed_eff = rng.normal(0, 0.2)
        for w in range(n_words):
            for _ in range(n_items):
                rows.append({"seed": s, "word": f"w{w}", "gain": 0.7 + word_eff[w] + seed_eff + rng.normal(0, 0.5)})
    df = pd.DataFrame(rows)
    e = stats.mixed_effect(df)
    assert e.low < 0.7 < e.high
    assert abs(e.mean - 0.7) < 0.35
    assert e.p_value < 0.05 and "word and seed" in e.method
    # seeds as a random effect make the interval wider than a word-only model would claim
    one = stats.mixed_effect(df, seed=None)
    assert (e.high - e.low) > (one.high - one.low)
    # no effect planted -> no significant effect
    df0 = df.assign(gain=df.gain - 0.7 - df.word.map(dict(zip([f"w{i}" for i in range(n_words)], word_eff))))
    assert stats.mixed_effect(df0).p_value > 0.01


def test_seed_band_never_leaves_the_range_of_the_seeds():
    surprisal = [0.05, 6.0]  # a Student-t band over 2 seeds goes far below zero
    from vlground.metrics import mean_band

    assert mean_band(surprisal)[1] < 0
    for method in ("minmax", "bootstrap"):
        m, lo, hi = stats.seed_band(surprisal, method)
        assert 0.05 <= lo <= m <= hi <= 6.0
    assert stats.seed_band([0.9, 0.95, 1.0], "minmax") == pytest.approx((0.95, 0.9, 1.0))
    assert stats.seed_band([2.0]) == (2.0, 2.0, 2.0)


def test_verdict_requires_the_minimum_effect():
    tiny = stats.Estimate(0.001, 0.0008, 0.0012, 640, "bootstrap")
    big = stats.Estimate(0.8, 0.6, 1.0, 640, "bootstrap")
    assert stats.verdict(tiny, 1e-12).label == "no meaningful effect"
    assert stats.verdict(big, 1e-6).label == "grounded"
    assert stats.verdict(big, 0.2).label == "no significant effect"
    assert stats.verdict(big, 1e-6, min_effect=1.5).label == "no meaningful effect"
    line = stats.verdict(big, 1e-6, n_seeds=3).line()
    assert "+0.800" in line and "[95% CI +0.600, +1.00]" in line and "Holm-corrected p < 1e-04" in line and "3 seeds" in line


def test_group_verdicts_on_planted_groups():
    rng = np.random.default_rng(5)
    rows = []
    for group, mu in (("transformer", 1.0), ("lstm", 0.001)):
        for step in (0, 100):
            eff = 0.0 if step == 0 else mu
            for w in range(15):
                for _ in range(6):
                    rows.append({"group": group, "step": step, "seed": 0, "word": f"w{w}",
                                 "gain": eff + rng.normal(0, 0.001 if group == "lstm" else 0.3)})
    v = stats.group_verdicts(pd.DataFrame(rows), n_boot=300)
    assert v[("transformer", 100)].label == "grounded"
    assert v[("lstm", 100)].label == "no meaningful effect"
    assert v[("transformer", 0)].label != "grounded"
    assert v[("transformer", 100)].n_seeds == 1


def test_item_gains_pairs_match_and_mismatch():
    rows = []
    for seed in (0, 1):
        for pair, (w, m, mm) in enumerate([("ball", 1.0, 3.0), ("dog", 2.0, 2.5)]):
            for cond, s in (("match", m), ("mismatch", mm)):
                rows.append({"key": f"r{seed}@5", "run": f"r{seed}", "group": "tf", "seed": seed, "step": 5, "pair_id": f"p{pair}",
                             "item_id": f"{pair}{cond}", "word": w, "condition": cond, "direction": "env2lan", "surprisal": s + seed})
            rows.append({**rows[-1], "direction": "lan2env", "surprisal": 99.0})
    rows.append({**rows[0], "pair_id": "lonely"})  # a match without its mismatch is not a pair
    g = stats.item_gains(pd.DataFrame(rows))
    assert sorted(g["gain"]) == [0.5, 0.5, 2.0, 2.0]
    assert set(g.columns) >= {"group", "seed", "step", "word", "gain"}


def test_group_verdicts_with_several_seeds_uses_the_crossed_model():
    rng = np.random.default_rng(9)
    rows = [{"group": "tf", "step": 10, "seed": s, "word": f"w{w}", "gain": 0.8 + rng.normal(0, 0.3)}
            for s in range(3) for w in range(12) for _ in range(4)]
    v = stats.group_verdicts(pd.DataFrame(rows), n_boot=200)[("tf", 10)]
    assert v.n_seeds == 3 and "word and seed" in v.estimate.method and v.estimate.n == len(rows)
    assert v.estimate.low < 0.8 < v.estimate.high and v.label == "grounded"


def test_verdict_rows_memo_never_returns_another_inputs_verdicts():
    """verdict_rows remembers verdicts for identical items (the report, claims and demo read them
    several times); a changed gain, word or seed must be recomputed, and the rows equal a fresh run."""
    import numpy as np
    import pandas as pd

    from vlground import stats

    rng = np.random.default_rng(0)
    rows = []
    for w in range(12):
        for k in range(4):
            base = {"group": "g", "step": 10, "seed": 0, "key": "r@10", "run": "r", "word": f"w{w}", "pair_id": f"w{w}-{k}",
                    "direction": "env2lan"}
            m = rng.normal(3.0, 0.1)
            rows.append({**base, "condition": "match", "surprisal": m})
            rows.append({**base, "condition": "mismatch", "surprisal": m + 0.3 + rng.normal(0, 0.05)})
    items = pd.DataFrame(rows)
    stats._VERDICT_MEMO.clear()
    first = stats.verdict_rows(items, n_boot=200)
    assert len(stats._VERDICT_MEMO) == 1
    again = stats.verdict_rows(items.copy(), n_boot=200)
    assert again == first and len(stats._VERDICT_MEMO) == 1  # same data: served from the memo
    changed = items.copy()
    changed.loc[changed["condition"] == "mismatch", "surprisal"] -= 0.3  # the effect removed
    other = stats.verdict_rows(changed, n_boot=200)
    assert len(stats._VERDICT_MEMO) == 2 and other[0]["effect"] < first[0]["effect"] - 0.2
    renamed = items.copy()
    renamed["word"] = renamed["word"].str.replace("w1", "v1")  # same gains, other words: other clusters
    stats.verdict_rows(renamed, n_boot=200)
    assert len(stats._VERDICT_MEMO) == 3
    stats._VERDICT_MEMO.clear()
    assert stats.verdict_rows(changed, n_boot=200) == other  # the memo returns what a fresh computation does
