"""Zero attention heads during inference, and the gather/aggregate ablation experiment.

A head is ``(layer, head)`` with ``layer`` a decoder-layer index (see
:class:`~vlground.mechanism.sites.AttentionSites`).  Zeroing a head sets its slice of the
input of the attention output projection to 0, so the head adds nothing to the residual
stream (the projection's bias, shared by all heads, stays).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.sites import AttentionSites, get_module, resolve_sites

__all__ = ["Head", "HEAD_TYPES", "zero_heads", "heads_by_layer", "AblationResult", "ablation_test", "ablation_table", "stars"]

log = logging.getLogger(__name__)

Head = tuple[int, int]
HeadSpec = torch.Tensor | Iterable[Head] | Sequence[Iterable[Head]]


def heads_by_layer(heads: Iterable[Head]) -> dict[int, list[int]]:
    """``[(layer, head), ...]`` -> ``{layer: [heads]}``."""
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        out.setdefault(int(layer), []).append(int(head))
    return out


@contextlib.contextmanager
def zero_heads(
    model: nn.Module, heads: Mapping[int, Sequence[int]] | torch.Tensor, sites: AttentionSites | None = None
) -> Iterator[nn.Module]:
    """Inside the block, the chosen heads' outputs are zero.

    heads: ``{layer: [head, ...]}`` (the same heads for every row of every forward pass), or a
    per-row bool mask ``[batch, len(sites.layers), n_heads]`` (axis 1 follows ``sites.layers``,
    as in a saliency tensor): row ``b`` of the next forward passes, which must have ``batch``
    rows, zeroes its own heads.  A forward pre-hook on each layer's output projection
    (``sites.out_proj``) reshapes its input ``[batch, seq, n_heads * head_dim]`` to
    ``[batch, seq, n_heads, head_dim]`` and zeroes the chosen heads.  Hooks are removed on exit,
    also when the block raises.
    """
    sites = sites or resolve_sites(model)
    handles = []
    try:
        if isinstance(heads, torch.Tensor):
            mask = heads.bool()
            if mask.dim() != 3 or mask.shape[1:] != (len(sites.layers), sites.n_heads):
                raise MechanismError(
                    f"per-row head mask has shape {tuple(mask.shape)}; expected [batch, {len(sites.layers)}, {sites.n_heads}]"
                )
            for k, layer in enumerate(sites.layers):
                if mask[:, k].any():
                    module = get_module(model, sites.path(layer))
                    handles.append(module.register_forward_pre_hook(_zero_hook(mask[:, k], sites.n_heads, sites.head_dim)))
            yield model
            return
        for layer, chosen in heads.items():
            chosen = sorted({int(h) for h in chosen})
            if not chosen:
                continue
            bad = [h for h in chosen if not 0 <= h < sites.n_heads]
            if bad:
                raise MechanismError(f"heads {bad} out of range: layer {layer} has {sites.n_heads} heads")
            module = get_module(model, sites.path(layer))
            drop = torch.zeros(sites.n_heads, dtype=torch.bool)
            drop[chosen] = True
            handles.append(module.register_forward_pre_hook(_zero_hook(drop, sites.n_heads, sites.head_dim)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _zero_hook(drop: torch.Tensor, n_heads: int, head_dim: int) -> Callable:
    """``drop``: bool ``[n_heads]`` (every row) or ``[batch, n_heads]`` (per row)."""

    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if x.shape[-1] != n_heads * head_dim:
            raise MechanismError(f"output projection input has width {x.shape[-1]}, expected {n_heads}x{head_dim}")
        split = x.unflatten(-1, (n_heads, head_dim))  # [batch, seq, n_heads, head_dim]
        if drop.dim() == 2:
            if drop.shape[0] != x.shape[0]:
                raise MechanismError(f"per-row head mask has {drop.shape[0]} rows for a batch of {x.shape[0]}")
            where = drop.to(x.device)[:, None, :, None]
        else:
            where = drop.to(x.device)[:, None]
        split = split.masked_fill(where, 0.0)
        return (split.flatten(-2),) + tuple(args[1:])

    return hook


@dataclass(frozen=True)
class AblationResult:
    """One row of the paper's ablation table, plus the per-item numbers behind it.

    Every item counts in ``avg_count`` and ``avg_layer``.  An item is *tested* when it has at least
    one head of the type and enough control candidates (``k_i`` heads not of the type); the
    surprisal means and the test are over tested items.  original, intervention, control:
    ``[n_items]`` per tested item (control = mean over draws); ``tested``: bool ``[n_total]``.
    """

    head_type: str
    avg_count: float
    """Mean number of heads of the type per item (all items, zeros included)."""
    avg_layer: float
    """Mean 1-based layer number (:func:`~vlground.mechanism.sites.layer_number`) of the heads of all items (nan if none)."""
    intervention_surprisal: float
    control_surprisal: float
    original_surprisal: float
    p_value: float
    """One-sided p for intervention > control; nan when nothing was tested (see ``reason``)."""
    stars: str
    n_items: int
    """Items tested."""
    test: str
    original: torch.Tensor
    intervention: torch.Tensor
    control: torch.Tensor
    n_total: int = 0
    """All items, tested or not."""
    n_primary_pool: int = 0
    """Tested items whose controls came from the primary pool (``primary_pool``)."""
    n_fallback_pool: int = 0
    """Tested items whose controls came from the fallback pool (``fallback_pool``)."""
    primary_pool: str = "neither"
    fallback_pool: str = ""
    n_untestable: int = 0
    """Items with heads of the type but fewer control candidates than heads, even in the fallback pool."""
    reason: str | None = None
    """Why the row has no p-value (None when it has one)."""
    tested: torch.Tensor | None = None

    @property
    def control_pool(self) -> str:
        """Which pool the controls came from, e.g. ``neither`` or ``neither (40), not gather (8)``."""
        if not self.n_fallback_pool:
            return self.primary_pool
        if not self.n_primary_pool:
            return self.fallback_pool
        return f"{self.primary_pool} ({self.n_primary_pool}), {self.fallback_pool} ({self.n_fallback_pool})"

    def row(self) -> dict[str, object]:
        """The table columns: head type, avg count, avg layer, interv/ctrl/original surprisal, p, stars,
        then the items tested and the control pool."""
        return {
            "Head type": self.head_type,
            "Avg. Count": self.avg_count,
            "Avg. Layer": self.avg_layer,
            "Interv. Sps.": self.intervention_surprisal,
            "Ctrl. Sps.": self.control_surprisal,
            "Original": self.original_surprisal,
            "p": self.p_value,
            "": self.stars,
            "Items tested": f"{self.n_items}/{self.n_total}",
            "Control pool": self.control_pool,
        }


def stars(p: float, intervention_above_control: bool = True) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else ``""``; always ``""`` when p is nan or
    the intervention's mean surprisal is not above the control's (the paper's one-sided reading)."""
    if not intervention_above_control or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _per_item(spec: HeadSpec, n_items: int, layer_ids: Sequence[int], name: str) -> list[frozenset[Head]]:
    """Heads per item from a bool tensor ``[layers, heads]`` / ``[n_items, layers, heads]`` (layer axis =
    attention layers, as in a saliency tensor), one ``(layer, head)`` collection, or one per item."""
    if isinstance(spec, torch.Tensor):
        mask = spec.bool().cpu()
        if mask.dim() == 2:
            mask = mask.expand(n_items, *mask.shape)
        if mask.shape[0] != n_items or mask.shape[1] != len(layer_ids):
            raise MechanismError(f"{name} has shape {tuple(mask.shape)}; expected [{n_items}, {len(layer_ids)}, heads]")
        return [frozenset((layer_ids[k], h) for k, h in m.nonzero().tolist()) for m in mask]
    spec = list(spec)
    if all(isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x) for x in spec):
        return [frozenset(spec)] * n_items
    if len(spec) != n_items:
        raise MechanismError(f"{name}: {len(spec)} head sets for {n_items} items")
    return [frozenset((int(l_), int(h)) for l_, h in s) for s in spec]


