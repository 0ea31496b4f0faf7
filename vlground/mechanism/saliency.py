"""Attention saliency (Wang et al. 2023, "Label Words are Anchors"): ``I(l,h) = dL/dA(l,h) * A(l,h)``.

All heads of all layers of a batch of items come from one forward and one backward pass:
the batch loss is the *sum* of the items' losses, and items do not interact in a causal LM
(no batch norm, dropout off), so ``dL/dA`` of item ``b`` is the gradient of item ``b``'s own
loss.  Gradients are taken with :func:`torch.autograd.grad` with respect to the attention
maps the model returns with ``output_attentions=True``; no parameter ``.grad`` is touched.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.sites import attention_layer_indices

__all__ = ["attention_saliency", "eager_attention", "target_loss"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` with eager attention and in eval mode inside the block; both restored after.

    Fused kernels (``sdpa``, flash) return no attention maps, so saliency needs ``eager``.
    The switch goes through ``model.set_attn_implementation`` (transformers >= 4.48);
    a model that cannot switch raises :class:`MechanismError`.
    """
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    was_training = model.training
    switched = False
    try:
        if before is not None and before != "eager":
            if not hasattr(model, "set_attn_implementation"):
                raise MechanismError(f"{type(model).__name__} uses {before!r} attention and cannot switch to 'eager'")
            log.debug("switching %s from %r to eager attention", type(model).__name__, before)
            model.set_attn_implementation("eager")
            switched = True
        model.eval()
        yield model
    finally:
        if switched:
            model.set_attn_implementation(before)
        model.train(was_training)


def target_loss(logits: torch.Tensor, predict_positions: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Per-item surprisal ``-log p(target_ids[b] | prefix)`` in nats.

    logits: ``[batch, seq, vocab]``; predict_positions, target_ids: ``[batch]`` -> ``[batch]``.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    logp = torch.log_softmax(logits[rows, predict_positions].float(), dim=-1)
    return -logp[rows, target_ids]


def attention_saliency(
    model: nn.Module,
    input_ids: torch.Tensor | None,
    predict_positions: torch.Tensor | Sequence[int],
    target_ids: torch.Tensor | Sequence[int],
    attention_mask: torch.Tensor | None = None,
    *,
    inputs_embeds: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    predict_row_only: bool = False,
    **model_kwargs,
) -> torch.Tensor:
    """Saliency of every head of the chosen layers for a batch, from one backward pass.

    Args:
        model: a Hugging Face causal LM whose attention layers return their maps with
            ``output_attentions=True`` (switched to eager attention for the call).
        input_ids: ``[batch, seq]`` token ids, or None when ``inputs_embeds`` is given.
        predict_positions: ``[batch]``; item ``b``'s loss reads the logits at this position.
        target_ids: ``[batch]``; item ``b``'s loss is ``-log p(target_ids[b] | tokens[:predict_positions[b]+1])``.
        attention_mask: ``[batch, seq]`` (1 = token, 0 = padding), passed to the model.
        inputs_embeds: ``[batch, seq, d_model]`` instead of ``input_ids`` (e.g. image features).
        layers: decoder-layer indices to keep (must have attention); default all attention
            layers, see :func:`vlground.mechanism.sites.attention_layer_indices`.
        predict_row_only: return only row ``predict_positions[b]`` of each map (the flows *into*
            the predicted position), ``[batch, len(layers), heads, seq]``: what image probes
            need, without holding ``seq x seq`` maps of hundreds of image tokens on the CPU.
        **model_kwargs: further model inputs, e.g. ``pixel_values`` for a VLM (LLaVA finds its
            image-token slots in ``inputs_embeds`` by the image token's embedding).

    Returns:
        ``[batch, len(layers), heads, seq, seq]`` float32 on CPU; ``[b, k, h, i, j]`` is the
        flow from token ``j`` into token ``i`` (zero above the diagonal and at padding);
        ``[batch, len(layers), heads, seq]`` with ``predict_row_only``.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise MechanismError("give exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        # A leaf that requires grad keeps the attention maps in the graph even if the
        # model's parameters are frozen; grads w.r.t. it are never computed.
        inputs_embeds = model.get_input_embeddings()(input_ids)
    inputs_embeds = inputs_embeds.detach().requires_grad_(True)
    device = inputs_embeds.device
    predict_positions = torch.as_tensor(predict_positions, dtype=torch.long, device=device)
    target_ids = torch.as_tensor(target_ids, dtype=torch.long, device=device)

    att_layers = attention_layer_indices(model)
    keep = list(att_layers) if layers is None else list(layers)
    missing = [layer for layer in keep if layer not in att_layers]
    if missing:
        raise MechanismError(f"layers {missing} have no attention; attention layers are {att_layers}")

    kwargs = dict(model_kwargs)
    rows_at = predict_positions
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        # Only the logits at the predicted positions are needed (vocab x seq can be large).
        kept = torch.unique(predict_positions)
        kwargs["logits_to_keep"] = kept
        predict_positions = torch.searchsorted(kept, predict_positions)

    with eager_attention(model), torch.enable_grad():
        out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_attentions=True, **kwargs)
        attentions = [a for a in (out.attentions or ()) if a is not None]
        if len(attentions) != len(att_layers):
            raise MechanismError(
                f"{type(model).__name__} returned {len(attentions)} attention maps for "
                f"{len(att_layers)} attention layers; it needs eager attention that returns them"
            )
        chosen = [attentions[att_layers.index(layer)] for layer in keep]
        if not all(a.requires_grad for a in chosen):
            raise MechanismError(f"{type(model).__name__} returns attention maps outside the autograd graph")
        loss = target_loss(out.logits, predict_positions, target_ids).sum()
        grads = torch.autograd.grad(loss, chosen, allow_unused=True)
    if predict_row_only:
        def row(t: torch.Tensor) -> torch.Tensor:  # [B, H, S, S] -> [B, H, S] (layers may sit on several GPUs)
            at = rows_at.to(t.device)
            return t[torch.arange(at.shape[0], device=t.device), :, at]

        maps = [(torch.zeros_like(row(a)).float() if g is None else row(g).float() * row(a).float()).detach().cpu() for a, g in zip(chosen, grads)]
    else:
        maps = [
            (torch.zeros_like(a) if g is None else g * a).detach().float().cpu() for a, g in zip(chosen, grads)
        ]
    return torch.stack(maps, dim=1)
