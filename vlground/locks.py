"""Locks for folders that one writer at a time may change (a run, a features cache).

:func:`exclusive` takes a ``filelock`` lock without waiting; a second writer is refused with a
one-line :class:`BusyError` naming the holder (process id, host, command, start time), which the
holder records in ``<lock>.holder`` once it has the lock. The lock itself is an OS lock
(``flock``): it is released when the holder exits, even when killed, so a stale ``.holder`` file
never blocks anyone.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from vlground.errors import VlgroundError


class BusyError(VlgroundError):
    """Another process is writing the same folder."""


def _holder_file(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".holder")


def describe_holder(lock_path: str | os.PathLike) -> str:
    """``process 123 on host (vlground train ...) since 2026-12-01 22:50:01``, or a fallback."""
    try:
        h = json.loads(_holder_file(Path(lock_path)).read_text(encoding="utf-8"))
        return f"process {h['pid']} on {h['host']} ({h['command']}) since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock at ``lock_path`` for the block; :class:`BusyError` at once if someone holds it.

    ``what`` names the thing locked in the message, e.g. ``runs/tf-s0``.
    """
    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    lock = FileLock(str(lock_path), is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BusyError(f"{what}: in use by {describe_holder(lock_path)}; wait for it to finish "
                        f"(lock file {lock_path})") from None
    holder = _holder_file(lock_path)
    try:
        tmp = holder.with_name(f".{holder.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(["vlground", *sys.argv[1:]]) if sys.argv and "vlground" in sys.argv[0] else " ".join(sys.argv) or "python",
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }), encoding="utf-8")
        os.replace(tmp, holder)
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()
