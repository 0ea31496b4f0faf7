"""A sweep file checked whole before any task starts: one line per problem, naming the key.

:func:`read` parses the YAML with a loader that reports duplicate keys (plain YAML lets the later
one win silently). :func:`problems` checks the parsed mapping against the schema below: unknown
keys, wrong types, unknown architecture, size, source, adapter and probe names, option names
that no command has (``train``, ``probe.options``, ``corpora.*.options``), CPU and GPU counts.
:func:`missing_inputs` lists inputs that are not on disk (run before the tasks start, and by
``--dry-run``). :class:`SweepProblems` carries every line; the CLI prints each as
``vlground: error: <file>: <key>: <what>``.

Schema (``*``: required)::

    out: str   size: tiny|small|paper   retries: int >= 0   report_every_s: number >= 0
    corpora*: {name: {source: chat|visdial|generated|path, inputs: str|[str] (chat*),
               visdial/images/annotations: str (visdial*), vision: str, path: str (path*),
               options: {build-corpus flag: scalar|list}}}
    grid*: [{archs*: [arch], seeds: [int >= 0], corpus: name, drop_cooc: [0..1], drop_in: corpus|train,
             vision_init: [pretrained|random], size, train: {...}, model: {key: JSON}, label: str}]
    train: {Hyper field: value}
    probe*: {adapter*: name, probes: [name], checkpoints, mechanistic_checkpoints: all|last|first|[int],
             options: {probe or adapter option: value}}
    resources: {build-corpus|train|probe: {num_cpus: number > 0, num_gpus: number >= 0 | auto,
                memory: number > 0, resources: {name: number}}}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlground.errors import InputError

TOP = {"out", "size", "corpora", "grid", "train", "probe", "resources", "retries", "report_every_s"}
BLOCK = {"archs", "seeds", "corpus", "drop_cooc", "drop_in", "vision_init", "size", "train", "model", "label"}
CORPUS_KEYS = {"chat": {"inputs"}, "visdial": {"visdial", "images", "annotations", "vision"}, "generated": set(),
               "path": {"path"}}
REQUIRED = {"chat": ("inputs",), "visdial": ("visdial", "images", "annotations"), "path": ("path",)}
PROBE_KEYS = {"adapter", "probes", "checkpoints", "mechanistic_checkpoints", "options"}
RESOURCE_KEYS = {"num_cpus", "num_gpus", "memory", "resources"}
KINDS = ("build-corpus", "train", "probe")


class SweepProblems(InputError):
    """Every problem of a sweep file, one line each (``<file>: <key>: <what>``)."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def read(path: Path) -> Any:
    """The parsed YAML of ``path``; duplicate keys are :class:`SweepProblems` (one line each)."""
    import yaml

    dups: list[str] = []

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    dups.append(f"{path}: line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                f"(also on line {seen[key]}; YAML would silently keep the later one)")
                else:
                    seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the constructor reports it
                pass
        return yaml.SafeLoader.construct_mapping(loader, node, deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such sweep file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if dups:
        raise SweepProblems(dups)
    return data


class _Check:
    def __init__(self, where: str):
        self.where, self.lines = where, []

    def bad(self, key: str, what: str) -> None:
        self.lines.append(f"{self.where}: {key}: {what}")

    def mapping(self, v, key: str, required: bool = False) -> dict:
        if v is None and not required:
            return {}
        if not isinstance(v, dict):
            self.bad(key, f"want a mapping, got {_show(v)}")
            return {}
        return v

    def keys(self, d: dict, known: set, key: str) -> None:
        for k in d:
            if k not in known:
                self.bad(f"{key}.{k}" if key else str(k), f"unknown key (known: {', '.join(sorted(known))})")

    def number(self, v, key: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
               lo_open: bool = False) -> bool:
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            self.bad(key, f"want {'an integer' if integer else 'a number'}, got {_show(v)}")
            return False
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
            rng = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"in [{lo}, {hi}]"
            self.bad(key, f"want a number {rng}, got {v}")
            return False
        return True

    def string(self, v, key: str) -> bool:
        if not isinstance(v, str) or not v:
            self.bad(key, f"want a non-empty string, got {_show(v)}")
            return False
        return True

    def str_list(self, v, key: str, allow_str: bool = True) -> list:
        if allow_str and isinstance(v, str):
            return [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            self.bad(key, f"want a list of strings, got {_show(v)}")
            return []
        return v

    def one_of(self, v, key: str, known) -> bool:
        if v not in known:
            self.bad(key, f"unknown {v if isinstance(v, str) else _show(v)} (known: {', '.join(map(str, known))})")
            return False
        return True


def _show(v) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}" if not isinstance(v, (str, int, float)) or isinstance(v, bool) else text[:60]


def _flag_dests(command: str, argv: tuple = ()) -> set[str]:
    """Option names (``chunk_len``) of a vlground command's flags, the chosen adapter's included."""
    from vlground.cli import build_parser

    parser = build_parser(command, [command, *argv])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # noqa: SLF001
    out = set()
    for a in sub._actions:  # noqa: SLF001
        for s in a.option_strings:
            if s.startswith("--"):
                out.add(s[2:].replace("-", "_"))
    return out


def _number_list(c: "_Check", values, key: str, what: str, lo, hi, integer: bool = False) -> bool:
    """Check a non-empty list of numbers in [lo, hi] (one line per bad entry); True if it is a non-empty list."""
    if not isinstance(values, list) or not values:
        c.bad(key, f"want a list of {what}, got {_show(values)}")
        return False
    for i, v in enumerate(values):
        c.number(v, f"{key}[{i}]", lo, hi, integer=integer)
    return True


def _flat_value(x) -> bool:
    """A scalar, or a list of scalars (a generator's ``session_kinds: [[play, 0.7], ...]``)."""
    scalar = (str, int, float)
    return isinstance(x, scalar) or (isinstance(x, list) and all(isinstance(y, scalar) for y in x))


def _options(c: _Check, opts: dict, key: str, known: set[str]) -> None:
    for k, v in opts.items():
        name = str(k)
        if name not in known:
            from difflib import get_close_matches

            hint = get_close_matches(name, sorted(known), n=1)
            c.bad(f"{key}.{name}", "no such option" + (f" (did you mean {hint[0]}?)" if hint else ""))
        elif not (isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(_flat_value(x) for x in v))):
            c.bad(f"{key}.{name}", f"want a number, string, boolean or list (of those, or of lists of those), got {_show(v)}")


def _steps(c: _Check, v, key: str) -> None:
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(",") if p.strip()]
        if parts and all(p in ("all", "last", "first") or p.isdigit() for p in parts):
            return
    elif isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return
    elif isinstance(v, list) and v and all((isinstance(x, int) and not isinstance(x, bool) and x >= 0) or x in ("last", "first") for x in v):
        return
    c.bad(key, f"want all, last, first or a list of steps, got {_show(v)}")


