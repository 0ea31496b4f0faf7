"""Gather/aggregate rules, shares and S-scores on hand-made saliency maps."""
from __future__ import annotations

import pytest
import torch

from vlground.mechanism.errors import MechanismError
from _mechanism_models import tiny_gpt2  # noqa: F401  (fixture)
from vlground.mechanism.flow import flow_into, head_grid, normalize_grid, normalize_maps
from vlground.mechanism.patterns import (
    BoxThresholds,
    GatherAggregateThresholds,
    box_aggregate,
    aggregate_mask,
    classify_heads,
    gather_mask,
    gather_only_mask,
    inside_share,
    mechanism_share,
)

S = 10


def background(value=0.01):
    return torch.full((S, S), value).tril()


def strip():
    m = background()
    m[7, :8] = 0.1  # eight tokens flow into position 7
    return m


def dot():
    m = background()
    m[7, 2] = 1.0
    return m


def both():
    m = background()
    m[7, :8] = 0.2
    m[7, 2] = 1.0
    return m


def test_strip_dot_neither_both():
    maps = torch.stack([strip(), dot(), background(), both()])
    maps[1] = -maps[1]  # signs do not matter: mass is |I|
    maps[2].triu_(1).add_(torch.ones(S, S).triu(1))  # the upper triangle is ignored
    p = classify_heads(maps, GatherAggregateThresholds(gather_rule="strip-minus-dot"))
    assert p.gather.tolist() == [True, False, False, True]
    assert p.aggregate.tolist() == [False, True, False, True]
    assert p.neither.tolist() == [False, False, True, False]
    assert p.strip_row[0] == 7 and (p.dot_row[1], p.dot_col[1]) == (7, 2)


def test_thresholds_are_configurable():
    strict = GatherAggregateThresholds(gather=0.95, aggregate=0.95)
    p = classify_heads(torch.stack([strip(), dot()]), strict)
    assert not p.gather.any() and not p.aggregate.any()


def test_mechanism_share():
    sal = torch.zeros(2, 1, 2, S, S)
    sal[:, 0, 0] = dot() / dot().sum()  # mass 1
    sal[:, 0, 1] = -3 * strip() / strip().sum()  # mass 3
    heads = torch.tensor([[True, False]])
    assert torch.allclose(mechanism_share(sal, heads), torch.tensor([0.25, 0.25]))
    per_item = torch.tensor([[[True, False]], [[False, True]]])
    assert torch.allclose(mechanism_share(sal, per_item), torch.tensor([0.25, 0.75]))


def test_inside_share_on_planted_map():
    grid = torch.zeros(4, 4, dtype=torch.bool)
    grid[:2, :2] = True  # the box: 4 of 16 patches
    inside = grid.flatten()
    row = torch.full((16,), 0.1 / 12)
    row[inside] = 0.9 / 4
    row[0] = -row[0]
    share = inside_share(torch.stack([row, torch.ones(16)]), inside)
    assert torch.allclose(share, torch.tensor([0.9, 0.25]))
    levels = box_aggregate(share, BoxThresholds())
    assert levels[0.7].tolist() == [True, False] and levels[0.9].tolist() == [True, False]
    assert box_aggregate(torch.tensor([0.8]))[0.9].tolist() == [False]


def test_flow_into_by_hand():
    sal = torch.zeros(1, 1, 2, 4, 4)
    sal[0, 0, 0] = torch.tensor([[1.0, 0, 0, 0], [2, 3, 0, 0], [4, 5, 6, 0], [7, 8, 9, 10]])
    sal[0, 0, 1] = -0.5 * sal[0, 0, 0]  # |sum over heads| = half of head 0
    flow = flow_into(sal, target_pos=[3], source_positions=[[1, 2]])
    assert torch.allclose(flow.env, torch.tensor([[(8 + 9) / 2 * 0.5]]))
    assert torch.allclose(flow.rest, torch.tensor([[(55 - 17) / 8 * 0.5]]))
    assert torch.allclose(flow.env_share, flow.env / (flow.env + flow.rest))
    # padding (position 0 invalid) leaves its pairs out of S_rest
    padded = flow_into(sal, [3], [[1, 2]], valid=torch.tensor([[0, 1, 1, 1]]))
    assert torch.allclose(padded.rest, torch.tensor([[(55 - 17 - 1 - 2 - 4 - 7) / 4 * 0.5]]))


