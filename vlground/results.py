"""Probe results, schema version 2, and the one loader everything reads them through.

An output folder of ``vlground probe`` holds::

    results.json          {"version": 2, "settings", "checkpoints", "probes", "notes"}
    items.parquet         per-item rows of the behaviour probe (one row per item and checkpoint)
    arrays/<key>.npz      large arrays per checkpoint (head maps), named "<probe>.<name>"

``checkpoints``: ``[{key, run, group, seed, step, path, fingerprint, seconds}]`` in probe order;
``group`` is given by the adapter (an architecture, a corpus variant), never parsed from names.
``probes``: ``{name: {"records": [{key, ...scalars}], "tables": {table: [rows]}, "notes": [...]}}``;
every row carries its checkpoint's ``key``, ``run``, ``group``, ``seed`` and ``step``.
Layer numbers are 1-based (layer ``k`` = block ``k``; the lens's layer 0 = embeddings).

This module imports neither torch nor the engine: a notebook or the report can read results
on a machine without the models. ``load(path)`` returns :class:`Results`; its ``frame(...)``
methods give pandas DataFrames.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlground.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

VERSION = 2
#: tables kept out of results.json and written as ``<table>.parquet`` (one row per item: large)
COLUMNAR = ("items",)
#: the standard tables (``frame`` gives an empty DataFrame for one a probe did not write)
TABLES = ("checkpoints", "items", "words", "heads", "ablation", "lens", "flow")
#: columns only some adapters fill (images); left out of a table where every row lacks them
OPTIONAL_COLUMNS = {"items": ("layout", "n_image_tokens", "n_inside")}
#: the fields every row gets from its checkpoint
CHECKPOINT_FIELDS = ("key", "run", "group", "seed", "step")


@dataclass
class Results:
    """Results of one probe folder (or of an in-process probe run)."""

    settings: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    probes: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None  #: the output folder, when the results are on disk
    columnar: dict[str, list[dict]] = field(default_factory=dict)  #: in-memory rows of COLUMNAR tables
    written: dict[str, str] = field(default_factory=dict)  #: COLUMNAR table -> token of the write (results.json and parquet agree)

    # -- plain access (no pandas) ------------------------------------------------------------------
    def records(self, probe: str) -> list[dict[str, Any]]:
        """Per-checkpoint scalars of ``probe`` (each with the checkpoint fields)."""
        return list(self.probes.get(probe, {}).get("records", []))

    def rows(self, table: str, probe: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``table`` from ``probe`` (or from every probe that has such a table)."""
        if table in COLUMNAR:
            return self._columnar(table)
        names = [probe] if probe else list(self.probes)
        out: list[dict] = []
        for n in names:
            out.extend(self.probes.get(n, {}).get("tables", {}).get(table, []))
        return out

    def checkpoint_rows(self) -> list[dict[str, Any]]:
        """One row per checkpoint: its fields and the records of every probe merged in."""
        by_key = {c["key"]: dict(c) for c in self.checkpoints}
        for p in self.probes.values():
            for r in p.get("records", []):
                if r.get("key") in by_key:
                    by_key[r["key"]].update({k: v for k, v in r.items() if k not in CHECKPOINT_FIELDS})
        return list(by_key.values())

    def all_notes(self) -> list[str]:
        out = list(self.notes)
        for p in self.probes.values():
            out.extend(n for n in p.get("notes", []) if n not in out)
        return out

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        """Large arrays of one checkpoint (``{"<probe>.<name>": array}``); empty when none."""
        if self.path is None:
            return {}
        f = self.path / "arrays" / array_file_name(key)
        if not f.is_file():
            return {}
        import zipfile

        try:
            with open(f, "rb") as fh, np.load(fh) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise InputError(f"{f}: damaged ({type(exc).__name__}: {_first(exc)}); re-run the probe into a new --out") from None

    def _columnar(self, table: str) -> list[dict]:
        if table in self.columnar:
            return self.columnar[table]
        if self.path is not None and (self.path / f"{table}.parquet").is_file():
            return self.frame(table).to_dict("records")
        return []

    def _read_columnar(self, table: str):
        """``<table>.parquet`` as a DataFrame; InputError when it is damaged or was not written
        together with this ``results.json`` (its token differs: never old rows read as new)."""
        import pandas as pd

        f = self.path / f"{table}.parquet"
        if not f.is_file():
            return pd.DataFrame()
        try:
            import pyarrow.parquet as pq

            schema = pq.read_schema(f)
            frame = pd.read_parquet(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises its own ArrowInvalid, OSError ...
            raise InputError(f"{f}: damaged ({type(exc).__name__}: {_first(exc)}); re-run the probe into a new --out") from None
        want = self.written.get(table)
        have = (schema.metadata or {}).get(TOKEN_KEY, b"").decode() or None
        if want is not None and have != want:
            raise InputError(f"{f}: not written with {self.path / 'results.json'} (left from another write); "
                             "re-run the probe with --overwrite")
        return frame

    # -- pandas --------------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        """Every table :meth:`frame` knows: the standard ones and any other a probe wrote."""
        extra = {t for p in self.probes.values() for t in p.get("tables", {})} | set(self.columnar)
        return list(TABLES) + sorted(extra - set(TABLES))

    def frame(self, table: str, probe: str | None = None) -> "pd.DataFrame":
        """A pandas DataFrame of ``table`` (``checkpoints``, ``items``, ``words``, ``heads``,
        ``ablation``, ``lens``, ``flow``, or another table a probe wrote); empty when no probe
        wrote it. An unknown table name raises :class:`InputError` naming the known ones; columns
        of :data:`OPTIONAL_COLUMNS` that are empty in every row are left out."""
        import pandas as pd

        if table not in self.table_names():
            raise InputError(f"unknown table {table!r} (known: {', '.join(self.table_names())})")
        if table == "checkpoints":
            return pd.DataFrame(self.checkpoint_rows())
        if table in COLUMNAR and table not in self.columnar and self.path is not None:
            df = self._read_columnar(table)
        else:
            df = pd.DataFrame(self.rows(table, probe))
        empty = [c for c in OPTIONAL_COLUMNS.get(table, ()) if c in df and df[c].isna().all()]
        return df.drop(columns=empty) if empty else df

    def frames(self) -> dict[str, "pd.DataFrame"]:
        """The standard tables as pandas DataFrames: ``checkpoints, items, words, heads,
        ablation, lens, flow`` (an empty DataFrame where a probe did not run)."""
        return {t: self.frame(t) for t in ("checkpoints", "items", "words", "heads", "ablation", "lens", "flow")}

    def train_logs(self) -> dict[str, list[dict[str, Any]]]:
        """``{run: [train_log.jsonl records]}`` for the probed runs whose folder (two levels above
        a checkpoint: ``<run>/checkpoints/step-N``) holds a training log; unreadable lines skipped."""
        out: dict[str, list[dict]] = {}
        for c in self.checkpoints:
            p = Path(str(c.get("path") or ""))
            if c["run"] in out or p.parent.name != "checkpoints":
                continue
            f = p.parent.parent / "train_log.jsonl"
            if not f.is_file():
                continue
            recs = []
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
            out[c["run"]] = recs
        return out

    def to_json(self) -> dict[str, Any]:
        out = {"version": VERSION, "settings": self.settings, "checkpoints": self.checkpoints,
               "probes": self.probes, "notes": self.notes}
        if self.written:
            out["columnar"] = dict(self.written)
        return out


def array_file_name(key: str) -> str:
    from vlground.runid import file_stem

    return file_stem(key) + ".npz"


def load(path: str | Path) -> Results:
    """Read a probe output folder (or its ``results.json``). A file of another schema version
    raises :class:`InputError` with one line saying how to re-run."""
    p = Path(path)
    f = p / "results.json" if p.is_dir() else p
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{f}: no results (run vlground probe --out {f.parent})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{f}: cannot read results ({exc})") from None
    version = data.get("version") if isinstance(data, dict) else None
    if version != VERSION:
        raise InputError(f"{f}: results schema version {version}, this vlground reads version {VERSION}; "
                         f"re-run the probe with --out {f.parent} --overwrite")
    _check_shape(data, f)
    return Results(settings=data.get("settings", {}), checkpoints=data.get("checkpoints", []), probes=data.get("probes", {}),
                   notes=data.get("notes", []), path=f.parent, written=data.get("columnar", {}))


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _check_shape(data: dict, f: Path) -> None:
    """InputError naming the first field of ``results.json`` that has the wrong type."""
    def bad(where: str, value, want: str):
        raise InputError(f"{f}: damaged results ({where} is a {type(value).__name__}, not {want}); "
                         "re-run the probe into a new --out")

    for key, kind, want in (("settings", dict, "an object"), ("checkpoints", list, "a list"), ("probes", dict, "an object"),
                            ("notes", list, "a list"), ("columnar", dict, "an object")):
        if key in data and not isinstance(data[key], kind):
            bad(key, data[key], want)
    for i, c in enumerate(data.get("checkpoints", [])):
        if not isinstance(c, dict) or not isinstance(c.get("key"), str):
            bad(f"checkpoints[{i}]", c, "an object with a key")
    for name, pr in data.get("probes", {}).items():
        if not isinstance(pr, dict):
            bad(f"probes.{name}", pr, "an object")
        for part, kind, want in (("records", list, "a list"), ("tables", dict, "an object"), ("notes", list, "a list")):
            if part in pr and not isinstance(pr[part], kind):
                bad(f"probes.{name}.{part}", pr[part], want)
        for i, r in enumerate(pr.get("records", [])):
            if not isinstance(r, dict):
                bad(f"probes.{name}.records[{i}]", r, "an object")
        for t, rows in pr.get("tables", {}).items():
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                bad(f"probes.{name}.tables.{t}", rows, "a list of objects")


def write(res: Results, out: str | Path) -> Path:
    """Write ``results.json`` and the columnar tables into ``out`` (atomically); returns results.json's path."""
    from vlground.corpus.format import write_json

    import uuid

    out = Path(out)
    res.written = {}
    for table, rows in res.columnar.items():
        token = uuid.uuid4().hex
        _write_parquet(out / f"{table}.parquet", rows, token)
        res.written[table] = token
    for table in COLUMNAR:  # a table this write has none of: an older one must not be read as its rows
        if table not in res.columnar:
            (out / f"{table}.parquet").unlink(missing_ok=True)
    write_json(out / "results.json", _finite(res.to_json()))
    return out / "results.json"


#: key of the parquet file's schema metadata holding the token of the write (see ``Results.written``)
TOKEN_KEY = b"vlground.write"


def _write_parquet(path: Path, rows: list[dict], token: str) -> None:
    import os

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df = pd.DataFrame(rows)
    empty = [c for c in OPTIONAL_COLUMNS.get(path.stem, ()) if c in df and df[c].isna().all()]
    table = pa.Table.from_pandas(df.drop(columns=empty), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), TOKEN_KEY: token.encode()})
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _finite(x):
    """NaN/inf -> None, numpy scalars -> Python (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# -- summaries over seeds (read by the report) -----------------------------------------------------
SUMMARY_FIELDS = (
    "match_surprisal", "mismatch_surprisal", "info_gain", "r2_cooc",
    "reverse_match_surprisal", "reverse_mismatch_surprisal", "reverse_info_gain", "reverse_r2_cooc",
)


def seed_summary(res: Results) -> list[dict[str, Any]]:
    """Per (group, step): mean over seeds of the summary fields, with the min and max over seeds
    as the band (a band that cannot leave the values' range), and ``n_seeds``."""
    from vlground.stats import seed_band

    groups: dict[tuple[str, Any], list[dict]] = {}
    for r in res.checkpoint_rows():
        groups.setdefault((r.get("group") or r["run"], r.get("step")), []).append(r)
    out = []
    for (group, step), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        row: dict[str, Any] = {"group": group, "step": step, "n_seeds": len(rs)}
        for f in SUMMARY_FIELDS:
            vals = [r[f] for r in rs if r.get(f) is not None]
            if vals:
                row[f], row[f + "_low"], row[f + "_high"] = seed_band(vals, "minmax")
        out.append(row)
    return out
