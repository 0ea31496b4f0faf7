"""Which attention kernel a Hugging Face model runs, switched for the length of a block.

Checkpoints load with eager attention (saliency needs the maps and their gradients), but a pass
that reads no attention map (the tuned lens's hidden states, scoring) runs faster with the fused
``sdpa`` kernel: :func:`attention_kernel` switches the model for the block and restores it in
``finally``.  A model that cannot switch (an LSTM, a custom module) runs unchanged.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from torch import nn

__all__ = ["attention_kernel"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def attention_kernel(model: nn.Module, implementation: str = "sdpa") -> Iterator[nn.Module]:
    """Run ``model`` with ``implementation`` attention inside the block (``sdpa`` by default),
    through ``model.set_attn_implementation`` (transformers >= 4.48); the earlier kernel is
    restored after, also when the block raises.  No-op for a model without attention settings or
    whose switch fails (the block then runs with the model's own kernel; logged)."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    switched = False
    if before is not None and before != implementation and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation(implementation)
            switched = True
        except (ValueError, ImportError, NotImplementedError) as exc:  # kernel not supported by this model
            log.debug("%s keeps %r attention (%s)", type(model).__name__, before, exc)
    try:
        yield model
    finally:
        if switched:
            model.set_attn_implementation(before)
