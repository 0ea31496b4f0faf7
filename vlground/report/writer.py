"""Write CSV tables, PNG plots and ``report.html`` (images inlined, so the file stands alone).

The report reads results only through :func:`vlground.results.load` (never torch or the engine).
Layout: key findings (the verdict per run group with effect size, interval and corrected p) ->
contents -> sections in pipeline order (training -> behaviour -> R² -> flow -> lens -> heads ->
ablation -> vision) -> every checkpoint -> notes -> provenance and settings. Every file is
written atomically (temporary file + rename).
"""
from __future__ import annotations

import csv
import html
import io
import logging
from pathlib import Path

from vlground import stats
from vlground.claims import ClaimSettings, claims_table, render_claims_html
from vlground.report import emergence, monitor_section, render
from vlground.report import sections as sec
from vlground.report import provenance as prov_mod
from vlground.report.html import Section, page, write_atomic
from vlground.report.tables import table  # noqa: F401  (kept for callers of writer.table)
from vlground.report.verdicts import final_rows, verdict_table
from vlground.results import Results, load, seed_summary

log = logging.getLogger(__name__)

#: tables written as CSV when present (the items table stays Parquet: items.parquet)
TABLES = ("flow", "heads", "ablation", "lens")


def _csv(path: Path, rows: list[dict]) -> Path:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols and not isinstance(r[k], (list, dict)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return write_atomic(path, buf.getvalue())


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


def _findings(verdicts: list[dict], min_effect: float, correction: str) -> str:
    if not verdicts:
        return "<p>No per-item behaviour results, so no verdict (run the <code>behaviour</code> probe).</p>"
    items = []
    for r in final_rows(verdicts):
        cls = "grounded" if r["verdict"] == "grounded" else "none"
        at = "the final model" if r["step"] is None else f"step {r['step']} (the last step with all {r['n_seeds']} seed(s))"
        items.append(f"<li><strong>{html.escape(str(r['group']))}</strong> at {at}: <span class={cls}>{html.escape(r['verdict'])}</span>"
                     f" — {html.escape(r['line'].rsplit(' -> ', 1)[0])}"
                     + (f" <em>({html.escape(r['power_note'])})</em>" if r.get("power_note") else "") + "</li>")
    corr = "without correction" if correction == "none" else f"after {correction.capitalize()} correction across each group's probed steps"
    return (f"<ul>{''.join(items)}</ul><p class=note>\"grounded\" needs a p-value below {stats.ALPHA} {corr} and an information gain "
            f"of at least {min_effect:g} nats (the minimum effect of interest, <code>--min-effect</code>); a significant "
            "effect below it is \"no meaningful effect\"; beside a null, the smallest gain the run could have detected (80% "
            "power, from the interval's width; vlground/power.py), so a null reads \"not at this budget\". Intervals: bootstrap over words and items (one seed) or a mixed "
            "model with random intercepts for word and seed (several seeds); see docs/statistics.md.</p>")


def write_report(out: str | Path, results: Results | None = None, *, min_effect: float = stats.MIN_EFFECT,
                 correction: str = "holm", command: str | None = None) -> Path:
    """Write tables, plots and ``report.html`` into ``out`` from the results there (read through
    :func:`vlground.results.load`, or ``results`` when given in-process); returns the report's path."""
    out = Path(out)
    res = results if results is not None else load(out)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)

    _csv(out / "checkpoints.csv", res.checkpoint_rows())
    _csv(out / "seeds.csv", seed_summary(res))
    _csv(out / "words.csv", res.rows("words"))
    for t in TABLES:
        if res.rows(t):
            _csv(out / f"{t}.csv", _flat(res.rows(t)))

    with render.rendering() as r:  # figures are drawn in worker processes while the next are built
        text = _page(res, plot_dir, out, min_effect, correction, command)
    return write_atomic(out / "report.html", r.fill(text) if r is not None else text)


def _page(res: Results, plot_dir: Path, out: Path, min_effect: float, correction: str, command: str | None) -> str:
    verdicts = verdict_table(res, min_effect=min_effect, correction=correction)
    if verdicts:
        _csv(out / "verdicts.csv", verdicts)
    parts = [
        Section("The paper's claims on this run", render_claims_html(claims_table(
            res, ClaimSettings(min_effect=min_effect, correction=correction), verdicts=verdicts), heading=False)),  # vlground.claims
        sec.training(res, plot_dir),
        sec.behaviour(res, verdicts, plot_dir, min_effect),
        emergence.section(res, verdicts, plot_dir, min_effect),  # gain vs training tokens, per density
        sec.r_squared(res, plot_dir),
        sec.flow(res, plot_dir),
        sec.lens(res, plot_dir),
        sec.heads(res, plot_dir),
        sec.ablation(res),
        sec.vision(res, plot_dir),
        sec.per_checkpoint(res),
    ]
    sections = [s for s in parts if s is not None]
    sections.extend(monitor_section.sections_for(out))  # vlground monitor outputs in OUT/monitor*/
    notes = res.all_notes()
    if notes:
        sections.append(Section("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"))
    sections.append(Section("Provenance and settings", prov_mod.render(prov_mod.provenance(command), res)))
    n_ck = len(res.checkpoints)
    adapters = prov_mod.adapters_of(res.settings)
    intro = (f"<p class=note>{n_ck} checkpoint(s) of {len({c['run'] for c in res.checkpoints})} run(s); "
             f"{'adapter' if len(adapters) == 1 else 'adapters'} {html.escape(', '.join(adapters) or 'not recorded')}; probes "
             f"{html.escape(', '.join(res.probes) or 'none')}. Layers are numbered from 1 (layer k = block k). Numbers have "
             "3 significant digits (p-values 2); every table is also a CSV next to this file (all rows and columns), and "
             "the per-item rows are in items.parquet.</p>")
    return page("vlground report", intro, _findings(verdicts, min_effect, correction), sections)
