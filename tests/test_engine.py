"""The probing engine on a fake adapter (no weights): sweep, cache, resume, bad input, metrics."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vlground import metrics
from vlground.cli import main
from vlground.engine.registry import get_adapter_class, known_adapters, register_adapter, unregister_adapter
from vlground.probes.runner import run_probes, select_checkpoints
from vlground.results import load, seed_summary
from vlground.errors import InputError
from vlground.report import write_report
from vlground.testing import FakeAdapter, check_adapter


def test_fake_adapter_conforms():
    check_adapter(FakeAdapter.from_options({}))


def test_sweep_results_and_report(tmp_path):
    adapter = FakeAdapter.from_options({"n_words": 5, "steps": (0, 10, 20), "seeds": (0, 1, 2)})
    res = run_probes(adapter, out=tmp_path, progress=False)
    recs = res.checkpoint_rows()
    assert len(recs) == 9
    for r in recs:
        for k in ("key", "run", "group", "seed", "step", "match_surprisal", "mismatch_surprisal", "info_gain", "word_p_value", "item_p_value", "r2_cooc",
                  "reverse_match_surprisal", "reverse_mismatch_surprisal"):
            assert k in r
        assert r["info_gain"] == pytest.approx(r["mismatch_surprisal"] - r["match_surprisal"])
        assert {w["word"] for w in res.rows("words") if w["key"] == r["key"]} == {f"w{i}" for i in range(5)}
    last = [r for r in recs if r["step"] == 20]
    assert all(r["match_surprisal"] < r["mismatch_surprisal"] for r in last)
    assert all(r["word_p_value"] < 0.05 for r in last)
    step0 = [r for r in recs if r["step"] == 0]
    assert all(abs(r["info_gain"]) < 1e-6 for r in step0) and all(r["word_p_value"] is None for r in step0)
    # seeds summarised per group and step, with a band
    summ = [s for s in seed_summary(res) if s["step"] == 20]
    assert len(summ) == 1 and summ[0]["n_seeds"] == 3 and summ[0]["group"] == "fake"
    assert summ[0]["info_gain_low"] <= summ[0]["info_gain"] <= summ[0]["info_gain_high"]
    report = write_report(tmp_path, res)
    html = report.read_text()
    assert "<img" in html and "fake" in html
    for f in ("results.json", "checkpoints.csv", "words.csv", "seeds.csv", "plots/fake-surprisal.png"):
        assert (tmp_path / f).is_file(), f


def test_rerun_reuses_cache_and_resumes(tmp_path, monkeypatch):
    adapter = FakeAdapter.from_options({"steps": (0, 10), "seeds": (0,)})
    run_probes(adapter, out=tmp_path, progress=False)
    (tmp_path / "cache" / "fake-s0@10.json").unlink()  # as if interrupted before the last checkpoint
    loads = []
    orig = FakeAdapter.load
    monkeypatch.setattr(FakeAdapter, "load", lambda self, c: loads.append(c.step) or orig(self, c))
    res = run_probes(adapter, out=tmp_path, progress=False)
    assert loads == [10] and len(res.checkpoints) == 2


def test_other_probe_in_out_is_refused(tmp_path):
    run_probes(FakeAdapter.from_options({"n_words": 4}), out=tmp_path, progress=False)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(InputError, match="another probe"):
        run_probes(FakeAdapter.from_options({"n_words": 5}), out=tmp_path, progress=False)
    assert (tmp_path / "results.json").read_text() == before
    run_probes(FakeAdapter.from_options({"n_words": 5}), out=tmp_path, progress=False, overwrite=True)


def test_corrupt_checkpoint_is_skipped_with_a_note(tmp_path):
    adapter = FakeAdapter.from_options({"steps": (0, 10, 20), "seeds": (0,), "broken_steps": (10,)})
    res = run_probes(adapter, out=tmp_path, progress=False)
    assert [r["step"] for r in res.checkpoints] == [0, 20]
    assert any("corrupt" in n and "@10" in n for n in res.notes)


def test_select_checkpoints():
    cks = FakeAdapter.from_options({"steps": (0, 4, 8), "seeds": (0, 1)}).checkpoints()
    assert [(c.seed, c.step) for c in select_checkpoints(cks, "last")] == [(0, 8), (1, 8)]
    assert [(c.seed, c.step) for c in select_checkpoints(cks, "first,4")] == [(0, 0), (0, 4), (1, 0), (1, 4)]
    with pytest.raises(InputError):
        select_checkpoints(cks, "lastt")
    with pytest.raises(InputError):
        select_checkpoints(cks, "99")


def test_registry_builtins_and_errors():
    assert {"childes", "visdial_dinov2", "llava15"} <= set(known_adapters())
    with pytest.raises(InputError, match="known adapters: .*childes"):
        get_adapter_class("chides")
    assert get_adapter_class("vlground.testing:FakeAdapter") is FakeAdapter
    register_adapter("fake-local", FakeAdapter)
    try:
        assert get_adapter_class("fake-local") is FakeAdapter
        with pytest.raises(ValueError):
            register_adapter("fake-local", FakeAdapter)
    finally:
        unregister_adapter("fake-local")


def test_cli_unknown_adapter_is_one_line(tmp_path, capsys):
    rc = main(["probe", "--adapter", "nope", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "unknown adapter 'nope'" in err and "childes" in err


def test_cli_probe_with_module_path(tmp_path, capsys):
    rc = main(["probe", "--adapter", "vlground.testing:FakeAdapter", "--out", str(tmp_path / "o")])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(res["checkpoints"]) == 6 and (tmp_path / "o" / "report.html").is_file()


def test_r2_hand_computed():
    # y = 1 + 2x exactly: R² = 1; constant x: undefined
    assert metrics.r_squared([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(1.0)
    assert math.isnan(metrics.r_squared([1, 1, 1], [1, 2, 3]))
    # x = [0,1,2,3], y = [1,3,2,5]: Sxy = 5.5, Sxx = 5 -> slope 1.1, intercept 2.75 - 1.65 = 1.1
    # fitted [1.1, 2.2, 3.3, 4.4], residuals [-.1, .8, -1.3, .6]: SS_res = 2.7; SS_tot = 8.75
    assert metrics.r_squared([0, 1, 2, 3], [1, 3, 2, 5]) == pytest.approx(1 - 2.7 / 8.75)


def test_paired_test_and_band():
    rng = np.random.default_rng(0)
    m = rng.normal(size=30)
    assert metrics.paired_test(m, m + 1.0) < 1e-3
    assert metrics.paired_test(m, m - 1.0) > 0.9
    assert math.isnan(metrics.paired_test(m, m))
    mean, lo, hi = metrics.mean_band([1.0, 2.0, 3.0])
    assert mean == 2.0 and lo < 2.0 < hi
    assert metrics.mean_band([5.0]) == (5.0, 5.0, 5.0)
    assert metrics.stars(1e-4) == "***" and metrics.stars(0.2) == ""


def test_groups_come_from_the_adapter(tmp_path):
    res = run_probes(FakeAdapter.from_options({"seeds": (0, 1)}), progress=False)
    assert {c["group"] for c in res.checkpoints} == {"fake"} and {c["run"] for c in res.checkpoints} == {"fake-s0", "fake-s1"}


def test_cli_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build-corpus", "--bogus", "x"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "error" in err
