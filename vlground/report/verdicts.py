"""Verdicts per run group and step from a results folder (items table -> vlground.stats).

``verdict_table(res)`` gives one row per (group, step): effect size (nats), interval, corrected
p-value, the label and, beside a null, what the run could have detected (:mod:`vlground.power`); ``final_verdict_lines(out)`` the one-line claims for each group's last
probed step, as the demo prints them. Computed verdicts are kept in ``OUT/verdicts.json``
(keyed by the results file's content and the statistics options, so a re-run never returns
another input's verdicts).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from vlground import stats
from vlground.results import Results, load


def verdict_table(res: Results, *, min_effect: float = stats.MIN_EFFECT, correction: str = "holm",
                  direction: str = "env2lan", n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """:func:`vlground.stats.verdict_rows` of ``res``'s items (cached in ``OUT/verdicts.json``), each with
    :func:`vlground.power.with_power`'s detectable effect and power note beside a null."""
    from vlground.power import with_power  # detectable effect and power note beside each null

    cached = _cache_get(res, stats.VERDICTS_VERSION, min_effect, correction, direction, n_boot, seed)
    if cached is not None:
        return with_power(cached)
    rows = stats.verdict_rows(res.frame("items"), min_effect=min_effect, correction=correction, direction=direction,
                              n_boot=n_boot, seed=seed)
    _cache_put(res, rows, stats.VERDICTS_VERSION, min_effect, correction, direction, n_boot, seed)
    return with_power(rows)


def final_rows(rows: list[dict]) -> list[dict]:
    """Each group's tested step (:func:`vlground.stats.final_rows`: the last step with all its seeds)."""
    return stats.final_rows(rows)


def final_verdicts(out: str | Path, **options) -> list[dict]:
    """Each group's last-step verdict row (see :func:`verdict_table`) with ``text``:
    ``"<group> at step N: information gain ... -> grounded"`` (a null followed by its power note:
    ``"... -> no meaningful effect (not at this budget: could have detected >= ...)"``)."""
    rows = final_rows(verdict_table(load(out), **options))
    return [{**r, "text": f"{r['group']} at {_at(r['step'])}: {r['line']}" + (f" ({r['power_note']})" if r.get("power_note") else "")}
            for r in rows]


def final_verdict_lines(out: str | Path, **options) -> list[str]:
    """The ``text`` of :func:`final_verdicts`: one line per group."""
    return [r["text"] for r in final_verdicts(out, **options)]


def _at(step) -> str:
    return "the final model" if step is None else f"step {step}"


def _key(res: Results, *options) -> str | None:
    if res.path is None or not (res.path / "results.json").is_file():
        return None
    h = hashlib.sha256((res.path / "results.json").read_bytes())
    items = res.path / "items.parquet"
    if items.is_file():
        h.update(items.read_bytes())
    h.update(json.dumps(options).encode())
    return h.hexdigest()[:20]


def _cache_get(res: Results, *options):
    key = _key(res, *options)
    f = res.path / "verdicts.json" if res.path is not None else None
    if key is None or f is None or not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("rows") if data.get("key") == key else None


def _cache_put(res: Results, rows: list[dict], *options) -> None:
    key = _key(res, *options)
    if key is None:
        return
    from vlground.report.html import write_atomic

    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    write_atomic(res.path / "verdicts.json", json.dumps({"key": key, "rows": clean}, indent=1))
