"""Gather and aggregate heads (Bick et al. 2025) on saliency maps, and box shares for images.

A head's saliency map ``I`` is ``[seq, seq]`` (row ``i`` = flows into token ``i``).  Its mass
is ``M = |I|`` on the causal lower triangle (``j <= i``): saliency is signed, and a
strongly negative flow is as much "carried by the head" as a positive one.  With
``total = sum M``:

* aggregate (a dot, the paper's rule): the largest cell holds ``max_ij M[i, j] / total >= t_aggregate``.
* gather (a strip: all earlier tokens flowing into one position), three selectable rules:

  - ``strip-off-target`` (default): a strip at a position *other than the predicted one*,
    ``max_{i != t} sum_j M[i, j] / total >= t_gather`` with ``t`` the predicted position (the
    row whose logits carry the loss) and ``total`` the head's whole mass.  The loss sits at
    ``t``, so the last block's saliency is non-zero only in row ``t`` and every last-block head
    would be a full strip there by construction; that row says nothing about gathering.  A
    gather head in the sense of Bick et al. (2025) collects a span into an *anchor* position
    that later heads read, so its strip lies before ``t``.  ``t`` is given per map
    (``predict_positions``) or, if not, taken as the last row with any mass (rows after the loss
    position have none).
  - ``strip`` (the paper's literal rule: "the strip at certain position occupies at least 30% of
    the total saliency mass of the head"): some row holds ``max_i sum_j M[i, j] / total >=
    t_gather``.  Under this rule a dot is also a strip (its row holds at least the dot's mass),
    so every aggregate head with ``t_gather <= t_aggregate`` is a gather head too, and so is
    every head of the last block.
  - ``strip-minus-dot`` (vlground's earlier rule): the row's largest cell is removed first,
    ``max_i (sum_j M[i, j] - max_j M[i, j]) / total >= t_gather``, so a lone dot never
    counts as a strip.

* gather-only = gather and not aggregate: the heads a "gather" ablation should zero if it
  must not also zero aggregate heads (under ``strip`` they are the strips that are not dots).
* A head can be both gather and aggregate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlground.mechanism.errors import MechanismError

__all__ = [
    "GATHER_RULES",
    "DEFAULT_GATHER_RULE",
    "target_rows",
    "GatherAggregateThresholds",
    "gather_mask",
    "aggregate_mask",
    "gather_only_mask",
    "HeadPatterns",
    "classify_heads",
    "mechanism_share",
    "BoxThresholds",
    "inside_share",
    "box_aggregate",
]


#: gather rules: ``strip-off-target`` (the default), ``strip`` (the paper's literal rule) and ``strip-minus-dot``
GATHER_RULES = ("strip-off-target", "strip", "strip-minus-dot")
DEFAULT_GATHER_RULE = "strip-off-target"


@dataclass(frozen=True)
class GatherAggregateThresholds:
    """Thresholds as shares of a head's total saliency mass, and the gather rule."""

    gather: float = 0.3
    """A row other than the predicted one (``strip-off-target``), any row (``strip``) or a row without its largest cell (``strip-minus-dot``) holds at least this share -> gather head."""
    aggregate: float = 0.3
    """One cell holds at least this share -> aggregate head."""
    gather_rule: str = DEFAULT_GATHER_RULE
    """``strip-off-target`` (a strip at another position than the predicted one), ``strip`` (the paper's literal rule) or ``strip-minus-dot`` (a dot's row does not count as a strip)."""

    def __post_init__(self) -> None:
        if self.gather_rule not in GATHER_RULES:
            raise MechanismError(f"unknown gather rule {self.gather_rule!r}; known: {', '.join(GATHER_RULES)}")


