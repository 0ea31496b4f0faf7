"""Box -> patch mapping: hand-checked cases, and agreement with the real transformers processors."""
from __future__ import annotations

import numpy as np
import pytest

from vlground.errors import InputError
from vlground.vision.geometry import Preprocess, box_to_patches

LLAVA = Preprocess.llava15()


def cells(pm):
    """The (row, col) pairs of a PatchMask, sorted."""
    return sorted(zip(*np.nonzero(pm.mask)))


def test_llava_grid_is_24x24():
    assert LLAVA.grid(672, 672) == (24, 24)
    assert LLAVA.grid(600, 400) == (24, 24)
    assert Preprocess.dinov2().grid(640, 427) == (16, 16)


def test_top_left_patch_of_square_image():
    # 672 -> 336 halves everything: a 28 px box is one 14 px patch
    pm = box_to_patches((0, 0, 28, 28), (672, 672), LLAVA)
    assert pm.indices.tolist() == [0]
    assert pm.problem is None


def test_box_on_bottom_right_edge():
    pm = box_to_patches((644, 644, 28, 28), (672, 672), LLAVA)
    assert pm.indices.tolist() == [24 * 24 - 1]
    assert cells(pm) == [(23, 23)]


def test_box_partly_outside_image_is_clipped():
    pm = box_to_patches((644, 644, 100, 100), (672, 672), LLAVA)
    assert pm.indices.tolist() == [575]


def test_non_square_image_shortest_edge_and_crop():
    # 600x400 -> 504x336 (scale 0.84), centre crop drops 84 px on the left
    pm = box_to_patches((100, 0, 100, 50), (600, 400), LLAVA)
    # x: 100..200 -> 84..168 -> 0..84 after the crop = cols 0..5; y: 0..42 = rows 0..2
    assert cells(pm) == [(r, c) for r in range(3) for c in range(6)]
    assert pm.indices.tolist() == [r * 24 + c for r in range(3) for c in range(6)]
    assert pm.box == pytest.approx((0.0, 0.0, 84.0, 42.0))


def test_centre_crop_cuts_part_of_the_box():
    pm = box_to_patches((0, 0, 200, 400), (600, 400), LLAVA)  # x 0..168 -> -84..84
    assert cells(pm) == [(r, c) for r in range(24) for c in range(6)]


def test_box_cropped_away_is_empty_with_problem():
    pm = box_to_patches((0, 0, 90, 400), (600, 400), LLAVA)  # x 0..75.6 -> all left of the crop
    assert not pm.mask.any() and pm.indices.size == 0 and pm.box is None
    assert "outside the model input" in pm.problem


def test_pad_to_square():
    pre = Preprocess.llava15(pad=True)
    # 600x400 padded to 600x600 (100 px on top), scale 0.56: y 100..500 -> 56..280 = rows 4..19
    pm = box_to_patches((0, 0, 600, 400), (600, 400), pre)
    assert cells(pm) == [(r, c) for r in range(4, 20) for c in range(24)]
    # a box the plain centre crop removes is visible when padding
    assert box_to_patches((0, 0, 90, 400), (600, 400), pre).indices.size > 0


def test_edge_rule_half_a_patch_counts():
    square = (336, 336)  # scale 1
    assert box_to_patches((0, 0, 21, 14), square, LLAVA).indices.tolist() == [0, 1]  # patch 1: 50 %
    assert box_to_patches((0, 0, 20, 14), square, LLAVA).indices.tolist() == [0]  # patch 1: 43 %
    assert box_to_patches((0, 0, 20, 14), square, LLAVA, min_overlap=0.25).indices.tolist() == [0, 1]


def test_tiny_box_keeps_its_centre_patch():
    pm = box_to_patches((15, 15, 3, 3), (336, 336), LLAVA)
    assert pm.indices.tolist() == [25]
    assert pm.coverage[1, 1] == pytest.approx(9 / 196)


def test_dinov2_and_plain_resize():
    # DINOv2: 256x256 -> no resize, crop 16 px each side; box 16..44 -> 0..28 = 2x2 patches
    pm = box_to_patches((16, 16, 28, 28), (256, 256), Preprocess.dinov2())
    assert cells(pm) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # resize ignores aspect: 200x100 -> 224x224, x * 1.12, y * 2.24; patch 16 -> 14x14 grid
    pre = Preprocess("resize", 224, 16)
    pm = box_to_patches((0, 50, 100, 50), (200, 100), pre)
    assert cells(pm) == [(r, c) for r in range(7, 14) for c in range(7)]


def test_bad_arguments():
    with pytest.raises(InputError):
        Preprocess("letterbox", 336, 14)
    with pytest.raises(InputError):
        box_to_patches((0, 0, 1, 1), (10, 10), LLAVA, min_overlap=0)


# ---------------------------------------------------------------- the real processors


def _processors():
    tr = pytest.importorskip("transformers")
    clip = tr.CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    bit = tr.BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224})
    vit = tr.ViTImageProcessor(size={"height": 224, "width": 224})
    return clip, bit, vit


