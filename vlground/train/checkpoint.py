"""Checkpoint folders of a run and how to load them.

A run folder::

    RUN/run.json                 arch, size, seed, corpus, batch size, chunk_len, model kwargs,
                                 training hyperparameters, vlground version
    RUN/split.json               held-out validation chunks {"split_seed", "val_fraction", "val", "n_train"}
    RUN/order.npy                int64 chunk indices in presentation order (step s, batch size B:
                                 order[(s-1)*B : s*B])
    RUN/train_log.jsonl          {"step", "loss", "lr", "tokens_per_s"} and {"step", "val_loss"} lines
    RUN/checkpoints/step-<N>/    one checkpoint:
        model.safetensors, config.json      the model (``from_pretrained`` format)
        tokenizer.json, tokenizer_config.json, ...   copied from the corpus
        checkpoint.json          {"step", "arch", "seed", "chunks_seen", "tokens_seen", "val_loss", ...}
        trainer_state.pt         optimizer, scheduler, RNG states, data position (resume only)

Each checkpoint is written under a temporary name and renamed into place, and ``checkpoint.json``
is written last, so a folder named ``step-<N>`` is complete unless a file was damaged later.
"""
from __future__ import annotations

import errno
import json
import logging
import pickle
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from vlground.corpus.format import atomic_dir, write_json
from vlground.errors import InputError
from vlground.train.models import ATTENTION_ARCHS

if TYPE_CHECKING:  # torch is imported where it is used: the sweep driver reads schedules without it
    import torch

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
INFO = "checkpoint.json"
TRAINER_STATE = "trainer_state.pt"
_REQUIRED = ("config.json", "model.safetensors", TRAINER_STATE, INFO)
_STEP = re.compile(r"^step-(\d+)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class CorruptCheckpoint(InputError):
    """A checkpoint whose files are there and readable but whose content is damaged (truncated,
    not what ``vlground train`` writes). Only this kind lets ``--resume`` set a checkpoint aside;
    a checkpoint that cannot be *read* (permissions, I/O) raises its :class:`OSError` instead."""


def check_readable(path: str | Path) -> None:
    """Open every file a checkpoint needs; the :class:`OSError` of the first unreadable one
    propagates (a missing one is left to the loaders, which call it corrupt)."""
    for name in _REQUIRED:
        f = Path(path) / name
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except FileNotFoundError:
            continue


def _write_failure(exc: BaseException, path: Path) -> OSError:
    """The :class:`OSError` a failed write really is (torch reports a full disk as
    ``unexpected pos``; safetensors as its own error)."""
    if isinstance(exc, OSError):
        return exc if exc.filename is not None else OSError(exc.errno, exc.strerror or str(exc), str(path))
    try:
        full = shutil.disk_usage(path.parent if not path.is_dir() else path).free < 64 * 2**20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    first = (str(exc).splitlines() or [""])[0]
    return OSError(errno.EIO, f"cannot write ({type(exc).__name__}: {first})", str(path))


def _torch_save(obj, f: Path) -> None:
    """``torch.save`` through a Python file, so a full disk is an ``OSError`` naming ``f``."""
    import torch

    try:
        with open(f, "wb") as fh:
            torch.save(obj, fh)
    except (OSError, RuntimeError) as exc:
        raise _write_failure(exc, f) from None


def checkpoint_steps(steps: int, every: int, dense_until: int) -> list[int]:
    """Sorted steps that get a checkpoint: 0, powers of two up to ``dense_until``, multiples of
    ``every`` (if > 0), and always ``steps`` itself."""
    out = {0, steps}
    p = 1
    while p <= min(dense_until, steps):
        out.add(p)
        p *= 2
    if every > 0:
        out.update(range(every, steps + 1, every))
    return sorted(out)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of the complete checkpoints of a run, by increasing step."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        m = _STEP.match(d.name)
        if m and d.is_dir() and all((d / f).is_file() for f in _REQUIRED):
            out.append((int(m.group(1)), d))
    return sorted(out)


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, tokenizer_dir: Path, trainer_state: dict, info: dict
) -> Path:
    """Write ``RUN/checkpoints/step-<step>/`` atomically (replacing one left by an earlier attempt)."""
    final = Path(run_dir) / CHECKPOINTS / f"step-{step}"
    with atomic_dir(final, overwrite=True) as tmp:
        try:
            model.save_pretrained(str(tmp))
        except (OSError, RuntimeError, SafetensorError) as exc:
            raise _write_failure(exc, tmp / "model.safetensors") from None
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy2(Path(tokenizer_dir) / name, tmp / name)
        _torch_save(trainer_state, tmp / TRAINER_STATE)
        write_json(tmp / INFO, {"step": step, **info})
    return final


def _read_info(path: Path) -> dict:
    try:
        return json.loads((path / INFO).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not a complete vlground checkpoint (no {INFO})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{path / INFO}: corrupt ({exc})") from None


def load_model(path: str | Path, *, attn_implementation: str | None = "eager", dtype: "torch.dtype | None" = None):
    """The model of checkpoint ``path`` in eval mode (``dtype``: default float32).
    ``attn_implementation`` applies to archs with attention (``"eager"`` so attention weights
    and their gradients can be read)."""
    import torch

    import vlground.train.lstm  # noqa: F401  (registers vlground_lstm with the Auto classes)
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such checkpoint folder")
    check_readable(path)
    info = _read_info(path)
    kwargs = {"dtype": torch.float32 if dtype is None else dtype}
    if info.get("arch") in ATTENTION_ARCHS and attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CorruptCheckpoint(f"{path}: corrupt checkpoint ({type(exc).__name__}: {first})") from None
    return model.eval()


def load_checkpoint(
    path: str | Path,
    *,
    attn_implementation: str | None = "eager",
    dtype: "torch.dtype | None" = None,
    device: "str | torch.device | None" = None,
):
    """``(model, tokenizer)`` from a checkpoint folder; model in eval mode (on ``device`` if
    given), Transformer and hybrid attention eager. Raises :class:`InputError` for a missing or
    damaged checkpoint."""
    from transformers import PreTrainedTokenizerFast

    model = load_model(path, attn_implementation=attn_implementation, dtype=dtype)
    if device is not None:
        model.to(device)
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: tokenizer missing or corrupt ({exc})") from None
    return model, tokenizer


def load_trainer_state(path: str | Path) -> dict:
    """The resume state saved beside the weights (tensors and plain values only)."""
    f = Path(path) / TRAINER_STATE
    import torch

    with open(f, "rb") as fh:  # FileNotFoundError, PermissionError ...: not corruption, propagate
        fh.read(1)
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        # truncated zip, a plain pickle of other objects
        raise CorruptCheckpoint(f"{f}: corrupt or not written by vlground train ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{f}: not a trainer state (a {type(state).__name__}, not a dict)")
    return state


def checkpoint_info(path: str | Path) -> dict:
    """``checkpoint.json`` of a checkpoint folder."""
    return _read_info(Path(path))
