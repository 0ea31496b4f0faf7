"""What runs inside a Ray worker: one :class:`~vlground.sweep.spec.Task`, logged to its own file.

A task is idempotent: it holds ``OUT/.sweep/locks/<task>.lock`` while it runs (a task left over
from a killed sweep and the same task of a rerun never write at once), calls the existing
command's in-process entry point (which resumes: finished checkpoints, probe caches and corpus
folders are kept), and writes ``OUT/.sweep/done/<task>.json`` with its fingerprint when it
succeeds. A done marker with the same fingerprint means the task is skipped.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import time
from pathlib import Path

from vlground.sweep.spec import Task

STATE = ".sweep"


class TaskFailed(Exception):
    """A task that raised or returned a non-zero status; pickled back to the driver by Ray."""

    def __init__(self, task_id: str, reason: str, log_file: str):
        super().__init__(task_id, reason, log_file)
        self.task_id, self.reason, self.log_file = task_id, reason, log_file

    def __str__(self) -> str:
        return f"{self.task_id}: {self.reason} (log: {self.log_file})"


def log_path(out: Path, task: Task) -> Path:
    return Path(out) / "logs" / f"{task.safe_id}.log"


def done_path(out: Path, task: Task) -> Path:
    return Path(out) / STATE / "done" / f"{task.safe_id}.json"


def running_path(out: Path, task: Task) -> Path:
    return Path(out) / STATE / "running" / task.safe_id


def is_done(out: Path, task: Task) -> bool:
    """Finished by an earlier (or this) sweep with the same fingerprint, and its output still there."""
    f = done_path(out, task)
    try:
        ok = json.loads(f.read_text(encoding="utf-8")).get("fingerprint") == task.fingerprint()
    except (OSError, ValueError):
        return False
    return ok and Path(task.output).exists()


@contextlib.contextmanager
def _captured(log_file: Path):
    """stdout, stderr and the root logger go to ``log_file`` (restored after)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(log_file, "a", encoding="utf-8", buffering=1) as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield f
        finally:
            for h in list(root.handlers):  # ours, and the one the CLI added on the redirected stderr
                if h is handler or getattr(h, "_vlground", False):
                    root.removeHandler(h)
            root.setLevel(old_level)


def _last_error(log_file: Path) -> str:
    """The last ``vlground: error:`` line of a log (what the CLI printed), else ''."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "error:" in line:
            return line.strip()
    return ""


def execute(task: Task, out: str, num_cpus: float = 1, *deps) -> dict:
    """Run ``task`` (``deps``: the results of the tasks it waits for; unused, Ray orders by them).

    Returns ``{"id", "seconds", "skipped"}``; raises :class:`TaskFailed` with a one-line reason.
    """
    from filelock import FileLock

    out = Path(out)
    log_file = log_path(out, task)
    if is_done(out, task):  # finished by an earlier attempt of this task
        return {"id": task.id, "seconds": 0.0, "skipped": True}
    lock_dir = out / STATE / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    running = running_path(out, task)
    running.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with FileLock(str(lock_dir / f"{task.safe_id}.lock")):
        if is_done(out, task):  # a concurrent attempt finished it while we waited
            return {"id": task.id, "seconds": 0.0, "skipped": True}
        running.write_text(str(os.getpid()))
        try:
            with _captured(log_file) as f:
                print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {task.id} (pid {os.getpid()})", file=f)
                status = _call(task, num_cpus)
        except TaskFailed:
            raise
        except BaseException as exc:  # noqa: BLE001  (the reason goes back to the driver)
            import traceback

            with open(log_file, "a", encoding="utf-8") as f:
                traceback.print_exc(file=f)
            first = (str(exc).splitlines() or [""])[0]
            raise TaskFailed(task.id, f"{type(exc).__name__}: {first}", str(log_file)) from None
        finally:
            running.unlink(missing_ok=True)
        if status not in (None, 0) and not isinstance(status, (str, os.PathLike)):
            raise TaskFailed(task.id, _last_error(log_file) or f"exit status {status}", str(log_file))
        f = done_path(out, task)
        f.parent.mkdir(parents=True, exist_ok=True)
        from vlground.corpus.format import write_json

        seconds = round(time.perf_counter() - t0, 3)
        write_json(f, {"id": task.id, "fingerprint": task.fingerprint(), "seconds": seconds})
    return {"id": task.id, "seconds": seconds, "skipped": False}


def _call(task: Task, num_cpus: float):
    try:
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))
    except ImportError:  # pragma: no cover
        pass
    module, _, name = task.fn.partition(":")
    fn = getattr(importlib.import_module(module), name)
    args = task.args
    if task.fn == "vlground.cli:main":  # INFO messages (resumed from step N, ...) into the log
        args = (["-v", *args[0]], *args[1:])
    return fn(*args, **task.kwargs)
