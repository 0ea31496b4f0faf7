"""The emergence study: bundled sweeps, density settings, the power statement, information gain
against training tokens, and a tiny emergence sweep end to end (slow)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vlground.cli import main as cli
from vlground.power import detectable_effect, power_note, with_power
from vlground.report import emergence as E
from vlground.sweep import spec


def _load(name):
    from vlground.cli.sweep import spec_path

    return spec.load(spec_path(name))


@pytest.mark.parametrize("name, runs, min_tokens", [("emergence", 36, 100e6), ("emergence-cpu", 12, 10e6)])
def test_bundled_emergence_sweeps_plan_the_grid(name, runs, min_tokens, capsys):
    sw = _load(name)
    train = [t for t in sw.tasks if t.kind == "train"]
    assert len(train) == runs
    variants = {t.run.split("/")[1] for t in train}
    assert variants == {"childes-drop100", "childes", "two-thirds", "dense"}
    assert {t.run.split("/")[0] for t in train} == {"transformer", "lstm", "mamba2"}
    builds = {t.id: t for t in sw.tasks if t.kind == "build-corpus"}
    assert builds["build-corpus/childes-drop100"].kwargs["drop_cooc"] == 1.0  # "none": every co-occurring chunk dropped
    assert builds["build-corpus/childes"].kwargs["drop_cooc"] == 0.0
    # the largest checkpoint reaches the token budget: steps x batch (the size preset's, unless set) x 512
    from vlground.train.config import config_path, read_config_file

    argv = train[0].args[0]
    steps = int(argv[argv.index("--steps") + 1])
    size = argv[argv.index("--size") + 1]
    batch = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv else read_config_file(config_path("transformer", size))["train"]["batch_size"]
    assert steps * batch * 512 >= min_tokens
    dense_until = int(argv[argv.index("--checkpoint-dense-until") + 1])
    assert dense_until >= steps // 2  # log-spaced checkpoints over (nearly) the whole run
    assert cli(["sweep", name, "--dry-run"]) == 0
    assert f"{len(sw.tasks)} tasks" in capsys.readouterr().out


def test_density_settings_are_ordered(tmp_path):
    """The four densities of the sweep files, built small: object-word co-occurrence shares are
    none = 0 < CHILDES's third < two thirds < dense (measured on the built corpora)."""
    from vlground.corpus.format import Corpus
    from vlground.datasets.chat_generator import OBJECTS, build_default_corpus

    corpora = _load("emergence-cpu").data["corpora"]
    shares = {}
    for name, drop in (("childes", 1.0), ("childes", 0.0), ("two-thirds", 0.0), ("dense", 0.0)):
        opts = {k: v for k, v in corpora[name]["options"].items() if k not in ("files", "seed", "chunk_len")}
        d = build_default_corpus(tmp_path / f"{name}-{drop}", seed=3, n_files=160, drop_cooc=drop, **opts)
        c = Corpus.load(d)
        m = c.cooc.tocsr()
        words = list(c.pairs) if hasattr(c.pairs, "keys") else [p["word"] if isinstance(p, dict) else p for p in c.pairs]
        obj = np.array([w in OBJECTS for w in words])
        shares[(name, drop)] = float((np.asarray(m[:, obj].sum(1)).ravel() > 0).mean())
    assert shares[("childes", 1.0)] == 0.0
    assert 0.15 < shares[("childes", 0.0)] < 0.5 < shares[("two-thirds", 0.0)] < shares[("dense", 0.0)]
    assert 0.55 < shares[("two-thirds", 0.0)] < 0.78


def test_detectable_effect_has_the_stated_power():
    """A planted true effect equal to the detectable effect is found significant in ~80 % of
    simulated estimates (normal, with the interval's standard error), at alpha / n_tests."""
    from scipy.stats import norm

    se, n_tests = 0.02, 5
    mde = detectable_effect(-1.96 * se, 1.96 * se, n_tests=n_tests)
    rng = np.random.default_rng(0)
    est = rng.normal(mde, se, size=200_000)
    p = norm.sf(est / se)
    assert abs((p < 0.05 / n_tests).mean() - 0.8) < 0.01
    assert detectable_effect(-1.96 * se, 1.96 * se) < mde  # fewer tests: smaller detectable effect
    assert math.isnan(detectable_effect(math.nan, 1.0))


