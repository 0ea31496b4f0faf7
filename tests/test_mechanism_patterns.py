"""Gather/aggregate rules, shares and S-scores on hand-made saliency maps."""
from __future__ import annotations

import torch

from vlground.mechanism.flow import flow_into, head_grid, normalize_grid, normalize_maps
from vlground.mechanism.patterns import (
    BoxThresholds,
    GatherAggregateThresholds,
    box_aggregate,
    classify_heads,
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
    p = classify_heads(maps)
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
