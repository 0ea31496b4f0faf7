"""The report reads whole at 1280 px: measured in headless Chromium (``vlground.report.layout``).

Skips with a reason when no Chromium-family browser is found (``vlground.report.layout.INSTALL_HINT``:
none on PATH and ``$VLGROUND_CHROMIUM`` unset; Debian: ``apt-get install chromium``; no PyPI package
ships one, so the ``[test]`` extra cannot). The rest of the suite, and ``.ci/run``, do not need it.
"""
from __future__ import annotations

import pytest

from vlground.report import write_report
from vlground.report.layout import INSTALL_HINT, find_chromium, measure_tables, problems

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=f"needs headless Chromium: {INSTALL_HINT}")

#: the report's old layout: nowrap cells in a 480-px scroll box (what issue 23 saw)
OLD = ("<!doctype html><html><head><style>body{max-width:1200px;margin:auto}.scroll{overflow-x:auto;max-height:480px;"
       "overflow-y:auto}td,th{white-space:nowrap;padding:2px 6px}</style></head><body><section id=wide><div class=scroll>"
       "<table><tr>" + "".join(f"<th>reverse_mismatch_surprisal_{i}</th>" for i in range(12)) + "</tr>"
       + "<tr>" + "".join("<td>0.000116</td>" for _ in range(12)) + "</tr>" * 40 + "</table></div></section></body></html>")


def test_the_checker_sees_a_clipped_table(tmp_path):
    """Negative control: a table wider than the window, hidden in a scroll box, is reported."""
    page = tmp_path / "old.html"
    page.write_text(OLD)
    found = problems(measure_tables(page, 1280))
    assert any("hidden in a scroll box" in p for p in found), found
    assert any("content in a" in p for p in found), found


def test_planted_report_fits_1280(tmp_path):
    """Three seeds x two groups x five steps (30 checkpoint rows: the rest folded), long claims:
    nothing cut off, with the folded rows opened too (what print shows)."""
    from test_report import _planted

    res = _planted(tmp_path, steps=(0, 25, 50, 75, 100))
    path = write_report(tmp_path, res, command="vlground probe --planted")
    lay = measure_tables(path, 1280)
    assert lay.window == 1280 and len(lay.tables) >= 8
    assert problems(lay) == []
    assert "<details class=more>" in path.read_text()  # the long checkpoint table folds its rest


@pytest.mark.slow
def test_real_probe_report_fits_1280(tiny_runs, tmp_path):
    """A real report: tiny Transformer and LSTM runs, every probe (claims, behaviour, flow, lens,
    heads, ablation, every checkpoint, provenance); no table clipped at 1280 px or in a scroll box."""
    from vlground.cli import main

    out = tmp_path / "rep"
    rc = main(["probe", "--adapter", "childes", "--run", str(tiny_runs["transformer"]), str(tiny_runs["lstm"]),
               "--probes", "behaviour,saliency,heads,ablation,lens", "--mechanistic-checkpoints", "last",
               "--lens-steps", "20", "--lens-tokens", "2000", "--out", str(out)])  # a small lens: layout, not its quality
    assert rc == 0
    lay = measure_tables(out / "report.html", 1280)
    sections = {t.section for t in lay.tables}
    assert {"head-ablation", "every-checkpoint", "provenance-and-settings"} <= sections, sections
    assert problems(lay) == []
    text = (out / "report.html").read_text()
    assert "adapter childes" in text and "adapter ?" not in text
    assert "vlground probe --adapter childes" in text  # the command as typed, in the provenance table
