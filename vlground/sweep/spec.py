"""A sweep file (YAML) and the task graph it expands into.

A sweep file::

    out: sweeps/paper-text          # output folder (``--out`` overrides), relative to the current folder
    size: paper                     # default size preset of every grid block
    corpora:                        # name -> how to get it
      childes:
        source: chat                # chat (build-corpus INPUTS), visdial, generated (the demo's generator) or path
        inputs: [data/childes]      # chat: .cha files, folders, .zip archives
        options: {chunk_len: 512}   # further build-corpus flags (``chunk_len`` -> ``--chunk-len``)
    grid:                           # blocks; each is archs x seeds x drop_cooc (x vision_init) on one corpus
      - {archs: [transformer, lstm], seeds: [0, 1], corpus: childes, drop_cooc: [0.0, 0.5]}
        # drop_in: corpus (default: build-corpus --drop-cooc, one subset shared by every seed) or
        # train (vlground train --drop-cooc: each seed leaves out its own subset; docs/corpus.md)
    train: {steps: 20000}           # training options over the config file (``vlground train --steps`` ...)
    probe:                          # ``vlground probe`` on each run
      adapter: childes
      probes: [behaviour, saliency]
      checkpoints: all
      mechanistic_checkpoints: last
      options: {ablation_draws: 10}
    resources:                      # per task kind: Ray's num_cpus, num_gpus ("auto": 1 when the cluster has GPUs), memory
      train: {num_cpus: 1, num_gpus: auto}
    retries: 2                      # Ray retries of a task whose worker died (not of a task that raised)

:func:`expand` turns it into :class:`Task` objects: one ``build-corpus`` per corpus variant
(corpus x drop-cooc level x vision init), then ``train`` -> ``probe`` per run. Folders under OUT::

    corpora/<variant>/   runs/<arch>/<variant>/seed-<k>/   probes/<arch>/<variant>/seed-<k>/
    report/              logs/<task>.log                     .sweep/ (lock, done markers)
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlground.errors import InputError

KINDS = ("build-corpus", "train", "probe")
SOURCES = ("chat", "visdial", "generated", "path")
#: resources of a task kind when the sweep file says nothing
DEFAULT_RESOURCES = {kind: {"num_cpus": 1, "num_gpus": 0} for kind in KINDS}
from vlground.sweep.schema import BLOCK as _BLOCK, TOP as _TOP  # noqa: E402 - the keys live with the schema


@dataclass(frozen=True)
class Task:
    """One unit of work Ray runs: ``fn(*args, **kwargs)`` in a worker process.

    ``fn`` is ``"module:function"``; for a ``vlground`` command it is ``vlground.cli:main`` with
    ``args == (argv,)`` and a non-zero return is a failure. ``output`` is the folder it writes.
    """

    id: str  #: unique, path-like: ``train/transformer/childes-drop50/seed-0``
    kind: str  #: build-corpus, train or probe
    fn: str  #: "module:function" run in the worker
    args: tuple = ()  #: positional arguments (JSON-able)
    kwargs: dict = field(default_factory=dict)  #: keyword arguments (JSON-able)
    deps: tuple[str, ...] = ()  #: ids of the tasks that must finish first
    output: str = ""  #: the folder the task writes
    run: str | None = None  #: probe tasks: the run id (``arch/variant/seed-k``) in the combined report

    def fingerprint(self) -> str:
        """Hash of what the task does; a done marker counts only for the same fingerprint."""
        blob = json.dumps([self.fn, list(self.args), self.kwargs], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def safe_id(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "__", self.id)


@dataclass
class Sweep:
    """A sweep file read and expanded."""

    path: Path  #: the sweep file
    out: Path  #: output folder
    data: dict  #: the file's content
    tasks: list[Task]  #: in dependency order
    resources: dict[str, dict[str, Any]]  #: kind -> Ray resources (num_gpus may be "auto")
    retries: int  #: Ray max_retries for system failures
    report_every_s: float  #: minimum seconds between two rewrites of the combined report


def load(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Read a sweep file and expand it; InputError (``<file>: <what>``) on anything wrong, or
    :class:`~vlground.sweep.schema.SweepProblems` with one line per problem of the whole file
    (duplicate keys included)."""
    from vlground.sweep import schema

    path = Path(path)
    return from_dict(schema.read(path), path, out)


def from_dict(data: Any, path: str | Path = "<sweep>", out: str | Path | None = None) -> Sweep:
    """Check ``data`` whole against the schema (:mod:`vlground.sweep.schema`), then expand it."""
    from vlground.sweep import schema

    path = Path(path)
    lines = schema.problems(data, path)
    if lines:
        raise schema.SweepProblems(lines)
    if not isinstance(data, dict):
        raise InputError(f"{path}: a sweep file is a mapping with corpora, grid, train, probe")
    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP))})")
    out = Path(out if out is not None else data.get("out", "vlground-sweep"))
    resources = {k: dict(v) for k, v in DEFAULT_RESOURCES.items()}
    for kind, res in (data.get("resources") or {}).items():
        if kind not in KINDS or not isinstance(res, dict):
            raise InputError(f"{path}: resources.{kind}: want a mapping for one of {', '.join(KINDS)}")
        resources[kind].update(res)
    tasks = expand(data, out, path)
    return Sweep(path=path, out=out, data=data, tasks=tasks, resources=resources,
                 retries=int(data.get("retries", 2)), report_every_s=float(data.get("report_every_s", 60)))


