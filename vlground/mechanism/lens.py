"""Tuned lens (Belrose et al. 2023): one affine translator per layer, read through the unembedding.

Layer ``l`` (``0 <= l < L``) reads ``hidden_states[l]``, the residual stream entering layer ``l``:
``logits_l = unembed(h_l + A_l h_l + b_l)`` with ``unembed = head(final_norm(.))``, and
``A_l = 0, b_l = 0`` at initialisation (the logit lens).  Entry ``L`` is the model's own output,
read from ``hidden_states[-1]`` (already normed in HF models, see :mod:`.unembed`); it has no
translator.  Translators are fit to minimise ``KL(p_model || p_lens)`` at every token.

Layer numbers for users: ``hidden_states[k]`` is the output of 1-based layer ``k``
(:func:`vlground.mechanism.sites.hidden_state_layer`), so translator ``l`` reads the output of
layer ``l`` (``l = 0``: the embeddings) and the lens's layer ``k`` and the flow's layer ``k`` name
the same block.

Token budget: a translator has ``d_model * (d_model + 1)`` parameters, so it is fit on many
held-out tokens (the probe's ``lens_tokens``, default 250k or the whole held-out split).  The model
is frozen, so its activations are computed once: :class:`vlground.mechanism.lens_cache.HiddenStateCache`
runs it over the lens tokens (``sdpa`` attention, no grad) and keeps every layer's hidden state
(in memory within a budget, else in a mapped file), and :func:`fit_lens` and :func:`lens_kl` read
that cache.

Minibatches: each optimisation step of :func:`fit_lens` reads ``LensTrainConfig.batch_tokens``
positions drawn at random from every fit token (a stream of random permutations, so the first
``n_tokens`` draws are all distinct), as the tuned-lens recipe trains on a fixed number of tokens
per step: a step's cost (the head over the vocabulary for every layer at those positions) is fixed,
and the fit costs one caching pass + ``steps`` such steps.  ``batch_tokens=None`` is the earlier
schedule, one whole input batch per step (:class:`LazyLensBatches`, which re-runs the model for
every step, is the first path; both are kept for ``scripts/bench/bench_lens.py`` and the tests).
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.unembed import Unembedding

__all__ = [
    "LensConfig",
    "LensTrainConfig",
    "TunedLens",
    "LensBatch",
    "LazyLensBatches",
    "fit_lens",
    "PositionStream",
    "TargetStats",
    "positions_drawn",
    "lens_kl",
    "lens_surprisal",
    "hf_lens_batches",
    "split_held_out",
    "DEFAULT_LENS_TOKENS",
    "DEFAULT_BATCH_TOKENS",
]

#: default token budget to fit a lens on (or the whole held-out split, if smaller)
DEFAULT_LENS_TOKENS = 250_000
#: default positions per optimisation step.  A step's cost is the head over the vocabulary for every
#: layer at this many positions, whatever the token budget; fewer positions make the gradient
#: noisier: on the trained tiny Transformer (250k tokens, 150 steps) 1,024 positions give the
#: held-out KL per layer of whole 4,096-token batches (within their spread over batch orders, or
#: lower), 512 give 2-3% more in layers 0-2 (``scripts/bench/bench_lens.py``, README "Measured")
DEFAULT_BATCH_TOKENS = 1024

log = logging.getLogger(__name__)
FORMAT = "vlground.tuned_lens/1"


@dataclass(frozen=True)
class LensConfig:
    """Shape of a lens and the unembedding it belongs to."""

    n_layers: int
    """Number of translators = ``len(hidden_states) - 1``."""
    d_model: int
    """Width of the residual stream."""
    unembedding_hash: str
    """:meth:`Unembedding.hash` of the unembedding the lens was trained for."""

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> LensConfig:
        if data.get("format") != FORMAT:
            raise MechanismError(f"lens config format {data.get('format')!r}, expected {FORMAT!r}")
        return cls(n_layers=data["n_layers"], d_model=data["d_model"], unembedding_hash=data["unembedding_hash"])


@dataclass(frozen=True)
class LensTrainConfig:
    """How translators are fit."""

    steps: int = 250
    """Optimiser steps (at least; see ``min_epochs``)."""
    batch_tokens: int | None = DEFAULT_BATCH_TOKENS
    """Positions per step, drawn at random from every fit token (see :data:`DEFAULT_BATCH_TOKENS`);
    None: one whole input batch per step, batches cycled in order (the earlier schedule)."""
    min_epochs: int = 0
    """Every fit token (``batch_tokens`` set) or every batch (None) is used at least this many
    times: steps = max(steps, ceil(min_epochs * n_tokens / batch_tokens)) or
    max(steps, min_epochs * n_batches)."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay on the translators."""
    seed: int = 0
    """Seed of the order in which positions are drawn (``batch_tokens`` set)."""


