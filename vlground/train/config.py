"""Training configuration: what a user sets (:class:`TrainConfig`) and what a run records
(:class:`Hyper` + model kwargs, resolved from a JSON config file).

A config file (``vlground/configs/<arch>-<size>.json``, or a user's copy passed as ``--config``)::

    {"arch": "transformer", "size": "tiny",
     "model": {...kwargs of the architecture's Hugging Face config...},
     "train": {...fields of Hyper; missing ones take Hyper's defaults...}}

Precedence: :class:`Hyper` defaults < the config file < ``TrainConfig.overrides`` (the CLI's
``--steps``, ``--lr``, ...). ``TrainConfig.model_overrides`` (``--model-arg k=v``) update
``"model"``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from vlground.errors import InputError
from vlground.train.models import ARCHS, check_arch

SIZES = ("tiny", "small", "paper")


def _coerce(v: Any, typ: type, where: str) -> Any:
    """``v`` as ``typ`` (int, float or str) without silent truncation; InputError otherwise."""
    ok = not isinstance(v, bool) and (
        (typ is str and isinstance(v, str))
        or (typ is float and isinstance(v, (int, float)))
        or (typ is int and (isinstance(v, int) or (isinstance(v, float) and v.is_integer())))
    )
    if not ok:
        raise InputError(f"{where}={v!r} is not a {typ.__name__}")
    return typ(v)


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Hyper:
    """Training hyperparameters (the ``"train"`` section of a config file)."""

    steps: int = _f(1000, "optimizer steps in the whole run")
    batch_size: int = _f(16, "chunks per optimizer step, over all processes together")
    lr: float = _f(3e-4, "peak learning rate (AdamW)")
    warmup_steps: int = _f(100, "steps of linear warm-up from 0 to lr")
    schedule: str = _f("cosine", "decay after warm-up: cosine, linear or constant")
    min_lr_ratio: float = _f(0.1, "learning rate at the last step, as a fraction of lr")
    weight_decay: float = _f(0.1, "AdamW weight decay (not applied to biases, norms, embeddings)")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.95, "AdamW beta2")
    eps: float = _f(1e-8, "AdamW epsilon")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: off)")
    checkpoint_every: int = _f(500, "a checkpoint every N steps after the dense start (0: none)")
    checkpoint_dense_until: int = _f(512, "checkpoints at step 0 and every power of two up to this step")
    log_every: int = _f(10, "write train_log.jsonl and update the progress bar every N steps")
    val_fraction: float = _f(0.05, "fraction of chunks held out for validation (at least 1 chunk)")
    val_max_chunks: int = _f(256, "validation loss uses at most this many held-out chunks")
    split_seed: int = _f(0, "seed of the validation split; the same for every run seed so val losses compare")
    drop_cooc: float = _f(0.0, "share of the co-occurring training chunks this run leaves out, drawn with the run's --seed (docs/corpus.md)")
    attn_implementation: str = _f("sdpa", "attention kernel while training (checkpoints load with eager)")
    mixed_precision: str = _f("auto", "auto (bf16 on a GPU that has it, else fp32), no, bf16 or fp16")

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "Hyper":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InputError(f"{where}: unknown training option(s) {', '.join(unknown)} (known: {', '.join(known)})")
        out = cls()
        for k, v in d.items():
            setattr(out, k, _coerce(v, type(getattr(out, k)), f"{where}: {k}"))
        out.validate(where)
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, where: str = "config") -> None:
        import math

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise InputError(f"{where}: {f.name} must be a finite number, got {v}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise InputError(f"{where}: lr must be > 0, got {self.lr}")
        for name in ("warmup_steps", "checkpoint_every", "checkpoint_dense_until", "split_seed", "weight_decay",
                     "grad_clip", "eps", "min_lr_ratio"):
            if getattr(self, name) < 0:
                raise InputError(f"{where}: {name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.drop_cooc <= 1.0:
            raise InputError(f"{where}: drop_cooc must be between 0 and 1, got {self.drop_cooc}")
        if self.log_every < 1 or self.val_max_chunks < 1:
            raise InputError(f"{where}: log_every and val_max_chunks must be >= 1")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise InputError(f"{where}: beta1 and beta2 must be in [0, 1)")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise InputError(f"{where}: unknown schedule {self.schedule!r} (known: cosine, linear, constant)")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"{where}: val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise InputError(f"{where}: unknown mixed_precision {self.mixed_precision!r} (known: auto, no, bf16, fp16)")


@dataclass
class TrainConfig:
    """One training run (or a sweep over ``seeds``). ``vlground train`` builds this from its options."""

    corpus: str = _f("", "corpus folder written by `vlground build-corpus`", required=True)
    out: str = _f("", "run folder (one seed) or sweep folder holding seed-<k>/ (with --seeds)", required=True)
    arch: str | None = _f(None, f"architecture: {', '.join(ARCHS)} (default: the --config file's, else transformer)")
    size: str = _f("tiny", f"size preset: {', '.join(SIZES)} (vlground/configs/<arch>-<size>.json)")
    config: str | None = _f(None, "a config JSON file to use instead of the bundled <arch>-<size>.json")
    seed: int = _f(0, "seed of the initialisation and of the chunk order")
    seeds: list[int] | None = _f(None, "comma-separated seeds for a sweep, e.g. 0,1,2,3,4 (runs in OUT/seed-<k>/)")
    resume: bool = _f(False, "continue from the latest complete checkpoint in the run folder")
    progress: bool = _f(True, "show a progress bar")
    log_with: str | None = _f(None, "experiment trackers: tensorboard, wandb, mlflow or all (comma list); files in OUT/tracking/")
    threads: int | None = _f(None, "CPU threads for torch in this process (default: torch's, one per core); give 1 to each "
                                   "of several trainings sharing a machine (two 2-thread runs on 2 cores ran 10-20x slower)")
    overrides: dict[str, Any] = _f(None, "training options over the config file (Hyper fields)", cli=False)
    model_overrides: dict[str, Any] = _f(None, "model kwargs over the config file's \"model\"", cli=False)
    stop_after: int | None = _f(None, "stop after this step without a checkpoint, as if killed (for tests)", cli=False)

    def __post_init__(self):
        self.overrides = dict(self.overrides or {})
        self.model_overrides = dict(self.model_overrides or {})

    def for_seed(self, seed: int) -> "TrainConfig":
        from dataclasses import replace

        return replace(self, seed=seed, seeds=None, out=str(Path(self.out) / f"seed-{seed}"))


def config_path(arch: str, size: str) -> Path:
    """The bundled config file of ``arch`` at ``size``."""
    check_arch(arch)
    if size not in SIZES:
        raise InputError(f"unknown size {size!r} (known: {', '.join(SIZES)})")
    return Path(str(resources.files("vlground") / "configs" / f"{arch}-{size}.json"))


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such config file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: corrupt config ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model", {}), dict) or not isinstance(data.get("train", {}), dict):
        raise InputError(f"{path}: a config is an object with \"model\" and \"train\" objects")
    return data


def resolve(cfg: TrainConfig) -> tuple[str, str, dict, Hyper, str]:
    """``(arch, size, model kwargs, Hyper, config file used)`` for ``cfg``."""
    if cfg.config:
        data = read_config_file(cfg.config)
        arch = cfg.arch or data.get("arch") or "transformer"
        size = data.get("size", "custom")
        used = str(Path(cfg.config).resolve())
    else:
        arch = cfg.arch or "transformer"
        path = config_path(arch, cfg.size)
        data = read_config_file(path)
        size, used = cfg.size, path.name
    check_arch(arch)
    if cfg.seed < 0:
        raise InputError(f"--seed {cfg.seed}: must be 0 or more")
    if any(s < 0 for s in cfg.seeds or []):
        raise InputError(f"--seeds {','.join(map(str, cfg.seeds))}: seeds must be 0 or more")
    model = {**data.get("model", {}), **cfg.model_overrides}
    Hyper.from_dict(data.get("train", {}), where=used)  # the file alone is valid: blame it here
    flags = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in cfg.overrides.items()) or used
    hyper = Hyper.from_dict({**data.get("train", {}), **cfg.overrides}, where=flags)
    return arch, size, model, hyper, used
