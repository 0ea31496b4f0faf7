"""Information flow summaries of a saliency tensor: Wang et al.'s S-scores and head grids.

Input everywhere is a saliency tensor ``[batch, layers, heads, seq, seq]`` from
:func:`vlground.mechanism.attention_saliency` (row ``i``, column ``j`` = flow from token
``j`` into token ``i``).  Position sets are boolean masks ``[batch, seq]``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlground.mechanism.errors import MechanismError

__all__ = ["LayerFlow", "flow_into", "head_grid", "normalize_maps", "normalize_grid", "positions_mask"]


@dataclass(frozen=True)
class LayerFlow:
    """Per-layer flow scores (Wang et al. 2023, Sec. 2.1, adapted).

    env: ``[batch, layers]`` S_env, mean of ``I[t, j]`` over environment positions ``j <= t``.
    rest: ``[batch, layers]`` S_rest, mean of ``I[i, j]`` over all other causal pairs ``j <= i``.
    """

    env: torch.Tensor
    rest: torch.Tensor

    @property
    def env_share(self) -> torch.Tensor:
        """``[batch, layers]`` ``S_env / (S_env + S_rest)`` (0 where both are 0)."""
        total = self.env + self.rest
        return torch.where(total > 0, self.env / total.clamp_min(1e-30), torch.zeros_like(total))


def positions_mask(positions: torch.Tensor | Sequence[Sequence[int]], batch: int, seq: int) -> torch.Tensor:
    """A ``[batch, seq]`` bool mask from a bool mask or from one list of positions per item."""
    if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool:
        if positions.shape != (batch, seq):
            raise MechanismError(f"position mask has shape {tuple(positions.shape)}, expected {(batch, seq)}")
        return positions
    if len(positions) != batch:
        raise MechanismError(f"{len(positions)} position lists for {batch} items")
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    for b, pos in enumerate(positions):
        mask[b, torch.as_tensor(list(pos), dtype=torch.long)] = True
    return mask


def _layer_maps(saliency: torch.Tensor) -> torch.Tensor:
    """``[batch, layers, seq, seq]``: ``|sum_h I(l, h)|`` (Wang et al., Eq. 1)."""
    if saliency.dim() != 5:
        raise MechanismError(f"saliency must be [batch, layers, heads, seq, seq], got {tuple(saliency.shape)}")
    return saliency.sum(dim=2).abs()


def flow_into(
    saliency: torch.Tensor,
    target_pos: torch.Tensor | Sequence[int],
    source_positions: torch.Tensor | Sequence[Sequence[int]],
    valid: torch.Tensor | None = None,
) -> LayerFlow:
    """S_env and S_rest per layer.

    Per layer, heads are combined as ``I_l = |sum_h I(l, h)|`` (Wang et al., Eq. 1).
    ``S_env = mean_{j in env, j <= t} I_l[t, j]`` with ``t = target_pos[b]`` (the position
    just before the target word); ``S_rest`` is the mean of ``I_l[i, j]`` over the remaining
    pairs of the causal lower triangle (``j <= i``, both positions valid), i.e. all pairs
    except ``(t, env)``.  Means are over the pair sets, as Wang et al. normalise S_wp/S_pq/S_ww.

    saliency: ``[batch, layers, heads, seq, seq]``; target_pos: ``[batch]``;
    source_positions: ``[batch, seq]`` bool or one position list per item;
    valid: ``[batch, seq]`` attention mask (default all valid).  Returns :class:`LayerFlow`.
    """
    maps = _layer_maps(saliency)
    batch, _, seq, _ = maps.shape
    env = positions_mask(source_positions, batch, seq)
    valid = torch.ones(batch, seq, dtype=torch.bool) if valid is None else valid.bool().cpu()
    target_pos = torch.as_tensor(target_pos, dtype=torch.long)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    pairs = causal & valid[:, :, None] & valid[:, None, :]  # [batch, seq, seq]
    env_pairs = torch.zeros_like(pairs)
    rows = torch.arange(batch)
    env_pairs[rows, target_pos] = env & pairs[rows, target_pos]
    rest_pairs = pairs & ~env_pairs
    def mean_over(sel: torch.Tensor) -> torch.Tensor:
        sel = sel[:, None].to(maps.dtype)
        return (maps * sel).sum((-1, -2)) / sel.sum((-1, -2)).clamp_min(1)
    return LayerFlow(env=mean_over(env_pairs), rest=mean_over(rest_pairs))


def head_grid(
    saliency: torch.Tensor,
    kind: str = "flow",
    target_pos: torch.Tensor | Sequence[int] | None = None,
    source_positions: torch.Tensor | Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    """One scalar per head: ``[batch, layers, heads]``.

    kind ``"flow"``: ``sum_{j in env} |I(l,h)[t, j]|`` (needs target_pos and source_positions);
    kind ``"mass"``: ``sum_{i,j} |I(l,h)[i, j]|``, the head's total saliency mass.
    """
    mags = saliency.abs()
    if kind == "mass":
        return mags.sum((-1, -2))
    if kind != "flow":
        raise MechanismError(f"unknown head grid kind {kind!r}; known: 'flow', 'mass'")
    if target_pos is None or source_positions is None:
        raise MechanismError("head_grid(kind='flow') needs target_pos and source_positions")
    batch, seq = saliency.shape[0], saliency.shape[-1]
    env = positions_mask(source_positions, batch, seq).to(mags.dtype)
    rows = mags[torch.arange(batch), :, :, torch.as_tensor(target_pos, dtype=torch.long)]  # [batch, L, H, seq]
    return (rows * env[:, None, None, :]).sum(-1)


def normalize_maps(maps: torch.Tensor, per: str = "head") -> torch.Tensor:
    """Scale ``|maps|`` ``[..., layers, heads, seq, seq]`` into [0, 1] for plotting.

    per ``"head"``: each head by its own max (compare shapes, not strengths);
    per ``"model"``: all heads of a model by one max (compare strengths across heads).
    """
    mags = maps.abs()
    dims = {"head": (-1, -2), "model": (-1, -2, -3, -4)}
    if per not in dims:
        raise MechanismError(f"unknown normalisation {per!r}; known: {sorted(dims)}")
    return mags / mags.amax(dim=dims[per], keepdim=True).clamp_min(1e-30)


def normalize_grid(grids: torch.Tensor, per: str = "model") -> torch.Tensor:
    """Normalise scalar head grids ``[checkpoints, layers, heads]``.

    per ``"model"``: each checkpoint's grid divided by its sum (a head's share of the model);
    per ``"head"``: each head divided by its max over checkpoints (its trajectory in [0, 1]).
    """
    if per == "model":
        return grids / grids.sum((-1, -2), keepdim=True).clamp_min(1e-30)
    if per == "head":
        return grids / grids.amax(dim=0, keepdim=True).clamp_min(1e-30)
    raise MechanismError(f"unknown normalisation {per!r}; known: 'head', 'model'")