def problems(data: Any, where: str | Path, local_cpus: int | None = None) -> list[str]:
    """Every problem of a parsed sweep file, one line each (empty when it is valid).

    ``local_cpus``: the CPUs of the local Ray instance the sweep will start (None: a cluster,
    checked when connected)."""
    from vlground.train.config import SIZES, Hyper
    from vlground.train.models import ARCHS

    c = _Check(str(where))
    if not isinstance(data, dict):
        return [f"{where}: a sweep file is a mapping with corpora, grid, train, probe (got {_show(data)})"]
    c.keys(data, TOP, "")
    if "out" in data:
        c.string(data["out"], "out")
    if "size" in data:
        c.one_of(data["size"], "size", SIZES)
    if "retries" in data:
        c.number(data["retries"], "retries", 0, integer=True)
    if "report_every_s" in data:
        c.number(data["report_every_s"], "report_every_s", 0)
    hyper = {f for f in Hyper.__dataclass_fields__}
    _train(c, c.mapping(data.get("train"), "train"), "train", hyper)
    corpora = c.mapping(data.get("corpora"), "corpora", required=True)
    if "corpora" in data and isinstance(data["corpora"], dict) and not corpora:
        c.bad("corpora", "want at least one corpus")
    for name, spec in corpora.items():
        if c.mapping(spec, f"corpora.{name}", required=True) is spec:
            _corpus(c, name, spec)
    grid = data.get("grid")
    if not isinstance(grid, list) or not grid:
        c.bad("grid", f"want a list of blocks (archs, seeds, corpus, drop_cooc), got {_show(grid)}")
        grid = []
    for b, block in enumerate(grid):
        _block(c, b, block, corpora, data.get("size", "tiny"), hyper, ARCHS, SIZES)
    _probe(c, c.mapping(data.get("probe"), "probe", required=True))
    res = c.mapping(data.get("resources"), "resources")
    for kind, r in res.items():
        key = f"resources.{kind}"
        if kind not in KINDS:
            c.bad(key, f"unknown task kind (known: {', '.join(KINDS)})")
            continue
        r = c.mapping(r, key, required=True)
        c.keys(r, RESOURCE_KEYS, key)
        if "num_cpus" in r and c.number(r["num_cpus"], f"{key}.num_cpus", 0, lo_open=True) and local_cpus and r["num_cpus"] > local_cpus:
            c.bad(f"{key}.num_cpus", f"{r['num_cpus']} CPUs per task, but the local Ray instance has {local_cpus}")
        if "num_gpus" in r and r["num_gpus"] != "auto":
            c.number(r["num_gpus"], f"{key}.num_gpus", 0)
        if "memory" in r:
            c.number(r["memory"], f"{key}.memory", 0, lo_open=True)
        for rk, rv in c.mapping(r.get("resources"), f"{key}.resources").items():
            c.number(rv, f"{key}.resources.{rk}", 0)
    return c.lines