@dataclass(frozen=True)
class LensBatch:
    """Detached activations of one token batch.

    hidden_states: ``L + 1`` tensors ``[batch, seq, d_model]`` (``output_hidden_states`` convention),
    or ``[tokens, d_model]`` (a :class:`~vlground.mechanism.lens_cache.HiddenStateCache` batch).
    logits: ``[..., vocab]``, the model's own output; None: recomputed from ``hidden_states[-1]``
    through the unembedding (the model's own output, by the ``output_hidden_states`` convention).
    mask: ``[batch, seq]`` positions that count (default all).
    """

    hidden_states: Sequence[torch.Tensor]
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = field(default=None)


class TunedLens(nn.Module):
    """``L`` translators ``h -> h + A h + b`` (``nn.Linear(d, d)``, zero-initialised)."""

    def __init__(self, config: LensConfig):
        super().__init__()
        self.config = config
        self.translators = nn.ModuleList(nn.Linear(config.d_model, config.d_model) for _ in range(config.n_layers))
        for t in self.translators:
            nn.init.zeros_(t.weight)
            nn.init.zeros_(t.bias)

    @classmethod
    def for_unembedding(cls, n_layers: int, d_model: int, unembedding: Unembedding) -> TunedLens:
        """A fresh (identity) lens for a model whose ``hidden_states`` has ``n_layers + 1`` entries."""
        return cls(LensConfig(n_layers=n_layers, d_model=d_model, unembedding_hash=unembedding.hash()))

    def transform(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """``h + A_l h + b_l`` for ``h`` ``[..., d_model]``."""
        return h + self.translators[layer](h)

    def layer_logits(self, hidden_states: Sequence[torch.Tensor], unembedding: Unembedding) -> list[torch.Tensor]:
        """``L + 1`` logit tensors ``[..., vocab]``; the last is the model's own output."""
        if len(hidden_states) != self.config.n_layers + 1:
            raise MechanismError(f"{len(hidden_states)} hidden states for a lens with {self.config.n_layers} layers")
        out = [unembedding(self.transform(h, i)) for i, h in enumerate(hidden_states[:-1])]
        return out + [unembedding.final_logits(hidden_states[-1])]

    def save(self, directory: str | Path, extra: dict[str, dict] | None = None) -> None:
        """Write ``config.json`` and ``translators.safetensors`` (and each ``extra`` ``{file name:
        JSON object}``, e.g. how the lens was fit) into ``directory`` atomically: all go into a
        temporary folder beside it renamed into place, so a reader sees the old lens or the new
        one, never half of one."""
        import os
        import shutil
        import tempfile

        from safetensors.torch import save_file

        from vlground.corpus.format import clean_stale_temps

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(directory)  # a killed writer's temporary folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{os.getpid()}-", dir=directory.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))
            for name, data in (extra or {}).items():
                (tmp / name).write_text(json.dumps(data, indent=2))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, tmp / "translators.safetensors")
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            if directory.exists():
                os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: str | Path, unembedding: Unembedding) -> TunedLens:
        """Load a lens; refused if it was trained for a different unembedding (hash mismatch)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise MechanismError(f"{directory}: no config.json (not a saved lens)")
        from safetensors import SafetensorError

        try:
            config = LensConfig.from_dict(json.loads((directory / "config.json").read_text()))
        except (ValueError, TypeError, KeyError) as exc:  # truncated or hand-edited JSON
            raise MechanismError(f"{directory / 'config.json'}: truncated or corrupt ({type(exc).__name__})") from None
        if config.unembedding_hash != unembedding.hash():
            raise MechanismError(f"{directory}: lens was trained for another unembedding (hash mismatch)")
        lens = cls(config)
        try:
            lens.load_state_dict(load_file(directory / "translators.safetensors"))
        except (SafetensorError, RuntimeError, ValueError) as exc:  # truncated file, wrong shapes
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise MechanismError(f"{directory / 'translators.safetensors'}: truncated or corrupt ({first})") from None
        return lens


def _target(unembedding: Unembedding, batch: LensBatch):
    """``(mask, p [tokens, vocab], sum_v p log p [tokens])`` of the model's own distribution at
    the counted tokens (``mask`` None: every token of a ``[tokens, d]`` cache batch)."""
    own = batch.logits if batch.logits is not None else unembedding.final_logits(batch.hidden_states[-1])
    mask = None
    if batch.mask is not None or own.dim() > 2:
        mask = (torch.ones(own.shape[:-1], dtype=torch.bool) if batch.mask is None else batch.mask.bool()).to(own.device)
        own = own[mask]
    logp = torch.log_softmax(own.float(), dim=-1)
    p = logp.exp()
    return mask, p, (p * logp).sum(-1)


@dataclass(frozen=True)
class TargetStats:
    """What a step needs of the model's own distribution ``p`` at some tokens, for a linear head
    ``z = W u + b``: ``pw = p W`` ``[tokens, d]``, ``pb = p . b`` ``[tokens]`` and
    ``neg_entropy = sum_v p log p`` ``[tokens]`` (float32)."""

    pw: torch.Tensor
    pb: torch.Tensor | float
    neg_entropy: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of_cache(cls, unembedding: Unembedding, cache, chunk_tokens: int = 2048) -> TargetStats:
        """The statistics of every token of a :class:`~vlground.mechanism.lens_cache.HiddenStateCache`
        (one pass of the head over its last states, ``chunk_tokens`` at a time)."""
        head = unembedding.head
        lo, hi = cache.bounds[0], cache.bounds[-1]
        pw = torch.empty(hi - lo, head.weight.shape[1], dtype=torch.float32)
        pb, ne = torch.zeros(hi - lo), torch.empty(hi - lo)
        for a in range(0, hi - lo, chunk_tokens):
            b = min(a + chunk_tokens, hi - lo)
            last = cache.states[-1, lo + a:lo + b]
            if cache.device is not None:
                last = last.to(cache.device)
            _, p, neg = _target(unembedding, LensBatch([last]))
            pw[a:b] = (p @ head.weight).cpu()
            ne[a:b] = neg.cpu()
            if head.bias is not None:
                pb[a:b] = (p @ head.bias).cpu()
        return cls(pw, pb if head.bias is not None else 0.0, ne)

    def gather(self, positions: torch.Tensor, device=None) -> TargetStats:
        move = (lambda t: t.to(device)) if device is not None else (lambda t: t)
        pb = self.pb if isinstance(self.pb, float) else move(self.pb.index_select(0, positions))
        return TargetStats(move(self.pw.index_select(0, positions)), pb, move(self.neg_entropy.index_select(0, positions)))


def _kl_step(lens: TunedLens, unembedding: Unembedding, batch: LensBatch, grad: bool,
             target: TargetStats | None = None) -> tuple[torch.Tensor, list | None]:
    """``([L] mean over counted tokens of KL(p_model || p_lens_l), grads of their sum w.r.t.
    the lens's parameters or None)``.

    ``KL = sum_v p log p - sum_v p z_l + logsumexp(z_l)`` with ``z_l`` the lens's logits; the
    model's distribution and its entropy are computed once for all layers, the layers' logits in
    one call of the head, and (with a linear head) the gradient ``d KL / d z_l = softmax(z_l) - p``
    is formed in place on the logits and taken back through the head by hand, so no
    ``[L, tokens, vocab]`` tensor is kept for autograd; autograd covers the norm and translators.
    ``sum_v p z_l`` is ``u_l . (p W) + p . b`` (``W``, ``b`` the head's): one product with the
    head for all layers instead of one pass over ``[L, tokens, vocab]``.  ``target``: those
    statistics of the batch's tokens precomputed (:class:`TargetStats`, float32 linear heads only),
    so the step does not recompute the model's distribution and forms ``d KL / d u`` as
    ``(softmax(z) W - p W) / tokens``.
    """
    with torch.no_grad():
        if target is None:
            mask, p, neg_entropy = _target(unembedding, batch)
        else:
            mask, p, neg_entropy = None, None, target.neg_entropy
    with torch.enable_grad() if grad else torch.no_grad():
        hidden = torch.stack([lens.transform(h if mask is None else h[mask.to(h.device)], i)
                              for i, h in enumerate(batch.hidden_states[:-1])])  # [L, tokens, d]
        u = hidden if unembedding.norm is None else unembedding.norm(hidden)
    head = unembedding.head
    if not isinstance(head, nn.Linear):  # a head of another kind: plain autograd
        with torch.enable_grad() if grad else torch.no_grad():
            z = head(u).float()
            kl = (neg_entropy - (z * p).sum(-1) + torch.logsumexp(z, dim=-1)).mean(-1)  # [L]
        return kl.detach(), (list(torch.autograd.grad(kl.sum(), list(lens.parameters()))) if grad else None)
    with torch.no_grad():
        u0 = u.detach()
        z = nn.functional.linear(u0, head.weight, head.bias).float()  # [L, tokens, vocab]
        zmax = z.amax(-1, keepdim=True)
        e = z.sub_(zmax).exp_()  # exp(z - max z), in place: z is not needed again
        total = e.sum(-1, keepdim=True)
        lse = (zmax + total.log()).squeeze(-1)  # logsumexp(z), [L, tokens]
        # sum_v p_v z_lv = u_l . (p W) + p . b: one [tokens, vocab] x [vocab, d] product for all layers
        if target is None:
            pw = p.to(head.weight.dtype) @ head.weight  # [tokens, d]
            pb = 0.0 if head.bias is None else (p.to(head.bias.dtype) @ head.bias).float()
        else:
            pw, pb = target.pw, target.pb
        pz = (u0 * pw).sum(-1).float() + pb
        kl = (neg_entropy - pz + lse).mean(-1)  # [L]
        if not grad:
            return kl, None
        q = e.div_(total)  # softmax(z), in place
        if target is None:
            dz = q.sub_(p)  # softmax - p, [L, tokens, vocab] (in place)
            du = (dz.to(head.weight.dtype) @ head.weight).div_(q.shape[1])  # d mean KL / d u, [L, tokens, d]
        else:  # float32 head: (softmax - p) W = softmax W - p W, without p
            du = (q @ head.weight).sub_(pw).div_(q.shape[1])
        del z, e, q
    return kl, list(torch.autograd.grad(u, list(lens.parameters()), du))


def _kl_per_layer(lens: TunedLens, unembedding: Unembedding, batch: LensBatch) -> torch.Tensor:
    """``[L]`` mean over counted tokens of ``KL(p_model || p_lens_l)``."""
    return _kl_step(lens, unembedding, batch, grad=False)[0]


def fit_lens(
    lens: TunedLens, unembedding: Unembedding, batches: Sequence[LensBatch], config: LensTrainConfig = LensTrainConfig()
) -> list[float]:
    """Fit the translators in place (Adam on the summed per-layer KL); returns the loss per step.

    ``batches``: any sequence of :class:`LensBatch` (a :class:`~vlground.mechanism.lens_cache.HiddenStateCache`,
    or :class:`LazyLensBatches`, or a list).  With ``config.batch_tokens`` set, every step reads
    that many positions drawn from all of their counted tokens (:class:`PositionStream`; a sequence
    that is not a cache is first gathered into one, running a lazy sequence's model once per batch);
    with ``batch_tokens=None`` step ``s`` reads batch ``s % len(batches)``.  See
    :class:`LensTrainConfig` for the number of steps.

    Only the lens's parameters change: gradients are taken with ``torch.autograd.grad``
    on them, so the model's ``.grad`` fields are not touched.
    """
    if not batches:
        raise MechanismError("fit_lens needs at least one batch")
    if config.batch_tokens is None:
        steps = max(config.steps, config.min_epochs * len(batches))

        def draw(step: int) -> tuple[LensBatch, TargetStats | None]:
            return batches[step % len(batches)], None
    else:
        from vlground.mechanism.lens_cache import HiddenStateCache

        if config.batch_tokens < 1:
            raise MechanismError(f"batch_tokens must be a positive number of positions, not {config.batch_tokens}")
        pool = batches if isinstance(batches, HiddenStateCache) else HiddenStateCache.from_batches(batches)
        stream = PositionStream(pool.n_tokens(), config.batch_tokens, config.seed)
        steps = max(config.steps, math.ceil(config.min_epochs * pool.n_tokens() / stream.size))
        head = unembedding.head
        stats = (TargetStats.of_cache(unembedding, pool) if isinstance(head, nn.Linear) and head.weight.dtype == torch.float32
                 else None)  # the model's own distribution once per token, not per step

        def draw(step: int) -> tuple[LensBatch, TargetStats | None]:
            idx = stream.next()
            return pool.gather(idx), (None if stats is None else stats.gather(idx, pool.device))
    params = list(lens.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    for step in range(steps):
        batch, target = draw(step)
        kl, grads = _kl_step(lens, unembedding, batch, grad=True, target=target)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        losses.append(float(kl.sum()))
    log.debug("fit_lens: loss %.4f -> %.4f over %d steps", losses[0], losses[-1], steps)
    return losses


class PositionStream:
    """Positions ``[size]`` (sorted) per step out of ``n`` tokens: consecutive slices of a stream of
    random permutations of ``range(n)`` (seeded), so the first ``n`` positions drawn are all
    distinct and after ``k`` full passes every token was drawn ``k`` times; ``size = min(batch, n)``
    (with ``size == n`` every step reads every token)."""

    def __init__(self, n: int, batch: int, seed: int = 0):
        if n < 1:
            raise MechanismError("no tokens to draw positions from")
        self.n, self.size = n, min(int(batch), n)
        self._gen = torch.Generator().manual_seed(seed)
        self._left = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if self.size == self.n:
            return torch.arange(self.n)
        parts, need = [], self.size
        while need:
            if not len(self._left):
                self._left = torch.randperm(self.n, generator=self._gen)
            take, self._left = self._left[:need], self._left[need:]
            parts.append(take)
            need -= len(take)
        return torch.cat(parts).sort().values


def positions_drawn(n_tokens: int, steps: int, batch_tokens: int) -> int:
    """Distinct tokens whose positions entered a minibatch fit (:class:`PositionStream`) of
    ``steps`` steps of ``batch_tokens`` positions on ``n_tokens`` tokens."""
    return min(n_tokens, steps * min(batch_tokens, n_tokens))


@torch.no_grad()
def lens_kl(lens: TunedLens, unembedding: Unembedding, batches: Iterable[LensBatch], chunk_tokens: int = 2048) -> torch.Tensor:
    """``[L]`` held-out KL per layer: the mean over every counted token of ``batches`` (each
    ``[tokens, d_model]`` batch evaluated ``chunk_tokens`` positions at a time, so no more than
    ``[L, chunk_tokens, vocab]`` logits are held)."""
    total, count = None, 0
    for b in batches:
        if b.mask is None and b.hidden_states[0].dim() == 2:  # a cache batch: chunk it
            n = b.hidden_states[0].shape[0]
            parts = [LensBatch([h[lo:lo + chunk_tokens] for h in b.hidden_states],
                               None if b.logits is None else b.logits[lo:lo + chunk_tokens]) for lo in range(0, n, chunk_tokens)]
        else:
            parts = [b]
        for part in parts:
            n = _n_counted(part)
            if n == 0:
                continue
            kl = _kl_per_layer(lens, unembedding, part) * n
            total, count = (kl if total is None else total + kl), count + n
    if total is None:
        raise MechanismError("lens_kl: no counted tokens")
    return total / count


def _n_counted(batch: LensBatch) -> int:
    if batch.mask is not None:
        return int(batch.mask.sum())
    h = batch.hidden_states[0]
    return int(h.shape[:-1].numel())


@torch.no_grad()
def lens_surprisal(
    lens: TunedLens,
    unembedding: Unembedding,
    hidden_states: Sequence[torch.Tensor],
    predict_positions: torch.Tensor | Sequence[int],
    target_ids: torch.Tensor | Sequence[int],
) -> torch.Tensor:
    """``[batch, L + 1]`` surprisal (nats) of ``target_ids[b]`` read at ``predict_positions[b]``
    through each layer's lens; column ``L`` is the model's own surprisal."""
    rows = torch.arange(hidden_states[0].shape[0])
    pos = torch.as_tensor(predict_positions, dtype=torch.long)
    tgt = torch.as_tensor(target_ids, dtype=torch.long)
    picked = [h[rows, pos.to(h.device)] for h in hidden_states]  # L + 1 of [batch, d_model]
    logits = lens.layer_logits(picked, unembedding)
    return torch.stack([-torch.log_softmax(lg.float(), -1)[rows, tgt.to(lg.device)] for lg in logits], dim=1).cpu()


@torch.no_grad()
def hf_lens_batches(model: nn.Module, token_batches: Iterable[torch.Tensor]) -> Iterator[LensBatch]:
    """:class:`LensBatch` per ``[batch, seq]`` token tensor for a HF model (``output_hidden_states=True``)."""
    for ids in token_batches:
        out = model(ids, output_hidden_states=True)
        yield LensBatch(hidden_states=[h.detach() for h in out.hidden_states], logits=out.logits.detach())


class LazyLensBatches(Sequence):
    """:class:`LensBatch` of each model input, computed when asked for (not kept): the earlier
    path, which re-runs the model at every optimisation step; the probe uses
    :class:`~vlground.mechanism.lens_cache.HiddenStateCache` (one pass).

    model: a model returning ``hidden_states`` and ``logits`` with ``output_hidden_states=True``;
    inputs: model-input dicts (e.g. ``{"input_ids": [batch, seq], "attention_mask": ...}``).
    """

    def __init__(self, model: nn.Module, inputs: Sequence[dict[str, torch.Tensor]], device: torch.device | str | None = None):
        self.model, self.inputs, self.device = model, list(inputs), device

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LazyLensBatches(self.model, self.inputs[i], self.device)
        inputs = {k: (v.to(self.device) if self.device is not None else v) for k, v in self.inputs[i].items()}
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=True)
        return LensBatch([h.detach() for h in out.hidden_states], out.logits.detach(), inputs.get("attention_mask"))

    def n_tokens(self) -> int:
        """Tokens counted (attention mask ones, or every position)."""
        return sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in self.inputs)


def split_held_out(batches: Sequence, held_out_fraction: float = 0.1) -> tuple[Sequence, Sequence]:
    """``(fit, held_out)``: the last ``ceil(fraction * n)`` batches (at least one) are held out to
    measure the lens's KL; with a single batch both are that batch (the KL is then in-sample)."""
    n = len(batches)
    if n < 2:
        return batches, batches
    k = min(n - 1, max(1, math.ceil(held_out_fraction * n)))
    return batches[: n - k], batches[n - k :]