def _paired_test(x: torch.Tensor, y: torch.Tensor, test: str) -> float:
    """One-sided p-value for ``x > y`` (paired); nan for fewer than 2 pairs, 1.0 if all pairs are equal."""
    from scipy import stats

    if test not in ("wilcoxon", "ttest"):
        raise MechanismError(f"unknown test {test!r}; known: 'wilcoxon', 'ttest'")
    x, y = x.double().numpy(), y.double().numpy()
    if len(x) < 2:
        return math.nan
    if (x == y).all():
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(x, y, alternative="greater").pvalue)
    return float(stats.ttest_rel(x, y, alternative="greater").pvalue)


def _mask_of(heads: Iterable[frozenset[Head]], sites: AttentionSites) -> torch.Tensor:
    """Bool ``[len(heads), len(sites.layers), n_heads]`` from head sets."""
    heads = list(heads)
    mask = torch.zeros(len(heads), len(sites.layers), sites.n_heads, dtype=torch.bool)
    index = {layer: k for k, layer in enumerate(sites.layers)}
    for b, hs in enumerate(heads):
        for layer, h in hs:
            mask[b, index[layer], h] = True
    return mask


def ablation_test(
    surprisal_fn: Callable[..., torch.Tensor],
    model: nn.Module,
    identified_heads: HeadSpec,
    candidate_control_heads: HeadSpec,
    n_draws: int = 10,
    seed: int = 0,
    *,
    sites: AttentionSites | None = None,
    head_type: str = "aggregate",
    test: str = "wilcoxon",
    fallback_control_heads: HeadSpec | None = None,
    primary_pool: str = "neither",
    fallback_pool: str | None = None,
    batch_size: int = 16,
    original: torch.Tensor | None = None,
) -> AblationResult:
    """Zero the identified heads, or as many random control heads, and compare surprisal.

    1. ``original = surprisal_fn(model)`` (``[n_items]``, no intervention; or given).
    2. Per item, zero its identified heads: ``intervention[i]`` is item ``i``'s surprisal then.
    3. Per item with ``k_i > 0`` identified heads, ``k_i`` control heads are drawn without
       replacement, ``n_draws`` times, from its ``candidate_control_heads`` (e.g. heads of neither
       type) minus its identified heads; when that pool has fewer than ``k_i`` heads, from
       ``fallback_control_heads`` minus the identified heads (default: every head not identified,
       i.e. the heads not of the tested type).  ``control[i]`` is the mean over draws
       (``torch.Generator`` seeded with ``seed``; draws do not depend on ``batch_size``).  An item
       whose fallback pool is also too small is not tested, and counted in ``n_untestable``.
    4. One-sided paired test, H1: intervention > control, over tested items: Wilcoxon
       signed-rank (``scipy.stats.wilcoxon``, zero differences dropped) or paired t-test.  With
       fewer than 2 tested items p is nan and ``reason`` says why.

    ``surprisal_fn(model)`` gives ``[n_items]``.  If it also takes ``indices`` (item indices, which
    may repeat; it then returns ``[len(indices)]``), the interventions and control draws run as
    batches of ``batch_size`` rows, each row one (item, head set) with its own heads zeroed through
    a per-row mask (:func:`zero_heads`); ``batch_size=1`` gives single-item passes.  Otherwise
    ``surprisal_fn`` runs once per distinct head set (memoised).  Head specs: see :func:`_per_item`.
    """
    from vlground.mechanism.sites import layer_number

    sites = sites or resolve_sites(model)
    fallback_pool = fallback_pool or f"not {head_type}"
    per_item = "indices" in inspect.signature(surprisal_fn).parameters
    if original is None:
        with torch.no_grad():
            original = surprisal_fn(model)
    original = torch.as_tensor(original).detach().float().cpu()
    n_items = original.shape[0]
    identified = _per_item(identified_heads, n_items, sites.layers, "identified_heads")
    candidates = _per_item(candidate_control_heads, n_items, sites.layers, "candidate_control_heads")
    every = frozenset((layer, h) for layer in sites.layers for h in range(sites.n_heads))
    fallback = [every] * n_items if fallback_control_heads is None else _per_item(
        fallback_control_heads, n_items, sites.layers, "fallback_control_heads")

    # The plan: which head sets each item is run with.  Draws come first, so they are the same
    # whichever way the passes are run.
    gen = torch.Generator().manual_seed(seed)
    draws: dict[int, list[frozenset[Head]]] = {}
    n_primary = n_fallback = n_untestable = 0
    for i in range(n_items):
        k = len(identified[i])
        if k == 0:
            continue
        pool = sorted(candidates[i] - identified[i])
        if len(pool) >= k:
            n_primary += 1
        else:
            pool = sorted(fallback[i] - identified[i])
            if len(pool) < k:
                n_untestable += 1
                continue
            n_fallback += 1
        draws[i] = [frozenset(pool[j] for j in torch.randperm(len(pool), generator=gen)[:k].tolist()) for _ in range(n_draws)]
    jobs = [(i, identified[i]) for i in draws] + [(i, d) for i in draws for d in draws[i]]
    values = _run_jobs(surprisal_fn, model, jobs, sites, batch_size if per_item else 0)
    tested = torch.zeros(n_items, dtype=torch.bool)
    tested[list(draws)] = True
    intervention, control = original.clone(), original.clone()
    for i in draws:
        intervention[i] = values[(i, identified[i])]
        control[i] = torch.stack([values[(i, d)] for d in draws[i]]).mean()

    p = _paired_test(intervention[tested], control[tested], test)
    reason = None
    if not tested.any():
        if not any(identified):
            reason = f"no item has a {head_type} head"
        else:
            reason = f"no item with {head_type} heads has as many other heads to draw controls from"
    elif int(tested.sum()) < 2:
        reason = "only 1 item tested; a paired test needs at least 2"
    layers = [layer_number(layer) for heads in identified for layer, _ in heads]
    mean = (lambda t: float(t[tested].mean()) if tested.any() else math.nan)
    above = tested.any() and mean(intervention) > mean(control)
    log.info("ablation_test(%s): %d items tested of %d, %d surprisal rows", head_type, int(tested.sum()), n_items, len(jobs))
    return AblationResult(
        head_type=head_type,
        avg_count=sum(len(h) for h in identified) / max(n_items, 1),
        avg_layer=sum(layers) / len(layers) if layers else math.nan,
        intervention_surprisal=mean(intervention),
        control_surprisal=mean(control),
        original_surprisal=mean(original),
        p_value=p,
        stars=stars(p, bool(above)),
        n_items=int(tested.sum()),
        test=test,
        original=original[tested],
        intervention=intervention[tested],
        control=control[tested],
        n_total=n_items,
        n_primary_pool=n_primary,
        n_fallback_pool=n_fallback,
        primary_pool=primary_pool,
        fallback_pool=fallback_pool,
        n_untestable=n_untestable,
        reason=reason,
        tested=tested,
    )


