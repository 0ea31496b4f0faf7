"""llava15 on a tiny, randomly initialised LLaVA saved to a folder and loaded as users load one.

Conformance (check_adapter), box -> image-token positions, teacher-forced sub-token scoring, the
inside-box share on planted saliency, the end-to-end CLI run on the bundled photographs with a
mismatch folder made by build-mismatch (tiny SD2 pipeline), and bad input.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _tiny_sd import FAST, tiny_sd_folder

from vlground.cli import main
from vlground.datasets.mismatch import BUNDLED_IMAGES, MismatchConfig, build_mismatch
from vlground.errors import InputError
from vlground.testing import check_adapter
from vlground.vision.geometry import box_to_patches
from vlground.vision.tiny_llava import save_tiny_llava

ANNOTATIONS = BUNDLED_IMAGES / "instances.json"


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory) -> Path:
    return save_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="module")
def mismatch_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mismatch")
    cfg = MismatchConfig(annotations=ANNOTATIONS, out=root / "mismatched", model=str(tiny_sd_folder(root)),
                         device="cpu", progress=False, **FAST)
    build_mismatch(cfg)
    return cfg.out


def make_adapter(model_dir, mismatch, **extra):
    from vlground.adapters.llava15 import Llava15Adapter

    opts = {"model": str(model_dir), "images": BUNDLED_IMAGES, "annotations": ANNOTATIONS, "mismatch": mismatch,
            "device": "cpu", "batch_size": 4, **extra}
    return Llava15Adapter.from_options(opts)


@pytest.fixture(scope="module")
def adapter_and_model(tiny_llava_dir, mismatch_dir):
    adapter = make_adapter(tiny_llava_dir, mismatch_dir)
    loaded = adapter.load(adapter.checkpoints()[0])
    return adapter, loaded, adapter.items(loaded)


# ---------------------------------------------------------------- interface


def test_conformance(tiny_llava_dir, mismatch_dir):
    check_adapter(make_adapter(tiny_llava_dir, mismatch_dir), max_items=6)


def test_registered_and_pretrained_checkpoint(tiny_llava_dir, mismatch_dir):
    from vlground.engine.registry import get_adapter_class

    assert get_adapter_class("llava15").__name__ == "Llava15Adapter"
    (ckpt,) = make_adapter(tiny_llava_dir, mismatch_dir).checkpoints()
    assert ckpt.step is None and ckpt.key == "tiny-llava@final"
    assert get_adapter_class("llava15").Options().model == "llava-hf/llava-1.5-7b-hf"


def test_items_pair_source_and_inpainted_image(adapter_and_model, mismatch_dir):
    adapter, loaded, items = adapter_and_model
    assert loaded.extra["prompt"] == "USER: <image>\nWhat is in the picture? ASSISTANT: It is a"
    by_pair: dict = {}
    for it in items:
        by_pair.setdefault(it.pair_id, {})[it.condition] = it
    cup = by_pair["ann1"]
    assert cup["match"].word == cup["mismatch"].word == "cup"
    obj = cup["match"].meta["object"]
    assert Path(obj.image).name == "coffee.png" and Path(obj.mismatch_image).parent == mismatch_dir
    assert cup["mismatch"].env_word not in (None, "cup")


def test_env_mask_is_the_box_mapped_by_the_models_preprocessing(adapter_and_model):
    adapter, loaded, items = adapter_and_model
    it = next(i for i in items if i.pair_id == "ann1" and i.condition == "match")
    batch = adapter.batch(loaded, [it])
    ids = batch.model_inputs["input_ids"][0]
    image_pos = (ids == loaded.extra["image_token_id"]).nonzero()[:, 0]
    grid = loaded.model.config.vision_config.image_size // loaded.model.config.vision_config.patch_size
    assert len(image_pos) == grid * grid == int(batch.env_span[0].sum())  # 6x6, CLS dropped
    assert (image_pos == torch.arange(int(image_pos[0]), int(image_pos[0]) + grid * grid)).all()
    obj = it.meta["object"]
    pm = box_to_patches(obj.bbox, obj.image_size, adapter.preprocess(loaded))
    assert batch.env_mask[0].nonzero()[:, 0].tolist() == (image_pos[0] + torch.as_tensor(pm.indices)).tolist()
    assert int(batch.predict_positions[0]) == len(ids) - 1


def test_several_sub_tokens_are_summed_with_teacher_forcing(adapter_and_model):
    adapter, loaded, items = adapter_and_model
    it = next(i for i in items if i.word == "motorcycle" and i.condition == "match")
    batch = adapter.batch(loaded, [it])
    tok = loaded.tokenizer
    assert tok.convert_ids_to_tokens(batch.target_ids[0].tolist()) == ["motor", "##cycle"]
    p0 = int(batch.predict_positions[0])
    assert batch.target_positions[0].tolist() == [p0, p0 + 1]
    assert int(batch.model_inputs["input_ids"][0, p0 + 1]) == int(batch.target_ids[0, 0])
    with torch.no_grad():
        logits = adapter.forward(loaded, batch).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = logp[p0, batch.target_ids[0, 0]] + logp[p0 + 1, batch.target_ids[0, 1]]
    assert torch.allclose(adapter.target_logprobs(loaded, batch)[0], expected, atol=1e-5)


# ---------------------------------------------------------------- box heads on planted saliency


def test_inside_share_on_a_planted_saliency_map():
    from vlground.probes.boxheads import box_aggregate_heads, head_inside_shares

    S = 10  # positions 2..7 are image tokens; 3 and 4 are inside the box
    span = torch.zeros(1, S, dtype=torch.bool)
    span[0, 2:8] = True
    inside = torch.zeros(1, S, dtype=torch.bool)
    inside[0, 3:5] = True
    rows = torch.zeros(1, 1, 3, S)
    rows[0, 0, 0, [3, 4]] = torch.tensor([0.6, -0.4])  # all inside (signed: magnitudes count)
    rows[0, 0, 0, 9] = 5.0  # text-token flow is not image-to-word saliency
    rows[0, 0, 1, [3, 6]] = torch.tensor([1.0, 1.0])  # half inside
    rows[0, 0, 2, [2, 3, 4, 5, 6, 7]] = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 1.0])
    share, mass = head_inside_shares(rows, inside, span)
    assert torch.allclose(share[0, 0], torch.tensor([1.0, 0.5, (2 + 3) / 10]))
    assert torch.allclose(mass[0, 0], torch.tensor([1.0, 2.0, 10.0]))
    agg = box_aggregate_heads(share, [0.7, 0.9])
    assert agg[0.9][0, 0].tolist() == [True, False, False]
    assert agg[0.7][0, 0].tolist() == [True, False, False]


def test_predict_row_saliency_with_pixels_equals_the_full_map_row(adapter_and_model):
    from vlground.mechanism.saliency import attention_saliency

    adapter, loaded, items = adapter_and_model
    batch = adapter.batch(loaded, items[:2])
    x = dict(batch.model_inputs)
    ids, mask = x.pop("input_ids"), x.pop("attention_mask")
    pos, tgt = batch.predict_positions.contiguous(), batch.target_ids[:, 0].contiguous()
    full = attention_saliency(loaded.model, ids, pos, tgt, mask, **x)
    rows = attention_saliency(loaded.model, ids, pos, tgt, mask, predict_row_only=True, **x)
    assert rows.shape == full.shape[:-1]
    assert torch.allclose(rows, full[torch.arange(2), :, :, pos], atol=1e-7)
    span = batch.env_span[0]
    assert rows[0][..., span].abs().sum() > 0  # the image tokens get gradient through the pixels' features


# ---------------------------------------------------------------- end to end


def test_probe_cli_end_to_end(tiny_llava_dir, mismatch_dir, tmp_path, capsys):
    out = tmp_path / "reports" / "llava"
    rc = main(["probe", "--adapter", "llava15", "--model", str(tiny_llava_dir), "--images", str(BUNDLED_IMAGES),
               "--annotations", str(ANNOTATIONS), "--mismatch", str(mismatch_dir), "--probes",
               "behaviour,boxheads,boxablation", "--device", "cpu", "--batch-size", "4", "--ablation-draws", "3",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    from vlground.results import load

    res = load(out)
    (rec,) = res.checkpoint_rows()
    assert rec["step"] is None and rec["n_pairs"] == rec["box_items"] > 5
    assert rec["word_p_value"] is not None and rec["info_gain"] == pytest.approx(rec["mismatch_surprisal"] - rec["match_surprisal"])
    heads = res.rows("heads")
    assert len(heads) == 2 * 8 and all(0 <= h["inside_share"] <= 1 for h in heads)
    assert {h["kind"] for h in heads} <= {"none", "aggregate@0.7", "aggregate@0.9"}
    assert [a["head_type"] for a in res.rows("ablation")] == ["aggregate@0.7", "aggregate@0.9"]
    assert any(a["p_value"] is not None for a in res.rows("ablation"))
    html = (out / "report.html").read_text()
    assert "Box aggregate heads" in html and "Head ablation" in html and "box-heads-" in html
    assert "teacher forcing" in html and "the final model" in html
    assert any("annotation 14" in n and "outside the model input" in n for n in res.all_notes())  # cropped away


# ---------------------------------------------------------------- bad input


def _write_set(folder: Path, mismatch_dir: Path) -> tuple[Path, Path]:
    """A COCO set with bad items and a mismatch folder that fits some of them."""
    folder.mkdir()
    for f in ("coffee.png", "chelsea.png"):
        shutil.copy(BUNDLED_IMAGES / f, folder / f)
    (folder / "broken.png").write_bytes(b"not a png")
    src = json.loads(ANNOTATIONS.read_text())
    coffee = next(i for i in src["images"] if i["file_name"] == "coffee.png")
    cat = next(i for i in src["images"] if i["file_name"] == "chelsea.png")
    images = [coffee, cat, {"id": 90, "file_name": "missing.png", "width": 10, "height": 10},
              {"id": 91, "file_name": "broken.png", "width": 10, "height": 10}]
    anns = [a for a in src["annotations"] if a["image_id"] in (coffee["id"], cat["id"])]
    cats = src["categories"] + [{"id": 999, "name": "zebra"}]
    bad = [
        {"id": 501, "image_id": coffee["id"], "category_id": 47, "bbox": [700, 10, 50, 50]},  # outside
        {"id": 502, "image_id": coffee["id"], "category_id": 47, "bbox": [10, 10, 0, 50]},  # empty
        {"id": 503, "image_id": coffee["id"], "category_id": 12345, "bbox": [10, 10, 50, 50]},  # unknown category
        {"id": 504, "image_id": 90, "category_id": 47, "bbox": [1, 1, 5, 5]},  # missing image
        {"id": 505, "image_id": 91, "category_id": 47, "bbox": [1, 1, 5, 5]},  # unreadable image
        {"id": 506, "image_id": coffee["id"], "category_id": 999, "bbox": [10, 10, 50, 50]},  # word not in vocab
    ]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": anns + bad, "categories": cats}))
    # mismatch: copy the real folder, then break the record of the cat's annotation
    mm = folder / "mismatched"
    shutil.copytree(mismatch_dir, mm)
    doc = json.loads((mm / "annotations.json").read_text())
    cat_ann = next(a["id"] for a in anns if a["image_id"] == cat["id"])
    for r in doc["images"]:
        if r["annotation_id"] == cat_ann:
            r["source_file"] = "someone_else.png"
    (mm / "annotations.json").write_text(json.dumps(doc))
    return folder / "instances.json", mm


def test_bad_items_are_skipped_with_one_line_reasons(tiny_llava_dir, mismatch_dir, tmp_path):
    annotations, mm = _write_set(tmp_path / "set", mismatch_dir)
    adapter = make_adapter(tiny_llava_dir, mm, images=annotations.parent, annotations=annotations)
    loaded = adapter.load(adapter.checkpoints()[0])
    items = adapter.items(loaded)
    words = {it.word for it in items}
    assert {"cup", "spoon"} <= words and "cat" not in words and "zebra" not in words
    skipped = adapter.skipped()
    assert all("\n" not in s for s in skipped)
    expect = {
        "annotation 501": "outside image", "annotation 502": "empty", "annotation 503": "unknown category id 12345",
        "image 90": "not found", "image 91": "PIL cannot read", "annotation 506": "cannot spell 'zebra'",
        "someone_else.png": "another annotations file",
    }
    for where, why in expect.items():
        assert any(where in s and why in s for s in skipped), (where, skipped)


def test_model_folder_that_is_not_llava(tmp_path, tiny_llava_dir, mismatch_dir, capsys):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    args = ["probe", "--adapter", "llava15", "--images", str(BUNDLED_IMAGES), "--annotations", str(ANNOTATIONS),
            "--mismatch", str(mismatch_dir), "--out", str(tmp_path / "o")]
    assert main(args + ["--model", str(gpt2)]) == 2
    assert "model_type 'gpt2' is not a LLaVA checkpoint" in capsys.readouterr().err
    assert main(args + ["--model", str(tmp_path / "nowhere")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_llava_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"x" * 100)
    adapter = make_adapter(corrupt, mismatch_dir)
    with pytest.raises(InputError, match="corrupt: cannot load as a LLaVA checkpoint"):
        adapter.load(adapter.checkpoints()[0])
    (tmp_path / "empty").mkdir()
    assert main(args + ["--model", str(tmp_path / "empty")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_mismatch_folder_and_prompt_errors(tiny_llava_dir, mismatch_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    adapter = make_adapter(tiny_llava_dir, plain)
    loaded = adapter.load(adapter.checkpoints()[0])
    with pytest.raises(InputError, match="not a folder written by build-mismatch"):
        adapter.items(loaded)
    with pytest.raises(InputError, match="give --mismatch"):
        make_adapter(tiny_llava_dir, None)
    adapter = make_adapter(tiny_llava_dir, mismatch_dir, prompt="What is this? It is a")
    with pytest.raises(InputError, match="image token '<image>' exactly once"):
        adapter.items(adapter.load(adapter.checkpoints()[0]))
    other = tmp_path / "other.json"  # a mismatch folder made from another annotations file: nothing fits
    src = json.loads(ANNOTATIONS.read_text())
    for im in src["images"]:
        im["file_name"] = "x_" + im["file_name"]
        shutil.copy(BUNDLED_IMAGES / im["file_name"][2:], tmp_path / im["file_name"])
    other.write_text(json.dumps(src))
    adapter = make_adapter(tiny_llava_dir, mismatch_dir, images=tmp_path, annotations=other)
    with pytest.raises(InputError, match="no probe items; all 15 objects were skipped"):
        adapter.items(adapter.load(adapter.checkpoints()[0]))


def test_llava15_geometry_576_image_tokens(tmp_path, mismatch_dir):
    """At LLaVA-1.5's real geometry (336 px, 14 px patches) the processor expands <image> into 576 tokens."""
    from vlground.vision.geometry import Preprocess

    folder = save_tiny_llava(tmp_path / "tiny-336", image_size=336, patch_size=14)
    adapter = make_adapter(folder, mismatch_dir, limit=2)
    loaded = adapter.load(adapter.checkpoints()[0])
    assert adapter.preprocess(loaded) == Preprocess.llava15()
    items = adapter.items(loaded)
    batch = adapter.batch(loaded, items[:2])
    assert (batch.env_span.sum(1) == 576).all()
    obj = items[0].meta["object"]
    first = int(batch.env_span[0].nonzero()[0])
    pm = box_to_patches(obj.bbox, obj.image_size, Preprocess.llava15())
    assert batch.env_mask[0].nonzero()[:, 0].tolist() == (first + torch.as_tensor(pm.indices)).tolist()
    assert torch.isfinite(adapter.target_logprobs(loaded, batch)).all()
