"""Run identity: the one definition of a run's name and a checkpoint's key.

A checkpoint's key is ``<run>@<step>`` (``<run>@final`` for a model without steps); results
rows, cache files and array files are all named by it, so two checkpoints of one probe must
never share a key. A run's name is derived from its folder:

* the folder's name, or ``<parent>/seed-<k>`` for a ``seed-<k>`` folder (``train --seeds``);
* lengthened, one path component at a time, until the names of all runs given together are
  distinct: the sweep layout ``runs/transformer/childes/seed-0`` and ``runs/lstm/childes/seed-0``
  gives ``transformer/childes/seed-0`` and ``lstm/childes/seed-0``.

Inputs naming one folder twice (the same path given twice, or a folder and a symlink to it) are
resolved and counted once, with a warning (:func:`unique_paths`). Two checkpoints that collide
anyway (an adapter's own names) are an error (:func:`check_unique_keys`), never a silent merge.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from vlground.errors import InputError

log = logging.getLogger(__name__)

_SEED = re.compile(r"seed-\d+")


def checkpoint_key(run: str, step: int | None) -> str:
    """``<run>@<step>``, or ``<run>@final`` for a model without training steps."""
    return f"{run}@{'final' if step is None else step}"


def file_stem(key: str) -> str:
    """A key as a file name (characters other than ``A-Za-z0-9._@-`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", key)


def unique_paths(paths: Iterable[str | os.PathLike], what: str = "input") -> list[Path]:
    """``paths`` with repeats removed: two that resolve to one file or folder (the same path
    twice, a symlink and its target) are kept once (the first spelling), with a warning."""
    seen: dict[Path, Path] = {}
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        real = p.resolve()
        if real in seen:
            log.warning("%s %s is the same as %s; counted once", what, p, seen[real])
            continue
        seen[real] = p
        out.append(p)
    return out


def _base_parts(path: Path) -> int:
    """How many trailing path components the short name has (2 for ``seed-<k>``, else 1)."""
    return 2 if _SEED.fullmatch(path.name) and len(path.parts) > 1 else 1


def run_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Distinct names of the run folders ``paths`` (already deduplicated), in order.

    Each name is the shortest tail of the folder's resolved path, at least its short name
    (folder name, or ``parent/seed-<k>``), that no other run of ``paths`` shares."""
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise InputError("run identity: the same run folder is given twice (deduplicate with unique_paths first)")
    n = {p: _base_parts(p) for p in resolved}

    def name(p: Path) -> str:
        return "/".join(p.parts[-n[p]:])

    while True:
        by_name: dict[str, list[Path]] = {}
        for p in resolved:
            by_name.setdefault(name(p), []).append(p)
        clashing = [p for ps in by_name.values() if len(ps) > 1 for p in ps]
        grown = False
        for p in clashing:
            if n[p] < len(p.parts) - 1:  # never the filesystem root's empty part
                n[p] += 1
                grown = True
        if not clashing or not grown:
            break
    return [name(p) for p in resolved]


def check_unique_keys(checkpoints: Iterable) -> None:
    """InputError when two checkpoints (objects with ``key`` and ``path``) share a key, or their
    keys map to one file name, while being different checkpoints: their results would overwrite
    each other."""
    by_stem: dict[str, tuple[str, str]] = {}
    for c in checkpoints:
        stem = file_stem(c.key)
        if stem in by_stem:
            other_key, other_path = by_stem[stem]
            if str(other_path) == str(c.path) and other_key == c.key:
                continue
            raise InputError(f"{c.path}: checkpoint key {c.key!r} collides with {other_path} ({other_key!r}); "
                             "the two runs need distinct names (rename one run folder)")
        by_stem[stem] = (c.key, str(c.path))


__all__ = ["checkpoint_key", "file_stem", "unique_paths", "run_names", "check_unique_keys"]
