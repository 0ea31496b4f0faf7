"""Which heads the monitor reads: from a ``boxheads`` result or a heads file, and random control sets.

Heads file (JSON, written by ``vlground monitor`` next to its results, so a run records its heads)::

    {"heads": [{"layer": 3, "head": 1}, ...],   # layers 1-based, as the paper and every report count
     "source": "reports/llava/results.json", "level": 0.7, "run": "...", "step": 500}

A ``boxheads`` result is read by :func:`read_boxheads` (through :func:`vlground.results.load`, the
only place that knows the results layout); a head is taken when it is aggregate at ``level`` (its inside-box share of
image-to-word saliency ``>= level``) on at least half of the items, in the final checkpoint (largest
step) of the chosen run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vlground.errors import InputError


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
                raise InputError(f"{self.source}: head (layer {layer + 1}, head {head}) is not in this model "
                                 f"({len(layers)} attention layers x {n_heads} heads)")
            m[layers.index(layer), head] = True
        return m

    def to_json(self) -> dict:
        return {"heads": [{"layer": layer + 1, "head": h} for layer, h in self.heads], "layers": "1-based",
                "source": self.source, "level": self.level, "run": self.run, "step": self.step}


def read_heads_file(path: Path) -> HeadSet:
    """A heads file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        for i, h in enumerate(data["heads"]):  # integers only: 1.9 or "1" is a mistake, never rounded
            bad = [k for k in h if k in ("layer", "head") and (isinstance(h[k], bool) or not isinstance(h[k], int))]
            if bad:
                raise InputError(f"{path}: heads[{i}].{bad[0]} is {h[bad[0]]!r}, not an integer")
        heads = tuple((int(h["layer"]) - 1, int(h["head"])) for h in data["heads"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a heads file ({type(exc).__name__}: {exc})") from None
    if not heads or any(layer < 0 or h < 0 for layer, h in heads):
        raise InputError(f"{path}: no heads, or a layer < 1 or head < 0 (layers are 1-based)")
    return HeadSet(heads, str(path), data.get("level"), data.get("run"), data.get("step"))


def read_boxheads(path: Path, level: float = 0.7, run: str | None = None) -> HeadSet:
    """Aggregate heads of a ``vlground probe --probes boxheads`` result (folder or ``results.json``).

    Read through :func:`vlground.results.load` (schema v2): the ``boxheads`` probe's ``heads`` table, rows
    ``{run, step, layer (1-based), head, aggregate_frac: {level: share of items}}``. ``run``: whose heads
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
    heads = tuple(sorted((int(r["layer"]) - 1, int(r["head"])) for r in final if r["aggregate_frac"][key] >= 0.5))
    if not heads:
        raise InputError(f"{f}: no head is aggregate@{key} on at least half the items in {run} step {step}; "
                         "choose a lower --level or give a heads file")
    return HeadSet(heads, str(f), level, run, step)


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
