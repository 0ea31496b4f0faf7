"""Train testbed language models with a checkpoint trajectory (``vlground train``).

* :func:`train` (:class:`TrainConfig`) -> run folder; see :mod:`vlground.train.checkpoint` for its layout;
* :func:`build_model` (:mod:`vlground.train.models`): the architectures;
* :func:`load_checkpoint`, :func:`list_checkpoints`: what the probe engine reads.

Imports are lazy so ``import vlground.train`` does not load torch.
"""
from __future__ import annotations

__all__ = ["TrainConfig", "Hyper", "train", "build_model", "load_checkpoint", "list_checkpoints", "ARCHS", "SIZES"]

_WHERE = {
    "TrainConfig": "vlground.train.config",
    "Hyper": "vlground.train.config",
    "SIZES": "vlground.train.config",
    "train": "vlground.train.loop",
    "build_model": "vlground.train.models",
    "ARCHS": "vlground.train.models",
    "load_checkpoint": "vlground.train.checkpoint",
    "list_checkpoints": "vlground.train.checkpoint",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'vlground.train' has no attribute {name!r}")
