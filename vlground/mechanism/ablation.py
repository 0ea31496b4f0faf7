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

__all__ = ["Head", "zero_heads", "heads_by_layer", "AblationResult", "ablation_test", "stars"]

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
    model: nn.Module, heads: Mapping[int, Sequence[int]], sites: AttentionSites | None = None
) -> Iterator[nn.Module]:
    """Inside the block, the chosen heads' outputs are zero.

    heads: ``{layer: [head, ...]}``.  A forward pre-hook on each layer's output projection
    (``sites.out_proj``) reshapes its input ``[batch, seq, n_heads * head_dim]`` to
    ``[batch, seq, n_heads, head_dim]`` and zeroes the chosen heads.  Hooks are removed on exit,
    also when the block raises.
    """
    sites = sites or resolve_sites(model)
    handles = []
    try:
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
    def hook(module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        if x.shape[-1] != n_heads * head_dim:
            raise MechanismError(f"output projection input has width {x.shape[-1]}, expected {n_heads}x{head_dim}")
        split = x.unflatten(-1, (n_heads, head_dim))
        split = split.masked_fill(drop.to(x.device)[:, None], 0.0)
        return (split.flatten(-2),) + tuple(args[1:])

    return hook


@dataclass(frozen=True)
class AblationResult:
    """One row of the paper's ablation table, plus the per-item numbers behind it.

    Surprisals are means over the tested items (those with at least one identified head).
    original, intervention, control: ``[n_items]`` per tested item; control is the mean over draws.
    """

    head_type: str
    avg_count: float
    """Mean number of identified heads per item (all items, zeros included)."""
    avg_layer: float
    """Mean decoder-layer index (0-based) of all identified heads (nan if none)."""
    intervention_surprisal: float
    control_surprisal: float
    original_surprisal: float
    p_value: float
    stars: str
    n_items: int
    test: str
    original: torch.Tensor
    intervention: torch.Tensor
    control: torch.Tensor

    def row(self) -> dict[str, object]:
        """The table columns: head type, avg count, avg layer, interv/ctrl/original surprisal, p, stars."""
        return {
            "Head type": self.head_type,
            "Avg. Count": self.avg_count,
            "Avg. Layer": self.avg_layer,
            "Interv. Sps.": self.intervention_surprisal,
            "Ctrl. Sps.": self.control_surprisal,
            "Original": self.original_surprisal,
            "p": self.p_value,
            "": self.stars,
        }


def stars(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else ``""``."""
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
    """One-sided p-value for ``x > y`` (paired)."""
    from scipy import stats

    x, y = x.double().numpy(), y.double().numpy()
    if len(x) < 2 or (x == y).all():
        return 1.0
    if test == "wilcoxon":
        return float(stats.wilcoxon(x, y, alternative="greater").pvalue)
    if test == "ttest":
        return float(stats.ttest_rel(x, y, alternative="greater").pvalue)
    raise MechanismError(f"unknown test {test!r}; known: 'wilcoxon', 'ttest'")


def ablation_test(
    surprisal_fn: Callable[[nn.Module], torch.Tensor],
    model: nn.Module,
    identified_heads: HeadSpec,
    candidate_control_heads: HeadSpec,
    n_draws: int = 10,
    seed: int = 0,
    *,
    sites: AttentionSites | None = None,
    head_type: str = "aggregate",
    test: str = "wilcoxon",
) -> AblationResult:
    """Zero the identified heads, or as many random control heads, and compare surprisal.

    1. ``original = surprisal_fn(model)`` (``[n_items]``, no intervention).
    2. Per item, zero its identified heads: ``intervention[i]`` is item ``i``'s surprisal then.
    3. Per item and draw, zero ``k_i`` heads drawn without replacement from its control
       candidates (heads meeting neither criterion), ``k_i`` = its number of identified heads;
       ``control[i]`` is the mean over ``n_draws`` draws (``torch.Generator`` seeded with ``seed``).
    4. One-sided paired test, H1: intervention > control, over items with ``k_i > 0``:
       Wilcoxon signed-rank (``scipy.stats.wilcoxon``, zero differences dropped) or paired t-test.

    ``surprisal_fn(model)`` gives ``[n_items]``. If it also takes ``indices`` (a list of item
    indices; it then returns ``[len(indices)]``), per-item interventions and control draws run on
    that one item only, which turns ``n_items * (1 + n_draws)`` full passes into as many
    single-item passes. Otherwise ``surprisal_fn`` runs once per distinct head set (memoised); with heads that differ per
    item that is up to ``n_items * (1 + n_draws)`` runs.  Head specs: see :func:`_per_item`.
    """
    sites = sites or resolve_sites(model)
    cache: dict[frozenset[Head], torch.Tensor] = {}
    per_item = "indices" in inspect.signature(surprisal_fn).parameters

    def run(heads: frozenset[Head]) -> torch.Tensor:
        if heads not in cache:
            with zero_heads(model, heads_by_layer(heads), sites), torch.no_grad():
                cache[heads] = torch.as_tensor(surprisal_fn(model)).detach().float().cpu()
        return cache[heads]

    def run_item(heads: frozenset[Head], i: int) -> torch.Tensor:
        if not per_item or heads in cache:
            return run(heads)[i]
        with zero_heads(model, heads_by_layer(heads), sites), torch.no_grad():
            return torch.as_tensor(surprisal_fn(model, indices=[i])).detach().float().cpu()[0]

    original = run(frozenset())
    n_items = original.shape[0]
    identified = _per_item(identified_heads, n_items, sites.layers, "identified_heads")
    candidates = _per_item(candidate_control_heads, n_items, sites.layers, "candidate_control_heads")
    gen = torch.Generator().manual_seed(seed)
    intervention = torch.stack([run_item(identified[i], i) for i in range(n_items)])
    control = torch.zeros(n_items)
    for i in range(n_items):
        k, pool = len(identified[i]), sorted(candidates[i] - identified[i])
        if k == 0:
            control[i] = original[i]
            continue
        if len(pool) < k:
            raise MechanismError(f"item {i}: {k} identified heads but only {len(pool)} control candidates")
        draws = [frozenset(pool[j] for j in torch.randperm(len(pool), generator=gen)[:k].tolist()) for _ in range(n_draws)]
        control[i] = torch.stack([run_item(d, i) for d in draws]).mean()
    log.info("ablation_test(%s): %d surprisal runs", head_type, len(cache))

    tested = torch.tensor([len(h) > 0 for h in identified])
    layers = [layer for heads in identified for layer, _ in heads]
    p = _paired_test(intervention[tested], control[tested], test)
    mean = (lambda t: float(t[tested].mean()) if tested.any() else math.nan)
    return AblationResult(
        head_type=head_type,
        avg_count=sum(len(h) for h in identified) / max(n_items, 1),
        avg_layer=sum(layers) / len(layers) if layers else math.nan,
        intervention_surprisal=mean(intervention),
        control_surprisal=mean(control),
        original_surprisal=mean(original),
        p_value=p,
        stars=stars(p),
        n_items=int(tested.sum()),
        test=test,
        original=original[tested],
        intervention=intervention[tested],
        control=control[tested],
    )