@dataclass(frozen=True)
class HeadPatterns:
    """Classification of heads; every field has the leading shape of the input (e.g. ``[batch, layers, heads]``).

    gather, aggregate: bool.  strip_share, dot_share: the two scores in [0, 1] (strip_share
    under the rule used).  strip_row: the row of the best strip.  dot_row, dot_col: the cell
    of the dot.  gather_rule: the rule ``gather`` was computed with.
    """

    gather: torch.Tensor
    aggregate: torch.Tensor
    strip_share: torch.Tensor
    strip_row: torch.Tensor
    dot_share: torch.Tensor
    dot_row: torch.Tensor
    dot_col: torch.Tensor
    gather_rule: str = DEFAULT_GATHER_RULE

    @property
    def gather_only(self) -> torch.Tensor:
        """Gather heads that are not aggregate heads."""
        return self.gather & ~self.aggregate

    def mask(self, head_type: str) -> torch.Tensor:
        """The bool mask of ``gather``, ``aggregate``, ``gather-only`` or ``neither``."""
        masks = {"gather": self.gather, "aggregate": self.aggregate, "gather-only": self.gather_only, "neither": self.neither}
        if head_type not in masks:
            raise MechanismError(f"unknown head type {head_type!r}; known: {', '.join(masks)}")
        return masks[head_type]

    @property
    def neither(self) -> torch.Tensor:
        """Heads that meet neither criterion (the pool for control ablations)."""
        return ~(self.gather | self.aggregate)


def _mass(saliency: torch.Tensor) -> torch.Tensor:
    seq = saliency.shape[-1]
    if saliency.dim() < 2 or saliency.shape[-2] != seq:
        raise MechanismError(f"saliency maps must be [..., seq, seq], got {tuple(saliency.shape)}")
    return saliency.abs().float() * torch.ones(seq, seq, dtype=torch.bool, device=saliency.device).tril()


def target_rows(mass: torch.Tensor, predict_positions: torch.Tensor | int | None = None) -> torch.Tensor:
    """Long ``[...]``: the predicted position of each map of ``mass`` ``[..., seq, seq]``.

    ``predict_positions``: an int, or a tensor whose shape is a prefix of the maps' leading shape
    (``[batch]`` for ``[batch, layers, heads, seq, seq]``), broadcast over the remaining dims.
    None: the last row holding any mass (a loss at ``t`` gives rows after ``t`` no saliency).
    """
    lead = mass.shape[:-2]
    if predict_positions is None:
        nz = mass.sum(-1) > 0  # [..., seq]
        seq = nz.shape[-1]
        return (seq - 1 - nz.flip(-1).to(torch.int8).argmax(-1)).long()
    t = torch.as_tensor(predict_positions, dtype=torch.long, device=mass.device)
    if t.shape != lead[: t.dim()]:
        raise MechanismError(f"predict_positions of shape {tuple(t.shape)} do not match maps {tuple(mass.shape)}")
    return t.reshape(t.shape + (1,) * (len(lead) - t.dim())).expand(lead)


def classify_heads(
    saliency: torch.Tensor, thresholds: GatherAggregateThresholds = GatherAggregateThresholds(),
    predict_positions: torch.Tensor | int | None = None,
) -> HeadPatterns:
    """Classify every map of ``saliency`` ``[..., seq, seq]`` as gather and/or aggregate.

    ``predict_positions`` (only read by ``strip-off-target``): the row of each map whose logits
    carry the loss, see :func:`target_rows`."""
    mass = _mass(saliency)
    total = mass.sum((-1, -2)).clamp_min(1e-30)
    dot_share, flat = (mass.flatten(-2) / total[..., None]).max(dim=-1)
    row_max = mass.max(dim=-1).values if thresholds.gather_rule == "strip-minus-dot" else None
    return patterns_from_rows(mass.sum(-1), row_max, total, dot_share, flat, saliency.shape[-1], thresholds,
                              predict_positions)


