"""build-mismatch: exact pasting, replacements, resume, seeds, bad input, the CLI (tiny SD2 pipeline)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _tiny_sd import FAST, tiny_sd_folder, write_not_inpainting_folder
from PIL import Image

from vlground.cli import main
from vlground.datasets.mismatch import (
    BUNDLED_IMAGES,
    MismatchConfig,
    build_mismatch,
    choose_replacement,
    item_seed,
    paste_outside,
)
from vlground.errors import InputError
from vlground.vision.coco import load_coco
from vlground.vision.masks import box_mask

# ---------------------------------------------------------------- pure pieces


def test_paste_outside_keeps_every_source_pixel_outside_the_mask():
    rng = np.random.default_rng(0)
    source = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))  # other size: resized
    mask = box_mask(source.size, (5.5, 3.2, 10, 7))
    out = paste_outside(source, generated, mask)
    a, s, m = np.asarray(out), np.asarray(source), np.asarray(mask) > 0
    assert out.size == source.size and (a[~m] == s[~m]).all()
    expected_inside = np.asarray(generated.resize(source.size, Image.Resampling.LANCZOS))
    assert (a[m] == expected_inside[m]).all()


def test_box_mask_covers_touched_pixels():
    m = np.asarray(box_mask((10, 8), (1.5, 2, 3, 2.5))) > 0
    assert m.sum() == 4 * 3 and m[2:5, 1:5].all()  # columns 1..4, rows 2..4
    assert (np.asarray(box_mask((10, 8), (1, 1, 2, 2), dilate=1)) > 0).sum() == 16


def test_replacement_choice():
    data = load_coco(BUNDLED_IMAGES / "instances.json")
    cup = data.annotations[0]
    assert choose_replacement(cup, data.categories, "next", 0) == (50, "spoon")
    shuttle = next(a for a in data.annotations if a.category == "shuttle")  # the largest id wraps around
    assert choose_replacement(shuttle, data.categories, "next", 0) == (1, "person")
    picks = {choose_replacement(cup, data.categories, "random", s)[1] for s in range(20)}
    assert "cup" not in picks and len(picks) > 3
    assert choose_replacement(cup, data.categories, "random", 3) == choose_replacement(cup, data.categories,
                                                                                       "random", 3)
    assert item_seed(0, 1) != item_seed(0, 2) and item_seed(0, 1) == item_seed(0, 1)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(InputError, match="needs {}"):
        MismatchConfig(annotations=tmp_path / "a.json", out=tmp_path, prompt_template="a photo")
    with pytest.raises(InputError, match="replacement"):
        MismatchConfig(annotations=tmp_path / "a.json", out=tmp_path, replacement="nearest")


# ---------------------------------------------------------------- with a fake inpainter (fast)


class Recorder:
    """An inpainter that paints a flat colour and counts its calls."""

    def __init__(self, inner=None):
        self.inner, self.calls = inner, []

    def __call__(self, image, mask, prompt, seed):
        self.calls.append((prompt, seed))
        if self.inner is not None:
            return self.inner(image, mask, prompt, seed)
        return Image.new("RGB", image.size, (seed % 256, 0, 255))


def _small_set(tmp_path, extra_images=(), extra_anns=()):
    """Two small crops of the bundled photographs and three annotations (plus extras)."""
    folder = tmp_path / "src"
    folder.mkdir()
    with Image.open(BUNDLED_IMAGES / "coffee.png") as im:
        im.convert("RGB").resize((60, 40)).save(folder / "coffee.png")
    with Image.open(BUNDLED_IMAGES / "chelsea.png") as im:
        im.convert("RGB").resize((45, 30)).save(folder / "chelsea.png")
    doc = {
        "images": [{"id": 1, "file_name": "coffee.png", "width": 60, "height": 40},
                   {"id": 5, "file_name": "chelsea.png", "width": 45, "height": 30}, *extra_images],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 47, "bbox": [17, 1.5, 24, 29]},
                        {"id": 2, "image_id": 1, "category_id": 50, "bbox": [32, 6, 10.5, 26],
                         "segmentation": [[32, 6, 42, 6, 37, 32]]},
                        {"id": 15, "image_id": 5, "category_id": 17, "bbox": [10, 5, 20, 20]}, *extra_anns],
        "categories": [{"id": 17, "name": "cat"}, {"id": 47, "name": "cup"}, {"id": 50, "name": "spoon"}],
    }
    (folder / "instances.json").write_text(json.dumps(doc))
    return folder / "instances.json"


def _assert_same_outside(out_dir, src_dir, box_only=True):
    doc = json.loads((out_dir / "annotations.json").read_text())
    for img, ann in zip(doc["images"], doc["annotations"]):
        with Image.open(src_dir / img["source_file"]) as im:
            source = np.asarray(im.convert("RGB"))
        made = np.asarray(Image.open(out_dir / img["file_name"]))
        if img["mask"] == "box":
            mask = np.asarray(box_mask((img["width"], img["height"]), ann["bbox"])) > 0
        else:
            from vlground.vision.coco import CocoAnnotation

            mask = CocoAnnotation(1, 1, 1, "x", (0, 0, 1, 1), ann["segmentation"]).segmentation_mask(
                img["width"], img["height"])
        assert made.shape == source.shape
        assert (made[~mask] == source[~mask]).all(), img["file_name"]
        assert (made[mask] != source[mask]).any(), img["file_name"]
    return doc


def test_build_writes_images_and_coco_annotations(tmp_path):
    ann_file = _small_set(tmp_path)
    fake = Recorder()
    path = build_mismatch(MismatchConfig(annotations=ann_file, out=tmp_path / "out", replacement="next",
                                         progress=False), inpainter=fake)
    doc = _assert_same_outside(tmp_path / "out", ann_file.parent)
    assert path == tmp_path / "out" / "annotations.json"
    assert [i["file_name"] for i in doc["images"]] == ["coffee__ann1.png", "coffee__ann2.png", "chelsea__ann15.png"]
    first = doc["images"][0]
    assert first["source_image_id"] == 1 and first["source_file"] == "coffee.png"
    assert (first["original_category"], first["replacement_category"]) == ("cup", "spoon")
    assert first["prompt"] == "a photo of a spoon" and first["seed"] == item_seed(0, 1)
    assert doc["annotations"][0]["bbox"] == [17, 1.5, 24, 29] and doc["annotations"][0]["category_id"] == 47
    assert doc["images"][2]["replacement_category"] == "cup"  # cat (17) -> next id 47
    assert [c["name"] for c in doc["categories"]] == ["cat", "cup", "spoon"]
    assert len(fake.calls) == 3


def test_segmentation_mask_and_remove(tmp_path):
    ann_file = _small_set(tmp_path)
    fake = Recorder()
    build_mismatch(MismatchConfig(annotations=ann_file, out=tmp_path / "out", mask="segmentation", remove=True,
                                  progress=False), inpainter=fake)
    doc = _assert_same_outside(tmp_path / "out", ann_file.parent)
    assert [i["mask"] for i in doc["images"]] == ["box", "segmentation", "box"]  # only ann 2 has a segmentation
    assert {p for p, _ in fake.calls} == {"empty background"}
    assert all(i["replacement_category"] is None for i in doc["images"])


def test_resume_skips_finished_images_and_refuses_other_settings(tmp_path):
    ann_file = _small_set(tmp_path)
    config = MismatchConfig(annotations=ann_file, out=tmp_path / "out", limit=2, progress=False)
    first = Recorder()
    build_mismatch(config, inpainter=first)
    assert len(first.calls) == 2
    config.limit = None
    second = Recorder()
    doc = json.loads(build_mismatch(config, inpainter=second).read_text())
    assert len(second.calls) == 1 and len(doc["images"]) == 3  # only the third object was made
    third = Recorder()
    build_mismatch(config, inpainter=third)
    assert third.calls == []
    (tmp_path / "out" / "annotations.json").unlink()  # rebuilt from the images on disk
    assert len(json.loads(build_mismatch(config, inpainter=third).read_text())["images"]) == 3
    config.seed = 1
    with pytest.raises(InputError, match="other settings"):
        build_mismatch(config, inpainter=third)


def test_bad_input_is_reported_and_the_rest_still_runs(tmp_path):
    ann_file = _small_set(
        tmp_path,
        extra_images=[{"id": 9, "file_name": "gone.png", "width": 10, "height": 10}],
        extra_anns=[{"id": 20, "image_id": 1, "category_id": 47, "bbox": [100, 100, 5, 5]},
                    {"id": 21, "image_id": 1, "category_id": 999, "bbox": [1, 1, 5, 5]},
                    {"id": 22, "image_id": 9, "category_id": 47, "bbox": [1, 1, 5, 5]}],
    )
    fake = Recorder()
    doc = json.loads(build_mismatch(MismatchConfig(annotations=ann_file, out=tmp_path / "out", progress=False),
                                    inpainter=fake).read_text())
    assert len(doc["images"]) == 3 and len(fake.calls) == 3
    skipped = doc["info"]["skipped"]
    assert "instances.json: annotation 20: box [100, 100, 5, 5] outside image 1 (60x40)" in skipped
    assert "instances.json: annotation 21: unknown category id 999" in skipped
    assert any(s.startswith("instances.json: image 9: file gone.png not found") for s in skipped)


# ---------------------------------------------------------------- the tiny SD2-inpainting pipeline


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """The tiny pipeline folder (torch runs on one thread in the tests: tests/conftest.py)."""
    return tiny_sd_folder(tmp_path_factory.mktemp("models"))


def test_tiny_pipeline_end_to_end_resume_and_seed(tmp_path, tiny_sd):
    from vlground.vision.inpaint import DiffusersInpainter

    ann_file = _small_set(tmp_path)
    config = MismatchConfig(annotations=ann_file, out=tmp_path / "a", model=str(tiny_sd), progress=False, **FAST)
    counter = Recorder(DiffusersInpainter.load(str(tiny_sd), steps=2, resolution=32, guidance_scale=1.0))
    build_mismatch(config, inpainter=counter)
    assert len(counter.calls) == 3
    _assert_same_outside(tmp_path / "a", ann_file.parent)
    build_mismatch(config, inpainter=counter)  # resume: nothing left to make
    assert len(counter.calls) == 3
    # same seed, another folder, loaded through the default path: the same pixels
    config_b = MismatchConfig(annotations=ann_file, out=tmp_path / "b", model=str(tiny_sd), limit=1,
                              progress=False, **FAST)
    build_mismatch(config_b)
    a = np.asarray(Image.open(tmp_path / "a" / "coffee__ann1.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "coffee__ann1.png"))
    assert (a == b).all()


def test_cli_on_bundled_fixtures(tmp_path, tiny_sd, capsys):
    out = tmp_path / "mm"
    argv = ["build-mismatch", "--inpaint", "--annotations", str(BUNDLED_IMAGES / "instances.json"),
            "--out", str(out), "--model", str(tiny_sd), "--steps", "2", "--resolution", "32",
            "--guidance-scale", "1", "--limit", "2", "--no-progress"]
    assert main(argv) == 0
    doc = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in doc["images"]] == ["coffee__ann1.png", "coffee__ann2.png"]
    _assert_same_outside(out, BUNDLED_IMAGES)
    assert "2 mismatched images" in capsys.readouterr().out
    assert main(argv) == 0  # resumes: nothing to do, the model is not even loaded


def test_cli_one_line_errors(tmp_path, capsys):
    base = ["build-mismatch", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*base, "--annotations", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlground: error: ") and "nope.json: annotations file not found" in err
    assert "\n" not in err
    folder = write_not_inpainting_folder(tmp_path / "t2i")
    src = tmp_path / "src"
    shutil.copytree(BUNDLED_IMAGES, src)
    assert main([*base, "--annotations", str(src / "instances.json"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an inpainting pipeline" in err and "\n" not in err
    assert main([*base, "--annotations", str(src / "instances.json"), "--model", str(tmp_path)]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([*base, "--annotations", str(src / "instances.json"), "--bogus"])
    assert info.value.code == 2
