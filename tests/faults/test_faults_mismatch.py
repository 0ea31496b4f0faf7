"""build-mismatch and COCO input: out = the source folder, truncated finished PNGs, NaN/inf/degenerate
boxes, malformed segmentations, decompression bombs, a second build of one out, --device."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from faults_helpers import one_error, run_cli, snapshot


class Fake:
    """A stand-in inpainting pipeline: a flat colour (the real one is tested elsewhere)."""

    calls = 0

    def __call__(self, image, mask, prompt, seed):
        Fake.calls += 1
        return Image.new("RGB", image.size, (seed % 256, 0, 255))


@pytest.fixture(autouse=True)
def fake_pipeline(monkeypatch):
    from vlground.vision.inpaint import DiffusersInpainter

    Fake.calls = 0
    monkeypatch.setattr(DiffusersInpainter, "load", classmethod(lambda cls, *a, **k: Fake()))


def source(tmp_path, anns=None, images=None) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    Image.new("RGB", (60, 40), (200, 100, 50)).save(folder / "a.png")
    Image.new("RGB", (45, 30), (20, 100, 150)).save(folder / "b.png")
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40},
                   {"id": 2, "file_name": "b.png", "width": 45, "height": 30}, *(images or [])],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20]},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 5, 20, 20]}, *(anns or [])],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "cat"}],
    }
    (folder / "annotations.json").write_text(json.dumps(doc))
    return folder / "annotations.json"


def mismatch(ann, out, capsys, *extra):
    return run_cli(["build-mismatch", "--annotations", ann, "--out", out, "--no-progress", "--device", "cpu", *extra],
                   capsys)


# -- 5. out = the source folder: refused, the source annotations intact ---------------------------------
@pytest.mark.parametrize("where", ["source", "parent"])
def test_out_is_the_source_folder(tmp_path, capsys, where):
    ann = source(tmp_path)
    before = snapshot(ann.parent)
    out = ann.parent if where == "source" else tmp_path
    code, err = mismatch(ann, out, capsys)
    line = one_error(err)
    assert code == 2 and "--out" in line and "input" in line
    assert snapshot(ann.parent) == before and Fake.calls == 0


# -- 12. a truncated finished PNG is made again, not counted as done ------------------------------------
def test_truncated_png_is_remade(tmp_path, capsys):
    ann = source(tmp_path)
    out = tmp_path / "out"
    assert mismatch(ann, out, capsys)[0] == 0
    first, second = sorted(out.glob("*.png"))
    kept = snapshot(second)
    first.write_bytes(first.read_bytes()[:-40])  # cut inside the image data, text chunk intact
    Fake.calls = 0
    assert mismatch(ann, out, capsys)[0] == 0
    assert Fake.calls == 1
    with Image.open(first) as im:
        im.load()
    assert snapshot(second) == kept
    doc = json.loads((out / "annotations.json").read_text())
    assert len(doc["images"]) == 2


# -- 12. bad boxes and segmentations are skipped with a reason --------------------------------------------
@pytest.mark.parametrize("bbox,reason", [
    ([float("nan"), 5, 10, 10], "not finite"), ([5, 5, float("inf"), 10], "not finite"),
    ([5, 5, 0, 10], "empty"), ([5, 5, 10, -1], "empty")])
def test_bad_box_is_skipped_with_a_reason(tmp_path, capsys, bbox, reason):
    ann = source(tmp_path, anns=[{"id": 3, "image_id": 1, "category_id": 2, "bbox": bbox}])
    code, err = mismatch(ann, tmp_path / "out", capsys)
    assert code == 0, err
    assert any("annotation 3" in line and reason in line for line in err), err
    doc = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [i["annotation_id"] for i in doc["images"]] == [1, 2]


@pytest.mark.parametrize("seg", [[[1, 2, 3]], [["a", 1, 2, 3, 4, 5]], [[1, 2, 3, 4, float("nan"), 6]],
                                 {"size": [1, 1], "counts": "x"}, {"size": [40, 60], "counts": [1, 2]}, "nonsense"])
def test_malformed_segmentation_is_skipped_with_a_reason(tmp_path, capsys, seg):
    ann = source(tmp_path, anns=[{"id": 3, "image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9], "segmentation": seg}])
    code, err = mismatch(ann, tmp_path / "out", capsys, "--mask", "segmentation")
    assert code == 0, err
    assert any("annotation 3" in line and "segmentation" in line for line in err), err


def test_decompression_bomb_is_skipped_with_a_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1100)  # 60x40 is then a bomb (> 2x the limit), 45x30 not
    ann = source(tmp_path)
    code, err = mismatch(ann, tmp_path / "out", capsys)
    assert code == 0, err
    assert any("image 1" in line and "decompression bomb" in line for line in err), err


# -- 13-like: one build per out ----------------------------------------------------------------------------
def test_second_build_of_one_out_is_refused(tmp_path, capsys):
    from vlground.datasets.mismatch import LOCK

    ann = source(tmp_path)
    out = tmp_path / "out"
    assert mismatch(ann, out, capsys)[0] == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom vlground.locks import exclusive\n"
         f"with exclusive({str(out / LOCK)!r}, 'out'):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        code, err = mismatch(ann, out, capsys, "--seed", "1")
        assert code == 2 and f"in use by process {holder.pid}" in one_error(err)
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# -- 14. --device cuda without a GPU ------------------------------------------------------------------------
def test_missing_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ann = source(tmp_path)
    code, err = run_cli(["build-mismatch", "--annotations", ann, "--out", tmp_path / "out", "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda" in one_error(err)
    assert not (tmp_path / "out").exists()


# -- 11-like: nothing made is not a success -------------------------------------------------------------------
def test_nothing_made_exits_non_zero(tmp_path, capsys):
    ann = source(tmp_path)
    doc = json.loads(ann.read_text())
    for a in doc["annotations"]:
        a["bbox"] = [float("nan"), 0, 1, 1]
    ann.write_text(json.dumps(doc))
    code, err = mismatch(ann, tmp_path / "out", capsys)
    assert code == 2 and "no mismatched image could be made" in one_error(err)