def patterns_from_rows(row_mass: torch.Tensor, row_max: torch.Tensor | None, total: torch.Tensor,
                       dot_share: torch.Tensor, dot_index: torch.Tensor, seq: int,
                       thresholds: GatherAggregateThresholds, predict_positions=None) -> HeadPatterns:
    """The gather and aggregate rules on what they read of a map: ``row_mass`` ``[..., seq]`` (each
    row's saliency mass), ``row_max`` (each row's largest cell; read by ``strip-minus-dot`` only),
    ``total`` ``[...]`` (the map's mass, > 0), ``dot_share`` / ``dot_index`` (the largest cell's
    share and flat index). Shared by :func:`classify_heads` (full maps) and
    :func:`vlground.mechanism.saliency_summary.classify_from_summary` (reductions)."""
    if thresholds.gather_rule == "strip-minus-dot":
        row_mass = row_mass - row_max
    elif thresholds.gather_rule == "strip-off-target":
        t = target_rows(row_mass[..., None], predict_positions)
        own = torch.arange(row_mass.shape[-1], device=row_mass.device) == t[..., None]
        row_mass = row_mass.masked_fill(own, 0.0)
    strip_share, strip_row = (row_mass / total[..., None]).max(dim=-1)
    return HeadPatterns(
        gather=strip_share >= thresholds.gather,
        aggregate=dot_share >= thresholds.aggregate,
        strip_share=strip_share,
        strip_row=strip_row,
        dot_share=dot_share,
        dot_row=dot_index // seq,
        dot_col=dot_index % seq,
        gather_rule=thresholds.gather_rule,
    )


def gather_mask(saliency: torch.Tensor, thresholds: GatherAggregateThresholds = GatherAggregateThresholds(),
                predict_positions: torch.Tensor | int | None = None) -> torch.Tensor:
    """Bool ``[...]``: gather heads of ``saliency`` ``[..., seq, seq]`` under ``thresholds.gather_rule``."""
    return classify_heads(saliency, thresholds, predict_positions).gather


def aggregate_mask(saliency: torch.Tensor, thresholds: GatherAggregateThresholds = GatherAggregateThresholds()) -> torch.Tensor:
    """Bool ``[...]``: aggregate heads (one cell holds ``>= thresholds.aggregate`` of the mass)."""
    return classify_heads(saliency, thresholds).aggregate


def gather_only_mask(saliency: torch.Tensor, thresholds: GatherAggregateThresholds = GatherAggregateThresholds(),
                     predict_positions: torch.Tensor | int | None = None) -> torch.Tensor:
    """Bool ``[...]``: gather heads that are not aggregate heads."""
    return classify_heads(saliency, thresholds, predict_positions).gather_only


def mechanism_share(saliency: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Share of all saliency mass carried by the selected heads, per item.

    saliency: ``[batch, layers, heads, seq, seq]`` (e.g. of an earlier checkpoint);
    heads: bool ``[batch, layers, heads]`` or ``[layers, heads]`` (e.g. identified in the
    final model).  Returns ``[batch]`` in [0, 1]: ``sum_{selected} mass / sum_{all} mass``.
    """
    per_head = _mass(saliency).sum((-1, -2))  # [batch, L, H]
    heads = heads.to(per_head.device).expand_as(per_head)
    return (per_head * heads).sum((-1, -2)) / per_head.sum((-1, -2)).clamp_min(1e-30)


@dataclass(frozen=True)
class BoxThresholds:
    """Inside-box shares at which a head counts as aggregating onto the box."""

    levels: tuple[float, ...] = field(default=(0.7, 0.9))
    """Each level gives one classification (the paper reports 70% and 90%)."""


def inside_share(saliency_row: torch.Tensor, inside_mask: torch.Tensor) -> torch.Tensor:
    """Share of a head's patch-to-word saliency coming from patches inside the box.

    saliency_row: ``[..., patches]`` saliency from each image patch position into the position
    just before the word (e.g. ``sal[b, l, h, t, patch_positions]``); inside_mask: bool
    ``[patches]`` or ``[..., patches]``.  Returns ``[...]``: ``sum_inside |I| / sum_all |I|`` (0 if no mass).
    """
    mags = saliency_row.abs().float()
    inside = (mags * inside_mask.to(mags.device)).sum(-1)
    total = mags.sum(-1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))


def box_aggregate(shares: torch.Tensor, thresholds: BoxThresholds = BoxThresholds()) -> dict[float, torch.Tensor]:
    """``{level: shares >= level}`` for each level of ``thresholds``."""
    return {level: shares >= level for level in thresholds.levels}
