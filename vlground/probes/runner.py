"""Run probes over every selected checkpoint: references first, cache by content, resume, collect.

``run_probes(adapter, probes, options, out)`` is the in-process entry point (the CLI and the
sweep call it). With ``out`` it writes ``OUT/probe.json`` (adapter, settings and their hash: the
folder's marker), ``OUT/cache/<key>.json`` + ``.npz`` per finished checkpoint (written
atomically, stamped with the checkpoint's content fingerprint, so a retrained checkpoint at the
same path is probed again), ``OUT/cache/reference-*.npz`` (heads identified at each run's
reference checkpoint) and the results (:mod:`vlground.results`). Re-running with the same
settings reuses finished checkpoints; an ``OUT`` holding another probe's results is refused
unless ``overwrite``, which replaces the folder whole once the new results are complete; a second concurrent writer of one ``OUT`` is refused.
Without ``out`` nothing is written and the results are returned.
"""
from __future__ import annotations


import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm

from vlground import options as opt
from vlground.corpus.format import write_json
from vlground.engine.adapter import Adapter, Checkpoint
from vlground.errors import InputError
from vlground.probes import get_probe_class
from vlground.probes.base import Probe, ProbeContext, ProbeResult, RunReference, rows_as_dicts
from vlground.probes.fingerprint import fingerprint
from vlground.runid import check_unique_keys, file_stem
from vlground.results import COLUMNAR, VERSION, Results, array_file_name, write

log = logging.getLogger(__name__)

#: settings that do not change a checkpoint's results (kept out of the cache key)
UNHASHED = ("batch_size", "device", "runs", "limit_checkpoints", "checkpoints")
MARKER = "probe.json"


@dataclass
class Selection:
    """Which checkpoints get which probes."""

    checkpoints: str = "all"  #: all, last, first, or step numbers, comma-separated
    mechanistic_checkpoints: str = "all"  #: the checkpoints that also get the probes other than behaviour (same syntax)


def select_checkpoints(ckpts: list[Checkpoint], which: str) -> list[Checkpoint]:
    """Filter checkpoints per run: ``all``, ``last``, ``first``, or steps (``0,64,last``)."""
    which = which.strip()
    if which == "all":
        return list(ckpts)
    wanted = {w.strip() for w in which.split(",") if w.strip()}
    bad = [w for w in wanted if w not in ("first", "last") and not w.isdigit()]
    if bad:
        raise InputError(f"--checkpoints: cannot read {', '.join(sorted(bad))} (use all, last, first or step numbers)")
    steps = {int(w) for w in wanted if w.isdigit()}
    for run, run_ckpts in by_run(ckpts).items():  # a step asked for must exist, in every run
        have = {c.step for c in run_ckpts}
        missing = sorted(steps - have)
        if missing and any(c.step is not None for c in run_ckpts):
            raise InputError(f"--checkpoints {which}: run {run} has no checkpoint at step {', '.join(map(str, missing))} "
                             f"(steps: {', '.join(str(s) for s in sorted(s for s in have if s is not None))})")
    out = []
    for run_ckpts in by_run(ckpts).values():
        for i, c in enumerate(run_ckpts):
            if (("last" in wanted and i == len(run_ckpts) - 1) or ("first" in wanted and i == 0)
                    or (c.step is not None and str(c.step) in wanted)):
                out.append(c)
    if not out:
        raise InputError(f"--checkpoints {which}: matches no checkpoint")
    return out


def by_run(ckpts: list[Checkpoint]) -> dict[str, list[Checkpoint]]:
    """``{run: checkpoints sorted by step}``."""
    out: dict[str, list[Checkpoint]] = {}
    for c in ckpts:
        out.setdefault(c.run, []).append(c)
    return {r: sorted(cs, key=lambda c: -1 if c.step is None else c.step) for r, cs in out.items()}


def build_probes(names: list[str] | tuple[str, ...], values: Mapping[str, Any] | None = None) -> list[Probe]:
    """Probe instances for ``names`` with options from ``values`` (flag name -> value; missing = default)."""
    if not names:
        raise InputError("no probe given (--probes)")
    seen: set[str] = set()
    out = []
    for n in names:
        if n in seen:
            continue
        seen.add(n)
        cls = get_probe_class(n)
        out.append(cls(opt.build(cls.Options, dict(values or {}))))
    return out


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _safe(key: str) -> str:
    return file_stem(key)


def group_of(c: Checkpoint) -> str:
    return getattr(c, "group", None) or c.run