def _flags(options: dict | None, where: str) -> list[str]:
    """``{chunk_len: 512, strict: true}`` -> ``["--chunk-len", "512", "--strict"]`` (sorted by
    key, so a task's fingerprint does not depend on the order of a mapping in the file)."""
    argv: list[str] = []
    for k, v in sorted((options or {}).items()):
        flag = "--" + str(k).replace("_", "-")
        if isinstance(v, bool):
            argv += [flag] if v else []
        elif isinstance(v, (int, float, str)):
            argv += [flag, str(v)]
        elif isinstance(v, list):
            argv += [flag, ",".join(str(x) for x in v)]
        else:
            raise InputError(f"{where}.{k}: want a number, string, boolean or list, got {v!r}")
    return argv


def _pct(p: float) -> str:
    return f"{round(p * 100, 2):g}"


def variant_id(corpus: str, drop: float, init: str) -> str:
    """``childes`` (drop 0), ``childes-drop50``, ``visdial-random-drop25``."""
    return corpus + ("" if init == "pretrained" else f"-{init}") + ("" if drop == 0 else f"-drop{_pct(drop)}")


def _corpus_task(name: str, spec: dict, drop: float, init: str, out: Path, where: str) -> tuple[str, Task | None]:
    """(corpus folder, task building it or None for an existing corpus)."""
    source = spec.get("source", "chat")
    vid = variant_id(name, drop, init)
    folder = str(out / "corpora" / vid)
    opts = dict(spec.get("options") or {})
    tid = f"build-corpus/{vid}"
    if source == "path":
        if drop != 0 or init != "pretrained":
            raise InputError(f"{where}: corpus {name!r} is an existing folder (source: path); it has no drop_cooc/vision_init variants")
        if not spec.get("path"):
            raise InputError(f"{where}: corpora.{name}: source path needs path:")
        return str(Path(spec["path"])), None
    if source == "generated":
        kwargs = {"out_dir": folder, "seed": int(opts.pop("seed", 0)), "n_files": int(opts.pop("files", 80)),
                  "chat_dir": str(out / "chat" / vid), "chunk_len": int(opts.pop("chunk_len", 512)),
                  "drop_cooc": float(drop), "overwrite": True, **opts}
        return folder, Task(tid, "build-corpus", "vlground.datasets.chat_generator:build_default_corpus", kwargs=kwargs, output=folder)
    argv = ["build-corpus"]
    if source == "chat":
        inputs = spec.get("inputs")
        if not inputs:
            raise InputError(f"{where}: corpora.{name}: source chat needs inputs: (CHAT files or folders)")
        argv += [str(x) for x in (inputs if isinstance(inputs, list) else [inputs])]
    elif source == "visdial":
        for key in ("visdial", "images", "annotations"):
            if not spec.get(key):
                raise InputError(f"{where}: corpora.{name}: source visdial needs {key}:")
        argv += ["--visdial", str(spec["visdial"]), "--images", str(spec["images"]), "--annotations", str(spec["annotations"]),
                 "--vision", str(spec.get("vision", "facebook/dinov2-base")), "--vision-init", init]
    else:
        raise InputError(f"{where}: corpora.{name}: unknown source {source!r} (known: {', '.join(SOURCES)})")
    argv += ["--out", folder, "--drop-cooc", str(drop), "--overwrite", "--no-progress", *_flags(opts, f"{where}: corpora.{name}.options")]
    return folder, Task(tid, "build-corpus", "vlground.cli:main", args=(argv,), output=folder)


