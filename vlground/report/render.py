"""Draw the report's figures in worker processes while the report is being built.

Building a figure (artists, data) and drawing it (layout, rasterising, PNG encoding) take about
the same time; on a 2-core machine the second core was idle while the report was written.
Inside :func:`rendering`, :func:`vlground.report.plots._save` pickles each finished figure and
hands it to a worker; :func:`vlground.report.html.img` leaves a placeholder for a figure still
being drawn, and :meth:`Renderer.fill` puts the finished images in once every worker is done.

Workers are plain subprocesses (``python -c ...`` reading pickled figures on stdin), not
``multiprocessing``: a spawned ``multiprocessing`` child re-imports the caller's ``__main__``,
which would re-run a user's unguarded script. A figure that cannot be pickled is drawn inline.
Pixels are the same either way (same matplotlib, same layout call, same dpi).
"""
from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

#: the renderer of the innermost open :func:`rendering` block (None outside one)
_ACTIVE: list["Renderer"] = []

_WORKER = "from vlground.report.render import serve; serve()"


def active() -> "Renderer | None":
    return _ACTIVE[-1] if _ACTIVE else None


def default_workers() -> int:
    """The CPUs this process may use, at most 4 (1: draw inline)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, n))


class Renderer:
    """A pool of figure-drawing subprocesses fed from a queue (one feeding thread per worker)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.jobs: queue.Queue = queue.Queue()
        self.pending: dict[str, tuple] = {}  # placeholder token -> (path, alt, wide) of an img() still to fill
        self.submitted: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []  # started by the first figure: a report without one starts none
        self._threads: list[threading.Thread] = []

    def _start(self) -> None:
        for _ in range(self.workers):
            # stderr to a file, not a pipe nobody reads while the worker runs: a full pipe would block it
            err = tempfile.TemporaryFile()
            p = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            p.err_file = err
            t = threading.Thread(target=self._feed, args=(p,), daemon=True)
            self._procs.append(p)
            self._threads.append(t)
            t.start()

    def submit(self, data: bytes, path: Path) -> None:
        if not self._procs:
            self._start()
        self.submitted.add(str(path))
        self.jobs.put((data, str(path)))

    def is_pending(self, path: Path) -> bool:
        return str(path) in self.submitted

    def placeholder(self, path: Path, alt: str, wide: bool) -> str:
        """A token :meth:`fill` replaces with the ``<img>`` of ``path`` once it is drawn."""
        with self._lock:
            token = f"<!--vlground-figure-{len(self.pending)}-{os.getpid()}-->"
            self.pending[token] = (str(path), alt, wide)
        return token

    def _feed(self, proc: subprocess.Popen) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                break
            data, path = job
            try:
                proc.stdin.write(struct.pack("<Q", len(path.encode())) + path.encode() + struct.pack("<Q", len(data)) + data)
                proc.stdin.flush()
                reply = proc.stdout.readline().decode("utf-8", "replace").rstrip("\n")
            except (BrokenPipeError, OSError) as exc:
                reply = f"error {path}: the drawing process ended ({type(exc).__name__})"
            if reply != "ok":
                if not reply:
                    proc.wait()
                    proc.err_file.seek(0)
                    err = proc.err_file.read().decode("utf-8", "replace").strip().splitlines()
                    reply = f"error {path}: the drawing process ended" + (f" ({err[-1]})" if err else "")
                with self._lock:
                    self.errors.append(reply.removeprefix("error "))

    def close(self) -> None:
        """Wait for every figure; stop the workers."""
        for _ in self._threads:
            self.jobs.put(None)
        for t in self._threads:
            t.join()
        for p in self._procs:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.wait()
            p.stdout.close()
            p.err_file.close()

    def fill(self, text: str) -> str:
        """``text`` with every placeholder replaced by its finished ``<img>``."""
        from vlground.report.html import img

        for token, (path, alt, wide) in self.pending.items():
            text = text.replace(token, img(Path(path), alt, wide))
        return text


@contextmanager
def rendering(workers: int | None = None):
    """Within this block figures are drawn by ``workers`` subprocesses (default
    :func:`default_workers`; 1 or fewer: inline, as outside the block). Yields the
    :class:`Renderer` (None when inline); leaving the block waits for every figure and raises
    ``RuntimeError`` naming the figures that failed."""
    n = default_workers() if workers is None else workers
    if n <= 1 or active() is not None:
        yield None
        return
    r = Renderer(n)
    _ACTIVE.append(r)
    try:
        yield r
    finally:
        _ACTIVE.pop()
        r.close()
    if r.errors:
        raise RuntimeError(f"{len(r.errors)} figure(s) could not be drawn: {'; '.join(r.errors[:3])}")


def serve() -> None:
    """A worker: read ``(path, pickled figure)`` records from stdin, draw each, answer ``ok`` or
    ``error <path>: <reason>`` per record on stdout; stop at end of input."""
    import matplotlib

    matplotlib.use("Agg")
    from vlground.report.plots import _render

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything drawing code prints must not be read as a reply
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        path = inp.read(struct.unpack("<Q", head)[0]).decode()
        data = inp.read(struct.unpack("<Q", inp.read(8))[0])
        try:
            _render(pickle.loads(data), Path(path))
            out.write(b"ok\n")
        except Exception as exc:  # noqa: BLE001  (one line back to the report writer)
            out.write(f"error {path}: {type(exc).__name__}: {exc}".replace("\n", " ").encode() + b"\n")
        out.flush()
