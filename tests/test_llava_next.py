"""llava_next on a tiny, randomly initialised LLaVA-NeXT (any-resolution: base view + crops + newlines).

The planted layout is computed by hand from the processor's rules (select the pinpoint canvas,
resize keeping the aspect, centre-pad, crop, unpad in feature cells); the counts come from the
processor's own expansion of ``<image>``; the kit paints every box and checks both views.
"""
from __future__ import annotations

import pytest
import torch
from _vlm import ANNOTATIONS, BUNDLED_IMAGES, grey_box_mismatch, vlm_options

from vlground.cli import main
from vlground.testing import check_adapter
from vlground.vision.layout import box_to_tokens
from vlground.vision.tiny_llava_next import save_tiny_llava_next


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava-next")
    return save_tiny_llava_next(root / "tiny-llava-next"), grey_box_mismatch(root / "mismatched")


def make(setup, **extra):
    from vlground.adapters.llava_next import LlavaNextAdapter

    return LlavaNextAdapter.from_options(vlm_options(*setup, **extra))


@pytest.fixture(scope="module")
def loaded_items(setup):
    adapter = make(setup)
    loaded = adapter.load(adapter.checkpoints()[0])
    return adapter, loaded, adapter.items(loaded)


def test_conformance_with_painted_boxes_in_both_views(setup):
    check_adapter(make(setup), max_items=8)


def test_layout_of_a_600x400_photo(loaded_items):
    adapter, loaded, items = loaded_items
    it = next(i for i in items if i.pair_id == "ann1" and i.condition == "match")  # coffee.png, 600x400
    obj = it.meta["object"]
    enc = adapter.encode(loaded, obj.image)
    layout = adapter.image_layout(loaded, enc, obj.image_size)
    base, tiles = layout.grids
    # base: the whole photo squeezed to 24x24 px, 6x6 tokens of 4 px, first
    assert (base.rows, base.cols) == (6, 6) and base.to_view == pytest.approx((24 / 600, 24 / 400, 0, 0))
    # tiles: canvas 48x48 (2x2 crops); photo resized to 48x32, pasted 8 px down; 12x12 feature cells,
    # unpad keeps round(400 * 12 / 600) = 8 rows, 2 cut above: 8x12 tokens, each row ends with a newline
    assert (tiles.rows, tiles.cols, tiles.crops) == (8, 12, 4)
    assert tiles.to_view == pytest.approx((48 / 600, 32 / 400, 0, 8 - 2 * 4))
    n_image = int((enc["input_ids"][0] == loaded.extra["image_token_id"]).sum())
    assert n_image == 36 + 8 * 13 == layout.n_tokens and len(layout.separators) == 8
    first = int(layout.positions[0])
    assert list(base.positions) == list(range(first, first + 36))
    assert layout.separators[0] == first + 36 + 12 and tiles.positions[12] == first + 36 + 13
    # processor truth: the stitched crops are black (zero padding) in the 8 px above the photo
    views = adapter.view_pixels(loaded, enc, layout)
    assert views["tiles"].shape[1] == 48 and views["base"].shape == (24, 24)


def test_a_box_counts_in_every_view_that_shows_it(loaded_items):
    adapter, loaded, items = loaded_items
    it = next(i for i in items if i.pair_id == "ann1" and i.condition == "match")
    obj = it.meta["object"]
    layout = adapter.image_layout(loaded, adapter.encode(loaded, obj.image), obj.image_size)
    inside = box_to_tokens(layout, obj.bbox)
    assert inside.masks["base"].indices.size > 0 and inside.masks["tiles"].indices.size > 0
    batch = adapter.batch(loaded, [it])
    env = batch.env_mask[0].nonzero()[:, 0].tolist()
    assert env == inside.positions.tolist()
    assert not set(env) & set(layout.separators)
    assert set(batch.env_views) == {"base", "tiles", "separator"}
    assert int(batch.env_views["separator"][0].sum()) == 8


def test_batches_pad_crops_and_keep_scores(setup, tmp_path):
    """A 40x20 image fits the 24x48 canvas (2 crops), a 600x400 photo the 48x48 one (4 crops)."""
    import json
    import shutil

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    shutil.copy(BUNDLED_IMAGES / "coffee.png", tmp_path / "coffee.png")
    src = json.loads(ANNOTATIONS.read_text())
    coffee = next(i for i in src["images"] if i["file_name"] == "coffee.png")
    doc = {"images": [coffee, {"id": 99, "file_name": "wide.png", "width": 40, "height": 20}],
           "annotations": [a for a in src["annotations"] if a["image_id"] == coffee["id"]][:1]
           + [{"id": 990, "image_id": 99, "category_id": 47, "bbox": [10, 4, 20, 12]}],
           "categories": src["categories"]}
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    mm = grey_box_mismatch(tmp_path / "mm", tmp_path / "instances.json", tmp_path)
    adapter = make((setup[0], mm), images=tmp_path, annotations=tmp_path / "instances.json")
    loaded = adapter.load(adapter.checkpoints()[0])
    chosen = [it for it in adapter.items(loaded) if it.condition == "match"]
    crops = [adapter.encode(loaded, it.meta["object"].image)["pixel_values"].shape[1] for it in chosen]
    assert sorted(crops) == [3, 5]  # base + 2 crops, base + 4 crops
    assert [it.meta["object"].layout["grids"][1]["crops"] for it in chosen] == [c - 1 for c in crops]
    batch = adapter.batch(loaded, chosen)
    assert batch.model_inputs["pixel_values"].shape[1] == 5
    lp = adapter.target_logprobs(loaded, batch)
    alone = torch.cat([adapter.target_logprobs(loaded, adapter.batch(loaded, [i])) for i in chosen])
    assert torch.allclose(lp, alone, atol=1e-5)
    check_adapter(adapter, max_items=4)


def test_probe_cli_end_to_end_reports_views(setup, tmp_path, capsys):
    from vlground.results import load

    out = tmp_path / "n"
    rc = main(["probe", "--adapter", "llava_next", "--model", str(setup[0]), "--images", str(BUNDLED_IMAGES),
               "--annotations", str(ANNOTATIONS), "--mismatch", str(setup[1]), "--probes", "behaviour,boxheads,boxablation",
               "--device", "cpu", "--batch-size", "4", "--ablation-draws", "2", "--limit", "5", "--box-thresholds", "0.2,0.5",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = load(out)
    (rec,) = res.checkpoint_rows()
    assert rec["box_items"] == 5
    assert rec["box_view_share@base"] + rec["box_view_share@tiles"] + rec["box_view_share@separator"] == pytest.approx(1, abs=1e-4)
    heads = res.rows("heads")
    assert all(0 <= h["inside_share"] <= 1 for h in heads)
    assert any(r["layout"].startswith("base 6x6 + tiles ") for r in res.rows("items"))
    assert "image saliency by view: base" in " ".join(res.all_notes())
    html = (out / "report.html").read_text()
    assert "image saliency by view: base" in html
    assert any(h["kind"] != "none" for h in heads) and "view share @tiles" in html  # the aggregate heads' table