def test_head_grid_and_normalisation():
    sal = torch.zeros(1, 2, 2, S, S)
    sal[0, 1, 0] = dot()
    sal[0, 0, 1] = strip()
    flow = head_grid(sal, "flow", target_pos=[7], source_positions=[[2]])
    assert flow[0, 1, 0] == 1.0 and flow[0, 0, 1] == 0.1 and flow[0, 0, 0] == 0
    mass = head_grid(sal, "mass")
    assert torch.allclose(mass[0, 1, 0], dot().sum())
    per_head = normalize_maps(sal[0], per="head")
    assert torch.allclose(per_head.amax((-1, -2))[1, 0], torch.tensor(1.0))
    assert torch.allclose(per_head.amax((-1, -2))[0, 1], torch.tensor(1.0))
    assert normalize_maps(sal[0], per="model").max() == 1.0
    grids = torch.stack([mass[0], 2 * mass[0]])
    assert torch.allclose(normalize_grid(grids, "model").sum((-1, -2)), torch.ones(2))
    assert torch.allclose(normalize_grid(grids, "head")[1], (mass[0] > 0).float())


def test_exports_and_plots(tmp_path):
    import subprocess
    import sys

    import vlground.mechanism as mech

    for name in mech.__all__:
        assert getattr(mech, name) is not None
    code = "import sys, vlground.mechanism; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    maps = normalize_maps(torch.rand(2, 3, 5, 5).tril())
    assert mech.plot_head_maps(maps, tmp_path / "maps.png").stat().st_size > 0
    assert mech.plot_head_grid(torch.rand(2, 3), tmp_path / "grid.png", "flow").stat().st_size > 0


def planted(row7: dict[int, float]) -> torch.Tensor:
    """A map of total mass 1: the given cells of row 7, the rest spread evenly over the
    diagonal cells of the other nine rows (each far below 30%)."""
    m = torch.zeros(S, S)
    for col, v in row7.items():
        m[7, col] = v
    rest = 1.0 - sum(row7.values())
    for i in range(S):
        if i != 7:
            m[i, i] = rest / (S - 1)
    return m


# Hand-computed shares (total mass 1, thresholds 0.3):
#   name       row 7 mass  row 7 top cell  strip  strip-minus-dot  dot
#   strip      8 x 0.05    0.05            0.40   0.35             0.067
#   dot        0.40        0.40            0.40   0.00             0.40
#   neither    0.10 (diag) 0.10            0.10   0.00             0.10
#   both       0.35+7x0.05 0.35            0.70   0.35             0.35
#   weakstrip  0.10+4x0.06 0.10            0.34   0.24             0.10
PLANTED = {
    "strip": planted({c: 0.05 for c in range(8)}),
    "dot": planted({2: 0.4}),
    "neither": planted({7: 0.1}),
    "both": planted({2: 0.35, **{c: 0.05 for c in (0, 1, 3, 4, 5, 6, 7)}}),
    "weakstrip": planted({0: 0.1, 1: 0.06, 3: 0.06, 4: 0.06, 5: 0.06}),
}
EXPECTED = {  # rule -> (gather, aggregate, gather-only, neither), in PLANTED's order
    "strip": ([1, 1, 0, 1, 1], [0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 1, 0, 0]),
    # the maps have diagonal mass down to row 9, the inferred predicted row: row 7 is another position
    "strip-off-target": ([1, 1, 0, 1, 1], [0, 1, 0, 1, 0], [1, 0, 0, 0, 1], [0, 0, 1, 0, 0]),
    "strip-minus-dot": ([1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]),
}


@pytest.mark.parametrize("rule", sorted(EXPECTED))
def test_planted_maps_under_each_gather_rule(rule):
    maps = torch.stack(list(PLANTED.values()))
    assert torch.allclose(maps.sum((-1, -2)), torch.ones(len(PLANTED)))
    th = GatherAggregateThresholds(gather_rule=rule)
    p = classify_heads(maps, th)
    gather, aggregate, gather_only, neither = (torch.tensor(x, dtype=torch.bool) for x in EXPECTED[rule])
    assert torch.equal(p.gather, gather) and torch.equal(gather_mask(maps, th), gather)
    assert torch.equal(p.aggregate, aggregate) and torch.equal(aggregate_mask(maps, th), aggregate)
    assert torch.equal(p.gather_only, gather_only) and torch.equal(gather_only_mask(maps, th), gather_only)
    assert torch.equal(p.mask("gather-only"), gather_only) and torch.equal(p.neither, neither)
    assert p.gather_rule == rule
    strip_share = {"strip": [0.40, 0.40, 0.10, 0.70, 0.34], "strip-off-target": [0.40, 0.40, 0.10, 0.70, 0.34],
                   "strip-minus-dot": [0.35, 0.0, 0.0, 0.35, 0.24]}[rule]
    assert torch.allclose(p.strip_share, torch.tensor(strip_share), atol=1e-6)
    assert torch.allclose(p.dot_share, torch.tensor([0.6 / 9, 0.4, 0.1, 0.35, 0.1]), atol=1e-6)


