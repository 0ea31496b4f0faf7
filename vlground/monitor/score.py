"""The grounding score of a word, from the attention of chosen heads at the position that predicts it.

Attention is read in the forward pass that produces the word (no second pass): :func:`capture_attention`
keeps, per forward pass, only the *last* query row of every head of the captured layers: ``[batch,
layers, heads, keys]``, the row of the position whose logits pick the next token. Every layer keeps
the fused ``sdpa`` kernel; the captured layers compute that one row from the same query and keys
(:mod:`vlground.monitor.rows`). Models outside transformers' AttentionInterface run eager attention
and forward hooks on the attention modules (the parents of the :class:`AttentionSites` output
projections) read the row from the weights they return. Either lives only inside the ``with``
block and is undone in ``finally``, also when the block raises.

For one word, with ``a[h, j]`` head ``h``'s attention from the predicting position to key ``j`` and
``V`` the image-token positions (``n = |V|``):

* ``share_h = sum_{j in V} a[h, j]`` (a share of the head's total attention, which sums to 1);
* ``concentration_h = 1 - H(p_h) / log n`` with ``p_h = a[h, V] / share_h`` (normalised entropy over
  the image tokens: 1 = all on one token, 0 = uniform); ``topk_h`` = share of the head's image
  attention on its ``k`` most attended image tokens (reported, not in the score);
* **grounding score** = mean over the chosen heads of ``share_h * concentration_h``, in ``[0, 1]``: a
  word is grounded when the aggregate heads read from the image and from a few tokens of it (the
  paper's "single salient dot" from the referent's patches), ungrounded when they look elsewhere or
  spread over the whole image. The components are kept, so each can be evaluated on its own.

Saliency (``dL/dA * A``, what ``boxheads`` identifies heads with) needs a backward pass per word and
is not affordable during generation; the score uses attention only.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.sites import AttentionSites, get_module


@dataclass
class AttentionRecorder:
    """What :func:`capture_attention` collects: one ``[batch, layers, heads, keys]`` tensor per forward pass."""

    layers: tuple[int, ...]  #: decoder-layer indices, in the order of dimension 1
    rows: list[torch.Tensor] = field(default_factory=list)
    _pending: dict[int, torch.Tensor] = field(default_factory=dict)
    all_layers: tuple[int, ...] | None = None  #: the model's attention layers (the first dimension of a heads mask); None: ``layers``

    def select(self, heads: torch.Tensor) -> torch.Tensor:
        """bool ``[len(layers), heads]``: the rows of a ``[all attention layers, heads]`` mask for the captured layers."""
        every = self.all_layers or self.layers
        if heads.shape[0] != len(every):
            raise MechanismError(f"heads mask for {heads.shape[0]} layers; the model has {len(every)} attention layers")
        return heads[[every.index(layer) for layer in self.layers]]

    def pop(self) -> torch.Tensor:
        """The last query rows of the most recent forward pass, ``[batch, layers, heads, keys]`` (float32, CPU)."""
        if len(self._pending) != len(self.layers):
            raise MechanismError(f"attention captured in {len(self._pending)} of {len(self.layers)} layers "
                                 "(the model needs eager attention that returns its weights)")
        out = torch.stack([self._pending[layer] for layer in self.layers], dim=1)
        self._pending.clear()
        return out


def monitored_layers(sites: AttentionSites, heads: torch.Tensor) -> tuple[int, ...]:
    """Decoder-layer indices holding at least one chosen head (``heads``: bool ``[layers, heads]``)."""
    return tuple(layer for layer, row in zip(sites.layers, heads) if bool(row.any()))


def attention_module_path(sites: AttentionSites, layer: int) -> str:
    """The attention module of ``layer``: the parent of its output projection."""
    return sites.path(layer).rsplit(".", 1)[0]


@contextlib.contextmanager
def capture_attention(model: nn.Module, sites: AttentionSites, layers: Sequence[int] | None = None,
                      kernel: str = "sdpa") -> Iterator[AttentionRecorder]:
    """Capture the last query row of every head of ``layers`` (default: all attention layers) inside the block.

    ``kernel="sdpa"`` (default, for models on transformers' AttentionInterface): every layer keeps the
    fused kernel and only the captured layers compute their last query row, from the same query and
    keys with the model's own eager formula (:mod:`vlground.monitor.rows`); other models fall back to
    ``"eager"``: forward hooks on the attention modules, whose forward output must be
    ``(attn_output, attn_weights, ...)`` with weights ``[batch, heads, queries, keys]`` (the model
    must run eager attention); the hook keeps ``weights[:, :, -1, :]``.
    """
    from vlground.monitor.rows import rows_kernel, supports_rows_kernel, watch

    if kernel not in ("sdpa", "eager"):
        raise MechanismError(f"unknown capture kernel {kernel!r}; known: 'sdpa', 'eager'")
    keep = tuple(sites.layers if layers is None else layers)
    rec = AttentionRecorder(keep, all_layers=tuple(sites.layers))

    def keep_row(layer: int):
        def put(row: torch.Tensor) -> None:
            rec._pending[layer] = row.detach().float().cpu()
        return put

    modules = {layer: get_module(model, attention_module_path(sites, layer)) for layer in keep}
    if kernel == "sdpa" and supports_rows_kernel(model):
        with rows_kernel(model), watch({m: keep_row(layer) for layer, m in modules.items()}):
            yield rec
        return

    def make_hook(layer: int):
        put = keep_row(layer)

        def hook(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
                raise MechanismError(f"attention module of layer {layer} returned no weights "
                                     "(load the model with attn_implementation='eager')")
            put(weights[:, :, -1, :])
        return hook

    handles = []
    try:
        for layer, m in modules.items():
            handles.append(m.register_forward_hook(make_hook(layer)))
        yield rec
    finally:
        for h in handles:
            h.remove()


@dataclass
class Components:
    """Per word (``[n]`` each): the grounding score and its parts, averaged over the chosen heads."""

    score: torch.Tensor
    share: torch.Tensor
    concentration: torch.Tensor
    topk: torch.Tensor


def head_components(rows: torch.Tensor, image: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per head: ``(share, concentration, topk)``, each ``[..., heads]``.

    rows: ``[..., heads, keys]`` attention of each head from the predicting position; image: bool ``[keys]``
    (at least two image tokens); keys past its end (generated tokens) count as text.
    """
    keys = rows.shape[-1]
    image = image[:keys].to(rows.device)
    if image.shape[0] < keys:  # generated tokens after the prompt are not image tokens
        image = torch.cat([image, image.new_zeros(keys - image.shape[0])])
    n = int(image.sum())
    if n < 2:
        raise MechanismError(f"{n} image token(s) before the predicting position; the score needs at least 2")
    a = rows[..., image].clamp_min(0)  # [..., heads, n]
    share = a.sum(-1)
    p = a / share.clamp_min(1e-12)[..., None]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    concentration = (1 - entropy / math.log(n)).clamp(0, 1)
    topk = p.topk(min(k, n), dim=-1).values.sum(-1)
    return share, concentration, topk


def grounding(rows: torch.Tensor, image: torch.Tensor, heads: torch.Tensor, k: int = 4) -> Components:
    """Grounding score of words from the chosen heads; only those heads' rows are read.

    rows: ``[n, layers, heads, keys]`` (one row per word, from :class:`AttentionRecorder`); image: bool
    ``[keys]``; heads: bool ``[layers, heads]`` (the chosen heads; at least one) -> :class:`Components`.
    """
    if not bool(heads.any()):
        raise MechanismError("no head chosen for the grounding score")
    sel = heads.to(rows.device)
    share, conc, topk = head_components(rows[:, sel], image, k)  # [n, chosen]
    return Components((share * conc).mean(-1), share.mean(-1), conc.mean(-1), topk.mean(-1))
