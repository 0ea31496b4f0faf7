"""The unembedding of a language model: final norm + output head, as data.

``hidden_states`` conventions (checked in tests for GPT-2, Llama, Bamba, Mamba-2): with
``output_hidden_states=True`` a model with ``L`` layers returns ``L + 1`` states; entry ``l < L``
is the residual stream entering layer ``l`` (entry 0 = embeddings), and the last entry is the
output of the last layer *with the final norm already applied* (``last_hidden_normed=True``).
So the residual stream after the last layer, before the final norm, is not among them.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError

__all__ = ["Unembedding", "register_unembedding", "resolve_unembedding"]


@dataclass
class Unembedding:
    """``logits = head(norm(h))``.

    head: ``[..., d_model] -> [..., vocab]`` (e.g. ``lm_head``).
    norm: the final norm, or None for models without one (e.g. an LSTM LM).
    last_hidden_normed: whether ``hidden_states[-1]`` already has ``norm`` applied.
    """

    head: nn.Module
    norm: nn.Module | None = None
    last_hidden_normed: bool = True

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab]`` of a pre-norm residual state ``h`` ``[..., d_model]``."""
        return self.head(h if self.norm is None else self.norm(h))

    def final_logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """The model's own logits from ``hidden_states[-1]`` ``[..., d_model]``."""
        return self.head(last_hidden) if self.last_hidden_normed else self(last_hidden)

    def hash(self) -> str:
        """sha256 of the norm's and head's parameters and buffers (names, shapes, values)."""
        digest = hashlib.sha256()
        for prefix, module in (("norm", self.norm), ("head", self.head)):
            if module is None:
                continue
            for name, tensor in sorted(module.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{prefix}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return digest.hexdigest()


_RESOLVERS: dict[str, Callable[[nn.Module], Unembedding]] = {}


def register_unembedding(*model_types: str):
    """Decorator: register ``fn(model) -> Unembedding`` for ``config.model_type`` names."""

    def deco(fn):
        for name in model_types:
            if name in _RESOLVERS:
                raise MechanismError(f"unembedding for model_type {name!r} already registered")
            _RESOLVERS[name] = fn
        return fn

    return deco


def _paths(norm: str, head: str = "lm_head") -> Callable[[nn.Module], Unembedding]:
    def resolve(model: nn.Module) -> Unembedding:
        return Unembedding(head=model.get_submodule(head), norm=model.get_submodule(norm))

    return resolve


register_unembedding("gpt2")(_paths("transformer.ln_f"))
register_unembedding("llama", "mistral", "qwen2")(_paths("model.norm"))
register_unembedding("llava")(_paths("model.language_model.norm"))
register_unembedding("mamba2", "mamba")(_paths("backbone.norm_f"))
register_unembedding("bamba")(_paths("model.final_layernorm"))

_NORM_NAMES = ("norm", "ln_f", "norm_f", "final_layernorm", "final_layer_norm")


def resolve_unembedding(model: nn.Module) -> Unembedding:
    """The :class:`Unembedding` of ``model``.

    Order: a ``get_unembedding()`` method on the model (e.g. a custom LSTM LM); a resolver
    registered for ``config.model_type``; else ``get_output_embeddings()`` plus the first
    of ``norm``/``ln_f``/``norm_f``/``final_layernorm``/``final_layer_norm`` on the base model.
    """
    if callable(getattr(model, "get_unembedding", None)):
        return model.get_unembedding()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in _RESOLVERS:
        return _RESOLVERS[model_type](model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", model)
    norm = next((getattr(base, n) for n in _NORM_NAMES if isinstance(getattr(base, n, None), nn.Module)), None)
    if head is None or norm is None:
        raise MechanismError(
            f"cannot find the unembedding of {type(model).__name__} (model_type {model_type!r}); "
            f"known model types: {sorted(_RESOLVERS)}; or give the model a get_unembedding() method"
        )
    return Unembedding(head=head, norm=norm)
