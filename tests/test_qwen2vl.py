"""qwen2vl on a tiny, randomly initialised Qwen2-VL saved to a folder and loaded as users load one.

Planted answers come from the processor's own outputs (``image_grid_thw``, the patch order of
``pixel_values``) and the model's own ``get_rope_index``; the kit paints each box and checks it.
"""
from __future__ import annotations

import json

import pytest
import torch
from _vlm import ANNOTATIONS, BUNDLED_IMAGES, grey_box_mismatch, vlm_options

from vlground.cli import main
from vlground.testing import check_adapter
from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-qwen2vl")


@pytest.fixture(scope="module")
def mismatch_dir(tmp_path_factory):
    return grey_box_mismatch(tmp_path_factory.mktemp("mm") / "mismatched")


def make(qwen_dir, mismatch_dir, **extra):
    from vlground.adapters.qwen2vl import Qwen2VLAdapter

    return Qwen2VLAdapter.from_options(vlm_options(qwen_dir, mismatch_dir, **extra))


@pytest.fixture(scope="module")
def loaded_items(qwen_dir, mismatch_dir):
    adapter = make(qwen_dir, mismatch_dir)
    loaded = adapter.load(adapter.checkpoints()[0])
    return adapter, loaded, adapter.items(loaded)


def test_conformance_with_painted_boxes(qwen_dir, mismatch_dir):
    check_adapter(make(qwen_dir, mismatch_dir), max_items=6)