class _Out:
    """The output folder: marker, lock, cache files.

    Creating it only checks that the folder may be used; nothing is written until :meth:`claim`,
    which the sweep calls once the inputs have proved usable (the first checkpoint's items were
    built), or at once when the folder already holds this probe's results (a resume).

    ``--overwrite`` of another probe's folder never edits it file by file: the new results are
    written into a temporary sibling (:attr:`work`) that replaces the old folder whole, by rename,
    once complete (:meth:`commit`); until then the old folder is intact, and a killed run leaves
    it so.
    """

    def __init__(self, path: Path, manifest: dict, overwrite: bool, inputs=()):
        from vlground import folders

        self.path, self.manifest, self.lock = path, manifest, None
        self.work = path  #: where files are written: ``path``, or its temporary sibling while overwriting
        self.notes: list[str] = []  #: damaged cache entries that were recomputed
        folders.check_output(path, "probe", inputs, overwrite=overwrite)
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: exists and is not a folder")
        marker = path / MARKER
        old = {}
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
            except (json.JSONDecodeError, OSError):
                old = {}
            if old.get("hash") != manifest["hash"] and not overwrite:
                raise InputError(f"{path}: holds results of another probe (adapter {old.get('settings', {}).get('adapter')!r}, "
                                 "other settings); use another --out or --overwrite")
        elif path.is_dir() and any(p.name != folders.MARKER for p in path.iterdir()):
            raise InputError(f"{path}: not empty and holds no vlground probe results; use another --out")
        self.resuming = old.get("hash") == manifest["hash"] and not overwrite  # --overwrite starts afresh
        self.stale = marker.is_file() and not self.resuming

    def claim(self) -> None:
        """Create the folder, take its lock (a second writer is refused), start the temporary
        sibling of an ``--overwrite``, clear stale temporary files, write the markers. Idempotent."""
        if self.lock is not None:
            return
        import tempfile

        from filelock import FileLock, Timeout

        from vlground import folders
        from vlground.corpus.format import clean_stale_temps

        path = self.path
        path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path / ".probe.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise InputError(f"{path}: another vlground probe is writing here ({path / '.probe.lock'} is held)") from None
        self.lock = lock
        for old in clean_stale_temps(path):  # an overwrite killed before its swap
            log.info("removed %s (left by a killed probe)", old)
        if self.stale:
            self.work = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        folders.claim(self.work, "probe")
        (self.work / "cache").mkdir(exist_ok=True)
        for stale in self.work.glob("**/.*.tmp-*"):
            stale.unlink(missing_ok=True)
        write_json(self.work / MARKER, self.manifest)

    def commit(self) -> None:
        """Put the finished results in place: with ``--overwrite``, the temporary sibling replaces
        the old folder whole (two renames; the old one is then deleted)."""
        if self.work == self.path:
            return
        import shutil

        old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
        os.replace(self.path, old)
        os.replace(self.work, self.path)
        self.work = self.path
        shutil.rmtree(old, ignore_errors=True)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
        if self.work != self.path:  # not committed: the old folder stays as it was
            import shutil

            shutil.rmtree(self.work, ignore_errors=True)
            self.work = self.path

    def fingerprints(self) -> Path:
        return self.work / "cache" / "fingerprints.json"

    def cached(self, ckpt: Checkpoint, fp: str) -> dict | None:
        if not self.resuming:
            return None
        self.claim()
        f = self.work / "cache" / f"{_safe(ckpt.key)}.json"
        if not f.is_file():
            return None
        try:
            data = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("checkpoint"), dict):
            return None
        if data["checkpoint"].get("fingerprint") != fp:
            return None
        arrays = f.with_suffix(".npz")
        if arrays.is_file():
            try:
                _read_npz(arrays)
            except DamagedCache as exc:  # recomputed, with a note
                self.notes.append(f"{exc}; checkpoint {ckpt.key} probed again")
                log.warning(self.notes[-1])
                return None
        return data

    def save(self, ckpt: Checkpoint, data: dict, arrays: dict[str, np.ndarray]) -> None:
        base = self.work / "cache" / _safe(ckpt.key)
        if arrays:
            _save_npz(base.with_suffix(".npz"), arrays)
        write_json(base.with_suffix(".json"), data)

    def arrays(self, ckpt: Checkpoint) -> dict[str, np.ndarray]:
        f = self.work / "cache" / f"{_safe(ckpt.key)}.npz"
        if not f.is_file():
            return {}
        return _read_npz(f)

    def reference_file(self, name: str, ckpt: Checkpoint) -> Path:
        return self.work / "cache" / f"reference-{name}-{_safe(ckpt.key)}.npz"


