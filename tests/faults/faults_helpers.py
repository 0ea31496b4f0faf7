"""Helpers of the fault-injection suite (issue 15): bad input, interruption and concurrent use, one test per
defect class. Every test here carries the ``faults`` marker (``pytest -m faults`` runs them alone).

Each test asserts the one-line ``vlground: error: ...`` message, the exit status and that what was
written before is intact byte for byte (:func:`snapshot`)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (hidden ones included), by path."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def run_cli(argv, capsys):
    """``(exit status, stderr lines)`` of ``vlground <argv>`` run in-process."""
    from vlground.cli import main

    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


def one_error(err: list[str]) -> str:
    """The single ``vlground: error:`` line of stderr (asserts there is exactly one and no traceback)."""
    errors = [line for line in err if line.startswith("vlground: error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    return errors[0]
