"""Where a model's attention lives: a small data description per architecture.

An :class:`AttentionSites` says which module receives the concatenated head outputs
(the attention output projection, whose *input* is ``[batch, seq, n_heads * head_dim]``
with head ``h`` in the slice ``h * head_dim : (h + 1) * head_dim``), how many heads there
are, and which decoder layers have attention at all (a hybrid such as Bamba has
attention in a few layers only).  Resolvers are registered per ``config.model_type``.

Layer numbers: code indexes decoder blocks from 0 (``model.layers[i]``); everything a user
reads (tables, CSV, results.json, plots) numbers them from 1, as the paper does ("layers 1 to
12").  :func:`layer_number` is the one mapping: block ``i`` is layer ``i + 1``.  The tuned
lens reads ``hidden_states[k]``, the *output* of block ``k - 1``, i.e. of layer ``k``
(``hidden_states[0]``, the embeddings, is layer 0), so the lens's layer ``k`` and the flow's
layer ``k`` name the same block (:func:`hidden_state_layer`).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlground.mechanism.errors import MechanismError

if TYPE_CHECKING:  # annotations only: importing the sites (probe --help, vlground list) needs no torch
    from torch import nn

__all__ = [
    "AttentionSites",
    "register_sites",
    "resolve_sites",
    "has_attention_sites",
    "attention_layer_indices",
    "get_module",
    "layer_number",
    "hidden_state_layer",
]


from vlground.numbering import layer_number  # noqa: E402  (the one numbering: vlground/numbering.py)


def hidden_state_layer(index: int) -> int:
    """1-based layer whose output is ``hidden_states[index]`` (``output_hidden_states`` convention:
    ``hidden_states[0]`` is the embeddings, layer 0; ``hidden_states[k]`` is block ``k - 1``'s
    output, layer ``k`` = ``layer_number(k - 1)``)."""
    index = int(index)
    if index < 0:
        raise MechanismError(f"hidden-state index {index} is negative")
    return index


@dataclass(frozen=True)
class AttentionSites:
    """Attention sites of one model.

    out_proj: module path template with ``{layer}``, e.g. ``transformer.h.{layer}.attn.c_proj``;
        its input is ``[batch, seq, n_heads * head_dim]``, heads contiguous.
    n_heads: query heads per attention layer.
    head_dim: width of one head's output.
    layers: decoder-layer indices that have attention, in the order of ``outputs.attentions``.
    """

    out_proj: str
    n_heads: int
    head_dim: int
    layers: tuple[int, ...]

    def path(self, layer: int) -> str:
        """Module path of the output projection of ``layer`` (a decoder-layer index)."""
        if layer not in self.layers:
            raise MechanismError(f"layer {layer} has no attention; attention layers are {list(self.layers)}")
        return self.out_proj.format(layer=layer)


_RESOLVERS: dict[str, Callable[[nn.Module], AttentionSites]] = {}


def register_sites(*model_types: str):
    """Decorator: register a resolver ``fn(model) -> AttentionSites`` for ``config.model_type`` names."""

    def deco(fn):
        for name in model_types:
            if name in _RESOLVERS:
                raise MechanismError(f"attention sites for model_type {name!r} already registered")
            _RESOLVERS[name] = fn
        return fn

    return deco


def resolve_sites(model: nn.Module) -> AttentionSites:
    """The :class:`AttentionSites` of a Hugging Face model, looked up by ``config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _RESOLVERS:
        raise MechanismError(
            f"no attention sites for model_type {model_type!r}; known: {sorted(_RESOLVERS)} "
            "(pass an AttentionSites yourself)"
        )
    return _RESOLVERS[model_type](model)


def has_attention_sites(model: nn.Module) -> bool:
    """Whether sites are registered for the model's ``config.model_type`` (False for an LSTM, a pure Mamba-2)."""
    return getattr(getattr(model, "config", None), "model_type", None) in _RESOLVERS


def attention_layer_indices(model: nn.Module) -> list[int]:
    """Decoder-layer index of each entry of ``outputs.attentions`` (all layers for unknown models)."""
    try:
        return list(resolve_sites(model).layers)
    except MechanismError:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        return list(range(cfg.num_hidden_layers))


def get_module(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule(path)`` with a one-line error naming the path."""
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise MechanismError(f"{type(model).__name__} has no module {path!r}") from exc


def _find_template(model: nn.Module, suffix: str) -> str:
    """Template of the first module path matching ``<prefix>layers.<i>.<suffix>``."""
    pattern = re.compile(r"^(.*?)(\d+)\." + re.escape(suffix) + r"$")
    for name, _ in model.named_modules():
        m = pattern.match(name)
        if m and m.group(1).endswith(("layers.", "h.")):
            return m.group(1) + "{layer}." + suffix
    raise MechanismError(f"{type(model).__name__}: no module path ends with 'layers.<i>.{suffix}'")


@register_sites("gpt2")
def _gpt2_sites(model: nn.Module) -> AttentionSites:
    cfg = model.config
    return AttentionSites(
        out_proj=_find_template(model, "attn.c_proj"),
        n_heads=cfg.n_head,
        head_dim=cfg.n_embd // cfg.n_head,
        layers=tuple(range(cfg.n_layer)),
    )


@register_sites("llama", "mistral", "qwen2", "llava")
def _llama_sites(model: nn.Module) -> AttentionSites:
    """Llama-style decoders, also LLaVA (its language model; the vision tower is not covered)."""
    cfg = model.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return AttentionSites(
        out_proj=_find_template(model, "self_attn.o_proj"),
        n_heads=cfg.num_attention_heads,
        head_dim=head_dim,
        layers=tuple(range(cfg.num_hidden_layers)),
    )


@register_sites("bamba")
def _bamba_sites(model: nn.Module) -> AttentionSites:
    """Bamba hybrids: only the layers in ``config.attn_layer_indices`` have attention."""
    cfg = model.config
    layers = tuple(i for i, kind in enumerate(cfg.layers_block_type) if kind == "full_attention")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    template = _find_template(model, "self_attn.o_proj") if layers else "model.layers.{layer}.self_attn.o_proj"
    return AttentionSites(out_proj=template, n_heads=cfg.num_attention_heads, head_dim=head_dim, layers=layers)