def test_power_note_only_beside_nulls():
    rows = [{"group": "g", "step": s, "effect": e, "ci_low": e - 0.01, "ci_high": e + 0.01, "verdict": v, "correction": "holm"}
            for s, e, v in ((0, 0.0, "no significant effect"), (10, 0.5, "grounded"))]
    out = with_power(rows)
    assert out[0]["power_note"].startswith("not at this budget: could have detected >= ")
    assert "alpha 0.05/2" in out[0]["power_note"] and "excluded (95% CI)" in out[0]["power_note"]
    assert out[1]["power_note"] == "" and math.isfinite(out[1]["detectable"])
    assert power_note(math.nan, math.nan) == ""


def _rows(tmp_path):
    """Planted verdict rows of two densities and the checkpoint rows they come from."""
    import json

    ckpts, verdicts = [], []
    for density, grounded_from in (("dense", 64), ("childes", None)):
        for step in (0, 16, 64, 256):
            d = tmp_path / density / f"step-{step}"
            d.mkdir(parents=True)
            (d / "checkpoint.json").write_text(json.dumps({"step": step, "tokens_seen": step * 4096}))
            group = f"transformer/{density}"
            ckpts.append({"key": f"{group}/seed-0@{step}", "run": f"{group}/seed-0", "group": group, "step": step, "path": str(d)})
            g = grounded_from is not None and step >= grounded_from
            e = 0.8 if g else 0.001
            verdicts.append({"group": group, "step": step, "effect": e, "ci_low": e - 0.02, "ci_high": e + 0.02,
                             "verdict": "grounded" if g else "no meaningful effect", "correction": "holm"})
    return ckpts, with_power(verdicts)


def test_emergence_rows_tokens_and_first_grounded(tmp_path):
    ckpts, verdicts = _rows(tmp_path)
    rows = E.emergence_rows(ckpts, verdicts)
    assert {(r["step"], r["tokens"]) for r in rows} == {(s, s * 4096) for s in (0, 16, 64, 256)}
    first = E.first_grounded(rows)
    assert first["transformer/dense"]["step"] == 64 and first["transformer/childes"] is None
    summ = {s["density"]: s["emergence"] for s in E.summary_rows(rows)}
    assert summ["dense"].startswith("grounded from 262k tokens (step 64)")
    assert summ["childes"].startswith("not within 1.05M tokens (step 256)") and "could have detected" in summ["childes"]
    png = E.gain_vs_tokens_plot(rows, tmp_path / "g.png", 0.1)
    assert png.is_file() and png.stat().st_size > 5000
    assert E.split_group("lstm/childes-drop100") == ("lstm", "childes-drop100")
    assert E.fmt_tokens(2_457_600) == "2.46M" and E.fmt_tokens(None) == "?"


