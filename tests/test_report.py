"""The report: planted results -> verdicts, sections in pipeline order, HTML checks, plots that
do not dress up a tiny effect, and results of a pretrained VLM (one checkpoint, no seed, no step)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vlground.report import write_report
from vlground.report.check import check_report
from vlground.report.verdicts import final_verdict_lines, verdict_table
from vlground.results import Results, load, write


def _planted(tmp_path, groups={"transformer": 1.0, "lstm": 1e-3}, seeds=(0, 1, 2), steps=(0, 50, 100), vlm=False) -> Results:
    """Items whose information gain is ``effect * step / max(steps)`` per group, plus word noise."""
    rng = np.random.default_rng(0)
    checkpoints, records, items, words, flow = [], [], [], [], []
    for g, effect in groups.items():
        for s in seeds:
            for t in steps:
                run = f"{g}/seed-{s}" if not vlm else g
                key = f"{run}@{t}"
                ck = {"key": key, "run": run, "group": g, "seed": s, "step": t, "path": str(tmp_path / run / "checkpoints" / f"step-{t}")}
                checkpoints.append(ck)
                base = {k: ck[k] for k in ("key", "run", "group", "seed", "step")}
                gain = effect * (t / max(steps) if max(steps) else 1.0)
                m_all, mm_all = [], []
                for w in range(12):
                    wn = rng.normal(0, 0.05 if effect > 0.01 else 1e-4)
                    for i in range(4):
                        m = 3.0 + rng.normal(0, 0.2)
                        mm = m + gain + wn + rng.normal(0, 0.05 if effect > 0.01 else 1e-4)
                        m_all.append(m)
                        mm_all.append(mm)
                        pid = f"w{w}-{i}"
                        for cond, v in (("match", m), ("mismatch", mm)):
                            items.append({**base, "item_id": f"{pid}-{cond}", "pair_id": pid, "word": f"w{w}", "env_word": None,
                                          "condition": cond, "direction": "env2lan", "template": i, "surprisal": float(v)})
                    words.append({**base, "word": f"w{w}", "match": 3.0, "mismatch": 3.0 + gain, "info_gain": gain, "cooc": w})
                records.append({**base, "match_surprisal": float(np.mean(m_all)), "mismatch_surprisal": float(np.mean(mm_all)),
                                "info_gain": float(np.mean(mm_all) - np.mean(m_all)), "p_value": 1e-3, "r2_cooc": 0.3, "n_items": 96})
                for layer in (1, 2):
                    flow.append({**base, "layer": layer, "s_env": 1.0, "s_rest": 1.0, "env_flow": 1.0 + 0.1 * layer * gain})
    probes = {"behaviour": {"records": records, "tables": {"words": words}, "notes": []},
              "saliency": {"records": [], "tables": {"flow": flow}, "notes": []}}
    res = Results(settings={"adapter": "planted"}, checkpoints=checkpoints, probes=probes, notes=["a planted note"],
                  columnar={"items": items})
    write(res, tmp_path)
    return load(tmp_path)


def test_planted_results_give_the_planted_verdicts(tmp_path):
    res = _planted(tmp_path)
    rows = {(r["group"], r["step"]): r for r in verdict_table(res, n_boot=300)}
    big, tiny = rows[("transformer", 100)], rows[("lstm", 100)]
    assert big["verdict"] == "grounded" and big["ci_low"] < 1.0 < big["ci_high"] and big["n_seeds"] == 3
    assert tiny["verdict"] == "no meaningful effect" and abs(tiny["effect"] - 1e-3) < 1e-3
    assert rows[("transformer", 0)]["verdict"] != "grounded"
    assert "word and seed" in big["method"]
    lines = final_verdict_lines(tmp_path, n_boot=300)
    assert len(lines) == 2 and lines[0].startswith("lstm at step 100") and "no meaningful effect" in lines[0]
    assert "Holm-corrected p" in lines[1] and "[95% CI" in lines[1]


def test_report_sections_in_pipeline_order_and_html_checks(tmp_path):
    res = _planted(tmp_path)
    run_dir = tmp_path / "transformer" / "seed-0"
    run_dir.mkdir(parents=True)
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 0, "val_loss": 5.0}, {"step": 50, "loss": 4.0, "lr": 1e-3}, {"step": 100, "loss": 3.0}, {"step": 100, "val_loss": 3.2})))
    path = write_report(tmp_path, res, command="vlground probe --planted")
    info = check_report(path)
    order = [s for s in info["sections"] if s in ("training-curves", "behaviour-match-vs-mismatch", "r-against-co-occurrence",
                                                 "information-flow", "every-checkpoint", "notes", "provenance-and-settings")]
    # sections close in document order, children first; compare the top-level order
    top = re.findall(r'<section id="([^"]+)"><h2>', path.read_text())
    assert top[:5] == ["the-paper-s-claims-on-this-run", "training-curves", "behaviour-match-vs-mismatch", "r-against-co-occurrence",
                       "information-flow"]  # the claims table (vlground.claims) opens the report
    assert top[-2:] == ["notes", "provenance-and-settings"] and set(order) <= set(top)
    text = path.read_text()
    assert text.index("Key findings") < text.index("Contents") < text.index('id="training-curves"')
    assert "vlground probe --planted" in text and "transformers" in text and "class=tbl" in text and "<details class=raw>" in text
    assert "no meaningful effect" in text and ">grounded<" in text
    for f in ("verdicts.csv", "checkpoints.csv", "words.csv", "seeds.csv", "flow.csv", "plots/lstm-info-gain.png"):
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.glob(".*tmp*")) and not list((tmp_path / "plots").glob(".*tmp*"))


def test_tiny_effect_is_not_zoomed_into(tmp_path):
    """The lstm's 0.001-nat gain is drawn on an axis spanning at least ±2 x the minimum effect."""
    import pandas as pd

    from vlground.report import plots

    res = _planted(tmp_path)
    ck = res.frame("checkpoints")
    fig, ax = plots.plt.subplots()
    plots.seed_series(ax, ck[ck.group == "lstm"], "info_gain", "b", "gain")
    plots.effect_axis(ax, ck[ck.group == "lstm"]["info_gain"].tolist(), 0.1)
    lo, hi = ax.get_ylim()
    plots.plt.close(fig)
    assert lo <= -0.2 and hi >= 0.2
    assert isinstance(ck, pd.DataFrame)


