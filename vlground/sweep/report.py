"""One combined report over a sweep's grid, from the probe outputs finished so far.

Each probe task writes ``OUT/probes/<run>/results.json`` for one run. Here their records and
tables are concatenated with ``run`` set to the sweep's run id (``<arch>/<variant>/seed-<k>``),
so the seed summary groups by architecture and corpus variant (drop-cooc level, vision init),
and the existing report writer turns the whole into ``OUT/report/``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from vlground.corpus.format import write_json
from vlground.sweep.spec import Task

log = logging.getLogger(__name__)


def combine(parts: list[tuple[str, dict]]) -> dict:
    """``[(run id, results.json of that run)]`` -> one results dict over all runs."""
    from vlground.engine.runner import RESULTS_VERSION, seed_summary

    records: list[dict] = []
    tables: dict[str, list[dict]] = {}
    notes: list[str] = []
    settings: dict[str, dict] = {}
    for rid, res in parts:
        for r in res.get("checkpoints", []):
            records.append({**r, "run": rid})
        for key, rows in res.items():
            if key in ("version", "settings", "checkpoints", "seeds", "notes") or not isinstance(rows, list):
                continue
            tables.setdefault(key, []).extend({**row, "run": rid} if isinstance(row, dict) and "run" in row else row for row in rows)
        notes.extend(f"{rid}: {n}" for n in res.get("notes", []) if f"{rid}: {n}" not in notes)
        settings[rid] = res.get("settings", {})
    return {"version": RESULTS_VERSION, "settings": {"runs": settings}, "checkpoints": records,
            "seeds": seed_summary(records), **tables, "notes": notes}


def write_combined(out: Path, probe_tasks: list[Task]) -> Path | None:
    """Write ``OUT/report/`` (results.json, tables, plots, report.html) from the probe outputs
    that exist; returns the report's path, or None when no probe has finished yet."""
    from vlground.report import write_report

    parts = []
    for t in probe_tasks:
        f = Path(t.output) / "results.json"
        if f.is_file():
            try:
                parts.append((t.run or t.id, json.loads(f.read_text(encoding="utf-8"))))
            except ValueError as exc:
                log.warning("%s: unreadable (%s); left out of the report", f, exc)
    if not parts:
        return None
    report = Path(out) / "report"
    report.mkdir(parents=True, exist_ok=True)
    results = combine(parts)
    write_json(report / "results.json", results)
    return write_report(report, results)
