"""Write CSV tables, PNG plots and ``report.html`` (images inlined, so the file stands alone)."""
from __future__ import annotations

import base64
import csv
import html
import json
import logging
from pathlib import Path

from vlground.report import plots
from vlground.results import Results, load, seed_summary

log = logging.getLogger(__name__)

#: top-level tables of results.json written as CSV when present
TABLES = ("flow", "heads", "ablation", "lens", "patches")


def _csv(path: Path, rows: list[dict]) -> Path:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols and not isinstance(r[k], (list, dict)))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _flat(rows: list[dict]) -> list[dict]:
    """Nested dict columns (``aggregate_frac: {"0.7": ...}``) as ``aggregate_frac@0.7`` columns."""
    out = []
    for r in rows:
        flat = {}
        for k, v in r.items():
            if isinstance(v, dict):
                flat.update({f"{k}@{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        out.append(flat)
    return out


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return html.escape(str(v))


def _html_table(rows: list[dict], cols: list[str], limit: int = 200) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows[:limit])
    more = f"<p class=note>{len(rows) - limit} more rows in the CSV.</p>" if len(rows) > limit else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def write_report(out: str | Path, results: Results | None = None) -> Path:
    """Write tables, plots and ``report.html`` into ``out`` from the results there (read through
    :func:`vlground.results.load`); returns the report's path."""
    out = Path(out)
    res = results if results is not None else load(out)
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    records = res.checkpoint_rows()
    summary = seed_summary(res)

    _csv(out / "checkpoints.csv", records)
    _csv(out / "seeds.csv", summary)
    words = res.rows("words")
    _csv(out / "words.csv", words)
    for t in TABLES:
        if res.rows(t):
            _csv(out / f"{t}.csv", _flat(res.rows(t)))

    sections: list[str] = []
    groups = sorted({s["group"] for s in summary})
    for g in groups:
        imgs = []
        safe = g.replace("/", "_")
        has_traj = sum(1 for s in summary if s["group"] == g) > 1
        if has_traj:
            imgs.append(plots.surprisal_plot(summary, g, plot_dir / f"{safe}-surprisal.png"))
            imgs.append(plots.info_gain_plot(summary, g, plot_dir / f"{safe}-info-gain.png"))
            if any(s.get("reverse_match_surprisal") is not None for s in summary if s["group"] == g):
                imgs.append(plots.surprisal_plot(summary, g, plot_dir / f"{safe}-reverse-surprisal.png", reverse=True))
                imgs.append(plots.info_gain_plot(summary, g, plot_dir / f"{safe}-reverse-info-gain.png", reverse=True))
        rows = [s for s in summary if s["group"] == g]
        cols = ["step", "n_seeds", "match_surprisal", "mismatch_surprisal", "info_gain", "r2_cooc",
                "reverse_match_surprisal", "reverse_mismatch_surprisal", "reverse_info_gain", "reverse_r2_cooc"]
        sections.append(
            f"<h2>{html.escape(g)}</h2><div class=figs>{''.join(_img(p) for p in imgs)}</div>"
            + _html_table(rows, [c for c in cols if any(r.get(c) is not None for r in rows)])
        )

    per_ckpt_cols = ["run", "seed", "step", "n_items", "match_surprisal", "mismatch_surprisal", "info_gain", "p_value", "r2_cooc",
                     "reverse_match_surprisal", "reverse_mismatch_surprisal", "reverse_info_gain", "reverse_p_value"]
    sections.append("<h2>Every checkpoint</h2>" + _html_table(records, [c for c in per_ckpt_cols if any(r.get(c) is not None for r in records)]))

    from vlground.report import mechanism_sections, monitor_section

    sections.extend(mechanism_sections.render(res, plot_dir, _img, _html_table))
    sections.extend(monitor_section.sections_for(out))  # vlground monitor outputs in OUT/monitor*/

    if records:
        last = {}
        for r in records:
            if r["step"] is None or r["run"] not in last or r["step"] > last[r["run"]]["step"]:
                last[r["run"]] = r
        wcols = ["word", "match", "mismatch", "info_gain", "cooc", "reverse_match", "reverse_mismatch", "reverse_info_gain"]
        for run, r in sorted(last.items()):
            ws = [w for w in words if w["key"] == r["key"]]
            sections.append(
                f"<h3>Per word, {html.escape(run)} at {'the final model' if r['step'] is None else 'step ' + str(r['step'])}</h3>"
                + _html_table(ws, [c for c in wcols if any(w.get(c) is not None for w in ws)])
            )
    notes = res.all_notes()
    settings = html.escape(json.dumps(res.settings, indent=1))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>vlground report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
th{{background:#f3f3f3}}.figs img{{max-width:48%;margin:4px}}pre{{background:#f7f7f7;padding:1em;font-size:11px}}.note{{color:#666}}</style>
</head><body><h1>vlground report</h1>
<p>Surprisal is in nats: -log p(target | context), summed over a word's sub-tokens where a tokenizer splits it
(teacher forcing: each sub-token is scored with the earlier ones in the input).
Information gain = mismatch surprisal - match surprisal. p-values: one-sided Wilcoxon signed-rank over item pairs
(mismatch &gt; match). R²: linear regression of per-word information gain on cumulative co-occurrence up to the step.
Bands: minimum to maximum over seeds. Layers are numbered from 1 (layer k = block k).</p>
{''.join(sections)}
<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(n)}</li>' for n in notes) or '<li>none</li>'}</ul>
<h2>Settings</h2><pre>{settings}</pre></body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