def _run_jobs(
    surprisal_fn: Callable[..., torch.Tensor],
    model: nn.Module,
    jobs: Sequence[tuple[int, frozenset[Head]]],
    sites: AttentionSites,
    batch_size: int,
) -> dict[tuple[int, frozenset[Head]], torch.Tensor]:
    """Surprisal of item ``i`` with ``heads`` zeroed, for each distinct job ``(i, heads)``.

    ``batch_size > 0``: rows of ``batch_size`` jobs, each with its own heads (per-row mask);
    ``0``: one full ``surprisal_fn(model)`` per distinct head set."""
    out: dict[tuple[int, frozenset[Head]], torch.Tensor] = {}
    todo = list(dict.fromkeys(jobs))
    with torch.no_grad():
        if batch_size <= 0:
            for heads in dict.fromkeys(h for _, h in todo):
                with zero_heads(model, heads_by_layer(heads), sites):
                    full = torch.as_tensor(surprisal_fn(model)).detach().float().cpu()
                out.update({(i, h): full[i] for i, h in todo if h == heads})
            return out
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with zero_heads(model, _mask_of((h for _, h in chunk), sites), sites):
                vals = torch.as_tensor(surprisal_fn(model, indices=[i for i, _ in chunk])).detach().float().cpu()
            out.update(zip(chunk, vals))
    return out


