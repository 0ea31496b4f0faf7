"""Output folders and their kinds: every command's output folder says which command wrote it.

Kinds and the file that marks them (written by the command, inside the folder)::

    corpus     corpus.json           build-corpus
    run        run.json              train (one run; ``train --seeds`` writes one per seed-<k>/)
    probe      probe.json            probe
    monitor    monitor.json          monitor
    sweep      .sweep/               sweep
    mismatch   .build-mismatch.lock  build-mismatch (with annotations.json)

A command claims its folder with :func:`claim` (the ``.vlground-folder`` file, holding the kind)
as soon as it first writes there, so a folder is recognised before its main file exists (a
monitor still running, a run before its first checkpoint); older folders are recognised by the
files above (:func:`kind_of`).

:func:`check_output` is called by every command before it writes anything. It refuses, in one
line, an output folder that

* holds another kind (``monitor --out`` onto a probe folder, ``sweep --out`` onto a corpus);
* lies inside a folder of a kind that may not hold it (``train --out CORPUS/runs/x``: a later
  ``build-corpus --out CORPUS --overwrite`` would delete the run); a sweep holds every kind, a
  probe folder holds its monitors (``probe/monitor-pope``); nothing else holds another folder;
* is, holds or lies inside one of the command's inputs;
* with ``overwrite``, holds folders of another kind (``--overwrite`` would delete them).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from vlground.errors import InputError

#: the file a command writes into its output folder, holding the kind
MARKER = ".vlground-folder"
KINDS = ("corpus", "run", "probe", "monitor", "sweep", "mismatch")
#: older folders: the file (or folder) that shows the kind when there is no MARKER
LEGACY = {"corpus": "corpus.json", "run": "run.json", "probe": "probe.json", "monitor": "monitor.json",
          "sweep": ".sweep", "mismatch": ".build-mismatch.lock"}
#: kind -> the kinds a folder of that kind may hold somewhere below it
HOLDS = {"sweep": set(KINDS), "probe": {"monitor"}}
#: the command that writes each kind (for messages)
COMMAND = {"corpus": "build-corpus", "run": "train", "probe": "probe", "monitor": "monitor", "sweep": "sweep",
           "mismatch": "build-mismatch"}


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of vlground folder ``path`` is, or None (not a folder, or not vlground's)."""
    path = Path(path)
    try:
        if not path.is_dir():
            return None
        text = (path / MARKER).read_text(encoding="utf-8").strip()
        if text in KINDS:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    for kind, name in LEGACY.items():
        f = path / name
        try:
            if kind == "corpus":
                meta = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
                if isinstance(meta, dict) and str(meta.get("format", "")).startswith("vlground-corpus/"):
                    return kind
            elif f.exists():
                return kind
        except (OSError, ValueError):
            continue
    return None


def claim(path: str | os.PathLike, kind: str) -> None:
    """Mark ``path`` (created if missing) as a folder of ``kind``; nothing to do when it is one."""
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    f = path / MARKER
    try:
        if f.read_text(encoding="utf-8").strip() == kind:
            return
    except (OSError, UnicodeDecodeError):
        pass
    tmp = f.with_name(f"{MARKER}.tmp-{os.getpid()}")
    tmp.write_text(kind + "\n", encoding="utf-8")
    os.replace(tmp, f)


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def _describe(kind: str) -> str:
    return f"a vlground {kind} folder (written by {COMMAND[kind]})"


def check_output(out: str | os.PathLike, kind: str, inputs: Iterable = (), *, overwrite: bool = False,
                 option: str = "--out") -> None:
    """One-line :class:`InputError` when ``out`` may not receive a ``kind`` folder (module
    docstring); reads only, writes nothing."""
    final = Path(out)
    out_r = final.resolve()
    for raw in inputs:
        if raw is None or str(raw) == "":
            continue
        inp = Path(raw).resolve()
        if _within(inp, out_r) or _within(out_r, inp):
            raise InputError(f"{final}: {option} is, holds or lies inside the input {raw} (no command writes into "
                             f"its inputs); choose another {option}")
    if final.exists() and not final.is_dir():
        raise InputError(f"{final}: exists and is not a folder; choose another {option}")
    here = kind_of(final)
    if here is not None and here != kind:
        raise InputError(f"{final}: is {_describe(here)}, not a {kind} folder; choose another {option}")
    for parent in out_r.parents:
        above = kind_of(parent)
        if above is not None and kind not in HOLDS.get(above, ()):
            raise InputError(f"{final}: lies inside {parent}, {_describe(above)}; a {kind} folder does not belong "
                             f"there, choose another {option}")
    if overwrite and here == kind:
        for sub in _foreign_below(final, kind):
            raise InputError(f"{final}: holds {sub}, {_describe(kind_of(sub))}; --overwrite would delete it, "
                             f"move it first or choose another {option}")


def _foreign_below(root: Path, kind: str, depth: int = 4) -> Iterable[Path]:
    """Folders of a kind ``kind`` may not hold, up to ``depth`` levels below ``root``."""
    allowed = HOLDS.get(kind, set())
    stack = [(root, 0)]
    while stack:
        d, level = stack.pop()
        if level >= depth:
            continue
        try:
            subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        for s in subs:
            k = kind_of(s)
            if k is not None and k not in allowed:
                yield s
            elif k is None:
                stack.append((s, level + 1))


#: option names that hold input paths (adapters' and commands' options)
INPUT_OPTIONS = ("runs", "run", "corpus", "templates", "images", "annotations", "mismatch", "model", "heads")


def input_paths(options, skip: Iterable[str] = ()) -> list[Path]:
    """The existing local paths among ``options``' :data:`INPUT_OPTIONS` (a mapping or an object
    with those attributes; a list value gives several)."""
    get = options.get if isinstance(options, dict) else (lambda k: getattr(options, k, None))
    out = []
    for key in INPUT_OPTIONS:
        if key in skip:
            continue
        value = get(key)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and str(v) and Path(v).exists():
                out.append(Path(v))
    return out


__all__ = ["MARKER", "KINDS", "kind_of", "claim", "check_output", "input_paths"]
