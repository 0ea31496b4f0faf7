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

    def surprisal_fn(model, indices=None):
        idx = list(range(n_items)) if indices is None else list(indices)
        sites = resolve_sites(model)
        _, x, _ = record_out_proj(model, sites, 1, ids[idx])
        zeroed = (x[..., : sites.head_dim] == 0).all(-1).all(-1).float()  # [len(idx)]
        return noise[idx] + zeroed

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
    assert res.avg_count == 1.25 and math.isclose(res.avg_layer, 1 + 20 / 25)  # 1-based layers
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
    assert stars(0.0001, intervention_above_control=False) == "" and stars(math.nan) == ""


def test_per_item_surprisal_fn_gives_the_same_result(tiny_gpt2):
    """A surprisal_fn taking ``indices`` runs single items for interventions and controls."""
    fn, _ = planted_surprisal()
    calls = []

    def fn_items(model, indices=None):
        calls.append(indices)
        return fn(model, indices)

    identified = torch.zeros(20, 2, 4, dtype=torch.bool)
    identified[:, 1, 0] = True
    identified[:5, 0, 3] = True
    full = ablation_test(lambda m: fn(m), tiny_gpt2, identified, ~identified, n_draws=3, seed=0)
    items = ablation_test(fn_items, tiny_gpt2, identified, ~identified, n_draws=3, seed=0, batch_size=1)
    assert torch.equal(full.intervention, items.intervention) and torch.equal(full.control, items.control)
    assert full.p_value == items.p_value
    assert calls[0] is None and all(c is not None and len(c) == 1 for c in calls[1:])


def test_per_row_mask_zeroes_each_rows_own_heads(tiny_gpt2):
    sites = resolve_sites(tiny_gpt2)
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(3, 2, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    mask[2, 1, [0, 3]] = True
    _, x0, _ = record_out_proj(tiny_gpt2, sites, 1, ids)
    with zero_heads(tiny_gpt2, mask, sites):
        _, x1, _ = record_out_proj(tiny_gpt2, sites, 1, ids)
        with pytest.raises(MechanismError, match="rows for a batch"):
            record_out_proj(tiny_gpt2, sites, 1, ids[:2])
    d = sites.head_dim
    for b in range(3):
        for h in range(4):
            sl = slice(h * d, (h + 1) * d)
            if mask[b, 1, h]:
                assert torch.all(x1[b, :, sl] == 0)
            else:
                assert torch.equal(x1[b, :, sl], x0[b, :, sl])
    assert not any(m._forward_pre_hooks for m in tiny_gpt2.modules())
    with pytest.raises(MechanismError, match="per-row head mask"):
        with zero_heads(tiny_gpt2, torch.zeros(3, 5, 4, dtype=torch.bool), sites):
            pass


def real_surprisal(n_items=12, seq=9):
    """A surprisal_fn on the model itself, items of different lengths (right padding)."""
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 50, (n_items, seq), generator=g)
    lengths = torch.randint(4, seq + 1, (n_items,), generator=g)
    targets = torch.randint(1, 50, (n_items,), generator=g)

    def fn(model, indices=None):
        idx = list(range(n_items)) if indices is None else list(indices)
        length = int(lengths[idx].max())
        batch = ids[idx, :length].clone()
        mask = (torch.arange(length)[None] < lengths[idx, None]).long()
        batch[mask == 0] = 0
        logits = model(batch, attention_mask=mask).logits
        rows = torch.arange(len(idx))
        return -torch.log_softmax(logits[rows, lengths[idx] - 1].float(), -1)[rows, targets[idx]]

    return fn


def test_batched_ablation_gives_the_unbatched_surprisals(tiny_gpt2):
    """Rows with per-row head masks give the single-item passes' surprisals (<= 1e-5 nats)."""
    fn = real_surprisal()
    g = torch.Generator().manual_seed(5)
    identified = torch.rand(12, 2, 4, generator=g) < 0.3
    identified[0] = False  # an item with no head: not tested, still counted
    one = ablation_test(fn, tiny_gpt2, identified, ~identified, n_draws=4, seed=3, batch_size=1)
    many = ablation_test(fn, tiny_gpt2, identified, ~identified, n_draws=4, seed=3, batch_size=16)
    memo = ablation_test(lambda m: fn(m), tiny_gpt2, identified, ~identified, n_draws=4, seed=3)
    for other in (many, memo):
        assert torch.equal(other.tested, one.tested)
        assert (other.intervention - one.intervention).abs().max() <= 1e-5
        assert (other.control - one.control).abs().max() <= 1e-5
    assert one.n_items == int(identified.flatten(1).any(1).sum()) and one.n_total == 12
    assert (one.intervention != one.original).any()


