"""Submit a sweep's task graph to Ray and follow it.

1. take ``OUT/.sweep/sweep.lock`` (a second sweep over the same folder is refused);
2. leave out the tasks already done (done marker with the same fingerprint);
3. start Ray (an embedded local instance, or connect to ``address``), check the declared
   resources fit the cluster;
4. submit every task left as a ``ray.remote`` call with its resources; a task's dependencies are
   passed as object refs, so Ray orders, places and retries them (vlground keeps no queue);
5. follow: a live line (done / running / failed / left, ETA), the combined report rewritten as
   probes finish; a failed task does not stop the others (its dependents are ``blocked``);
6. on Ctrl-C / SIGTERM cancel what is left; shut down the Ray instance it started.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vlground.errors import InputError
from vlground.sweep import tasks as T
from vlground.sweep.report import write_combined
from vlground.sweep.spec import Sweep, Task

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What a sweep did."""

    done_before: list[str] = field(default_factory=list)  #: task ids already done when it started
    ran: list[str] = field(default_factory=list)  #: task ids that finished in this sweep
    failed: dict[str, T.TaskFailed] = field(default_factory=dict)  #: task id -> its failure
    blocked: dict[str, str] = field(default_factory=dict)  #: task id -> id of the failed task it waited for
    report: Path | None = None  #: the combined report, if any probe output exists
    seconds: float = 0.0
    ray_start_s: float | None = None  #: seconds ray.init took (None when Ray was not started: nothing to run)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def plan(sweep: Sweep) -> list[tuple[Task, bool]]:
    """``[(task, done)]`` in dependency order."""
    return [(t, T.is_done(sweep.out, t)) for t in sweep.tasks]


def describe(sweep: Sweep, stream: TextIO) -> None:
    """The task graph, what is done and what is left (``--dry-run``)."""
    rows = plan(sweep)
    for t, done in rows:
        res = ", ".join(f"{k}={v}" for k, v in sweep.resources[t.kind].items())
        deps = f" after {', '.join(t.deps)}" if t.deps else ""
        print(f"{'done' if done else 'todo'}  {t.id}  [{res}]{deps}", file=stream)
    n_done = sum(d for _, d in rows)
    print(f"{len(rows)} tasks: {n_done} done, {len(rows) - n_done} left; output {sweep.out}", file=stream)


def _bundled_name(path) -> str | None:
    """The name of a bundled sweep file (inside the installed package), else None."""
    from importlib import resources

    folder = Path(str(resources.files("vlground") / "configs" / "sweeps")).resolve()
    p = Path(str(path)).resolve()
    return p.stem if p.parent == folder else None


def _shown(path) -> str:
    name = _bundled_name(path)
    return f"bundled sweep {name}" if name else str(path)


def _edit_hint(path) -> str:
    name = _bundled_name(path)
    if name is None:
        return "lower it in that file"
    return f"copy it with `vlground sweep export {name} > my.yaml`, lower it there, run `vlground sweep my.yaml`"


