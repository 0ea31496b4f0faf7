"""What a checkpoint *is*, as a hash of its content, so a cache can never return another model's results.

A local checkpoint folder is fingerprinted by the SHA-256 of its model files (weights and
configs directly in the folder: ``*.safetensors``, ``*.bin``, ``*.pt`` except optimizer and
trainer state, ``*.json``); a hub id by the commit it resolves to (``hub:<id>@<commit>``: from the local Hugging Face cache's
snapshot of that revision, else from the hub), so a branch that moves gives another fingerprint;
``id:<id>@<revision>`` only when neither can tell (offline, nothing cached: such results are not
pinned).
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


def resolve_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub ``revision`` (default: ``main``) of ``repo_id`` resolves to: the local cache's
    snapshot first (no network), then the hub; None when neither answers."""
    import re

    import os

    rev = revision or "main"
    if re.fullmatch(r"[0-9a-f]{40}", rev):
        return rev
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        return None  # not a hub id (a fake:// path, a missing folder)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id, revision=rev, local_files_only=True, allow_patterns=["config.json"])
        name = Path(folder).name
        if re.fullmatch(r"[0-9a-f]{40}", name):
            return name
    except Exception:  # noqa: BLE001 - not cached (or no huggingface_hub): ask the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, revision=rev).sha
    except Exception:  # noqa: BLE001 - offline or unknown: not resolvable
        return None


def fingerprint(path: str, memo_file: Path | None = None, revision: str | None = None) -> str:
    """``sha256:<hex>`` of a local checkpoint folder's model files; for a hub id ``hub:<id>@<commit>``
    (the commit ``revision`` resolves to), or ``id:<id>@<revision>`` when it cannot be resolved."""
    folder = Path(path)
    if not folder.is_dir():
        commit = resolve_commit(path, revision)
        if commit:
            return f"hub:{path}@{commit}"
        return f"id:{path}@{revision}" if revision else f"id:{path}"
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


__all__ = ["fingerprint", "resolve_commit"]