def test_off_target_rule_is_the_default_and_unknown_rules_fail():
    assert GatherAggregateThresholds().gather_rule == "strip-off-target"
    lit = GatherAggregateThresholds(gather_rule="strip")
    assert classify_heads(PLANTED["dot"], lit).gather  # under the literal rule a dot is also a strip
    assert not classify_heads(PLANTED["dot"], predict_positions=7).gather  # a dot in the predicted row is no strip
    with pytest.raises(MechanismError, match="unknown gather rule"):
        GatherAggregateThresholds(gather_rule="row")
    with pytest.raises(MechanismError, match="unknown head type"):
        classify_heads(PLANTED["dot"]).mask("dots")


# The loss sits at the predicted position t: in the last block only row t carries saliency.
T = 7


def loss_row_only():
    """A last-block head: all earlier tokens flow into t and nothing else has saliency."""
    m = torch.zeros(S, S)
    m[T, : T + 1] = 1.0 / (T + 1)
    return m


def anchor_strip():
    """A strip into an anchor at 4 (45% of the mass), the rest into t as the loss row spreads it."""
    m = torch.zeros(S, S)
    m[4, :5] = 0.45 / 5
    m[T, : T + 1] = 0.55 / (T + 1)
    return m


def loss_row_dot():
    m = torch.zeros(S, S)
    m[T, : T + 1] = 0.2 / (T + 1)
    m[T, 2] += 0.8
    return m


def test_loss_row_alone_is_no_gather_head():
    maps = torch.stack([loss_row_only(), anchor_strip(), loss_row_dot()])
    lit = classify_heads(maps, GatherAggregateThresholds(gather_rule="strip"))
    assert lit.gather.tolist() == [True, True, True]  # the literal rule: every loss-row head "gathers"
    for pp in (T, torch.tensor([T, T, T]), None):  # given, or inferred as the last row with mass
        p = classify_heads(maps, predict_positions=pp)
        assert p.gather.tolist() == [False, True, False]
        assert p.aggregate.tolist() == [False, False, True]
        assert torch.allclose(p.strip_share, torch.tensor([0.0, 0.45, 0.0]), atol=1e-6)
        assert int(p.strip_row[1]) == 4
    # the rule follows the predicted position, not a fixed row: predicted at 4, the row-4 strip is the loss row
    p = classify_heads(anchor_strip(), predict_positions=4)
    assert bool(p.gather) and int(p.strip_row) == T and float(p.strip_share) == pytest.approx(0.55)
    with pytest.raises(MechanismError, match="predict_positions"):
        classify_heads(maps, predict_positions=torch.tensor([T, T]))


def test_last_block_of_a_real_model_has_no_gather_head(tiny_gpt2):
    """Saliency of a tiny GPT-2 with the loss at one position: the last block's maps are non-zero
    only in the predicted row, so the literal rule calls all its heads gather and the default none."""
    from vlground.mechanism import attention_saliency

    torch.manual_seed(0)
    ids = torch.randint(1, 50, (3, 9))
    pos, tgt = torch.tensor([8, 6, 5]), torch.tensor([3, 4, 5])
    sal = attention_saliency(tiny_gpt2, ids, pos, tgt)  # [B, L, H, S, S]
    last = sal[:, -1].abs()
    assert (last.sum(-1) > 0).sum(-1).eq(1).all()  # one salient row per head ...
    assert torch.equal(last.sum(-1).argmax(-1), pos[:, None].expand(3, last.shape[1]))  # ... the predicted one
    lit = classify_heads(sal, GatherAggregateThresholds(gather_rule="strip"))
    assert lit.gather[:, -1].all()
    p = classify_heads(sal, predict_positions=pos)
    assert not p.gather[:, -1].any()
    assert torch.equal(p.gather, classify_heads(sal).gather)  # inferring t gives the same heads
    # earlier blocks: a gather head has a strip elsewhere than t holding >= 30% of its mass, by hand
    for b in range(3):
        for layer in range(sal.shape[1]):
            for h in range(sal.shape[2]):
                m = sal[b, layer, h].abs().tril()
                best = max(float(m[i].sum()) for i in range(9) if i != int(pos[b]))
                assert bool(p.gather[b, layer, h]) == (best / float(m.sum()) >= 0.3)
