"""The report's provenance: what made these numbers, as tables a reader can cite.

:func:`provenance` -> ``{field: value}`` (command line as typed, vlground version and git commit,
package versions, Python, machine, time); :func:`fingerprints` -> one row per probed run (its
corpus, run and model fingerprints, hub revision where the model came from the hub);
:func:`render` -> the HTML: both tables, and the raw settings JSON collapsed in ``<details>``.
Reads files only (never torch: package versions come from installed metadata).
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from vlground.report.tables import table

#: packages whose versions change numbers (shown in this order)
PACKAGES = ("torch", "transformers", "numpy", "scipy", "pandas", "statsmodels", "matplotlib", "accelerate", "ray")


def _version(pkg: str) -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the vlground source tree, when it is a git checkout (else None)."""
    where = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def command_line(command: str | None = None) -> str:
    """The command as typed: ``command`` when the caller knows it, else this process's own
    command line when it is the ``vlground`` CLI, else the Python script that called the report."""
    if command:
        return command
    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv and argv[0] else ""
    if prog in ("vlground", "__main__.py") and len(argv) > 1:
        return shlex.join(["vlground", *argv[1:]])
    if argv and argv[0] not in ("", "-c"):
        return shlex.join(["python", *argv]) + "  (a script calling vlground.report.write_report)"
    return "python (in-process call of vlground.report.write_report)"


def adapters_of(settings: dict) -> list[str]:
    """The adapter(s) behind the results: one probe folder's, or every run's of a sweep."""
    if settings.get("adapter"):
        return [str(settings["adapter"])]
    runs = settings.get("sweep_runs") or {}
    return sorted({str(s.get("adapter")) for s in runs.values() if isinstance(s, dict) and s.get("adapter")})


def machine() -> str:
    """``Linux-6.1 x86_64, 16 CPUs`` (no host name)."""
    return f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count() or '?'} CPUs"


def provenance(command: str | None = None, extra: dict | None = None) -> dict:
    """Versions, commit, machine, time and the command line, as ``{field: value}``."""
    import vlground

    prov = {
        "command": command_line(command),
        "vlground": f"{vlground.__version__}, git commit {git_commit() or 'none (not a git checkout)'}",
        "packages": ", ".join(f"{p} {_version(p)}" for p in PACKAGES),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "machine": machine(),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    prov.update(extra or {})
    return prov


def _sha(*files: Path) -> str | None:
    h = hashlib.sha256()
    seen = False
    for f in files:
        if f.is_file():
            seen = True
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return "sha256:" + h.hexdigest()[:16] if seen else None


def _short(fp) -> str | None:
    if not fp:
        return None
    text = str(fp)
    return text[: len("sha256:") + 16] if text.startswith("sha256:") else text


def fingerprints(res) -> list[dict]:
    """One row per probed run: checkpoints, the last checkpoint's model fingerprint, the run's
    ``run.json`` and its corpus (``corpus.json`` + ``chunks.npy``) fingerprints; the model id and
    hub revision for a pretrained model."""
    by_run: dict[str, list[dict]] = {}
    for c in res.checkpoints:
        by_run.setdefault(str(c["run"]), []).append(c)
    runs_settings = res.settings.get("sweep_runs") or {}
    rows = []
    for run, cks in sorted(by_run.items()):
        last = max(cks, key=lambda c: -1 if c.get("step") is None else c["step"])
        row = {"run": run, "checkpoints": len(cks), "model (last checkpoint)": _short(last.get("fingerprint"))}
        folder = Path(str(last.get("path") or ""))
        run_json = folder.parent.parent / "run.json" if folder.parent.name == "checkpoints" else None
        if run_json is not None and run_json.is_file():
            row["run.json"] = _sha(run_json)
            try:
                corpus = json.loads(run_json.read_text(encoding="utf-8")).get("corpus")
            except (OSError, json.JSONDecodeError):
                corpus = None
            if corpus:
                row["corpus"] = _sha(Path(corpus) / "corpus.json", Path(corpus) / "chunks.npy")
        s = runs_settings.get(run, res.settings)
        if isinstance(s, dict) and s.get("model"):
            row["hub model"] = str(s["model"]) + (f" @ {s['revision']}" if s.get("revision") else "")
        rows.append(row)
    return rows


def render(prov: dict, res) -> str:
    """The provenance section's HTML: the field table, the fingerprint table, raw settings collapsed."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in prov.items())
    fps = fingerprints(res)
    raw = html.escape(json.dumps(res.settings, indent=1, default=str))
    return (f"<table class=prov>{rows}</table>"
            + ("<p class=note>Fingerprints (SHA-256, first 16 hex digits) of what each run's numbers come from:</p>"
               + table(fps) if fps else "")
            + f"<details class=raw><summary>raw settings (results.json \"settings\")</summary><pre>{raw}</pre></details>")