def _resources(sweep: Sweep, kind: str, cluster: dict) -> dict:
    res = dict(sweep.resources[kind])
    if res.get("num_gpus") == "auto":
        res["num_gpus"] = 1 if cluster.get("GPU", 0) >= 1 else 0
    for key, have in (("num_cpus", cluster.get("CPU", 0)), ("num_gpus", cluster.get("GPU", 0))):
        if float(res.get(key, 0) or 0) > have:
            raise InputError(f"{_shown(sweep.path)}: resources.{kind}.{key} = {res[key]} but the Ray cluster has {have:g}; "
                             f"{_edit_hint(sweep.path)} or connect to a bigger cluster with --address")
    return res


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """One-line InputError, within ``timeout_s``, when nothing answers at a ``host:port`` or
    ``ray://host:port`` address (Ray itself retries for minutes). ``auto`` and other forms are
    left to Ray, which fails fast when it finds no cluster."""
    import re
    import socket

    if not address or address == "auto" or address.startswith("local"):
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if not m:
        raise InputError(f"--address {address}: want auto, host:port or ray://host:port")
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__ if not isinstance(exc, socket.timeout) else f"no answer in {timeout_s:g} s"
        raise InputError(f"--address {address}: no Ray cluster answers there ({why}); start one with "
                         "`ray start --head`, or leave out --address for a local instance") from None


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a quiet, lean local instance; True if this call started it.
    A cluster that does not answer is an InputError; a local instance that cannot start is a
    :class:`RayStartError` (an InputError: one line).

    Lean: no dashboard (``include_dashboard=False``: no dashboard modules, only Ray's head API
    process), no usage-stats reporting, worker output not streamed to the driver (it is in
    ``OUT/logs/``), and a local object store of :data:`LOCAL_OBJECT_STORE` bytes (tasks pass only
    small argument and status objects; the default reserves 30% of the machine's memory).
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    check_address(address)
    # Ray's own start-up notices (e.g. "token authentication is enabled") say nothing a user of a
    # local instance must act on: shown with -v, otherwise only Ray's errors reach the terminal
    level = logging.WARNING if logging.getLogger("vlground").isEnabledFor(logging.INFO) else logging.ERROR
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=level, configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, ConnectionError, its own errors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = f"connect to Ray at {address}" if address else "start Ray"
        if address:
            raise InputError(f"cannot {where} ({type(exc).__name__}: {first})") from None
        raise RayStartError(f"cannot start Ray: the local instance did not start ({type(exc).__name__}: {first}); "
                            "is the machine overloaded? run again to resume") from None
    _sigterm_as_interrupt()  # Ray sets its own handler on init; ours cancels the tasks cleanly
    return True


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the main thread (the same clean exit as Ctrl-C);
    returns the previous handler (None off the main thread, where nothing is changed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


class RayStartError(InputError):
    """The local Ray instance could not be started (the message is one line)."""


#: object store of a local instance (bytes): tasks exchange only small objects
LOCAL_OBJECT_STORE = 256 * 1024**2


class _Progress:
    """One status line: rewritten in place on a terminal, printed on change otherwise."""

    def __init__(self, stream: TextIO, total: int, done_before: int):
        self.stream, self.total, self.done_before = stream, total, done_before
        self.t0, self.last, self.tty = time.monotonic(), "", stream.isatty()

    def show(self, done: int, running: int, failed: int, blocked: int, final: bool = False) -> None:
        left = self.total - self.done_before - done - failed - blocked
        elapsed = time.monotonic() - self.t0
        eta = f"ETA {_hms(elapsed / done * left)}" if done and left else ("ETA ?" if left else "")
        counts = (f"sweep: {self.done_before + done}/{self.total} done, {running} running, {failed} failed"
                  + (f" ({blocked} blocked)" if blocked else "") + f", {left} left")
        line = f"{counts}  {_hms(elapsed)} {eta}".rstrip()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.stream.flush()
        elif counts != self.last or final:  # a log file gets a line per change, not per poll
            print(line, file=self.stream, flush=True)
        self.last = counts


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_sweep(sweep: Sweep, *, address: str | None = None, num_cpus: int | None = None,
              stream: TextIO | None = None, poll_s: float = 0.5) -> Outcome:
    """Run what is left of ``sweep`` on Ray; returns the :class:`Outcome` (failures included)."""
    from filelock import FileLock, Timeout

    import signal

    from vlground import folders

    stream = stream or sys.stderr
    out = sweep.out
    folders.check_output(out, "sweep")  # not a corpus, run, probe ... folder, nor inside one
    check_address(address)  # before anything is written
    folders.claim(out, "sweep")
    (out / T.STATE).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / T.STATE / "sweep.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(f"{out}: another sweep is running over this folder ({lock.lock_file} is held)") from None
    previous = _sigterm_as_interrupt()
    try:
        return _run_locked(sweep, address, num_cpus, stream, poll_s)
    finally:
        _clear_running(out)  # every task of this sweep has finished or was cancelled
        lock.release()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _clear_running(out: Path) -> None:
    """Remove the ``running`` markers of tasks (we hold the sweep's lock: none of ours runs now)."""
    folder = out / T.STATE / "running"
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink(missing_ok=True)


def _run_locked(sweep: Sweep, address, num_cpus, stream, poll_s) -> Outcome:
    t_start = time.monotonic()
    out = sweep.out
    outcome = Outcome()
    rows = plan(sweep)
    outcome.done_before = [t.id for t, d in rows if d]
    todo = [t for t, d in rows if not d]
    probe_tasks = [t for t in sweep.tasks if t.kind == "probe"]
    if not todo:
        if not (out / "report" / "report.html").is_file():
            outcome.report = write_combined(out, probe_tasks)
        else:
            outcome.report = out / "report" / "report.html"
        print(f"sweep: all {len(rows)} tasks already done; report: {outcome.report}", file=stream)
        outcome.seconds = time.monotonic() - t_start
        return outcome

    import ray

    t_ray = time.monotonic()
    started = start_ray(address, num_cpus)
    outcome.ray_start_s = time.monotonic() - t_ray
    log.info("Ray %s in %.1f s", "started" if started else "connected", outcome.ray_start_s)
    refs: dict = {}
    try:
        cluster = ray.cluster_resources()
        res = {k: _resources(sweep, k, cluster) for k in {t.kind for t in todo}}
        execute = ray.remote(T.execute)
        for t in todo:  # dependency order: a task's deps are submitted (or done) before it
            r = res[t.kind]
            dep_refs = [refs[d] for d in t.deps if d in refs]
            opts = {k: r[k] for k in ("num_cpus", "num_gpus", "memory", "resources") if r.get(k) is not None}
            ref = execute.options(**opts, max_retries=sweep.retries, retry_exceptions=False,
                                  name=t.id).remote(t, str(out), r.get("num_cpus", 1), *dep_refs)
            refs[t.id] = ref
        _follow(sweep, todo, refs, outcome, probe_tasks, stream, poll_s)
    except BaseException:
        for ref in refs.values():
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001  (already finished)
                pass
        raise
    finally:
        if started:
            ray.shutdown()
    outcome.seconds = time.monotonic() - t_start
    return outcome


def _follow(sweep: Sweep, todo: list[Task], refs: dict, outcome: Outcome, probe_tasks: list[Task], stream, poll_s) -> None:
    import ray

    by_ref = {ref: tid for tid, ref in refs.items()}
    tasks = {t.id: t for t in todo}
    pending = list(refs.values())
    progress = _Progress(stream, len(sweep.tasks), len(outcome.done_before))
    last_report, report_due = time.monotonic(), False
    while pending:
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s, fetch_local=False)
        for ref in ready:
            tid = by_ref[ref]
            try:
                ray.get(ref)
                outcome.ran.append(tid)
                report_due |= tasks[tid].kind == "probe"
            except ray.exceptions.RayTaskError as exc:
                cause = exc.cause if isinstance(getattr(exc, "cause", None), T.TaskFailed) else None
                if cause is not None and cause.task_id != tid:
                    outcome.blocked[tid] = cause.task_id
                else:
                    outcome.failed[tid] = cause or T.TaskFailed(tid, _first_line(exc), str(T.log_path(sweep.out, tasks[tid])))
            except ray.exceptions.RayError as exc:  # worker died more often than retries allow, cancelled
                upstream = next((d for d in tasks[tid].deps if d in outcome.failed or d in outcome.blocked), None)
                if upstream:
                    outcome.blocked[tid] = outcome.blocked.get(upstream, upstream)
                else:
                    outcome.failed[tid] = T.TaskFailed(tid, _first_line(exc), str(T.log_path(sweep.out, tasks[tid])))
        running = sum(1 for r in pending if T.running_path(sweep.out, tasks[by_ref[r]]).exists())
        progress.show(len(outcome.ran), running, len(outcome.failed), len(outcome.blocked))
        if report_due and (not pending or time.monotonic() - last_report >= sweep.report_every_s):
            outcome.report = write_combined(sweep.out, probe_tasks)
            last_report, report_due = time.monotonic(), False
    progress.show(len(outcome.ran), 0, len(outcome.failed), len(outcome.blocked), final=True)
    if outcome.report is None:
        outcome.report = write_combined(sweep.out, probe_tasks)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]


def summary(outcome: Outcome, stream: TextIO) -> None:
    """One line per failure (task, reason, log file), one per blocked task, then the totals."""
    for tid, f in outcome.failed.items():
        print(f"FAILED  {tid}: {f.reason}  (log: {f.log_file})", file=stream)
    for tid, up in outcome.blocked.items():
        print(f"BLOCKED {tid}: not run because {up} failed", file=stream)
    print(f"sweep: {len(outcome.ran)} ran, {len(outcome.done_before)} already done, {len(outcome.failed)} failed, "
          f"{len(outcome.blocked)} blocked in {_hms(outcome.seconds)}; report: {outcome.report}", file=stream)
