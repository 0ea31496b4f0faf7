"""Sweep probes over every checkpoint an adapter offers; cache, resume, and collect results.

``OUT/`` gets ``probe.json`` (adapter, settings and their hash), ``cache/<run>@<step>.json``
(one finished checkpoint each, written atomically) and ``results.json`` assembled from the
cache. Re-running with the same settings reuses finished checkpoints; an ``OUT`` that holds
another probe's results (other adapter or settings) is refused unless ``overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from vlground import metrics
from vlground.corpus.format import write_json
from vlground.engine.adapter import Adapter, Capability, Checkpoint
from vlground.engine.behaviour import ProbeOutput, behaviour_probe
from vlground.errors import InputError

log = logging.getLogger(__name__)

RESULTS_VERSION = 1
#: settings that do not change a checkpoint's results (kept out of the cache key)
UNHASHED = ("batch_size", "device", "runs", "limit_checkpoints")


@dataclass(frozen=True)
class ProbeSpec:
    """A probe: what it needs from the model and the function that runs it."""

    fn: Callable[..., ProbeOutput]
    needs: frozenset[Capability] = frozenset()
    doc: str = ""


#: probe name -> spec. Mechanistic probes add themselves here (vlground.engine.mechanistic).
PROBES: dict[str, ProbeSpec] = {
    "behaviour": ProbeSpec(behaviour_probe, doc="surprisal match vs mismatch, information gain, R² vs co-occurrence"),
}


def _load_mechanistic_probes() -> None:
    try:
        import vlground.engine.mechanistic  # noqa: F401  (registers saliency, heads, ablation, lens)
        import vlground.engine.vision_probes  # noqa: F401  (registers boxheads, boxablation)
    except ImportError as exc:
        log.debug("mechanistic probes unavailable: %s", exc)


@dataclass
class ProbeConfig:
    """How ``vlground probe`` runs."""

    out: Path  #: output folder (results.json, tables, plots, report.html, cache/)
    probes: tuple[str, ...] = ("behaviour",)  #: probe names, see PROBES
    checkpoints: str = "all"  #: ``all``, ``last``, ``first,last`` or a comma list of steps
    mechanistic_checkpoints: str = "all"  #: the subset of those that also get the probes other than behaviour
    overwrite: bool = False  #: replace an output folder that holds another probe's results
    probe_options: dict[str, Any] = field(default_factory=dict)  #: thresholds etc. for mechanistic probes
    progress: bool = True  #: show progress bars


def select_checkpoints(ckpts: list[Checkpoint], which: str) -> list[Checkpoint]:
    """Filter checkpoints per run: ``all``, ``last``, ``first``, or steps (``0,64,last``)."""
    which = which.strip()
    if which == "all":
        return list(ckpts)
    wanted = {w.strip() for w in which.split(",") if w.strip()}
    bad = [w for w in wanted if w not in ("first", "last") and not w.isdigit()]
    if bad:
        raise InputError(f"--checkpoints: cannot read {', '.join(sorted(bad))} (use all, last, first or step numbers)")
    by_run: dict[str, list[Checkpoint]] = {}
    for c in ckpts:
        by_run.setdefault(c.run, []).append(c)
    out = []
    for run_ckpts in by_run.values():
        run_ckpts = sorted(run_ckpts, key=lambda c: -1 if c.step is None else c.step)
        for i, c in enumerate(run_ckpts):
            if (
                ("last" in wanted and i == len(run_ckpts) - 1)
                or ("first" in wanted and i == 0)
                or (c.step is not None and str(c.step) in wanted)
            ):
                out.append(c)
    if not out:
        raise InputError(f"--checkpoints {which}: matches no checkpoint")
    return out


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cache_name(ckpt: Checkpoint) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", ckpt.key) + ".json"


def _claim_out(cfg: ProbeConfig, manifest: dict) -> None:
    out = cfg.out
    f = out / "probe.json"
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if f.is_file():
        try:
            old = json.loads(f.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("hash") != manifest["hash"]:
            if not cfg.overwrite:
                raise InputError(
                    f"{out}: holds results of another probe (adapter {old.get('settings', {}).get('adapter')!r}, "
                    f"other settings); use another --out or --overwrite"
                )
            for c in (out / "cache").glob("*.json"):
                c.unlink()
    elif out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise InputError(f"{out}: not empty and holds no vlground probe results; use another --out or --overwrite")
    (out / "cache").mkdir(parents=True, exist_ok=True)
    write_json(f, manifest)


def run_probes(adapter: Adapter, cfg: ProbeConfig) -> dict:
    """Run ``cfg.probes`` on every selected checkpoint; returns the results dict (also written)."""
    if any(p != "behaviour" for p in cfg.probes):
        _load_mechanistic_probes()
    unknown = [p for p in cfg.probes if p not in PROBES]
    if unknown:
        raise InputError(f"unknown probe(s) {', '.join(unknown)}; known probes: {', '.join(PROBES)}")
    settings = {
        **adapter.settings(),
        "probes": list(cfg.probes),
        "probe_options": cfg.probe_options,
        "mechanistic_checkpoints": cfg.mechanistic_checkpoints,
        "results_version": RESULTS_VERSION,
    }
    # the cache is per checkpoint: inputs that only add checkpoints or change speed keep it
    hashed = {k: v for k, v in settings.items() if k not in UNHASHED}
    manifest = {"settings": settings, "hash": _settings_hash(hashed)}
    ckpts = select_checkpoints(adapter.checkpoints(), cfg.checkpoints)
    mech_keys = {c.key for c in select_checkpoints(ckpts, cfg.mechanistic_checkpoints)} if cfg.mechanistic_checkpoints != "all" else None
    _claim_out(cfg, manifest)

    notes: list[str] = []
    bar = tqdm(ckpts, desc="probe", unit="ckpt", disable=not cfg.progress)
    for ckpt in bar:
        bar.set_postfix_str(ckpt.key)
        cache = cfg.out / "cache" / _cache_name(ckpt)
        if cache.is_file():
            continue
        t0 = time.perf_counter()
        try:
            loaded = adapter.load(ckpt)
        except InputError as exc:
            msg = f"skipped checkpoint {ckpt.key}: {exc}"
            log.warning(msg)
            notes.append(msg)
            continue
        items = adapter.items(loaded)
        caps = adapter.capabilities(loaded)
        record: dict[str, Any] = {"run": ckpt.run, "seed": ckpt.seed, "step": ckpt.step, "path": ckpt.path}
        tables: dict[str, list] = {}
        ck_notes: list[str] = []
        for name in cfg.probes:
            spec = PROBES[name]
            if name != "behaviour" and mech_keys is not None and ckpt.key not in mech_keys:
                continue
            missing = spec.needs - caps
            if missing:
                ck_notes.append(f"{name}: skipped for run {ckpt.run} (model has no {', '.join(sorted(m.value for m in missing))})")
                continue
            res = spec.fn(adapter, loaded, items, cfg.probe_options)
            record.update(res.record)
            for k, rows in res.tables.items():
                tables.setdefault(k, []).extend({"run": ckpt.run, "seed": ckpt.seed, "step": ckpt.step, **r} for r in rows)
            ck_notes.extend(res.notes)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(cache, metrics.nan_to_none({"record": record, "tables": tables, "notes": ck_notes}))
        del loaded

    results = collect(cfg.out, ckpts, settings, notes + adapter.skipped())
    write_json(cfg.out / "results.json", results)
    return results


def collect(out: Path, ckpts: list[Checkpoint], settings: dict, notes: list[str]) -> dict:
    """Assemble ``results.json`` from the cached checkpoints (in checkpoint order)."""
    records, tables, all_notes = [], {}, list(notes)
    for ckpt in ckpts:
        f = out / "cache" / _cache_name(ckpt)
        if not f.is_file():
            continue
        data = json.loads(f.read_text())
        records.append(data["record"])
        for k, rows in data["tables"].items():
            tables.setdefault(k, []).extend(rows)
        all_notes.extend(n for n in data["notes"] if n not in all_notes)
    return {
        "version": RESULTS_VERSION,
        "settings": settings,
        "checkpoints": records,
        "seeds": seed_summary(records),
        **tables,
        "notes": all_notes,
    }


SUMMARY_FIELDS = (
    "match_surprisal", "mismatch_surprisal", "info_gain", "r2_cooc",
    "reverse_match_surprisal", "reverse_mismatch_surprisal", "reverse_info_gain", "reverse_r2_cooc",
)


def seed_summary(records: list[dict]) -> list[dict]:
    """Per (group, step): mean and 95% band over seeds of the summary fields.

    A group is a run name with its seed suffix removed (``tf-s0``, ``tf-s1`` -> ``tf``), so runs
    of several architectures are summarised apart.
    """
    groups: dict[tuple[str, Any], list[dict]] = {}
    for r in records:
        groups.setdefault((run_group(r["run"]), r["step"]), []).append(r)
    out = []
    for (group, step), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        row: dict[str, Any] = {"group": group, "step": step, "n_seeds": len(rs)}
        for f in SUMMARY_FIELDS:
            vals = [r[f] for r in rs if r.get(f) is not None]
            if vals:
                m, lo, hi = metrics.mean_band(vals)
                row[f] = m
                row[f + "_low"] = lo
                row[f + "_high"] = hi
        out.append(metrics.nan_to_none(row))
    return out


def run_group(run: str) -> str:
    """``tf-s0`` -> ``tf``; ``mamba2/seed-3`` -> ``mamba2``; other names unchanged."""
    g = re.sub(r"([-_/]?(s|seed)[-_]?\d+)$", "", run)
    return g or run