@pytest.mark.filterwarnings("ignore")
def test_from_processor_reads_llava_and_dinov2_configs():
    from transformers import CLIPVisionConfig

    clip, bit, vit = _processors()
    assert Preprocess.from_processor(clip, config=CLIPVisionConfig(patch_size=14)) == LLAVA
    assert Preprocess.from_processor(clip.to_dict(), patch_size=14) == LLAVA
    assert Preprocess.from_processor(clip, patch_size=14, pad_to_square=True) == Preprocess.llava15(pad=True)
    assert Preprocess.from_processor(bit, patch_size=14) == Preprocess.dinov2()
    assert Preprocess.from_processor(vit, patch_size=16) == Preprocess("resize", (224, 224), 16)
    with pytest.raises(InputError, match="patch size"):
        Preprocess.from_processor(clip)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("size,box", [((600, 400), (172, 15, 240, 290)), ((741, 500), (612, 185, 88, 92)),
                                      ((300, 601), (10, 200, 100, 101)), ((451, 300), (0, 0, 451, 300))])
def test_coverage_matches_what_the_processor_does(size, box):
    """Paint the box white on black, run the processor: each patch's mean is our coverage."""
    from PIL import Image

    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8)
    x, y, bw, bh = box
    pixels[y:y + bh, x:x + bw] = 255
    for proc, patch in zip(_processors(), (14, 14, 16)):
        pre = Preprocess.from_processor(proc, patch_size=patch)
        out = proc(Image.fromarray(pixels), return_tensors="np", do_normalize=False)["pixel_values"][0, 0]
        gh, gw = pre.grid(w, h)
        assert out.shape == (pre.input_size(w, h)[1], pre.input_size(w, h)[0])
        measured = out[: gh * patch, : gw * patch].reshape(gh, patch, gw, patch).mean(axis=(1, 3))
        pm = box_to_patches(box, size, pre)
        assert np.abs(measured - pm.coverage).max() < 0.02, type(proc).__name__


@pytest.mark.filterwarnings("ignore")
def test_from_pretrained_folder(tmp_path):
    """Processor + config saved to a folder, read back the way adapters do."""
    from transformers import CLIPVisionConfig, Dinov2Config, LlavaConfig

    clip, bit, _ = _processors()
    clip.save_pretrained(tmp_path / "llava")
    LlavaConfig(vision_config=CLIPVisionConfig(patch_size=14, image_size=336).to_dict()).save_pretrained(
        tmp_path / "llava")
    assert Preprocess.from_pretrained(str(tmp_path / "llava")) == LLAVA
    assert Preprocess.from_pretrained(str(tmp_path / "llava"), pad_to_square=True) == Preprocess.llava15(pad=True)
    bit.save_pretrained(tmp_path / "dino")
    Dinov2Config(patch_size=14).save_pretrained(tmp_path / "dino")
    assert Preprocess.from_pretrained(str(tmp_path / "dino")) == Preprocess.dinov2()


# ---------------------------------------------------------------- image-token layouts


def test_single_grid_layout_is_box_to_patches_with_positions():
    from vlground.vision.layout import box_to_tokens, single_grid_layout

    positions = list(range(5, 5 + 1 + 24 * 24))  # a kept CLS first, then the 24x24 grid
    layout = single_grid_layout(LLAVA, (600, 400), positions)
    assert layout.prefix == (5,) and layout.grids[0].positions[0] == 6 and layout.n_tokens == 577
    box = (100, 0, 100, 50)
    pm = box_to_patches(box, (600, 400), LLAVA)
    assert box_to_tokens(layout, box).positions.tolist() == (6 + pm.indices).tolist()
    with pytest.raises(ValueError, match="575 image tokens for a 24x24 grid"):
        single_grid_layout(LLAVA, (600, 400), positions[:575])


def test_box_counts_in_every_view_that_shows_it():
    from vlground.vision.layout import ImageTokenLayout, TokenGrid, box_to_tokens

    # a 200x100 image: a base view squeezed to 4x4 cells of 10 px (40x40), and a 'tiles' view of the
    # right half only (x 100..200 -> 0..40 at 0.4 px/px, 2 rows of 2 cells of 20 px)
    base = TokenGrid("base", 4, 4, 10, (40 / 200, 40 / 100, 0, 0), tuple(range(16)))
    right = TokenGrid("tiles", 2, 2, 20, (0.4, 0.4, -40, 0), (16, 17, 19, 20), crops=2)
    layout = ImageTokenLayout((200, 100), (base, right), separators=(18, 21))
    left_box = box_to_tokens(layout, (0, 0, 50, 100))  # x 0..50: base cols 0..0.99 -> col 0; not in the right half
    assert left_box.masks["base"].indices.tolist() == [0, 4, 8, 12] and left_box.masks["tiles"].indices.size == 0
    both = box_to_tokens(layout, (100, 0, 100, 50))  # right half, top: base cols 2..3 rows 0..1; tiles row 0
    assert both.masks["base"].indices.tolist() == [2, 3, 6, 7] and both.masks["tiles"].indices.tolist() == [0, 1]
    assert both.positions.tolist() == [2, 3, 6, 7, 16, 17]
    assert 18 not in both.positions and layout.grid_of()[18] == "separator"
    outside = box_to_tokens(layout, (300, 0, 10, 10))
    assert outside.positions.size == 0 and "outside the model input" in outside.problem
    assert layout.summary()["grids"][1] == {"name": "tiles", "rows": 2, "cols": 2, "merge": 1, "crops": 2}


def test_token_brightness_reads_each_cell():
    from vlground.vision.layout import TokenGrid, token_brightness

    view = np.zeros((8, 12))
    view[0:4, 4:8] = 1.0  # cell (0, 1) white
    view[4:8, 8:10] = 1.0  # half of cell (1, 2)
    g = TokenGrid("image", 2, 3, 4, (1, 1, 0, 0), tuple(range(6)))
    assert token_brightness(g, view).tolist() == [0, 1, 0, 0, 0, 0.5]