def _train(c: _Check, train: dict, key: str, hyper: set) -> None:
    from vlground.train.config import Hyper

    defaults = Hyper()
    for k, v in train.items():
        if k not in hyper:
            c.bad(f"{key}.{k}", f"no such training option (known: {', '.join(sorted(hyper))})")
            continue
        want = type(getattr(defaults, k))
        ok = (not isinstance(v, bool)) and ((want is str and isinstance(v, str)) or (want is float and isinstance(v, (int, float)))
                                            or (want is int and isinstance(v, int)))
        if not ok:
            c.bad(f"{key}.{k}", f"want {'an integer' if want is int else 'a number' if want is float else 'a string'}, got {_show(v)}")


def _corpus(c: _Check, name: str, spec: dict) -> None:
    from vlground.sweep.spec import SOURCES

    key = f"corpora.{name}"
    source = spec.get("source", "chat")
    if not c.one_of(source, f"{key}.source", SOURCES):
        return
    c.keys(spec, {"source", "options", *CORPUS_KEYS[source]}, key)
    for k in REQUIRED.get(source, ()):
        if k not in spec:
            c.bad(f"{key}.{k}", f"source {source} needs it")
    for k in CORPUS_KEYS[source]:
        if k in spec:
            (c.str_list if k == "inputs" else c.string)(spec[k], f"{key}.{k}")
    opts = c.mapping(spec.get("options"), f"{key}.options")
    if source in ("chat", "visdial"):
        _options(c, opts, f"{key}.options", _flag_dests("build-corpus") - {"out", "overwrite", "drop_cooc", "no_progress"})
    elif source == "generated":
        from vlground.datasets.chat_generator import GeneratorOptions

        _options(c, opts, f"{key}.options", {"seed", "files", "chunk_len", *GeneratorOptions.__dataclass_fields__})
    elif opts:
        c.bad(f"{key}.options", "an existing corpus (source: path) takes no options")