class DamagedCache(Exception):
    """A cache file that cannot be read back (truncated, not a zip archive)."""


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of ``path``; :class:`DamagedCache` when it cannot be read back whole."""
    import zipfile

    try:
        with open(path, "rb") as fh, np.load(fh) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DamagedCache(f"{path}: damaged ({type(exc).__name__})") from None


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _save_reference(path: Path, ref: RunReference, fp: str) -> None:
    meta = json.dumps({"checkpoint_key": ref.checkpoint_key, "item_ids": ref.item_ids, "meta": ref.meta, "fingerprint": fp})
    _save_npz(path, {**{f"a.{k}": v for k, v in ref.arrays.items()}, "meta": np.array(meta)})


def _load_reference(path: Path, fp: str) -> RunReference | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("a.")}
    except (OSError, ValueError, KeyError, json.JSONDecodeError, EOFError, __import__("zipfile").BadZipFile):
        log.warning("%s: damaged reference cache; computed again", path)
        return None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fp:
        return None
    return RunReference(meta["checkpoint_key"], meta["item_ids"], arrays, meta.get("meta", {}))


def run_probes(
    adapter: Adapter,
    probes: list[str] | tuple[str, ...] = ("behaviour",),
    options: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    checkpoints: str = "all",
    mechanistic_checkpoints: str = "all",
    overwrite: bool = False,
    progress: bool = True,
) -> Results:
    """Run ``probes`` on every selected checkpoint of ``adapter``; returns :class:`Results`
    (and writes them into ``out`` when given). Raises :class:`InputError` on bad options and when
    no checkpoint could be probed."""
    instances = build_probes(list(probes), options)
    listed = adapter.checkpoints()
    check_unique_keys(listed)  # two runs under one key would overwrite each other's results
    ckpts = select_checkpoints(listed, checkpoints)
    all_ckpts = by_run(listed)
    mech_keys = None if mechanistic_checkpoints == "all" else {c.key for c in select_checkpoints(ckpts, mechanistic_checkpoints)}
    settings = {
        **adapter.settings(),
        "probes": [p.name for p in instances],
        "probe_options": {p.name: opt.to_dict(p.options) for p in instances},
        "mechanistic_checkpoints": mechanistic_checkpoints,
        "results_version": VERSION,
    }
    manifest = {"settings": settings, "hash": _hash({k: v for k, v in settings.items() if k not in UNHASHED})}
    refs_needed = _references(instances)
    ref_ckpts = {(name, run): _reference_checkpoint(all_ckpts[run], at, name) for name, (_, at) in refs_needed.items()
                 for run in {c.run for c in ckpts}}
    from vlground.folders import input_paths

    store = _Out(Path(out), manifest, overwrite, input_paths(adapter.options)) if out is not None else None
    try:
        return _sweep(adapter, instances, ckpts, mech_keys, settings, refs_needed, ref_ckpts, store, progress)
    finally:
        if store is not None:
            store.release()


def _references(instances: list[Probe]) -> dict[str, tuple[Probe, str]]:
    """``{reference name: (the first probe needing it, where: 'last' or a step)}``."""
    out: dict[str, tuple[Probe, str]] = {}
    for p in instances:
        if p.reference is not None and p.uses_reference():
            out.setdefault(p.reference[0], (p, p.reference_at()))  # type: ignore[attr-defined]
    return out


def _reference_checkpoint(run_ckpts: list[Checkpoint], at: str, name: str) -> Checkpoint:
    if at == "last":
        return run_ckpts[-1]
    for c in run_ckpts:
        if c.step is not None and str(c.step) == at:
            return c
    raise InputError(f"--identify-at {at}: run {run_ckpts[0].run} has no checkpoint at step {at} "
                     f"(steps: {', '.join(str(c.step) for c in run_ckpts)})")


def _sweep(adapter, instances, ckpts, mech_keys, settings, refs_needed, ref_ckpts, store, progress) -> Results:
    references: dict[tuple[str, str], RunReference] = {}
    done: dict[str, dict] = {}
    arrays_of: dict[str, dict[str, np.ndarray]] = {}
    notes: list[str] = []
    # reference checkpoints first, so every other checkpoint of the run can use them
    order = sorted(ckpts, key=lambda c: 0 if any(rc.key == c.key for rc in ref_ckpts.values()) else 1)
    memo_file = store.fingerprints() if store and store.resuming else None
    bar = tqdm(order, desc="probe", unit="ckpt", disable=not progress)
    for ckpt in bar:
        bar.set_postfix_str(ckpt.key)
        fp = fingerprint(ckpt.path, memo_file, revision=ckpt.revision)
        cached = store.cached(ckpt, fp) if store else None
        if cached is not None:
            done[ckpt.key] = cached
            continue
        t0 = time.perf_counter()
        try:
            loaded = adapter.load(ckpt)
        except InputError as exc:
            msg = f"skipped checkpoint {ckpt.key}: {exc}"
            log.warning(msg)
            notes.append(msg)
            continue
        ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
        if store:
            store.claim()  # the inputs work: from here on results are kept
            memo_file = store.fingerprints()
        caps = adapter.capabilities(loaded)
        wanted = [p for p in instances if p.name == "behaviour" or mech_keys is None or ckpt.key in mech_keys]
        for name, (prov, _) in refs_needed.items():
            if not any(p.reference and p.reference[0] == name and p.uses_reference() for p in wanted):
                continue
            if prov.needs - caps:
                continue
            rc = ref_ckpts[(name, ckpt.run)]
            ctx.references[name] = _get_reference(adapter, prov, name, rc, ctx if rc.key == ckpt.key else None, store, memo_file, references)
        entry: dict[str, Any] = {"checkpoint": _checkpoint_fields(ckpt, fp), "probes": {}}
        ck_arrays: dict[str, np.ndarray] = {}
        for p in wanted:
            missing = p.needs - caps
            if missing:
                entry["probes"][p.name] = {"record": {}, "tables": {}, "notes": [
                    f"{p.name}: skipped for run {ckpt.run} (model has no {', '.join(sorted(m.value for m in missing))})"]}
                continue
            res: ProbeResult = p.run(ctx)
            entry["probes"][p.name] = {"record": res.record, "tables": {k: rows_as_dicts(v) for k, v in res.tables.items()},
                                       "notes": list(res.notes)}
            ck_arrays.update({f"{p.name}.{k}": v for k, v in res.arrays.items()})
        entry["checkpoint"]["seconds"] = round(time.perf_counter() - t0, 3)
        entry = _json_safe(entry)
        if store:
            store.save(ckpt, entry, ck_arrays)
        done[ckpt.key] = entry
        arrays_of[ckpt.key] = ck_arrays
        del loaded, ctx
    if not done:
        raise InputError("no checkpoint could be probed: " + "; ".join(notes or ["nothing selected"]))
    res = collect([c for c in ckpts if c.key in done], done, settings, notes + adapter.skipped() + (store.notes if store else []))
    if store:
        store.claim()
        arrays_dir = store.work / "arrays"
        arrays_dir.mkdir(exist_ok=True)
        for c in ckpts:
            arr = arrays_of.get(c.key) or store.arrays(c)
            if arr:
                _save_npz(arrays_dir / array_file_name(c.key), arr)
        write(res, store.work)
        store.commit()
        res.path = store.path
    return res


def _get_reference(adapter, prov: Probe, name: str, rc: Checkpoint, ctx: ProbeContext | None, store, memo_file, references) -> RunReference:
    if (name, rc.key) in references:
        return references[(name, rc.key)]
    fp = fingerprint(rc.path, memo_file, revision=rc.revision)
    ref = _load_reference(store.reference_file(name, rc), fp) if store else None
    if ref is None:
        if ctx is None:
            loaded = adapter.load(rc)
            ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
        ref = prov.reference[1](ctx, prov.options)  # type: ignore[index]
        if store:
            _save_reference(store.reference_file(name, rc), ref, fp)
    references[(name, rc.key)] = ref
    return ref


def _checkpoint_fields(c: Checkpoint, fp: str) -> dict[str, Any]:
    return {"key": c.key, "run": c.run, "group": group_of(c), "seed": c.seed, "step": c.step, "path": c.path, "fingerprint": fp}


def _json_safe(x):
    from vlground.results import _finite

    return json.loads(json.dumps(_finite(x), default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def collect(ckpts: list[Checkpoint], done: dict[str, dict], settings: dict, notes: list[str]) -> Results:
    """Assemble schema-v2 results from per-checkpoint entries (in checkpoint order)."""
    checkpoints, probes, columnar, all_notes = [], {}, {}, list(dict.fromkeys(notes))
    for c in ckpts:
        entry = done[c.key]
        cf = entry["checkpoint"]
        checkpoints.append(cf)
        tag = {k: cf[k] for k in ("key", "run", "group", "seed", "step")}
        for name, pr in entry["probes"].items():
            p = probes.setdefault(name, {"records": [], "tables": {}, "notes": []})
            if pr["record"]:
                p["records"].append({**tag, **pr["record"]})
            for t, rows in pr["tables"].items():
                dest = columnar.setdefault(t, []) if t in COLUMNAR else p["tables"].setdefault(t, [])
                dest.extend({**tag, **r} for r in rows)
            p["notes"].extend(n for n in pr["notes"] if n not in p["notes"])
    return Results(settings=settings, checkpoints=checkpoints, probes=probes, notes=all_notes, columnar=columnar)


__all__ = ["Selection", "run_probes", "select_checkpoints", "build_probes", "collect", "by_run"]
