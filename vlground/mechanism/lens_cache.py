"""Hidden states of every layer at the counted tokens of some model inputs, from one forward pass.

The tuned lens's translators learn while the model stays frozen, so the model's activations are
the same at every optimisation step: :meth:`HiddenStateCache.build` runs the model once over the
inputs (``sdpa`` attention, no attention maps, no gradients) and keeps ``hidden_states`` of every
layer at the tokens that count (attention mask 1; padding is dropped), in the model's dtype.
The fit and the KL evaluation then read the cache (:func:`vlground.mechanism.lens.fit_lens`,
:func:`vlground.mechanism.lens.lens_kl`); the model's own logits are recomputed per batch from
the cached last state (one head matmul) instead of storing ``[tokens, vocab]``.

Storage: one tensor ``[L + 1, tokens, d_model]``.  In memory while it fits ``memory_bytes``; else
in a file under ``directory`` (default: the system temporary folder) mapped into memory, whose
name is unlinked as soon as it is mapped, so nothing is left on disk even when the process is
killed.  Batches are the input batches' token ranges: batch ``i`` of the cache is the counted
tokens of ``inputs[i]`` (what the earlier whole-batch schedule reads); :meth:`HiddenStateCache.gather`
reads any positions (the minibatches :func:`~vlground.mechanism.lens.fit_lens` draws).
"""
from __future__ import annotations

import hashlib
import logging
import mmap
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.kernels import attention_kernel

__all__ = ["HiddenStateCache", "DEFAULT_MEMORY_BYTES", "count_tokens"]

log = logging.getLogger(__name__)

#: default budget of a cache held in memory (larger caches go to a mapped file)
DEFAULT_MEMORY_BYTES = 2 << 30


def count_tokens(inputs: dict[str, torch.Tensor]) -> int:
    """Tokens that count in one model-input dict: attention mask ones, or every position."""
    mask = inputs.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())