def _block(c: _Check, b: int, block, corpora: dict, size: str, hyper: set, archs_known, sizes) -> None:
    key = f"grid[{b}]"
    if not isinstance(block, dict):
        c.bad(key, f"want a mapping, got {_show(block)}")
        return
    c.keys(block, BLOCK, key)
    archs = c.str_list(block.get("archs"), f"{key}.archs", allow_str=False) if "archs" in block else []
    if "archs" not in block:
        c.bad(f"{key}.archs", "none given")
    for a in archs:
        c.one_of(a, f"{key}.archs", list(archs_known))
    if "corpus" in block:
        c.one_of(block["corpus"], f"{key}.corpus", list(corpora))
    elif len(corpora) > 1:
        c.bad(f"{key}.corpus", f"give one of {', '.join(corpora)}")
    seeds = block.get("seeds", [0])
    if _number_list(c, seeds, f"{key}.seeds", "integers >= 0", 0, None, integer=True) and len(set(map(str, seeds))) != len(seeds):
        c.bad(f"{key}.seeds", f"a seed is listed twice: {seeds}")
    _number_list(c, block.get("drop_cooc", [0.0]), f"{key}.drop_cooc", "fractions in [0, 1]", 0, 1)
    if "drop_in" in block:
        c.one_of(block["drop_in"], f"{key}.drop_in", ("corpus", "train"))
    inits = block.get("vision_init", ["pretrained"])
    if not isinstance(inits, list) or not inits:
        c.bad(f"{key}.vision_init", f"want a list of pretrained/random, got {_show(inits)}")
    else:
        for i, v in enumerate(inits):
            c.one_of(v, f"{key}.vision_init[{i}]", ("pretrained", "random"))
    bsize = block.get("size", size)
    if "size" in block:
        c.one_of(bsize, f"{key}.size", sizes)
    if bsize in sizes:
        from vlground.train.config import config_path

        for a in archs:
            if a in archs_known and not config_path(a, bsize).is_file():
                c.bad(f"{key}.size", f"no bundled config for {a} at size {bsize}")
    _train(c, c.mapping(block.get("train"), f"{key}.train"), f"{key}.train", hyper)
    c.mapping(block.get("model"), f"{key}.model")
    if "label" in block:
        label = block["label"]
        if c.string(label, f"{key}.label"):
            try:
                label.format(arch="a", size="s")
            except (KeyError, IndexError, ValueError) as exc:
                c.bad(f"{key}.label", f"only {{arch}} and {{size}} may be filled in ({exc})")


def _probe(c: _Check, probe: dict) -> None:
    from vlground.engine.registry import get_adapter_class, known_adapters
    from vlground.probes import known_probes

    c.keys(probe, PROBE_KEYS, "probe")
    adapter = probe.get("adapter")
    if adapter is None:
        c.bad("probe.adapter", f"needed ({', '.join(known_adapters())})")
    elif c.string(adapter, "probe.adapter"):
        try:
            get_adapter_class(adapter)
        except InputError as exc:
            c.bad("probe.adapter", str(exc))
            adapter = None
    names = c.str_list(probe["probes"], "probe.probes") if "probes" in probe else []
    known = known_probes()
    for n in [x.strip() for name in names for x in name.split(",") if x.strip()]:
        c.one_of(n, "probe.probes", known)
    for k in ("checkpoints", "mechanistic_checkpoints"):
        if k in probe:
            _steps(c, probe[k], f"probe.{k}")
    opts = c.mapping(probe.get("options"), "probe.options")
    if opts and isinstance(adapter, str):
        fixed = {"adapter", "run", "runs", "out", "probes", "checkpoints", "mechanistic_checkpoints", "no_report", "overwrite"}
        _options(c, opts, "probe.options", _flag_dests("probe", ("--adapter", adapter)) - fixed)


def missing_inputs(data: dict, where: str | Path, produced: set[Path]) -> list[str]:
    """One line per input of ``data`` that is not on disk: CHAT inputs, Visual Dialog files, an
    existing corpus (``source: path``) that no task of the sweep builds (``produced``: the
    resolved output folders of its tasks)."""
    lines = []
    for name, spec in (data.get("corpora") or {}).items():
        if not isinstance(spec, dict):
            continue
        source = spec.get("source", "chat")
        keys = {"chat": ("inputs",), "visdial": ("visdial", "images", "annotations"), "path": ("path",)}.get(source, ())
        for k in keys:
            vals = spec.get(k)
            for v in vals if isinstance(vals, list) else [vals]:
                if not isinstance(v, str):
                    continue
                p = Path(v)
                if source == "path" and p.resolve() in produced:
                    continue
                if not p.exists():
                    lines.append(f"{where}: corpora.{name}.{k}: {v}: no such file or folder"
                                 + (f" (relative to {os.getcwd()})" if not p.is_absolute() else ""))
    return lines


__all__ = ["SweepProblems", "read", "problems", "missing_inputs"]
