"""The monitor's plumbing on tiny random models: hooks removed, one forward pass per generated token,
captured rows equal the model's own attention, scores in range, ``vlground monitor`` end to end on a
tiny LLaVA (POPE with and without yes/no words, CHAIR, mitigation) and on a tiny trained testbed run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlground.cli import main
from vlground.mechanism.errors import MechanismError
from vlground.monitor.generate import Mitigation, decode, forward
from vlground.monitor.score import capture_attention

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "datasets" / "fixtures" / "images"
ANNOTATIONS = IMAGES / "instances.json"


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    """A tiny LLaVA whose vocabulary also holds POPE's words (Is, there, Yes, No ...)."""
    from vlground.vision.tiny_llava import tiny_llava_parts

    model, processor = tiny_llava_parts(seed=0)
    processor.tokenizer.add_tokens(["Is", "there", "Yes", "No", "yes", "no", "Describe", "the"])
    model.resize_token_embeddings(len(processor.tokenizer))
    folder = tmp_path_factory.mktemp("models") / "tiny-llava-yn"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def plain_llava_dir(tmp_path_factory) -> Path:
    from vlground.vision.tiny_llava import save_tiny_llava

    return save_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


@pytest.fixture(scope="module")
def loaded(llava_dir):
    from vlground.adapters.llava15 import Llava15Adapter
    from vlground.monitor.backends import backend_for

    adapter = Llava15Adapter.from_options({"model": str(llava_dir), "images": IMAGES, "annotations": ANNOTATIONS,
                                           "mismatch": IMAGES, "device": "cpu"})
    lm = adapter.load(adapter.checkpoints()[0])
    return adapter, lm, backend_for(adapter, lm)