#: the rows of the paper's table, plus gather-only (gather and not aggregate)
HEAD_TYPES = ("gather", "aggregate", "gather-only")


def ablation_table(
    surprisal_fn: Callable[..., torch.Tensor],
    model: nn.Module,
    patterns,
    n_draws: int = 10,
    seed: int = 0,
    *,
    head_types: Sequence[str] = HEAD_TYPES,
    pools: str = "neither-then-other",
    sites: AttentionSites | None = None,
    test: str = "wilcoxon",
    batch_size: int = 16,
) -> list[AblationResult]:
    """One :func:`ablation_test` row per head type of ``patterns`` (a
    :class:`~vlground.mechanism.patterns.HeadPatterns` with ``[n_items, layers, heads]`` fields).

    pools: ``neither-then-other`` (controls from heads of neither type; for an item with too few
    of those, from the heads not of the tested type) or ``other`` (always from the heads not of
    the tested type).  The original surprisal is computed once and shared by the rows."""
    if pools not in ("neither-then-other", "other"):
        raise MechanismError(f"unknown control pools {pools!r}; known: 'neither-then-other', 'other'")
    with torch.no_grad():
        original = torch.as_tensor(surprisal_fn(model)).detach().float().cpu()
    rows = []
    for kind in head_types:
        heads = patterns.mask(kind)
        other = ~heads
        primary, name = (patterns.neither, "neither") if pools == "neither-then-other" else (other, f"not {kind}")
        rows.append(ablation_test(
            surprisal_fn, model, heads, primary & other, n_draws, seed, sites=sites, head_type=kind, test=test,
            fallback_control_heads=other, primary_pool=name, fallback_pool=f"not {kind}", batch_size=batch_size,
            original=original,
        ))
    return rows
