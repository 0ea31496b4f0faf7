"""The features cache (defect 1): keyed by image content, filled by one build at a time."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faults_helpers import one_error, run_cli, snapshot


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    from vlground.vision.tiny_dinov2 import save_tiny_dinov2

    return save_tiny_dinov2(tmp_path_factory.mktemp("dino") / "tiny-dinov2")


def dataset(root: Path, colour) -> Path:
    """One image ``scene.png`` (uncompressed PNG: same name and byte size whatever the colour),
    one dialog about it, one box."""
    (root / "images").mkdir(parents=True)
    im = Image.new("RGB", (64, 48), colour)
    im.paste((255 - colour[0], 30, 30), (10, 10, 30, 30))
    im.save(root / "images" / "scene.png", compress_level=0)
    (root / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "scene.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}],
        "categories": [{"id": 1, "name": "cup"}]}))
    (root / "visdial.json").write_text(json.dumps({"version": "1.0", "split": "train", "data": {
        "questions": ["is there a cup", "what colour"], "answers": ["yes", "red"],
        "dialogs": [{"image_id": 1, "caption": "a cup on a table",
                     "dialog": [{"question": 0, "answer": 0}, {"question": 1, "answer": 1}]}]}}))
    return root


def build(root: Path, out: Path, dino, cache: Path, capsys):
    return run_cli(["build-corpus", "--visdial", root / "visdial.json", "--images", root / "images",
                    "--annotations", root / "instances.json", "--vision", dino, "--vision-init", "random",
                    "--features-cache", cache, "--out", out, "--chunk-len", "64", "--no-progress", "--device", "cpu"],
                   capsys)


def first_image_features(corpus: Path) -> np.ndarray:
    from vlground.corpus.format import Corpus
    from vlground.vision.features import corpus_images

    ci = corpus_images(Corpus.load(corpus))
    return np.asarray(ci.features[ci.rows[0]], dtype=np.float32)


def test_same_name_and_size_never_share_features(tmp_path, dino, capsys):
    a, b = dataset(tmp_path / "a", (200, 10, 10)), dataset(tmp_path / "b", (10, 10, 200))
    fa, fb = a / "images" / "scene.png", b / "images" / "scene.png"
    assert fa.stat().st_size == fb.stat().st_size and fa.read_bytes() != fb.read_bytes()
    cache = tmp_path / "features"
    assert build(a, tmp_path / "ca", dino, cache, capsys)[0] == 0
    assert build(b, tmp_path / "cb", dino, cache, capsys)[0] == 0
    assert not np.array_equal(first_image_features(tmp_path / "ca"), first_image_features(tmp_path / "cb"))
    # the same bytes under another name are found again, not featurised twice
    c = dataset(tmp_path / "c", (200, 10, 10))
    (c / "images" / "scene.png").rename(c / "images" / "renamed.png")
    doc = json.loads((c / "instances.json").read_text())
    doc["images"][0]["file_name"] = "renamed.png"
    (c / "instances.json").write_text(json.dumps(doc))
    assert build(c, tmp_path / "cc", dino, cache, capsys)[0] == 0
    assert json.loads((tmp_path / "cc" / "stats.json").read_text())["vision_calls"] == 0
    assert np.array_equal(first_image_features(tmp_path / "ca"), first_image_features(tmp_path / "cc"))


def test_second_build_filling_one_cache_is_refused(tmp_path, dino, capsys):
    from vlground.datasets.visdial_corpus import CACHE_LOCK

    a = dataset(tmp_path / "a", (200, 10, 10))
    cache = tmp_path / "features"
    assert build(a, tmp_path / "ca", dino, cache, capsys)[0] == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom vlground.locks import exclusive\n"
         f"with exclusive({str(cache / CACHE_LOCK)!r}, 'cache'):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(cache)
        code, err = build(a, tmp_path / "cb", dino, cache, capsys)
        line = one_error(err)
        assert code == 2 and f"in use by process {holder.pid}" in line and str(cache) in line
        assert snapshot(cache) == before and not (tmp_path / "cb").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_nan_box_is_skipped_in_the_visdial_corpus(tmp_path, dino, capsys):
    a = dataset(tmp_path / "a", (200, 10, 10))
    doc = json.loads((a / "instances.json").read_text())
    doc["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 1, 5, 5]})
    doc["annotations"].append({"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 1, float("inf"), 5]})
    (a / "instances.json").write_text(json.dumps(doc))
    code, err = build(a, tmp_path / "ca", dino, tmp_path / "features", capsys)
    assert code == 0, err
    skipped = json.loads((tmp_path / "ca" / "stats.json").read_text())["skipped"]
    assert any("annotation 2" in s and "not finite" in s for s in skipped), skipped
    assert any("annotation 3" in s and "not finite" in s for s in skipped), skipped
