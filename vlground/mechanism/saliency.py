"""Attention saliency (Wang et al. 2023, "Label Words are Anchors"): ``I(l,h) = dL/dA(l,h) * A(l,h)``.

All heads of all layers of a batch of items come from one forward and one backward pass:
the batch loss is the *sum* of the items' losses, and items do not interact in a causal LM
(no batch norm, dropout off), so ``dL/dA`` of item ``b`` is the gradient of item ``b``'s own
loss.  Gradients are taken with :func:`torch.autograd.grad`; no parameter ``.grad`` is touched.

Memory: :func:`saliency_pass` hands each layer's gradient and map to a :class:`SaliencySink` from a
hook on the map, as the backward pass reaches it; the hook then drops its reference, so the map
is freed with the layer's saved activations and its gradient once the sink returns.  The full
result ``[batch, layers, heads, seq, seq]`` (:func:`attention_saliency`, for plots of a few items)
is allocated once (float32, CPU) and filled layer by layer; the probes keep only per-layer
reductions instead (:mod:`vlground.mechanism.saliency_summary`: ``O(seq)`` per head, not
``O(seq^2)``).  What the pass itself needs at its peak is the autograd graph of the forward pass,
which holds every layer's attention map until the backward pass reaches it.  Parameters are frozen
(``requires_grad_(False)``) for the call, so the forward pass saves no activations for weight
gradients; their ``requires_grad`` flags are restored afterwards.

Probe dtype: ``dtype=torch.bfloat16`` runs the forward and backward under
:func:`torch.autocast` (the model's weights are not changed); the result is still float32.
Not a default anywhere: see ``scripts/bench/bench_saliency.py --dtype bfloat16``, which reports
how often bf16 changes the gather/aggregate classification.
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

__all__ = ["SaliencySink", "attention_saliency", "eager_attention", "saliency_pass", "target_loss"]

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
    dtype: torch.dtype | None = None,
    kernel: str = "eager",
    sites=None,
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
        dtype: run the pass under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``);
            None (default) runs in the model's own dtype.
        kernel: ``"eager"`` (default) or ``"sdpa"`` (maps recomputed per layer in the backward
            pass, none kept in the autograd graph), see :func:`saliency_pass`.
        sites: :class:`~vlground.mechanism.sites.AttentionSites` for ``kernel="sdpa"`` on a model
            whose ``model_type`` has none registered (an adapter's ``attention_site``).
        **model_kwargs: further model inputs, e.g. ``pixel_values`` for a VLM (LLaVA finds its
            image-token slots in ``inputs_embeds`` by the image token's embedding).

    Returns:
        ``[batch, len(layers), heads, seq, seq]`` float32 on CPU; ``[b, k, h, i, j]`` is the
        flow from token ``j`` into token ``i`` (zero above the diagonal and at padding);
        ``[batch, len(layers), heads, seq]`` with ``predict_row_only``.
    """
    sink = _FullMaps(torch.as_tensor(predict_positions, dtype=torch.long) if predict_row_only else None)
    saliency_pass(model, input_ids, predict_positions, target_ids, attention_mask, sink, inputs_embeds=inputs_embeds,
                  layers=layers, dtype=dtype, kernel=kernel, sites=sites, **model_kwargs)
    return sink.out