def test_each_image_gets_its_own_grid_from_image_grid_thw(loaded_items):
    adapter, loaded, items = loaded_items
    grids = {}
    for it in items:
        obj = it.meta["object"]
        (g,) = obj.layout["grids"]
        grids[obj.image_size] = (g["rows"], g["cols"])
        enc = adapter.encode(loaded, obj.image)
        _, gh, gw = enc["image_grid_thw"][0].tolist()
        assert (g["rows"], g["cols"]) == (gh // 2, gw // 2) and g["merge"] == 2
        assert obj.layout["n_image_tokens"] == gh * gw // 4 == int((enc["input_ids"] == loaded.extra["image_token_id"]).sum())
    # smart_resize: 600x400 -> 64x40 px (8 px tokens): 5x8; and 512x512 -> 48x48 px: 6x6
    assert grids[(600, 400)] == (5, 8)
    assert grids[(512, 512)] == (6, 6)  # a square photo: another grid


def test_box_maps_through_the_resized_grid(loaded_items):
    from vlground.vision.layout import box_to_tokens

    adapter, loaded, items = loaded_items
    it = next(i for i in items if i.pair_id == "ann1" and i.condition == "match")  # cup in 600x400 coffee.png
    obj = it.meta["object"]
    layout = adapter.image_layout(loaded, adapter.encode(loaded, obj.image), obj.image_size)
    (g,) = layout.grids
    assert g.to_view == pytest.approx((64 / 600, 40 / 400, 0, 0)) and g.cell == 8
    # box x 172..412 -> 18.35..43.95 px: col 2 (16..24) 71 % inside, col 5 (40..48) 49 %: columns 2..4;
    # y 15..305 -> 1.5..30.5 px: rows 0 and 3 81 %: rows 0..3
    inside = box_to_tokens(layout, obj.bbox)
    assert sorted(inside.masks["image"].indices.tolist()) == [r * 8 + c for r in range(4) for c in range(2, 5)]
    batch = adapter.batch(loaded, [it])
    assert batch.env_mask[0].nonzero()[:, 0].tolist() == [g.positions[r * 8 + c] for r in range(4) for c in range(2, 5)]


def test_mrope_positions_reach_every_path(loaded_items):
    adapter, loaded, items = loaded_items
    batch = adapter.batch(loaded, items[:3])
    inputs = adapter.model_inputs(loaded, batch)
    pos = inputs["position_ids"]
    assert pos.shape == (3, 3, batch.model_inputs["input_ids"].shape[1])
    # image tokens: rows and columns of the grid; text after the image continues from max + 1
    b0 = 0
    img = batch.env_span[b0].nonzero()[:, 0]
    g = items[0].meta["object"].layout["grids"][0]
    start = int(pos[0, b0, img[0]])
    assert pos[1, b0, img].tolist() == [start + k // g["cols"] for k in range(len(img))]
    assert pos[2, b0, img].tolist() == [start + k % g["cols"] for k in range(len(img))]
    after = int(img[-1]) + 1
    assert int(pos[0, b0, after]) == start + max(g["rows"], g["cols"])
    # the model given these positions scores as the model computing them itself from the same inputs
    with torch.no_grad():
        own = loaded.model(**{k: v for k, v in inputs.items() if k != "position_ids"}).logits
    assert torch.allclose(adapter.forward(loaded, batch).logits, own, atol=1e-5)


def test_batches_pad_token_types_and_concatenate_flat_pixels(loaded_items):
    adapter, loaded, items = loaded_items
    a, b = items[0], next(i for i in items if i.meta["object"].image_size != items[0].meta["object"].image_size)
    batch = adapter.batch(loaded, [a, b])
    x = batch.model_inputs
    assert x["mm_token_type_ids"].shape == x["input_ids"].shape
    assert ((x["mm_token_type_ids"] == 1) == batch.env_span).all()  # image tokens only; padding and targets are text
    singles = [adapter.batch(loaded, [i]).model_inputs for i in (a, b)]
    assert torch.equal(x["pixel_values"], torch.cat([s["pixel_values"] for s in singles]))
    assert torch.equal(x["image_grid_thw"], torch.cat([s["image_grid_thw"] for s in singles]))
    lp = adapter.target_logprobs(loaded, batch)
    alone = torch.cat([adapter.target_logprobs(loaded, adapter.batch(loaded, [i])) for i in (a, b)])
    assert torch.allclose(lp, alone, atol=1e-5)


def test_max_pixels_option_sets_the_number_of_image_tokens(qwen_dir, mismatch_dir):
    adapter = make(qwen_dir, mismatch_dir, max_pixels=8 * 8 * 12, limit=1)
    loaded = adapter.load(adapter.checkpoints()[0])
    (it, _) = adapter.items(loaded)
    assert it.meta["object"].layout["n_image_tokens"] <= 12


def test_probe_cli_end_to_end(qwen_dir, mismatch_dir, tmp_path, capsys):
    from vlground.results import load

    out = tmp_path / "q"
    rc = main(["probe", "--adapter", "qwen2vl", "--model", str(qwen_dir), "--images", str(BUNDLED_IMAGES),
               "--annotations", str(ANNOTATIONS), "--mismatch", str(mismatch_dir), "--probes",
               "behaviour,boxheads,boxablation", "--device", "cpu", "--batch-size", "4", "--ablation-draws", "2",
               "--limit", "6", "--max-pixels", str(8 * 8 * 30), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = load(out)
    (rec,) = res.checkpoint_rows()
    assert rec["n_pairs"] == rec["box_items"] == 6
    assert 0 < rec["box_chance_share"] < 1
    heads = res.rows("heads")
    assert len(heads) == 2 * 4 and all(0 <= h["inside_share"] <= 1 and 0 <= h["artefact_share"] <= 1 for h in heads)
    assert all(h["inside_vs_chance"] >= 0 for h in heads)
    items = res.rows("items")
    assert all(r["n_image_tokens"] <= 30 and 0 < r["n_inside"] <= r["n_image_tokens"] for r in items)
    # smart_resize of 600x400 to at most 1920 px: 32x48 px, 4x6 tokens of 8 px
    assert "image 4x6 (merge 2)" in {r["layout"] for r in items}
    html = (out / "report.html").read_text()
    assert "inside_vs_chance" in html and "artefact_share" in html


def test_chance_normalised_score_and_artefact_share_on_planted_saliency():
    from vlground.engine.adapter import ProbeBatch
    from vlground.probes.boxheads import comparable_measures

    S = 12  # positions 2..9 are 8 image tokens; 3 and 4 inside the box (chance 2/8); position 9 an artefact
    span = torch.zeros(1, S, dtype=torch.bool)
    span[0, 2:10] = True
    inside = torch.zeros(1, S, dtype=torch.bool)
    inside[0, 3:5] = True
    norms = torch.ones(1, S)
    norms[0, 2:10] = torch.tensor([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 40.0])
    rows = torch.zeros(1, 1, 2, S)
    rows[0, 0, 0, 2:10] = 1.0  # even over the image: chance
    rows[0, 0, 1, [3, 9]] = torch.tensor([1.0, 3.0])  # a quarter inside, three quarters on the artefact
    rows[0, 0, 1, 11] = 7.0  # text tokens do not count
    batch = ProbeBatch([], {}, torch.zeros(1, 1), torch.zeros(1, 1), inside, span)
    cmp = comparable_measures([(batch, rows, norms)])
    assert cmp["chance"].tolist() == [0.25] and cmp["n_artefacts"].tolist() == [1.0]
    assert torch.allclose(cmp["inside_vs_chance"][0, 0], torch.tensor([1.0, 1.0]))
    assert torch.allclose(cmp["artefact_share"][0, 0], torch.tensor([1 / 8, 0.75]))


def test_qwen25_vl_passes_the_kit(tmp_path, mismatch_dir):
    """Qwen2.5-VL (windowed vision attention, the same processor and M-RoPE) through the same adapter."""
    folder = save_tiny_qwen2vl(tmp_path / "tiny-qwen25vl", version="2.5")
    adapter = make(folder, mismatch_dir, limit=3)
    check_adapter(adapter, max_items=6)
    assert type(adapter.load(adapter.checkpoints()[0]).model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_separator_tokens_are_not_artefacts():
    """A LLaVA-NeXT newline token has its own learned embedding: an outlying norm, but no image content."""
    from vlground.engine.adapter import ProbeBatch
    from vlground.probes.boxheads import comparable_measures

    S = 12
    span = torch.zeros(1, S, dtype=torch.bool)
    span[0, 2:10] = True
    sep = torch.zeros(1, S, dtype=torch.bool)
    sep[0, 9] = True
    norms = torch.ones(1, S)
    norms[0, 2:10] = torch.tensor([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 40.0])
    rows = torch.ones(1, 1, 1, S)
    inside = torch.zeros(1, S, dtype=torch.bool)
    inside[0, 3] = True
    views = {"tiles": span & ~sep, "separator": sep}
    batch = ProbeBatch([], {}, torch.zeros(1, 1), torch.zeros(1, 1), inside, span, views)
    cmp = comparable_measures([(batch, rows, norms)])
    assert cmp["n_artefacts"].tolist() == [0.0]
    assert torch.allclose(cmp["view:separator"][0, 0, 0], torch.tensor(1 / 8))


def test_bfloat16_with_a_device_map_passes_the_kit(qwen_dir, mismatch_dir):
    """The 7B loading path (``--dtype bfloat16 --device-map ...``), here with every layer on the CPU."""
    adapter = make(qwen_dir, mismatch_dir, dtype="bfloat16", device_map="cpu", limit=3)
    assert adapter.load_kwargs()["device_map"] == "cpu"
    loaded = adapter.load(adapter.checkpoints()[0])
    assert loaded.model.dtype == torch.bfloat16
    check_adapter(adapter, max_items=4)