def expand(data: dict, out: Path, where: str | Path = "<sweep>") -> list[Task]:
    """The tasks of a sweep, in dependency order (corpora, then train -> probe per run)."""
    where = str(where)
    corpora = data.get("corpora") or {}
    grid = data.get("grid") or []
    if not isinstance(corpora, dict) or not corpora:
        raise InputError(f"{where}: corpora: want a mapping of at least one corpus")
    if not isinstance(grid, list) or not grid:
        raise InputError(f"{where}: grid: want a list of blocks (archs, seeds, corpus, drop_cooc)")
    from vlground.train.models import ARCHS

    probe = dict(data.get("probe") or {})
    if "adapter" not in probe:
        raise InputError(f"{where}: probe: needs adapter: (childes, visdial_dinov2, ...)")
    corpus_tasks: dict[str, Task] = {}
    corpus_dirs: dict[str, str] = {}
    runs: dict[str, tuple[Task, Task]] = {}
    for b, block in enumerate(grid):
        at = f"{where}: grid[{b}]"
        if not isinstance(block, dict):
            raise InputError(f"{at}: want a mapping")
        unknown = sorted(set(block) - _BLOCK)
        if unknown:
            raise InputError(f"{at}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_BLOCK))})")
        name = block.get("corpus") or (next(iter(corpora)) if len(corpora) == 1 else None)
        if name not in corpora:
            raise InputError(f"{at}: corpus {name!r} is not in corpora ({', '.join(corpora)})")
        archs = block.get("archs") or []
        bad = [a for a in archs if a not in ARCHS]
        if not archs or bad:
            raise InputError(f"{at}: archs: unknown {', '.join(map(str, bad))} (known: {', '.join(ARCHS)})" if bad else f"{at}: archs: none given")
        seeds = [int(s) for s in block.get("seeds", [0])]
        drops = [float(d) for d in block.get("drop_cooc", [0.0])]
        if any(not 0 <= d <= 1 for d in drops):
            raise InputError(f"{at}: drop_cooc levels are fractions in [0, 1], got {drops}")
        inits = list(block.get("vision_init", ["pretrained"]))
        drop_in = block.get("drop_in", "corpus")
        if drop_in not in ("corpus", "train"):
            raise InputError(f"{at}: drop_in: corpus or train, got {drop_in!r}")
        size = block.get("size", data.get("size", "tiny"))
        train_opts = {**(data.get("train") or {}), **(block.get("train") or {})}
        for drop in drops:
            for init in inits:
                corpus_drop = drop if drop_in == "corpus" else 0.0
                cid, vid = variant_id(name, corpus_drop, init), variant_id(name, drop, init)
                if cid not in corpus_dirs:
                    folder, task = _corpus_task(name, corpora[name], corpus_drop, init, out, where)
                    corpus_dirs[cid] = folder
                    if task is not None:
                        corpus_tasks[cid] = task
                for arch in archs:
                    label = str(block.get("label", "{arch}")).format(arch=arch, size=size)
                    for seed in seeds:
                        rid = f"{label}/{vid}/seed-{seed}"
                        run_dir, probe_dir = str(out / "runs" / rid), str(out / "probes" / rid)
                        run_opts = {**train_opts, "drop_cooc": drop} if drop_in == "train" and drop > 0 else train_opts
                        argv = ["train", "--corpus", corpus_dirs[cid], "--out", run_dir, "--arch", arch, "--size", str(size),
                                "--seed", str(seed), "--resume", "--no-progress", *_flags(run_opts, f"{at}.train")]
                        for k, v in (block.get("model") or {}).items():
                            argv += ["--model-arg", f"{k}={json.dumps(v)}"]
                        deps = (corpus_tasks[cid].id,) if cid in corpus_tasks else ()
                        train = Task(f"train/{rid}", "train", "vlground.cli:main", args=(argv,), deps=deps, output=run_dir, run=rid)
                        pr = Task(f"probe/{rid}", "probe", "vlground.cli:main", args=(probe_argv(probe, run_dir, probe_dir),),
                                  deps=(train.id,), output=probe_dir, run=rid)
                        if rid in runs and runs[rid][0] != train:
                            raise InputError(f"{at}: run {rid} is made twice with different settings; give a block a label: (e.g. '{{arch}}-long')")
                        runs[rid] = (train, pr)
    trains = _after_builds([t for pair in runs.values() for t in pair], corpus_tasks)
    return [*corpus_tasks.values(), *trains]


def _after_builds(tasks: list[Task], corpus_tasks: dict[str, Task]) -> list[Task]:
    """A run whose corpus (``source: path``) is a folder another corpus of the sweep builds waits
    for that build."""
    import dataclasses

    built = {Path(t.output).resolve(): t.id for t in corpus_tasks.values()}
    out = []
    for t in tasks:
        if t.kind == "train" and t.args:
            argv = list(t.args[0])
            corpus = Path(argv[argv.index("--corpus") + 1]).resolve() if "--corpus" in argv else None
            dep = built.get(corpus) if corpus is not None else None
            if dep is not None and dep not in t.deps:
                t = dataclasses.replace(t, deps=(*t.deps, dep))
        out.append(t)
    return out


def missing_inputs(sweep: "Sweep") -> list[str]:
    """One line per input of ``sweep`` that is not on disk (an existing corpus that a task of the
    sweep builds is not missing)."""
    from vlground.sweep import schema

    produced = {Path(t.output).resolve() for t in sweep.tasks if t.kind == "build-corpus"}
    return schema.missing_inputs(sweep.data, sweep.path, produced)


def probe_argv(probe: dict, run_dir: str, probe_dir: str) -> list[str]:
    """The ``vlground probe`` command line of one run (device auto: Ray hides GPUs from a task
    that asked for none). The one place to change when the probe layer moves to
    ``vlground.probes.run_probes``."""
    probes = probe.get("probes", ["behaviour"])
    argv = ["probe", "--adapter", str(probe["adapter"]), "--run", run_dir, "--out", probe_dir, "--no-report",
            "--probes", ",".join(probes) if isinstance(probes, list) else str(probes),
            "--checkpoints", _steps(probe.get("checkpoints", "all")),
            "--mechanistic-checkpoints", _steps(probe.get("mechanistic_checkpoints", "all"))]
    return argv + _flags(probe.get("options"), "probe.options")


def _steps(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)
