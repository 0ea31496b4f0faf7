"""Experiment tracking through ``accelerate``'s trackers (``--log-with``).

``vlground train --log-with tensorboard|wandb|mlflow|all`` (comma lists too) logs, per log step,
``train/loss``, ``train/lr``, ``train/tokens_per_s``, ``train/grad_norm`` and, per checkpoint,
``val/loss``; ``vlground probe --log-with`` logs per-checkpoint behaviour metrics the same way.
TensorBoard and MLflow write under the run folder's ``tracking/``; W&B follows its own settings
(``WANDB_MODE=offline`` works without a network). ``all`` means every one of the three that is
installed.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from vlground.errors import InputError

#: tracker name -> the package that provides it (pip name)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _installed(name: str) -> bool:
    if name == "tensorboard":  # accelerate accepts torch's writer with either package
        return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None
    return importlib.util.find_spec(TRACKERS[name]) is not None


def parse_log_with(spec: str | None) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; ``"all"`` -> the installed ones.

    Raises :class:`InputError` for an unknown name or a tracker whose package is missing.
    """
    if not spec:
        return []
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if "all" in names:
        found = [n for n in TRACKERS if _installed(n)]
        if not found:
            raise InputError("--log-with all: no tracker is installed (pip install tensorboard, wandb or mlflow)")
        return found
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise InputError(f"--log-with: unknown tracker {', '.join(unknown)} (known: {', '.join(TRACKERS)}, all)")
    missing = [n for n in names if not _installed(n)]
    if missing:
        raise InputError(f"--log-with {','.join(missing)}: not installed; pip install {' '.join(TRACKERS[n] for n in missing)}")
    return list(dict.fromkeys(names))


def flat_config(d: dict, prefix: str = "") -> dict:
    """Nested settings -> one level of ``a/b`` keys holding int, float, str or bool (what
    TensorBoard's hparams accept); other values become strings."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "/"))
        elif isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def scalars(rec: dict, prefix: str) -> dict:
    """The finite numbers of ``rec`` (other than ``step``) under ``prefix/``."""
    return {f"{prefix}/{k}": float(v) for k, v in rec.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def tracking_dir(out: str | Path) -> str:
    """Where TensorBoard / MLflow files go for the run or probe folder ``out``."""
    return str(Path(out) / "tracking")


#: per-checkpoint behaviour fields logged by ``vlground probe --log-with``
PROBE_FIELDS = ("match_surprisal", "mismatch_surprisal", "info_gain", "r2_cooc", "reverse_info_gain", "word_p_value")


def log_probe_results(out: str | Path, log_with: str | None, checkpoint_rows: list[dict]) -> list[str]:
    """Log each checkpoint's behaviour metrics as ``<run>/<field>`` at its training step through
    accelerate's trackers (files in ``OUT/tracking/``). Returns the trackers used."""
    trackers = parse_log_with(log_with)
    if not trackers:
        return []
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, log_with=trackers, project_dir=tracking_dir(out))
    acc.init_trackers("probe")
    try:
        for r in sorted(checkpoint_rows, key=lambda r: (str(r.get("run")), -1 if r.get("step") is None else r["step"])):
            vals = {f"{r['run']}/{k}": r[k] for k in PROBE_FIELDS if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])}
            if vals:
                acc.log(vals, step=r.get("step") if r.get("step") is not None else 0)
    finally:
        acc.end_training()
    return trackers