def saliency_pass(
    model: nn.Module,
    input_ids: torch.Tensor | None,
    predict_positions: torch.Tensor | Sequence[int],
    target_ids: torch.Tensor | Sequence[int],
    attention_mask: torch.Tensor | None,
    sink: "SaliencySink",
    *,
    inputs_embeds: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    kernel: str = "eager",
    sites=None,
    **model_kwargs,
) -> None:
    """The one forward and backward pass behind :func:`attention_saliency` and
    :func:`vlground.mechanism.saliency_summary.saliency_summary`: arguments as there; each chosen
    layer's ``(dL/dA, A)`` goes to ``sink`` as the backward pass reaches it (:class:`SaliencySink`).

    ``kernel``: ``"eager"`` (every map in the autograd graph, as ``output_attentions`` returns it) or
    ``"sdpa"`` (the fused kernel in every layer; each chosen layer's map and ``dL/dA`` recomputed from
    its query, key, value and ``dL/dO`` when the backward pass reaches it, so the graph holds no map:
    :mod:`vlground.mechanism.saliency_sdpa`; models outside transformers' AttentionInterface, or
    without attention sites, run eager). ``sites``: the model's :class:`AttentionSites` where its
    ``model_type`` has none registered (an adapter's ``attention_site``)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise MechanismError("give exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        # A leaf that requires grad keeps the attention maps in the graph even though the
        # model's parameters are frozen for the call; the backward pass ends at it.
        with torch.no_grad():
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
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        # Only the logits at the predicted positions are needed (vocab x seq can be large).
        kept = torch.unique(predict_positions)
        kwargs["logits_to_keep"] = kept
        predict_positions = torch.searchsorted(kept, predict_positions)

    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
    if kernel == "sdpa":
        from vlground.mechanism.saliency_sdpa import supports_recompute

        if supports_recompute(model, sites):
            return _recomputed_pass(model, inputs_embeds, attention_mask, predict_positions, target_ids, keep, sink,
                                    autocast, kwargs, sites)
        log.debug("%s: no sdpa saliency pass (not on transformers' AttentionInterface); eager", type(model).__name__)
    elif kernel != "eager":
        raise MechanismError(f"unknown saliency kernel {kernel!r}; known: 'eager', 'sdpa'")
    with eager_attention(model), _frozen(model), torch.enable_grad():
        with autocast:
            out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_attentions=True, **kwargs)
            loss = target_loss(out.logits, predict_positions, target_ids).sum()
        attentions = [a for a in (out.attentions or ()) if a is not None]
        del out
        if len(attentions) != len(att_layers):
            raise MechanismError(
                f"{type(model).__name__} returned {len(attentions)} attention maps for "
                f"{len(att_layers)} attention layers; it needs eager attention that returns them"
            )
        chosen = [attentions[att_layers.index(layer)] for layer in keep]
        del attentions
        if not all(a.requires_grad for a in chosen):
            raise MechanismError(f"{type(model).__name__} returns attention maps outside the autograd graph")
        B, H, S = chosen[0].shape[0], chosen[0].shape[1], chosen[0].shape[-1]
        sink.start(B, len(keep), H, S)
        handles = [a.register_hook(_layer_hook(sink, k, a)) for k, a in enumerate(chosen)]
        try:
            # The backward pass only needs to reach the lowest chosen map: every other chosen map is
            # on the path from the loss to it, so every hook fires; its gradient is the only one returned.
            lowest = chosen[min(range(len(keep)), key=lambda k: keep[k])]
            del chosen[:]  # the hooks hold the maps: each is released once its layer is written
            torch.autograd.grad(loss, lowest, allow_unused=True)
        finally:
            for h in handles:
                h.remove()


def _recomputed_pass(model, inputs_embeds, attention_mask, predict_positions, target_ids, keep, sink, autocast, kwargs,
                     sites=None) -> None:
    """:func:`saliency_pass` with sdpa in every layer, each chosen layer's map recomputed in the backward
    pass (:mod:`vlground.mechanism.saliency_sdpa`)."""
    from vlground.mechanism.saliency_sdpa import recompute_kernel

    was_training = model.training
    try:
        model.eval()
        with recompute_kernel(model, keep, sites) as taps, _frozen(model), torch.enable_grad():
            with autocast:
                out = model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
                loss = target_loss(out.logits, predict_positions, target_ids).sum()
            del out
            if any(len(taps[layer]) != 1 for layer in keep):
                raise MechanismError(f"{type(model).__name__}: chosen layers were called "
                                     f"{[len(taps[layer]) for layer in keep]} times in one forward pass (expected once)")
            chosen = [taps[layer].pop() for layer in keep]
            first = chosen[0]
            if first.eager:
                B, H, S = first.out.shape[0], first.out.shape[1], first.out.shape[-1]
            else:
                B, H, S = first.query.shape[0], first.query.shape[1], first.key.shape[-2]
            sink.start(B, len(keep), H, S)
            handles = [tap.out.register_hook(tap.hook(sink, k)) for k, tap in enumerate(chosen)]
            try:
                lowest = chosen[min(range(len(keep)), key=lambda k: keep[k])].out
                del chosen, first
                torch.autograd.grad(loss, lowest, allow_unused=True)
            finally:
                for h in handles:
                    h.remove()
    finally:
        model.train(was_training)


def _layer_hook(sink: "SaliencySink", k: int, att: torch.Tensor):
    """Backward hook on the attention map ``att`` ``[B, H, S, S]`` of chosen layer ``k``: hands
    ``(grad, map)`` to ``sink.layer`` and drops this hook's reference to the map."""
    held = [att]

    def hook(grad: torch.Tensor) -> None:
        with torch.no_grad():
            sink.layer(k, grad, held.pop().detach())
            sink.end_layer(k)
        return None

    return hook


class SaliencySink:
    """Receives each chosen layer's ``dL/dA`` and ``A`` (``[B, h, S, S]``, on the layer's device)
    inside the backward pass; whatever it keeps is all that outlives the pass.

    ``start(B, L, H, S)`` is called once after the forward pass; then, per chosen layer ``k`` (0-based
    in the chosen order, top layer first), ``layer(k, grad, att, h0)`` once per chunk of heads
    ``h0 : h0 + grad.shape[1]`` (the eager pass gives all heads at once; the sdpa pass may give a few at
    a time) and ``end_layer(k)`` after its last chunk."""

    def start(self, batch: int, layers: int, heads: int, seq: int) -> None:
        raise NotImplementedError

    def layer(self, k: int, grad: torch.Tensor, att: torch.Tensor, h0: int = 0) -> None:
        raise NotImplementedError

    def end_layer(self, k: int) -> None:
        return None


class _FullMaps(SaliencySink):
    """``[B, L, H, S, S]`` float32 on the CPU, or the predicted rows ``[B, L, H, S]`` (``rows_at``)."""

    def __init__(self, rows_at: torch.Tensor | None):
        self.rows_at = rows_at
        self.out: torch.Tensor | None = None

    def start(self, batch: int, layers: int, heads: int, seq: int) -> None:
        shape = (batch, layers, heads, seq) if self.rows_at is not None else (batch, layers, heads, seq, seq)
        self.out = torch.zeros(shape, dtype=torch.float32)

    def layer(self, k: int, grad: torch.Tensor, a: torch.Tensor, h0: int = 0) -> None:
        dst = self.out[:, k, h0 : h0 + grad.shape[1]]
        if self.rows_at is not None:  # [B, h, S, S] -> [B, h, S] (layers may sit on several GPUs)
            at = self.rows_at.to(grad.device)
            b = torch.arange(at.shape[0], device=grad.device)
            prod = grad[b, :, at].float() * a[b, :, at].float()
        elif grad.dtype == a.dtype == torch.float32 and grad.device.type == "cpu" and dst.is_contiguous():
            torch.mul(grad, a, out=dst)  # no temporary
            return
        else:
            prod = grad.float() * a.float()
        dst.copy_(prod)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block; their flags are restored after."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
