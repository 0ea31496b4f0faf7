"""Which heads the monitor reads: from a ``boxheads`` result or a heads file, and random control sets.

Heads file (JSON, written by ``vlground monitor`` next to its results, so a run records its heads)::

    {"numbering": "1-based",                     # layers and heads 1-based: L3.H2 = block 3, head 2
     "heads": [{"layer": 3, "head": 2}, ...],     # (docs/probes.md, Numbering)
     "source": "reports/llava/results.json", "level": 0.7, "run": "...", "step": 500}

A head may instead give its 0-based ``{"layer_index": 2, "head_index": 1}`` (the numbering of hooks,
TransformerLens, nnsight); files written by vlground carry both, and a label ``"L3.H2"``. A file
without ``"numbering"`` and without indices is the earlier form (layers 1-based, heads 0-based) and
is read as such, with a warning. Every value must be a JSON integer (``1.9`` or ``"1"`` is refused).

A ``boxheads`` result is read by :func:`read_boxheads` (through :func:`vlground.results.load`, the
only place that knows the results layout); a head is taken when it is aggregate at ``level`` (its inside-box share of
image-to-word saliency ``>= level``) on at least half of the items, in the final checkpoint (largest
step) of the chosen run.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vlground.errors import InputError
from vlground.numbering import head_label, strict_int

log = logging.getLogger(__name__)
#: the ``numbering`` marker of heads files whose ``layer`` and ``head`` are both 1-based
NUMBERING = "1-based"


@dataclass(frozen=True)
class HeadSet:
    """Chosen heads as ``(layer, head)`` with 0-based decoder-layer indices (internal numbering)."""

    heads: tuple[tuple[int, int], ...]
    source: str = ""
    level: float | None = None
    run: str | None = None
    step: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def mask(self, layers: tuple[int, ...], n_heads: int) -> torch.Tensor:
        """bool ``[len(layers), n_heads]`` over the attention layers ``layers`` (0-based)."""
        m = torch.zeros((len(layers), n_heads), dtype=torch.bool)
        for layer, head in self.heads:
            if layer not in layers or not 0 <= head < n_heads:
                raise InputError(f"{self.source}: head {head_label(layer, head)} is not in this model "
                                 f"({len(layers)} attention layers x {n_heads} heads)")
            m[layers.index(layer), head] = True
        return m

    def to_json(self) -> dict:
        return {"numbering": NUMBERING, "layers": "1-based",
                "heads": [{"layer": layer + 1, "head": h + 1, "label": head_label(layer, h), "layer_index": layer,
                           "head_index": h} for layer, h in self.heads],
                "source": self.source, "level": self.level, "run": self.run, "step": self.step}


def _head_entry(h, one_based: bool, where: str) -> tuple[int, int]:
    """``(layer_index, head_index)`` of one entry of a heads file."""
    if not isinstance(h, dict):
        raise InputError(f"{where}: a head must be an object such as {{\"layer\": 3, \"head\": 2}}, got {h!r}")
    if "layer_index" in h or "head_index" in h:
        li, hi = (strict_int(h.get(k), k, where) for k in ("layer_index", "head_index"))
        if li < 0 or hi < 0:
            raise InputError(f"{where}: layer_index {li}, head_index {hi}: indices are 0-based (>= 0)")
        if "layer" in h and strict_int(h["layer"], "layer", where) != li + 1 or \
                one_based and "head" in h and strict_int(h["head"], "head", where) != hi + 1:
            raise InputError(f"{where}: {h!r}: layer/head (1-based) disagree with layer_index/head_index (0-based)")
        return li, hi
    if "layer" not in h or "head" not in h:
        raise InputError(f"{where}: a head needs \"layer\" and \"head\" (1-based) or \"layer_index\" and \"head_index\"")
    layer, head = strict_int(h["layer"], "layer", where), strict_int(h["head"], "head", where)
    if layer < 1 or head < (1 if one_based else 0):
        first = "layers and heads are 1-based" if one_based else "layers are 1-based, heads 0-based in this earlier form"
        raise InputError(f"{where}: layer {layer}, head {head}: {first}")
    return layer - 1, head - 1 if one_based else head


def read_heads_file(path: Path) -> HeadSet:
    """A heads file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a heads file ({type(exc).__name__}: {exc})") from None
    entries = data.get("heads") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: no heads (a heads file holds {{\"numbering\": \"1-based\", \"heads\": [{{\"layer\": 3, \"head\": 2}}]}})")
    numbering = data.get("numbering")
    if numbering not in (None, NUMBERING):
        raise InputError(f"{path}: numbering {numbering!r} is not {NUMBERING!r} (give 0-based layer_index/head_index instead)")
    one_based = numbering == NUMBERING
    if not one_based and any(isinstance(h, dict) and "layer_index" not in h and "head_index" not in h for h in entries):
        log.warning("%s: no \"numbering\": read as the earlier form (layers 1-based, heads 0-based); "
                    "add \"numbering\": \"1-based\" and number heads from 1", path)
    heads = tuple(_head_entry(h, one_based, str(path)) for h in entries)
    return HeadSet(heads, str(path), data.get("level"), data.get("run"), data.get("step"))


def read_boxheads(path: Path, level: float = 0.7, run: str | None = None) -> HeadSet:
    """Aggregate heads of a ``vlground probe --probes boxheads`` result (folder or ``results.json``).

    Read through :func:`vlground.results.load` (schema v2): the ``boxheads`` probe's ``heads`` table, rows
    ``{run, step, layer, head (1-based), layer_index, head_index (0-based), aggregate_frac: {level: share of items}}``. ``run``: whose heads
    (default: the only run, else an error naming them); the run's final checkpoint (largest step) is used.
    """
    from vlground import results

    res = results.load(path)
    f = res.path / "results.json" if res.path is not None else Path(path)
    rows = res.rows("heads", "boxheads")
    if not rows:
        raise InputError(f"{f}: no boxheads table (run vlground probe --probes boxheads)")
    key = f"{level:g}"
    if key not in (rows[0].get("aggregate_frac") or {}):
        levels = sorted(rows[0].get("aggregate_frac") or {})
        raise InputError(f"{f}: no heads at level {key} (levels there: {', '.join(levels) or 'none'})")
    runs = sorted({r["run"] for r in rows})
    if run is None:
        if len(runs) > 1:
            raise InputError(f"{f}: heads of {len(runs)} runs ({', '.join(runs)}); choose one with --heads-run")
        run = runs[0]
    mine = [r for r in rows if r["run"] == run]
    if not mine:
        raise InputError(f"{f}: no run {run!r} (runs: {', '.join(runs)})")
    step = max((r["step"] for r in mine if r.get("step") is not None), default=None)
    final = [r for r in mine if r.get("step") == step]
    heads = tuple(sorted(_row_indices(r) for r in final if r["aggregate_frac"][key] >= 0.5))
    if not heads:
        raise InputError(f"{f}: no head is aggregate@{key} on at least half the items in {run} step {step}; "
                         "choose a lower --level or give a heads file")
    return HeadSet(heads, str(f), level, run, step)


def _row_indices(r: dict) -> tuple[int, int]:
    """``(layer_index, head_index)`` of a boxheads row: its 0-based columns, or, in results written
    before heads were numbered from 1, ``layer - 1`` and the 0-based ``head``."""
    if r.get("layer_index") is not None and r.get("head_index") is not None and r["layer_index"] >= 0:
        return int(r["layer_index"]), int(r["head_index"])
    return int(r["layer"]) - 1, int(r["head"])


def load_heads(path: Path, level: float = 0.7, run: str | None = None) -> HeadSet:
    """A heads file, or a probe result (folder or ``results.json``) through :func:`read_boxheads`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: heads not found (a heads file, or a probe output folder with results.json)")
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(f"{p}: not JSON") from None
        if isinstance(data, dict) and "heads" in data and "version" not in data:
            return read_heads_file(p)
    return read_boxheads(p, level, run)


def random_head_sets(chosen: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """bool ``[draws, layers, heads]``: sets of as many heads as ``chosen`` holds, drawn uniformly (seeded)
    from the heads *not* chosen (the control of the identified heads), each set without repetition."""
    pool = np.flatnonzero(~chosen.flatten().numpy())
    k = int(chosen.sum())
    if k > len(pool):
        raise InputError(f"{k} chosen heads but only {len(pool)} others to draw random sets from")
    rng = np.random.default_rng(seed)
    out = torch.zeros((draws, chosen.numel()), dtype=torch.bool)
    for d in range(draws):
        out[d, rng.choice(pool, size=k, replace=False)] = True
    return out.reshape(draws, *chosen.shape)
