"""One combined report over a sweep's grid, from the probe outputs finished so far.

Each probe task writes ``OUT/probes/<run>/`` (results schema v2, :mod:`vlground.results`) for
one run. Here their checkpoints, probe records, tables, per-item rows and arrays are put
together with ``run`` set to the sweep's run id (``<arch>/<variant>/seed-<k>``), ``group`` to
that id without the seed (so seed bands are over the seeds of one architecture x drop-cooc level
x vision init) and ``key`` to ``<run>@<step>``; the existing report writer turns the whole into
``OUT/report/``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from vlground.errors import InputError
from vlground.runid import checkpoint_key
from vlground.sweep.spec import Task

log = logging.getLogger(__name__)


def group_of(run_id: str) -> str:
    """``transformer/childes-drop50/seed-3`` -> ``transformer/childes-drop50``."""
    return re.sub(r"/seed-\d+$", "", run_id)


def combine(parts: list, out: Path | None = None):
    """``[(run id, Results of that run's probe folder)]`` -> one :class:`~vlground.results.Results`.

    With ``out``, the per-checkpoint array files are linked (or copied) into ``out/arrays`` under
    the new keys, so the report finds them.
    """
    from vlground.results import Results, array_file_name

    checkpoints: list[dict] = []
    probes: dict[str, dict] = {}
    items: list[dict] = []
    notes: list[str] = []
    settings: dict[str, dict] = {}
    for rid, res in parts:
        group = group_of(rid)
        keys = {c["key"]: checkpoint_key(rid, c.get("step")) for c in res.checkpoints}

        def fix(row: dict) -> dict:
            if "key" not in row and "run" not in row:
                return row
            return {**row, "key": keys.get(row.get("key"), row.get("key")), "run": rid, "group": group}

        checkpoints.extend(fix(c) for c in res.checkpoints)
        for name, p in res.probes.items():
            dst = probes.setdefault(name, {"records": [], "tables": {}, "notes": []})
            dst["records"].extend(fix(r) for r in p.get("records", []))
            for table, rows in p.get("tables", {}).items():
                dst["tables"].setdefault(table, []).extend(fix(r) for r in rows)
            dst["notes"].extend(f"{rid}: {n}" for n in p.get("notes", []))
        items.extend(fix(r) for r in res.rows("items"))
        notes.extend(f"{rid}: {n}" for n in res.notes)
        settings[rid] = res.settings
        if out is not None and res.path is not None:
            for old, new in keys.items():
                _link(res.path / "arrays" / array_file_name(old), Path(out) / "arrays" / array_file_name(new))
    return Results(settings={"sweep_runs": settings}, checkpoints=checkpoints, probes=probes, notes=notes,
                   path=Path(out) if out is not None else None, columnar={"items": items} if items else {})


def _link(src: Path, dst: Path) -> None:
    """Hard-link (or copy) ``src`` to ``dst`` atomically; nothing to do when ``dst`` already is ``src``.

    (rename() of one hard link onto another of the same file does nothing and leaves the
    temporary name behind, so the same-file case is handled first and a stale temporary removed.)
    """
    if not src.is_file():
        return
    if dst.is_file() and os.path.samefile(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another filesystem
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)


def write_combined(out: Path, probe_tasks: list[Task]) -> Path | None:
    """Write ``OUT/report/`` (results.json, items.parquet, tables, plots, report.html) from the
    probe outputs that exist; returns the report's path, or None when no probe has finished yet."""
    from vlground import results as R
    from vlground.report import write_report

    parts = []
    for t in probe_tasks:
        if (Path(t.output) / "results.json").is_file():
            try:
                parts.append((t.run or t.id, R.load(t.output)))
            except InputError as exc:
                log.warning("%s; left out of the report", exc)
    if not parts:
        return None
    report = Path(out) / "report"
    report.mkdir(parents=True, exist_ok=True)
    combined = combine(parts, report)
    R.write(combined, report)
    return write_report(report, R.load(report))