def _heads_file(tmp_path, heads=((1, 0), (2, 3))) -> Path:
    f = tmp_path / "heads.json"
    f.write_text(json.dumps({"numbering": "1-based", "heads": [{"layer": a, "head": b + 1} for a, b in heads]}))  # (layer, head index)
    return f


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_removes_its_hooks_also_when_the_block_raises(loaded):
    from vlground.monitor import rows as R

    adapter, lm, b = loaded
    sites = adapter.attention_site(lm)
    before, impl = _hook_count(lm.model), lm.model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(lm.model, sites, kernel="eager"):
            assert _hook_count(lm.model) == before + len(sites.layers)
            raise RuntimeError("boom")
    assert _hook_count(lm.model) == before
    with pytest.raises(RuntimeError, match="boom"):  # the default: sdpa kept, rows computed by the registered kernel
        with capture_attention(lm.model, sites):
            assert lm.model.config._attn_implementation == R.IMPLEMENTATION and len(R._WATCHED) == len(sites.layers)
            assert _hook_count(lm.model) == before
            raise RuntimeError("boom")
    assert lm.model.config._attn_implementation == impl and len(R._WATCHED) == 0


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_captured_rows_are_the_models_attention_at_the_predicting_position(loaded, kernel):
    adapter, lm, b = loaded
    enc = b.encode(str(IMAGES / "chelsea.png"), b.prompt("Describe the image."))
    assert lm.model.config._attn_implementation == "eager"  # checkpoints load eager: the reference
    ref = forward(adapter, lm, enc.inputs, output_attentions=True)
    with capture_attention(lm.model, adapter.attention_site(lm), kernel=kernel) as rec:
        out = forward(adapter, lm, enc.inputs, output_attentions=kernel == "eager")
        rows = rec.pop()  # [1, L, H, S]
    want = torch.stack([a[0, :, -1, :] for a in ref.attentions])  # [L, H, S]
    torch.testing.assert_close(rows[0], want.float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    assert rows.shape[1:] == (2, 8, enc.inputs["input_ids"].shape[1])
    assert int(enc.image.sum()) == 36  # 6x6 patches of the tiny LLaVA


def test_sdpa_capture_of_the_monitored_layers_scores_as_the_all_eager_path(loaded):
    """The monitor with sdpa in every layer and rows only where a chosen head sits gives the tokens,
    rows and grounding scores of the all-eager path (every layer's weights, forward hooks)."""
    from vlground.monitor.score import grounding, monitored_layers

    adapter, lm, b = loaded
    sites = adapter.attention_site(lm)
    heads = torch.zeros(2, 8, dtype=torch.bool)
    heads[1, 3] = heads[1, 6] = True
    assert monitored_layers(sites, heads) == (sites.layers[1],)
    for image in ("coffee.png", "chelsea.png"):
        enc = b.encode(str(IMAGES / image), b.prompt("Describe the image."))
        with capture_attention(lm.model, sites, kernel="eager") as rec:
            eager = decode(adapter, lm, enc.inputs, max_new_tokens=6, recorder=rec, image=enc.image, heads=heads)
        with capture_attention(lm.model, sites, layers=monitored_layers(sites, heads)) as rec:
            fast = decode(adapter, lm, enc.inputs, max_new_tokens=6, recorder=rec, image=enc.image, heads=heads)
        assert [s.token for s in fast] == [s.token for s in eager] and len(fast) == 6
        for f, e in zip(fast, eager):
            assert f.rows.shape[0] == 1 and e.rows.shape[0] == 2  # only the monitored layer was captured
            torch.testing.assert_close(f.rows, e.rows[1:], atol=1e-6, rtol=1e-5)
            assert f.score == pytest.approx(e.score, abs=1e-6)
            assert f.score == pytest.approx(float(grounding(e.rows[None], enc.image, heads).score[0]), abs=1e-6)
            assert f.logprob == pytest.approx(e.logprob, abs=1e-5)
    assert lm.model.config._attn_implementation == "eager"  # restored


def test_monitored_decoding_is_plain_decoding_with_one_forward_per_token(loaded):
    adapter, lm, b = loaded
    sites = adapter.attention_site(lm)
    enc = b.encode(str(IMAGES / "coffee.png"), b.prompt("Describe the image."))
    plain = decode(adapter, lm, enc.inputs, max_new_tokens=6)
    calls = []
    h = lm.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        heads = torch.zeros(2, 8, dtype=torch.bool)
        heads[1, 3] = True
        with capture_attention(lm.model, sites) as rec:
            steps = decode(adapter, lm, enc.inputs, max_new_tokens=6, recorder=rec, image=enc.image, heads=heads)
    finally:
        h.remove()
    assert [s.token for s in steps] == [s.token for s in plain]
    assert len(calls) == len(steps)  # the score costs no second pass
    assert all(0 <= s.score <= 1 for s in steps)
    assert [s.rows.shape[-1] for s in steps] == [enc.inputs["input_ids"].shape[1] + i for i in range(len(steps))]
    with pytest.raises(MechanismError, match="mitigation"):
        decode(adapter, lm, enc.inputs, max_new_tokens=1, mitigation=Mitigation(0.5, 1.0, torch.tensor([1])))


def test_mitigation_lowers_object_words_only_below_the_threshold(loaded):
    adapter, lm, b = loaded
    sites = adapter.attention_site(lm)
    enc = b.encode(str(IMAGES / "coffee.png"), b.prompt("Describe the image."))
    heads = torch.ones(2, 8, dtype=torch.bool)
    with capture_attention(lm.model, sites) as rec:
        first = decode(adapter, lm, enc.inputs, max_new_tokens=1, recorder=rec, image=enc.image, heads=heads)[0]
    token = torch.tensor([first.token])
    for threshold, expect in ((0.0, first.token), (1.01, None)):
        with capture_attention(lm.model, sites) as rec:
            s = decode(adapter, lm, enc.inputs, max_new_tokens=1, recorder=rec, image=enc.image, heads=heads,
                       mitigation=Mitigation(threshold, 1e4, token))[0]
        assert s.penalised == (threshold > first.score)
        assert (s.token == first.token) == (expect is not None)
        assert s.logprob == pytest.approx(first.logprob if expect else float(first.logprobs[s.token]))


def _read(out: Path) -> dict:
    return json.loads((out / "monitor.json").read_text())


def _check(res: dict, out: Path):
    assert res["n_words"] > 0 and (out / "report.html").is_file() and (out / "words.csv").is_file()
    names = [r["detector"] for r in res["evaluation"]]
    assert names[0] == "grounding score (identified heads)" and "word probability" in names and "predictive entropy" in names
    assert any("random heads" in n for n in names) and any("all heads" in n for n in names)
    for r in res["evaluation"]:
        assert r["auroc"] is None or 0 <= r["auroc"] <= 1
    import csv

    with (out / "words.csv").open(newline="") as f:
        words = list(csv.DictReader(f))
    assert len(words) == res["n_words"]
    assert all(0 <= float(w["score"]) <= 1 and 0 <= float(w["share"]) <= 1 and 0 < float(w["prob"]) <= 1 for w in words)
    assert json.loads((out / "heads.json").read_text())["layers"] == "1-based"


@pytest.mark.slow
def test_cli_pope_yes_no_and_chair_on_a_tiny_llava(llava_dir, tmp_path, capsys):
    heads = _heads_file(tmp_path)
    out = tmp_path / "pope"
    rc = main(["monitor", "--adapter", "llava15", "--model", str(llava_dir), "--heads", str(heads), "--images", str(IMAGES),
               "--annotations", str(ANNOTATIONS), "--task", "pope", "--pope-strategy", "adversarial", "--out", str(out),
               "--device", "cpu", "--bootstrap", "50", "--random-draws", "3", "--mitigate"])
    assert rc == 0
    res = _read(out)
    _check(res, out)
    # POPE: 15 annotations on 5 images, at most 3 present + 3 absent per image; the answer is the word
    assert {w for w in (l.split(",")[4] for l in (out / "words.csv").read_text().splitlines()[1:])} <= {"yes", "no"}
    n_present = sum(min(3, len(set(c))) for c in _cats_per_image().values())
    assert res["n_words"] == res["outcome"]["answers"] <= 2 * n_present
    assert res["mitigation"]["threshold_rule"].startswith("25th percentile") and "accuracy" in res["mitigation"]["after"]
    out = tmp_path / "chair"
    rc = main(["monitor", "--adapter", "llava15", "--model", str(llava_dir), "--heads", str(heads), "--images", str(IMAGES),
               "--annotations", str(ANNOTATIONS), "--task", "chair", "--max-new-tokens", "24", "--out", str(out),
               "--device", "cpu", "--bootstrap", "50", "--random-draws", "3"])
    assert rc == 0
    res = _read(out)
    if res["n_words"]:
        _check(res, out)
        assert "chair_i" in res["outcome"] and res["outcome"]["captions"] == 5
    assert "monitor" in (out / "report.html").read_text()


def _cats_per_image() -> dict:
    data = json.loads(ANNOTATIONS.read_text())
    out: dict = {}
    for a in data["annotations"]:
        out.setdefault(a["image_id"], []).append(a["category_id"])
    return out


def test_cli_pope_by_naming_when_the_vocabulary_has_no_yes(plain_llava_dir, tmp_path):
    out = tmp_path / "pope"
    rc = main(["monitor", "--adapter", "llava15", "--model", str(plain_llava_dir), "--heads", str(_heads_file(tmp_path)),
               "--images", str(IMAGES), "--annotations", str(ANNOTATIONS), "--task", "pope", "--out", str(out),
               "--device", "cpu", "--bootstrap", "20", "--random-draws", "2"])
    assert rc == 0
    res = _read(out)
    _check(res, out)
    assert res["n_hallucinated"] >= 1  # it cannot name everything present: some "no" to present objects


def test_cli_refuses_heads_outside_the_model(plain_llava_dir, tmp_path, capsys):
    rc = main(["monitor", "--adapter", "llava15", "--model", str(plain_llava_dir), "--heads", str(_heads_file(tmp_path, ((9, 0),))),
               "--images", str(IMAGES), "--annotations", str(ANNOTATIONS), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 2 and "not in this model" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_a_tiny_trained_testbed_run(tmp_path_factory):
    """Scenes -> tiny DINOv2 -> corpus -> 4 training steps -> inpainted mismatches -> monitor (pope, chair, testbed)."""
    from vlground.datasets.mismatch import MismatchConfig, build_mismatch
    from vlground.datasets.scene_generator import SceneSpec, generate_scenes
    from vlground.datasets.visdial_corpus import VisdialCorpusConfig, build_visdial_corpus
    from vlground.train import TrainConfig, train
    from vlground.vision.tiny import save_tiny_inpaint_pipeline
    from vlground.vision.tiny_dinov2 import save_tiny_dinov2

    root = tmp_path_factory.mktemp("testbed")
    generate_scenes(root / "train", SceneSpec(n=32, seed=0))
    generate_scenes(root / "val", SceneSpec(n=5, seed=1), split="val", start_id=1000)
    dino = save_tiny_dinov2(root / "dino")
    corpus = build_visdial_corpus(VisdialCorpusConfig(
        visdial=str(root / "train" / "visdial.json"), images=str(root / "train" / "images"),
        annotations=str(root / "train" / "instances.json"), vision=str(dino), out=str(root / "corpus"), chunk_len=96, progress=False))
    run = train(TrainConfig(corpus=str(corpus), out=str(root / "run"), size="tiny", progress=False,
                            overrides={"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 0,
                                       "checkpoint_dense_until": 0, "val_fraction": 0.1}))
    build_mismatch(MismatchConfig(annotations=root / "val" / "instances.json", images=root / "val" / "images", out=root / "mm",
                                  model=str(save_tiny_inpaint_pipeline(root / "sd")), remove=True, steps=2, resolution=32,
                                  guidance_scale=1.0, progress=False))
    heads = _heads_file(root, ((2, 1),))
    base = ["monitor", "--adapter", "visdial_dinov2", "--run", str(run), "--heads", str(heads), "--images", str(root / "val" / "images"),
            "--annotations", str(root / "val" / "instances.json"), "--mismatch", str(root / "mm"), "--device", "cpu",
            "--bootstrap", "20", "--random-draws", "2"]
    for task in ("pope", "chair", "testbed"):
        out = root / task
        assert main([*base, "--task", task, "--out", str(out), "--mitigate", "--threshold", "0.2", "--max-new-tokens", "8"]) == 0
        res = _read(out)
        assert res["checkpoint"]["step"] == 4 and "after" in res["mitigation"]
        if res["n_words"]:
            _check(res, out)
        else:
            assert any("no labelled words" in n for n in res["notes"])


@pytest.mark.parametrize("family", ["llava15", "qwen2vl", "llava_next"])
def test_cached_decoding_matches_a_full_forward(family, plain_llava_dir, tmp_path):
    """Each decoding step (cache, continued positions, M-RoPE for Qwen2-VL) gives the logits a full forward of
    prompt + generated tokens gives, through the adapter's own model inputs; the score reads every image token."""
    from vlground.engine.registry import get_adapter_class
    from vlground.monitor.backends import backend_for

    if family == "qwen2vl":
        from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl

        model = save_tiny_qwen2vl(tmp_path / "qwen")
    elif family == "llava_next":
        from vlground.vision.tiny_llava_next import save_tiny_llava_next

        model = save_tiny_llava_next(tmp_path / "next")
    else:
        model = plain_llava_dir
    adapter = get_adapter_class(family).from_options({"model": str(model), "images": IMAGES, "annotations": ANNOTATIONS,
                                                     "mismatch": IMAGES, "device": "cpu"})
    lm = adapter.load(adapter.checkpoints()[0])
    b = backend_for(adapter, lm)
    enc = b.encode(str(IMAGES / "rocket.jpg"), b.prompt("Describe the image."))
    steps = decode(adapter, lm, enc.inputs, max_new_tokens=4)
    full = dict(enc.inputs)
    new = torch.tensor([[s.token for s in steps[:-1]]], dtype=torch.long)
    full["input_ids"] = torch.cat([full["input_ids"], new], 1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros_like(new)], 1)
    with torch.no_grad():
        logp = torch.log_softmax(forward(adapter, lm, full).logits[0].float(), -1)
    S = enc.inputs["input_ids"].shape[1]
    assert int(enc.image.sum()) == len(adapter.image_positions(lm, enc.inputs["input_ids"][0])) > 1
    for t, s in enumerate(steps):
        assert s.logprob == pytest.approx(float(logp[S - 1 + t, s.token]), abs=1e-4)
