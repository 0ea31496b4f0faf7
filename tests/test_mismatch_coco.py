"""COCO loading: the bundled fixtures, and bad items reported while the rest still loads."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vlground.datasets.mismatch import BUNDLED_IMAGES
from vlground.errors import InputError
from vlground.vision.coco import load_coco


def test_bundled_fixtures_load_cleanly():
    data = load_coco(BUNDLED_IMAGES / "instances.json")
    assert len(data.images) == 5 and len(data.annotations) == 15 and len(data.categories) == 14
    assert data.skipped == []
    coffee = data.images[1]
    assert (coffee.file_name, coffee.width, coffee.height) == ("coffee.png", 600, 400)
    cup = data.annotations[0]
    assert (cup.id, cup.image_id, cup.category, cup.bbox) == (1, 1, "cup", (172.0, 15.0, 240.0, 290.0))


def _write(tmp_path, images, annotations, categories=({"id": 1, "name": "cup"}, {"id": 2, "name": "cat"})):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return path


def test_bad_items_are_skipped_with_one_line_reasons(tmp_path):
    shutil.copy(BUNDLED_IMAGES / "coffee.png", tmp_path / "coffee.png")
    (tmp_path / "broken.png").write_text("not an image")
    images = [
        {"id": 1, "file_name": "coffee.png", "width": 600, "height": 400},
        {"id": 2, "file_name": "missing.png", "width": 10, "height": 10},
        {"id": 3, "file_name": "broken.png", "width": 10, "height": 10},
        {"id": 4, "file_name": "coffee.png", "width": 60, "height": 40},
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]},
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [700, 10, 50, 50]},
        {"id": 13, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 50]},
        {"id": 14, "image_id": 1, "category_id": 99, "bbox": [10, 10, 5, 5]},
        {"id": 15, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 16, "image_id": 1, "category_id": 2, "bbox": [580, 390, 50, 50]},
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]},
    ]
    data = load_coco(_write(tmp_path, images, anns))
    assert sorted(data.images) == [1]
    assert [a.id for a in data.annotations] == [1, 16]
    clipped = data.annotations[1]
    assert clipped.bbox == (580.0, 390.0, 20.0, 10.0) and clipped.clipped_from == (580.0, 390.0, 50.0, 50.0)
    lines = [str(p) for p in data.skipped]
    assert "instances.json: annotation 12: box [700, 10, 50, 50] outside image 1 (600x400)" in lines
    assert "instances.json: annotation 13: box [10, 10, 0, 50] is empty" in lines
    assert "instances.json: annotation 14: unknown category id 99" in lines
    assert any(line.startswith("instances.json: image 2: file missing.png not found") for line in lines)
    assert any(line.startswith("instances.json: image 3: PIL cannot read broken.png") for line in lines)
    assert "instances.json: image 4: declared 60x40 but coffee.png is 600x400" in lines
    assert "instances.json: annotation 15: image 2 unknown or skipped" in lines
    assert "instances.json: annotation 1: id repeated" in lines
    assert all("\n" not in line for line in lines)


def test_without_checking_images(tmp_path):
    images = [{"id": 1, "file_name": "nowhere.png", "width": 20, "height": 10}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4],
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}]
    data = load_coco(_write(tmp_path, images, anns), check_images=False)
    assert data.skipped == [] and len(data.annotations) == 1
    seg = data.annotations[0].segmentation_mask(20, 10)
    assert seg.shape == (10, 20) and seg[:4, :4].all() and not seg[:, 5:].any()


@pytest.mark.parametrize("content,message", [(None, "not found"), ("{", "not a JSON file"),
                                             ('{"images": []}', "no 'annotations' list")])
def test_unusable_file_raises_one_line(tmp_path, content, message):
    path = tmp_path / "instances.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_coco(path)
    assert "\n" not in str(info.value)


def test_segmentation_rle(tmp_path):
    from pycocotools import mask as mask_utils

    m = np.zeros((8, 6), np.uint8)
    m[2:5, 1:3] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    images = [{"id": 1, "file_name": "x.png", "width": 6, "height": 8}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 2, 3], "segmentation": rle}]
    data = load_coco(_write(tmp_path, images, anns), check_images=False)
    assert (data.annotations[0].segmentation_mask(6, 8) == m.astype(bool)).all()