class HiddenStateCache(Sequence):
    """``states[l, t]``: hidden state ``l`` (``output_hidden_states`` convention, ``L + 1``
    entries) of counted token ``t``; batch ``i`` is tokens ``bounds[i]:bounds[i + 1]``.

    Indexing gives a :class:`vlground.mechanism.lens.LensBatch` with ``L + 1`` tensors
    ``[tokens, d_model]`` on ``device`` and no logits (the lens recomputes them from the last
    state); a slice gives a cache over those batches (same storage).
    """

    def __init__(self, states: torch.Tensor, bounds: Sequence[int], device: torch.device | str | None = None,
                 on_disk: bool = False):
        self.states, self.bounds, self.device, self.on_disk = states, list(bounds), device, on_disk

    # -- building -------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def build(cls, model: nn.Module, inputs: Sequence[dict[str, torch.Tensor]], device: torch.device | str | None = None, *,
              memory_bytes: int = DEFAULT_MEMORY_BYTES, directory: str | Path | None = None) -> HiddenStateCache:
        """Run ``model`` once over ``inputs`` (model-input dicts, e.g. ``{"input_ids": [B, S],
        "attention_mask": [B, S]}``) with ``sdpa`` attention and keep every layer's hidden state
        at the counted tokens, in the model's dtype, on the CPU (in memory up to
        ``memory_bytes``, else in a mapped file under ``directory``)."""
        if not inputs:
            raise MechanismError("a hidden-state cache needs at least one input batch")
        counts = [count_tokens(b) for b in inputs]
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        states = None
        on_disk = False
        was_training = model.training
        model.eval()
        try:
            with attention_kernel(model, "sdpa"):
                for i, batch in enumerate(inputs):
                    moved = {k: (v.to(device) if device is not None and torch.is_tensor(v) else v) for k, v in batch.items()}
                    out = model(**moved, output_hidden_states=True)
                    hidden = out.hidden_states if hasattr(out, "hidden_states") else out[0]
                    mask = moved.get("attention_mask")
                    if states is None:
                        shape = (len(hidden), bounds[-1], hidden[0].shape[-1])
                        states, on_disk = _allocate(shape, hidden[0].dtype, memory_bytes, directory)
                    if len(hidden) != states.shape[0]:
                        raise MechanismError(f"input batch {i}: {len(hidden)} hidden states, expected {states.shape[0]}")
                    keep = None if mask is None else mask.bool()
                    for layer, h in enumerate(hidden):
                        flat = h.reshape(-1, h.shape[-1]) if keep is None else h[keep]
                        states[layer, bounds[i]:bounds[i + 1]] = flat.to("cpu", states.dtype)
        finally:
            model.train(was_training)
        log.debug("hidden-state cache: %d tokens x %d states x %d, %s, %s", bounds[-1], states.shape[0], states.shape[-1],
                  states.dtype, "mapped file" if on_disk else "in memory")
        return cls(states, bounds, device, on_disk)

    @classmethod
    @torch.no_grad()
    def from_batches(cls, batches, device: torch.device | str | None = None, *,
                     memory_bytes: int = DEFAULT_MEMORY_BYTES, directory: str | Path | None = None) -> HiddenStateCache:
        """A cache of the counted tokens of :class:`~vlground.mechanism.lens.LensBatch` es (each read
        once: a lazy sequence runs its model once per batch); their ``logits`` are dropped (the lens
        recomputes the model's own from the last state, as for a built cache)."""
        bounds, parts = [0], []
        for i, b in enumerate(batches):
            hidden = b.hidden_states
            keep = None if b.mask is None else b.mask.bool().to(hidden[0].device)
            flat = [h.reshape(-1, h.shape[-1]) if keep is None else h[keep] for h in hidden]
            if parts and len(flat) != len(parts[0]):
                raise MechanismError(f"batch {i}: {len(flat)} hidden states, expected {len(parts[0])}")
            parts.append([f.detach().to("cpu") for f in flat])
            bounds.append(bounds[-1] + flat[0].shape[0])
        if not parts:
            raise MechanismError("a hidden-state cache needs at least one batch")
        shape = (len(parts[0]), bounds[-1], parts[0][0].shape[-1])
        states, on_disk = _allocate(shape, parts[0][0].dtype, memory_bytes, directory)
        for i, flat in enumerate(parts):
            for layer, f in enumerate(flat):
                states[layer, bounds[i]:bounds[i + 1]] = f
        return cls(states, bounds, device, on_disk)

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i):
        from vlground.mechanism.lens import LensBatch

        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise MechanismError("a hidden-state cache slices with step 1 only")
            hi = max(lo, hi)
            return HiddenStateCache(self.states, self.bounds[lo : hi + 1], self.device, self.on_disk)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        lo, hi = self.bounds[i], self.bounds[i + 1]
        part = self.states[:, lo:hi]
        if self.device is not None:
            part = part.to(self.device)
        return LensBatch(hidden_states=list(part.unbind(0)), logits=None)

    def gather(self, positions: torch.Tensor):
        """:class:`~vlground.mechanism.lens.LensBatch` of the tokens at ``positions`` ``[n]``
        (counted from this cache's first token): ``L + 1`` tensors ``[n, d_model]`` on ``device``."""
        from vlground.mechanism.lens import LensBatch

        part = self.states.index_select(1, positions + self.bounds[0])  # [L + 1, n, d] (faster than advanced indexing)
        if self.device is not None:
            part = part.to(self.device)
        return LensBatch(hidden_states=list(part.unbind(0)), logits=None)

    def n_tokens(self) -> int:
        """Counted tokens held (over this cache's batches)."""
        return self.bounds[-1] - self.bounds[0]

    @property
    def n_layers(self) -> int:
        """Translators a lens for this model has: ``L`` (the cache holds ``L + 1`` states)."""
        return self.states.shape[0] - 1

    @property
    def d_model(self) -> int:
        return self.states.shape[-1]

    def digest(self) -> str:
        """sha256 of the last hidden state at every token of this cache (the model's output
        representation: any change of its weights or inputs changes it)."""
        h = hashlib.sha256()
        last = self.states[-1, self.bounds[0] : self.bounds[-1]].contiguous()
        h.update(f"{last.dtype}:{tuple(last.shape)}".encode())
        h.update(last.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()


def _allocate(shape: tuple[int, int, int], dtype: torch.dtype, memory_bytes: int, directory) -> tuple[torch.Tensor, bool]:
    """``(tensor, on_disk)``: a CPU tensor of ``shape``, in memory or in a mapped, unlinked file."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = shape[0] * shape[1] * shape[2] * itemsize
    if nbytes <= memory_bytes:
        return torch.empty(shape, dtype=dtype), False
    folder = Path(directory) if directory is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".vlground-lens-cache-", dir=folder)
    try:
        os.ftruncate(fd, max(nbytes, 1))
        buf = mmap.mmap(fd, max(nbytes, 1))
    finally:
        os.close(fd)
        os.unlink(name)  # the mapping keeps the data; no file is left behind
    log.info("lens: hidden-state cache of %.1f GiB in a mapped file under %s (over the %.1f GiB memory budget)",
             nbytes / 2**30, folder, memory_bytes / 2**30)
    flat = torch.frombuffer(buf, dtype=torch.uint8, count=nbytes)
    return flat.view(dtype).view(shape), True