def test_seed_bands_stay_in_range(tmp_path):
    from vlground.report import plots

    import pandas as pd

    df = pd.DataFrame({"step": [1, 1, 2, 2], "seed": [0, 1, 0, 1], "v": [0.05, 6.0, 0.1, 0.2]})
    fig, ax = plots.plt.subplots()
    plots.seed_series(ax, df, "v", "b", "v")
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    plots.plt.close(fig)
    assert band.min() >= 0.05 - 1e-12 and band.max() <= 6.0 + 1e-12


def test_one_checkpoint_of_a_pretrained_vlm_renders(tmp_path):
    """A VLM: one checkpoint, seed and step None, flow rows from --probes saliency (once a crash)."""
    # built by hand: the planted helper's steps are numbers; a pretrained model has step None
    items, flow = [], []
    base = {"key": "llava@final", "run": "llava", "group": "llava", "seed": None, "step": None}
    for w in range(6):
        for cond, v in (("match", 2.0), ("mismatch", 2.6 + 0.01 * w)):
            items.append({**base, "item_id": f"{w}{cond}", "pair_id": str(w), "word": f"w{w}", "condition": cond,
                          "direction": "env2lan", "template": 0, "surprisal": v})
    for layer in (1, 2, 3):
        flow.append({**base, "layer": layer, "s_env": None, "s_rest": None, "env_flow": None if layer == 2 else 0.5})
    res = Results(settings={"adapter": "llava15"}, checkpoints=[{**base, "path": "llava-hf/x"}],
                  probes={"behaviour": {"records": [{**base, "match_surprisal": 2.0, "mismatch_surprisal": 2.6, "info_gain": 0.6}],
                                        "tables": {}, "notes": []},
                          "saliency": {"records": [], "tables": {"flow": flow}, "notes": []}},
                  columnar={"items": items})
    write(res, tmp_path)
    path = write_report(tmp_path)
    check_report(path)
    text = path.read_text()
    assert "the final model" in text and "Information flow" in text
    (row,) = verdict_table(load(tmp_path), n_boot=200)
    assert row["step"] is None and row["n_seeds"] == 1 and row["effect"] == pytest.approx(0.625)