def test_too_few_neither_heads_fall_back_to_heads_not_of_the_type(tiny_gpt2):
    """8 heads (2 layers x 4).  Item 0: 2 heads of the type, 1 'neither' head -> controls from the
    6 heads not of the type (fallback).  Item 1: 6 heads, only 2 others -> untestable, but still
    counted.  Item 2: 1 head, 5 'neither' heads -> primary pool."""
    fn = real_surprisal(n_items=3)
    identified = torch.zeros(3, 2, 4, dtype=torch.bool)
    identified[0, 0, :2] = True
    identified[1, :, :3] = True
    identified[2, 1, 0] = True
    neither = torch.zeros(3, 2, 4, dtype=torch.bool)
    neither[:, 1, 3] = True
    neither[2, 0, :] = True
    res = ablation_test(fn, tiny_gpt2, identified, neither & ~identified, n_draws=5, seed=0, head_type="gather")
    assert res.tested.tolist() == [True, False, True]
    assert (res.n_primary_pool, res.n_fallback_pool, res.n_untestable) == (1, 1, 1)
    assert res.control_pool == "neither (1), not gather (1)"
    assert res.avg_count == (2 + 6 + 1) / 3  # over all items
    assert math.isclose(res.avg_layer, (1 + 1 + 3 * 1 + 3 * 2 + 2) / 9)
    assert res.row()["Items tested"] == "2/3"


def test_a_row_with_nothing_to_test_says_why(tiny_gpt2):
    fn = real_surprisal(n_items=4)
    none = torch.zeros(4, 2, 4, dtype=torch.bool)
    res = ablation_test(fn, tiny_gpt2, none, ~none, n_draws=2, head_type="gather")
    assert math.isnan(res.p_value) and res.stars == "" and res.n_items == 0
    assert res.reason == "no item has a gather head" and res.avg_count == 0 and math.isnan(res.avg_layer)
    one = none.clone()
    one[2, 0, 1] = True
    res = ablation_test(fn, tiny_gpt2, one, ~one, n_draws=2)
    assert math.isnan(res.p_value) and "only 1 item" in res.reason


def test_ablation_table_rows_for_gather_aggregate_and_gather_only(tiny_gpt2):
    """gather-only never zeroes an aggregate head; each row's controls avoid its own type."""
    from vlground.mechanism.ablation import ablation_table
    from vlground.mechanism.patterns import HeadPatterns

    g = torch.Generator().manual_seed(6)
    gather = torch.rand(6, 2, 4, generator=g) < 0.4
    aggregate = torch.rand(6, 2, 4, generator=g) < 0.3
    z = torch.zeros(6, 2, 4)
    pats = HeadPatterns(gather=gather, aggregate=aggregate, strip_share=z, strip_row=z, dot_share=z, dot_row=z, dot_col=z)
    spy = real_surprisal(n_items=6)
    rows = ablation_table(spy, tiny_gpt2, pats, n_draws=3)
    assert [r.head_type for r in rows] == ["gather", "aggregate", "gather-only"]
    only = gather & ~aggregate
    assert rows[2].avg_count == float(only.sum()) / 6
    assert rows[0].avg_count == float(gather.sum()) / 6 and rows[1].avg_count == float(aggregate.sum()) / 6
    for r, m in zip(rows, (gather, aggregate, only)):
        k = m.flatten(1).sum(1)
        assert r.tested.tolist() == ((k > 0) & (k <= 8 - k)).tolist()  # fallback: the 8 - k heads not of the type
        assert r.n_untestable == int((k > 8 - k).sum()) and r.n_total == 6
    with pytest.raises(MechanismError, match="control pools"):
        ablation_table(spy, tiny_gpt2, pats, pools="any")
