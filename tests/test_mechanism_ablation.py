"""zero_heads changes exactly the chosen heads; ablation_test on a planted effect."""
from __future__ import annotations

import math

import pytest
import torch

from vlground.mechanism.ablation import ablation_test, stars, zero_heads
from vlground.mechanism.errors import MechanismError
from vlground.mechanism.sites import resolve_sites

from _mechanism_models import tiny_bamba, tiny_gpt2, tiny_llama  # noqa: F401  (fixtures)


def record_out_proj(model, sites, layer, ids):
    """(input, output) of the output projection of ``layer`` for one forward pass."""
    seen = {}
    module = model.get_submodule(sites.path(layer))
    handle = module.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach(), y=out.detach()))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    return module, seen["x"], seen["y"]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bamba"])
def test_zeroing_changes_exactly_that_head(fixture, request):
    model = request.getfixturevalue(fixture)
    sites = resolve_sites(model)
    layer, head, d = sites.layers[-1], 2, sites.head_dim
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    module, x0, y0 = record_out_proj(model, sites, layer, ids)
    with zero_heads(model, {layer: [head]}, sites):
        _, x1, y1 = record_out_proj(model, sites, layer, ids)
    sl = slice(head * d, (head + 1) * d)
    assert torch.all(x1[..., sl] == 0) and x0[..., sl].abs().sum() > 0
    others = torch.ones(x0.shape[-1], dtype=torch.bool)
    others[sl] = False
    assert torch.equal(x1[..., others], x0[..., others])
    manual = x0.clone()
    manual[..., sl] = 0
    with torch.no_grad():
        assert torch.allclose(y1, module(manual), atol=1e-6)
    assert not module._forward_pre_hooks
    _, x2, _ = record_out_proj(model, sites, layer, ids)
    assert torch.equal(x2, x0)  # nothing left behind


def test_hooks_removed_when_block_raises(tiny_gpt2):
    sites = resolve_sites(tiny_gpt2)
    with pytest.raises(RuntimeError):
        with zero_heads(tiny_gpt2, {0: [1], 1: [0, 3]}, sites):
            raise RuntimeError("boom")
    assert not any(m._forward_pre_hooks for m in tiny_gpt2.modules())
    with pytest.raises(MechanismError, match="out of range"):
        with zero_heads(tiny_gpt2, {0: [4]}):
            pass
    with pytest.raises(MechanismError, match="no attention"):
        with zero_heads(tiny_gpt2, {7: [0]}):
            pass
    assert not any(m._forward_pre_hooks for m in tiny_gpt2.modules())


def planted_surprisal(n_items=20):
    """Per-item surprisal = noise, +1 when head (1, 0) is zeroed (read off c_proj's input)."""
    ids = torch.randint(0, 50, (n_items, 6), generator=torch.Generator().manual_seed(1))
    noise = torch.rand(n_items, generator=torch.Generator().manual_seed(2))

    def surprisal_fn(model):
        sites = resolve_sites(model)
        _, x, _ = record_out_proj(model, sites, 1, ids)
        zeroed = (x[..., : sites.head_dim] == 0).all(-1).all(-1).float()  # [n_items]
        return noise + zeroed

    return surprisal_fn, noise


def test_ablation_test_finds_planted_head(tiny_gpt2):
    fn, noise = planted_surprisal()
    identified = torch.zeros(20, 2, 4, dtype=torch.bool)
    identified[:, 1, 0] = True
    identified[:5, 0, 3] = True  # some items have a second head
    neither = ~identified
    res = ablation_test(fn, tiny_gpt2, identified, neither, n_draws=3, seed=0, head_type="aggregate")
    assert res.stars == "***" and res.p_value < 1e-3
    assert torch.allclose(res.original, noise) and torch.allclose(res.intervention, noise + 1)
    assert torch.allclose(res.control, noise)
    assert res.avg_count == 1.25 and math.isclose(res.avg_layer, 20 / 25)
    assert set(res.row()) >= {"Head type", "Avg. Count", "Avg. Layer", "Interv. Sps.", "Ctrl. Sps.", "Original"}
    ttest = ablation_test(fn, tiny_gpt2, [(1, 0)], [(0, 0), (0, 1)], n_draws=2, seed=0, test="ttest")
    assert ttest.p_value < 1e-3 and ttest.n_items == 20


def test_control_is_reproducible_and_no_effect_is_not_significant(tiny_gpt2):
    fn, _ = planted_surprisal()
    kwargs = dict(n_draws=4, seed=7)
    a = ablation_test(fn, tiny_gpt2, [(0, 1)], [(0, 0), (1, 0), (1, 2)], **kwargs)
    b = ablation_test(fn, tiny_gpt2, [(0, 1)], [(0, 0), (1, 0), (1, 2)], **kwargs)
    assert torch.equal(a.control, b.control)
    assert a.p_value > 0.05 and a.stars == ""  # the control, not the intervention, hits the planted head
    assert stars(0.0009) == "***" and stars(0.009) == "**" and stars(0.04) == "*" and stars(0.2) == ""
    with pytest.raises(MechanismError, match="control candidates"):
        ablation_test(fn, tiny_gpt2, [(0, 1), (0, 2)], [(0, 0)], n_draws=1)


def test_per_item_surprisal_fn_gives_the_same_result(tiny_gpt2):
    """A surprisal_fn taking ``indices`` runs single items for interventions and controls."""
    fn, _ = planted_surprisal()
    calls = []

    def fn_items(model, indices=None):
        calls.append(indices)
        out = fn(model)
        return out if indices is None else out[indices]

    identified = torch.zeros(20, 2, 4, dtype=torch.bool)
    identified[:, 1, 0] = True
    identified[:5, 0, 3] = True
    full = ablation_test(fn, tiny_gpt2, identified, ~identified, n_draws=3, seed=0)
    items = ablation_test(fn_items, tiny_gpt2, identified, ~identified, n_draws=3, seed=0)
    assert torch.equal(full.intervention, items.intervention) and torch.equal(full.control, items.control)
    assert full.p_value == items.p_value
    assert calls[0] is None and all(c is not None and len(c) == 1 for c in calls[1:])