def test_frame_refuses_an_unknown_table_and_drops_empty_optional_columns(tmp_path):
    """``frame("typo")`` names the known tables; a text run's items carry no image columns."""
    from vlground.errors import InputError

    res = _planted(tmp_path, groups={"transformer": 1.0}, seeds=(0,), steps=(0, 10))
    with pytest.raises(InputError, match=r"unknown table 'item' \(known: checkpoints, items, words"):
        res.frame("item")
    assert res.frame("heads").empty  # a standard table no probe wrote: empty, not an error
    items = res.frame("items")
    assert not items.empty and not {"layout", "n_image_tokens", "n_inside"} & set(items.columns)
    rows = [{**r, "layout": None, "n_image_tokens": None, "n_inside": None} for r in items.to_dict("records")]
    rows[0]["n_inside"] = 3  # one image row: the column stays, with its empty cells
    vlm = Results(settings={}, checkpoints=res.checkpoints, probes=res.probes, columnar={"items": rows})
    assert "n_inside" in vlm.frame("items") and "layout" not in vlm.frame("items")


def test_find_chromium_honours_the_environment_and_says_how_to_install(tmp_path, monkeypatch):
    """``$VLGROUND_CHROMIUM`` picks the browser (no PyPI package ships one); a path that is not an
    executable is no browser; the hint names the system package."""
    from vlground.report.layout import INSTALL_HINT, find_chromium

    exe = tmp_path / "my-chrome"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("VLGROUND_CHROMIUM", str(exe))
    assert find_chromium() == str(exe)
    monkeypatch.setenv("VLGROUND_CHROMIUM", str(tmp_path / "missing"))
    assert find_chromium() is None
    assert "apt-get install chromium" in INSTALL_HINT and "PyPI" in INSTALL_HINT


def test_figures_drawn_by_workers_are_the_inline_figures(tmp_path, monkeypatch):
    """The report written with drawing processes is byte-for-byte the inline one (HTML and every PNG)."""
    import hashlib
    import shutil

    from vlground.report import render

    (tmp_path / "a").mkdir()
    res = _planted(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    written = {}
    for name, n in (("a", 1), ("b", 2)):
        monkeypatch.setattr(render, "default_workers", lambda n=n: n)
        html = write_report(tmp_path / name, load(tmp_path / name)).read_text()
        pngs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / name / "plots").glob("*.png")}
        written[name] = (html, pngs)
    assert written["a"][1] and written["a"][1] == written["b"][1]
    assert "vlground-figure" not in written["b"][0] and written["a"][0] == written["b"][0]
    assert res.checkpoints


def test_a_figure_that_fails_to_draw_is_an_error_and_one_that_does_not_pickle_is_drawn_inline(tmp_path):
    import matplotlib.pyplot as plt
    import pytest

    from vlground.report import plots, render
    from vlground.report.html import img

    with pytest.raises(RuntimeError, match="bad.png"):
        with render.rendering(2):
            fig, ax = plt.subplots()
            ax.plot([0, 1], [0, 1])
            plots._save(fig, tmp_path / "good.png")
            fig, ax = plt.subplots()
            ax.text(0, 0, r"$\notacommand{x}$")  # mathtext fails only when drawn
            plots._save(fig, tmp_path / "bad.png")
    assert (tmp_path / "good.png").is_file() and not (tmp_path / "bad.png").exists()
    with render.rendering(2) as r:
        fig, ax = plt.subplots()
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))  # a lambda does not pickle
        plots._save(fig, tmp_path / "lambda.png")
        assert not r.is_pending(tmp_path / "lambda.png") and (tmp_path / "lambda.png").is_file()
        fig, ax = plt.subplots()
        plots._save(fig, tmp_path / "later.png")
        tag = img(tmp_path / "later.png", "later")
        assert tag.startswith("<!--vlground-figure")
    assert r.fill(tag).startswith('<img src="data:image/png;base64,')
