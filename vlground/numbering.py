"""The one numbering of layers and heads in everything a user reads (docs/probes.md, "Numbering").

Reports, tables, CSV, ``results.json``, plots and heads files use the paper's numbering: layers
**and** heads count from 1, so ``L4.H3`` is block 4, head 3 (the fourth decoder block, its third
head). Tables that name a head or a layer also carry the 0-based ``layer_index`` / ``head_index``
of code, hooks and other tools (``model.transformer.h[layer_index]``, TransformerLens
``blocks.{layer_index}.attn.hook_pattern[:, head_index]``, nnsight, ``output_attentions``), so a
cross-check never needs an off-by-one. The lens's layer 0 is the embeddings, layer ``k`` the
output of block ``k`` (``hidden_states[k]``).
"""
from __future__ import annotations

from vlground.errors import InputError

__all__ = ["layer_number", "head_number", "layer_index", "head_index", "head_label", "strict_int"]


def layer_number(block_index: int) -> int:
    """1-based layer number (what users read) of the 0-based decoder block ``block_index``."""
    block_index = int(block_index)
    if block_index < 0:
        from vlground.mechanism.errors import MechanismError

        raise MechanismError(f"block index {block_index} is negative")
    return block_index + 1


def head_number(head_index: int) -> int:
    """1-based head number (what users read) of the 0-based head ``head_index``."""
    head_index = int(head_index)
    if head_index < 0:
        raise ValueError(f"head index {head_index} is negative")
    return head_index + 1


def layer_index(number: int) -> int:
    """0-based block index of the 1-based layer ``number``."""
    if int(number) < 1:
        raise ValueError(f"layer {number}: layers are numbered from 1")
    return int(number) - 1


def head_index(number: int) -> int:
    """0-based head index of the 1-based head ``number``."""
    if int(number) < 1:
        raise ValueError(f"head {number}: heads are numbered from 1")
    return int(number) - 1


def head_label(block_index: int, head_idx: int) -> str:
    """``L4.H3`` for block index 3, head index 2 (both 1-based in the label)."""
    return f"L{layer_number(block_index)}.H{head_number(head_idx)}"


def strict_int(value, what: str, where: str) -> int:
    """``value`` when it is a JSON integer (not a bool, float or string), else a one-line InputError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where}: {what} {value!r} is not an integer")
    return value
