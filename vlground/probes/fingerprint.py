"""What a checkpoint *is*, as a hash of its content, so a cache can never return another model's results.

A local checkpoint folder is fingerprinted by the SHA-256 of its model files (weights and
configs directly in the folder: ``*.safetensors``, ``*.bin``, ``*.pt`` except optimizer and
trainer state, ``*.json``); a hub id by the id itself (a pinned hub revision is immutable).
Hashes are memoised in ``memo`` keyed by (path, size, mtime_ns), so an unchanged 14 GB
checkpoint is read once per output folder.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlground.corpus.format import write_json

_SKIP = {"trainer_state.pt", "optimizer.pt", "scheduler.pt", "rng_state.pth", "checkpoint.json"}
_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str, memo_file: Path | None = None) -> str:
    """``sha256:<hex>`` of a local checkpoint folder's model files, or ``id:<path>`` for a hub id."""
    folder = Path(path)
    if not folder.is_dir():
        return f"id:{path}"
    memo: dict = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
        except (json.JSONDecodeError, OSError):
            memo = {}
    total = hashlib.sha256()
    changed = False
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.name in _SKIP or not f.name.endswith(_SUFFIXES):
            continue
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = _file_hash(f)
            changed = True
        total.update(f.name.encode() + b"\0" + memo[key].encode() + b"\n")
    if changed and memo_file is not None:
        try:
            write_json(memo_file, memo)
        except OSError:
            pass  # the memo only saves time
    return "sha256:" + total.hexdigest()


__all__ = ["fingerprint"]
