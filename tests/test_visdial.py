"""The vision testbed: VisDial reader, features once, corpus, training with image features,
the ``visdial_dinov2`` adapter and the probe end to end on synthetic scenes. Tiny random DINOv2
and SD2 pipelines saved to folders and loaded by ``from_pretrained(folder)``; no download."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlground.cli import main
from vlground.corpus.format import Corpus
from vlground.datasets.visdial import category_word, read_visdial, words
from vlground.datasets.visdial_corpus import VisdialCorpusConfig, build_visdial_corpus
from vlground.errors import InputError
from vlground.train import TrainConfig, list_checkpoints, train
from vlground.vision.features import Featurizer, VisionSpec, corpus_images

FIX = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "images"
FAST = {"steps": 8, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 0,
        "checkpoint_dense_until": 4, "val_fraction": 0.1}


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    from vlground.vision.tiny_dinov2 import save_tiny_dinov2

    return save_tiny_dinov2(tmp_path_factory.mktemp("dino") / "tiny-dinov2")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from vlground.datasets.scene_generator import SceneSpec, generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root / "train", SceneSpec(n=48, seed=0))
    generate_scenes(root / "val", SceneSpec(n=4, seed=1), split="val", start_id=1000)
    return root


@pytest.fixture(scope="module")
def scene_corpus(scenes, dino, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpora") / "scenes"
    cfg = VisdialCorpusConfig(visdial=str(scenes / "train" / "visdial.json"), images=str(scenes / "train" / "images"),
                              annotations=str(scenes / "train" / "instances.json"), vision=str(dino), out=str(out),
                              chunk_len=96, progress=False)
    return build_visdial_corpus(cfg)


def _fixture_cfg(dino, out, **kw):
    return VisdialCorpusConfig(visdial=str(FIX / "visdial_mini.json"), images=str(FIX), annotations=str(FIX / "instances.json"),
                               vision=str(dino), out=str(out), chunk_len=128, progress=False, **kw)


# -- reader -----------------------------------------------------------------------------------------
def test_reader_on_the_bundled_visual_dialog_file():
    vd = read_visdial(FIX / "visdial_mini.json")
    assert (vd.version, vd.split) == ("1.0", "val2018")
    assert [d.image_id for d in vd.dialogs] == [1, 2, 3, 4, 5]
    first = vd.dialogs[0]
    assert first.caption[:3] == ("a", "cup", "of")
    assert first.rounds[0].question == ("is", "the", "cup", "full") and first.rounds[0].answer[0] == "yes"
    assert not vd.skipped
    assert words("Is it RED? Yes, it's red.") == ["is", "it", "red", "yes", "it's", "red"]
    assert category_word("cup") == "cup" and category_word("dining table") is None


def test_reader_skips_bad_rounds_and_refuses_a_non_visdial_file(tmp_path):
    data = json.loads((FIX / "visdial_mini.json").read_text())
    data["data"]["dialogs"][0]["dialog"].append({"question": 999, "answer": 0})
    f = tmp_path / "vd.json"
    f.write_text(json.dumps(data))
    vd = read_visdial(f)
    assert len(vd.skipped) == 1 and "dialog 0 (image 1): round 4" in vd.skipped[0]
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(InputError, match="not a Visual Dialog file"):
        read_visdial(tmp_path / "bad.json")


# -- features once ----------------------------------------------------------------------------------
def test_features_computed_once_and_a_second_build_does_not_call_the_vision_model(dino, tmp_path):
    first = Featurizer(VisionSpec(str(dino)))
    build_visdial_corpus(_fixture_cfg(dino, tmp_path / "a"), featurizer=first)
    assert first.calls >= 1
    second = Featurizer(VisionSpec(str(dino)))
    build_visdial_corpus(_fixture_cfg(dino, tmp_path / "b", drop_cooc=0.5), featurizer=second)
    assert second.calls == 0 and second._model is None  # weights never even loaded
    a, b = Corpus.load(tmp_path / "a"), Corpus.load(tmp_path / "b")
    assert a.meta["vision"]["cache"] == b.meta["vision"]["cache"]  # one shared cache beside both
    ia = corpus_images(a)
    assert ia.features.dtype == np.float16 and ia.features.shape[1:] == (65, 64)
    # the cached features are what DINOv2 gives for that image
    from PIL import Image

    with Image.open(FIX / "coffee.png") as im:
        direct = Featurizer(VisionSpec(str(dino)))([im])[0]
    row = ia.rows[0]
    np.testing.assert_array_equal(np.asarray(ia.features[row]), direct)


def test_cache_from_another_vision_model_is_refused(dino, tmp_path):
    build_visdial_corpus(_fixture_cfg(dino, tmp_path / "a", features_cache=str(tmp_path / "cache")))
    with pytest.raises(InputError, match="another vision model or preprocessing") as err:
        build_visdial_corpus(_fixture_cfg(dino, tmp_path / "b", features_cache=str(tmp_path / "cache"),
                                          vision_init="random", vision_seed=3))
    assert "\n" not in str(err.value)


def test_random_init_control_is_seeded_and_recorded(dino, tmp_path):
    a = Featurizer(VisionSpec(str(dino), "random", 3))
    b = Featurizer(VisionSpec(str(dino), "random", 3))
    from PIL import Image

    with Image.open(FIX / "chelsea.png") as im:
        fa, fb = a([im]), b([im])
        fp = Featurizer(VisionSpec(str(dino)))([im])
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fp)
    out = build_visdial_corpus(_fixture_cfg(dino, tmp_path / "r", vision_init="random", vision_seed=3))
    meta = Corpus.load(out).meta
    assert meta["vision_init"] == "random" and meta["vision"]["record"]["seed"] == 3


# -- corpus -----------------------------------------------------------------------------------------
def test_corpus_layout_pairs_and_cooccurrence(dino, tmp_path):
    out = build_visdial_corpus(_fixture_cfg(dino, tmp_path / "c"))
    c = Corpus.load(out)
    ids = np.asarray(c.chunks)
    pos = np.load(out / "image_pos.npy")
    img = c.vocab["<image>"]
    assert ((ids == img) == (pos >= 0)).all()  # every <image> position has a feature and only those
    words_ = [p["word"] for p in c.pairs]
    assert "cup" in words_ and "person" not in words_  # 'person' is never said in the dialogs
    assert any("'person'" in s for s in c.stats["skipped_categories"])
    # the coffee dialog (image 1: cup, spoon, saucer) says cup, spoon and saucer: co-occurring in its chunk
    col = {p["word"]: j for j, p in enumerate(c.pairs)}
    assert c.cooc[0, col["cup"]] and c.cooc[0, col["spoon"]] and not c.cooc[0, col["cat"]]
    assert c.cumulative_cooc(np.arange(c.n_chunks), c.n_chunks).sum() == c.cooc.sum()


def test_bad_input_is_listed_and_the_rest_continues(dino, tmp_path):
    data = json.loads((FIX / "visdial_mini.json").read_text())
    data["data"]["dialogs"].append({"image_id": 77, "caption": "a ghost", "dialog": []})
    vd = tmp_path / "vd.json"
    vd.write_text(json.dumps(data))
    coco = json.loads((FIX / "instances.json").read_text())
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 5]  # chelsea: no boxes
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    out = build_visdial_corpus(VisdialCorpusConfig(visdial=str(vd), images=str(FIX), annotations=str(ann), vision=str(dino),
                                                   out=str(tmp_path / "c"), chunk_len=128, progress=False))
    st = Corpus.load(out).stats
    assert st["dialogs"] == 5 and st["dialogs_skipped"] == 1
    assert any("dialog 5 (image 77)" in s for s in st["skipped"])
    assert any("image 5 (chelsea.png): no boxes" in s for s in st["skipped"])


def test_cli_build_corpus_visdial(dino, tmp_path, capsys):
    rc = main(["build-corpus", "--visdial", str(FIX / "visdial_mini.json"), "--images", str(FIX), "--annotations",
               str(FIX / "instances.json"), "--vision", str(dino), "--out", str(tmp_path / "c"), "--chunk-len", "128",
               "--no-progress"])
    assert rc in (0, None)
    assert "5 dialogs (0 skipped)" in capsys.readouterr().out
    rc = main(["build-corpus", "--visdial", str(FIX / "visdial_mini.json"), "--out", str(tmp_path / "d")])
    assert rc != 0 and "--images" in capsys.readouterr().err


# -- box -> patches ---------------------------------------------------------------------------------
def test_box_mapping_is_the_shared_one_on_the_recorded_preprocessing(dino):
    from vlground.adapters import hf_vlm, visdial_dinov2
    from vlground.vision.geometry import Preprocess, box_to_patches

    fz = Featurizer(VisionSpec(str(dino)))
    assert fz.preprocess == Preprocess.from_pretrained(str(dino))  # same reading of the processor as LLaVA's
    assert fz.grid == (8, 8) and fz.n_prefix == 1 and fz.n_tokens == 65
    # both adapters call the one shared mapping (box_to_patches and box_to_tokens share grid_mask)
    assert "box_to_patches(ann.bbox" in Path(visdial_dinov2.__file__).read_text()
    assert "box_to_tokens(layout, ann.bbox" in Path(hf_vlm.__file__).read_text()
    pm = box_to_patches((172, 15, 240, 290), (600, 400), fz.preprocess)
    assert pm.problem is None and 0 < len(pm.indices) < 64


# -- training ---------------------------------------------------------------------------------------
def test_training_with_image_features_runs_and_resumes_bitwise(scene_corpus, tmp_path):
    whole = train(TrainConfig(corpus=str(scene_corpus), out=str(tmp_path / "whole"), size="tiny", progress=False, overrides=FAST))
    spec = json.loads((whole / "run.json").read_text())
    assert spec["model"]["n_embd"] == 64  # the feature width
    log = [json.loads(x) for x in (whole / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    killed = TrainConfig(corpus=str(scene_corpus), out=str(tmp_path / "resumed"), size="tiny", progress=False,
                         overrides=FAST, stop_after=6)
    train(killed)
    train(TrainConfig(corpus=str(scene_corpus), out=str(tmp_path / "resumed"), size="tiny", progress=False,
                      overrides=FAST, resume=True))
    a = load_file(str(list_checkpoints(whole)[-1][1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(tmp_path / "resumed")[-1][1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_image_positions_take_the_features_not_the_token_embedding(scene_corpus):
    from vlground.train.data import embed_inputs, make_batch
    from vlground.train.models import build_model

    c = Corpus.load(scene_corpus)
    images = corpus_images(c)
    batch = make_batch(c.chunks, np.array([0, 1]), c.pad_id, images)
    assert (batch["labels"][batch["image_mask"]] == -100).all()
    torch.manual_seed(0)
    model = build_model("transformer", {"n_layer": 1, "n_embd": 64, "n_head": 4}, len(c.vocab))
    kw = embed_inputs(model, batch)
    emb = kw["inputs_embeds"]
    pos = np.asarray(images.positions[0])
    k = int(np.flatnonzero(pos >= 0)[3])
    np.testing.assert_allclose(emb[0, k].detach().numpy(), images.gather(pos[k:k + 1])[0])
    t = int(np.flatnonzero(pos < 0)[-1])
    assert torch.equal(emb[0, t], model.get_input_embeddings().weight[batch["input_ids"][0, t]])


# -- adapter and probe end to end --------------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_setup(scenes, scene_corpus, tmp_path_factory):
    from vlground.datasets.mismatch import MismatchConfig, build_mismatch
    from vlground.vision.tiny import save_tiny_inpaint_pipeline

    root = tmp_path_factory.mktemp("probe")
    run = train(TrainConfig(corpus=str(scene_corpus), out=str(root / "run"), size="tiny", progress=False,
                            overrides={**FAST, "steps": 4}))
    sd = save_tiny_inpaint_pipeline(root / "sd")
    build_mismatch(MismatchConfig(annotations=scenes / "val" / "instances.json", images=scenes / "val" / "images",
                                  out=root / "mm", model=str(sd), remove=True, steps=2, resolution=32, guidance_scale=1.0,
                                  progress=False))
    return {"run": run, "mm": root / "mm", "images": scenes / "val" / "images", "ann": scenes / "val" / "instances.json",
            "root": root}


def _adapter(s, **kw):
    from vlground.adapters.visdial_dinov2 import VisdialDinov2Adapter

    return VisdialDinov2Adapter.from_options({"runs": [str(s["run"])], "images": s["images"], "annotations": s["ann"],
                                              "mismatch": s["mm"], "device": "cpu", **kw})


def test_adapter_conformance(probe_setup):
    from vlground.engine.adapter import Capability
    from vlground.testing import check_adapter

    adapter = _adapter(probe_setup)
    check_adapter(adapter)
    loaded = adapter.load(adapter.checkpoints()[-1])
    caps = adapter.capabilities(loaded)
    assert {Capability.ATTENTION, Capability.HIDDEN_STATES, Capability.COOCCURRENCE} <= caps
    assert adapter.checkpoints()[0].run.startswith("dinov2:")
    items = adapter.items(loaded)
    b = adapter.batch(loaded, items[:2])
    # env_mask inside env_span (patches only), span = the 64 patches after CLS
    assert (b.env_mask <= b.env_span).all() and int(b.env_span[0].sum()) == 64 and not b.env_span[0, 1]
    # pairs differ only in the image features
    assert not torch.equal(b.model_inputs["image_features"][0], b.model_inputs["image_features"][1])
    assert torch.equal(b.model_inputs["input_ids"][0], b.model_inputs["input_ids"][1])


def test_probe_end_to_end_on_synthetic_scenes(probe_setup, tmp_path):
    s = probe_setup
    out = tmp_path / "report"
    rc = main(["probe", "--adapter", "visdial_dinov2", "--run", str(s["run"]), "--images", str(s["images"]),
               "--annotations", str(s["ann"]), "--mismatch", str(s["mm"]), "--out", str(out), "--device", "cpu",
               "--probes", "behaviour,boxheads,boxablation,lens", "--mechanistic-checkpoints", "last", "--ablation-draws", "2"])
    assert rc in (0, None)
    from vlground.results import load

    res = load(out)
    last = res.checkpoint_rows()[-1]
    for k in ("match_surprisal", "mismatch_surprisal", "info_gain", "word_p_value", "r2_cooc"):
        assert k in last
    assert res.rows("heads") and res.rows("ablation") and res.rows("lens")
    assert {r["kind"] for r in res.rows("heads")} <= {"none", "aggregate@0.7", "aggregate@0.9"}
    assert (out / "report.html").is_file()
    assert list(s["mm"].glob("features-*/features.npy"))  # probe images featurised once, beside the mismatches


def test_mismatch_folder_of_other_images_is_refused(probe_setup, scenes, tmp_path):
    s = probe_setup
    coco = json.loads(s["ann"].read_text())
    for im in coco["images"]:
        im["file_name"] = "other-" + im["file_name"]
        shutil.copy(s["images"] / im["file_name"][6:], tmp_path / im["file_name"])
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    adapter = _adapter(s, annotations=ann, images=tmp_path)
    loaded = adapter.load(adapter.checkpoints()[-1])
    with pytest.raises(InputError, match="no probe items"):
        adapter.items(loaded)
    assert any("was made from" in n for n in adapter.skipped())


def test_adapter_needs_an_image_corpus(tmp_path):
    from _corpus import write_tiny_corpus

    c = write_tiny_corpus(tmp_path / "text")
    run = train(TrainConfig(corpus=str(c), out=str(tmp_path / "run"), size="tiny", progress=False, overrides={**FAST, "steps": 1}))
    adapter = _adapter({"run": run, "images": FIX, "ann": FIX / "instances.json", "mm": tmp_path})
    with pytest.raises(InputError, match="text corpus"):
        adapter.checkpoints()