def test_demo_sweep_has_both_corpora_with_one_budget():
    import argparse

    from vlground.cli.demo import add_arguments, demo_sweep, verdict_lines

    p = argparse.ArgumentParser()
    add_arguments(p)
    for argv in ([], ["--quick"]):
        sw = demo_sweep(p.parse_args(argv + ["--out", "x"]))
        train = [t for t in sw.tasks if t.kind == "train"]
        assert {t.run.split("/")[1] for t in train} == {"dense-control", "childes"}
        by_corpus = {}
        for t in train:
            a = t.args[0]
            by_corpus.setdefault(t.run.split("/")[1], set()).add((t.run.split("/")[0], a[a.index("--steps") + 1], t.run.split("/")[2]))
        assert by_corpus["dense-control"] == by_corpus["childes"]  # same models, seeds and steps on both corpora
    # every mechanistic checkpoint is one the schedule writes (--quick once asked for step 15 of 0,1,2,4,8,10,20,30)
    from vlground.train.checkpoint import checkpoint_steps

    for argv in ([], ["--quick"], ["--steps", "250"], ["--steps", "37"]):
        sw = demo_sweep(p.parse_args(argv + ["--out", "x"]))
        t = sw.data["train"]
        planned = checkpoint_steps(int(t["steps"]), int(t["checkpoint_every"]), int(t["checkpoint_dense_until"]))
        *marks, last = sw.data["probe"]["mechanistic_checkpoints"]
        assert marks and all(m in planned and 0 < m < int(t["steps"]) for m in marks) and last == "last", (argv, marks, planned)
        assert len([s for s in planned if s > 0]) >= 3, planned  # R² claims need R² (undefined at step 0) at 3 steps
    from vlground.cli.demo import _tokens, chunk_len

    default = demo_sweep(p.parse_args(["--out", "x"]))
    assert default.data["train"]["steps"] == 1500 and chunk_len(default) == 128  # the yaml's budget, not a CLI default
    assert _tokens(default) == 1500 * 16 * 128
    long = demo_sweep(p.parse_args(["--long", "--out", "x"]))
    assert long.data["train"]["steps"] == 2000 and long.data["grid"][0]["archs"] == ["transformer"]
    assert chunk_len(long) == 512 and long.data["train"]["batch_size"] == 8 and _tokens(long) == 8_192_000  # the paper's chunks
    build = [t for t in long.tasks if t.kind == "build-corpus"]
    assert build and all(t.kwargs["chunk_len"] == 512 for t in build)
    assert demo_sweep(p.parse_args(["--long", "--archs", "transformer,lstm", "--out", "x"])).data["grid"][0]["archs"] == ["transformer", "lstm"]
    from vlground.errors import InputError

    with pytest.raises(InputError, match="exclude"):
        demo_sweep(p.parse_args(["--long", "--quick", "--out", "x"]))
    lines = verdict_lines([
        {"group": "transformer/childes", "verdict": "no meaningful effect", "effect": 0.001, "ci_low": -0.01, "ci_high": 0.012,
         "power_note": "not at this budget: could have detected >= 0.02 nats"},
        {"group": "transformer/dense-control", "verdict": "grounded", "effect": 1.9, "ci_low": 1.5, "ci_high": 2.3, "power_note": ""},
    ], 1_638_400, 512)
    assert lines[0].startswith("dense control (a positive control only from ~6.1M tokens at 512-token chunks) at 1.64M tokens: "
                               "transformer grounded, +1.9 nats")
    assert verdict_lines([{"group": "transformer/dense-control", "verdict": "grounded", "effect": 2.5, "ci_low": 2.0, "ci_high": 3.0,
                           "power_note": ""}], 8_192_000)[0].startswith("dense control (positive control) at 8.19M tokens")
    assert lines[1].startswith("CHILDES density at 1.64M tokens: transformer no meaningful effect") and "not at this budget" in lines[1]


@pytest.mark.slow
def test_tiny_emergence_sweep_end_to_end(tmp_path):
    """Two densities (dense and all co-occurring chunks dropped) x tiny Transformer, 1 seed, on a
    local Ray: the combined report plots information gain against training tokens, and the
    tokens of each checkpoint are step x batch x chunk length (the train options, independently)."""
    from vlground.results import load
    from vlground.report.verdicts import verdict_table
    from vlground.sweep import driver

    dense = {"files": 24, "seed": 0, "chunk_len": 128, "act_prob": 0.6, "session_kinds": [["play", 0.7], ["book", 0.1], ["quiet", 0.2]]}
    data = {
        "out": str(tmp_path / "sw"), "size": "tiny",
        "corpora": {"dense": {"source": "generated", "options": dense}},
        "grid": [{"archs": ["transformer"], "seeds": [0], "corpus": "dense", "drop_cooc": [0.0, 1.0]}],
        "train": {"steps": 16, "batch_size": 4, "checkpoint_every": 0, "checkpoint_dense_until": 16, "warmup_steps": 2, "log_every": 8},
        "probe": {"adapter": "childes", "probes": ["behaviour"]},
        "resources": {"train": {"num_cpus": 1}, "probe": {"num_cpus": 1}, "build-corpus": {"num_cpus": 1}},
        "report_every_s": 3600,
    }
    outcome = driver.run_sweep(spec.from_dict(data), num_cpus=2)
    assert outcome.ok, outcome.failed
    report = outcome.report.parent
    assert (report / "plots" / "gain-vs-tokens.png").is_file()
    assert "Information gain against training tokens" in (report / "report.html").read_text(encoding="utf-8")
    res = load(report)
    rows = E.emergence_rows(res.checkpoints, verdict_table(res))
    assert {r["density"] for r in rows} == {"dense", "dense-drop100"}
    assert all(r["tokens"] == r["step"] * 4 * 128 for r in rows)
    assert {r["step"] for r in rows} == {0, 1, 2, 4, 8, 16}
    assert all("power_note" in r for r in rows)


def test_the_demo_driver_plans_without_importing_torch():
    """The driver process (Ray start, task graph, schedule) stays light: torch is imported only by the tasks."""
    import subprocess
    import sys

    code = ("import argparse, sys; from vlground.cli.demo import add_arguments, demo_sweep; "
            "p = argparse.ArgumentParser(); add_arguments(p); demo_sweep(p.parse_args(['--quick', '--out', 'x'])); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
