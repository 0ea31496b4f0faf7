"""The four new VLM adapters (paligemma 1 and 2, gemma3, idefics3, internvl) on tiny random models saved
to folders and loaded as users load them: the whole kit passes (model-based geometry included), and
``probe --probes behaviour,boxheads,boxablation`` and ``monitor --task pope`` run end to end. Also the
held-out Qwen2-VL shape of issue 21 (a square grid from flattened-patch ``pixel_values``) through
``check-adapter`` (flags after NAME) and the probe, with the overlay drawn from the layout; and the
hub options (``--revision``, ``--trust-remote-code``) and the fingerprint of a pinned hub id."""
from __future__ import annotations

import importlib
import json

import pytest
from _vlm import ANNOTATIONS, BUNDLED_IMAGES, grey_box_mismatch, vlm_options

from vlground.cli import main
from vlground.engine.registry import get_adapter_class
from vlground.testing import check_adapter

BUILDERS = {
    "paligemma": ("vlground.vision.tiny_gemma:save_tiny_paligemma", {}),
    "paligemma1": ("vlground.vision.tiny_gemma:save_tiny_paligemma", {"version": 1}),
    "gemma3": ("vlground.vision.tiny_gemma:save_tiny_gemma3", {}),
    "idefics3": ("vlground.vision.tiny_idefics3:save_tiny_idefics3", {}),
    "internvl": ("vlground.vision.tiny_internvl:save_tiny_internvl", {}),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("new-vlms")


@pytest.fixture(scope="module")
def mm(root):
    return grey_box_mismatch(root / "mismatched")


@pytest.fixture(scope="module")
def model(root):
    def get(name):
        folder = root / name
        if not folder.exists():
            spec, kw = BUILDERS[name]
            mod, fn = spec.split(":")
            getattr(importlib.import_module(mod), fn)(folder, **kw)
        return folder

    return get


def _adapter_name(name: str) -> str:
    return "paligemma" if name.startswith("paligemma") else name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_kit_passes_each_new_adapter(name, model, mm):
    cls = get_adapter_class(_adapter_name(name))  # through the entry point
    report = check_adapter(cls.from_options(vlm_options(model(name), mm, limit=4)), max_items=4)
    (geo,) = report.geometry
    assert geo.pattern_agreement and min(geo.pattern_agreement.values()) >= 0.95, geo
    assert geo.box_agreement is not None and geo.box_agreement >= 0.9
    for check in ("image tokens", "no leak", "plain processor", "painted boxes", "one forward path", "box-heads"):
        assert any(check in c for c in report.checks), (check, report.checks)
    if name in ("idefics3", "internvl"):
        assert set(geo.pattern_agreement) == {"tiles", "global"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paligemma", "gemma3", "idefics3", "internvl"])
def test_probe_and_monitor_run_on_each_new_adapter(name, model, mm, tmp_path, capsys):
    from vlground.results import load

    folder = model(name)
    out = tmp_path / "probe"
    rc = main(["probe", "--adapter", name, "--model", str(folder), "--images", str(BUNDLED_IMAGES), "--annotations",
               str(ANNOTATIONS), "--mismatch", str(mm), "--probes", "behaviour,boxheads,boxablation", "--device", "cpu",
               "--batch-size", "4", "--ablation-draws", "2", "--limit", "3", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = load(out)
    (rec,) = res.checkpoint_rows()
    assert rec["n_pairs"] == 3 and rec["box_items"] == 3
    assert res.rows("heads") and all(0 <= h["inside_share"] <= 1 for h in res.rows("heads"))
    assert res.rows("ablation")
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"heads": [{"layer": 1, "head": 0}, {"layer": 2, "head": 1}]}))
    out = tmp_path / "pope"
    rc = main(["monitor", "--adapter", name, "--model", str(folder), "--heads", str(heads), "--images", str(BUNDLED_IMAGES),
               "--annotations", str(ANNOTATIONS), "--task", "pope", "--out", str(out), "--device", "cpu",
               "--bootstrap", "20", "--random-draws", "2", "--max-new-tokens", "4"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "monitor.json").read_text())["n_words"] > 0


def test_monitor_decoding_gives_generated_tokens_the_declared_token_type():
    """PaliGemma's generated tokens are answer tokens (token_type_ids 1), Qwen2-VL's are text (0)."""
    import torch

    from vlground.monitor.generate import _step_inputs

    prefill = {"input_ids": torch.zeros((1, 5), dtype=torch.long), "token_type_ids": torch.zeros((1, 5), dtype=torch.long),
               "mm_token_type_ids": torch.ones((1, 5), dtype=torch.long)}
    step = _step_inputs(prefill, 3, 0, torch.ones((1, 6)), {"token_type_ids": 1})
    assert step["token_type_ids"].tolist() == [[1]] and step["mm_token_type_ids"].tolist() == [[0]]


# -- the held-out Qwen2-VL shape ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def square_qwen(root):
    """A tiny Qwen2-VL with 14 px patches (the real size) and an annotations file of the square photo only:
    512x512 -> 112x112 px, a 4x4 grid of merged tokens; its pixel_values are flattened patches [64, 1176]."""
    from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl

    folder = save_tiny_qwen2vl(root / "qwen-square", patch_size=14, max_tokens=16)
    data = json.loads(ANNOTATIONS.read_text())
    data["images"] = [im for im in data["images"] if im["width"] == im["height"]]
    keep = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    ann = root / "square.json"
    ann.write_text(json.dumps(data))
    return folder, ann, grey_box_mismatch(root / "mm-square", annotations=ann)


@pytest.mark.slow
def test_held_out_qwen2vl_shape_runs_check_adapter_and_the_probe(square_qwen, tmp_path, capsys):
    from vlground.results import load

    folder, ann, mm = square_qwen
    common = ["--model", str(folder), "--images", str(BUNDLED_IMAGES), "--annotations", str(ann), "--mismatch", str(mm),
              "--device", "cpu"]
    rc = main(["check-adapter", "qwen2vl", "--max-items", "4", *common, "--limit", "2", "--no-paint"])
    assert rc == 0, capsys.readouterr()
    rc = main(["check-adapter", "qwen2vl", *common, "--limit", "2", "--max-items=2"])  # flags in any order
    text = capsys.readouterr().out
    assert rc == 0 and "passes every check" in text and "model-based geometry (image 1.00" in text, text
    out = tmp_path / "q"
    rc = main(["probe", "--adapter", "qwen2vl", *common, "--probes", "behaviour,boxheads", "--limit", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    res = load(out)
    (rec,) = res.records("boxheads")
    arr = res.arrays(rec["key"])
    assert arr["boxheads.overlay_match"].shape == (4, 4) == arr["boxheads.overlay_match_mask"].shape
    assert arr["boxheads.overlay_match_image"].shape == (112, 112, 3) and arr["boxheads.overlay_match_image"].dtype.name == "uint8"
    assert "box-overlay-" in (out / "report.html").read_text()


def test_check_adapter_refuses_a_bad_max_items(square_qwen, capsys):
    folder, ann, mm = square_qwen
    rc = main(["check-adapter", "qwen2vl", "--model", str(folder), "--max-items", "zero"])
    assert rc != 0 and "--max-items: expected a whole number, got 'zero'" in capsys.readouterr().err


# -- pinned hub models --------------------------------------------------------------------------------
def test_revision_and_trust_remote_code_reach_from_pretrained(mm):
    from vlground.adapters.gemma3 import Gemma3Adapter

    a = Gemma3Adapter.from_options(vlm_options("google/gemma-3-4b-it", mm, revision="0123abc"))
    assert a.load_kwargs()["revision"] == "0123abc" and "trust_remote_code" not in a.load_kwargs()
    (ck,) = a.checkpoints()
    assert ck.revision == "0123abc"
    b = Gemma3Adapter.from_options(vlm_options("google/gemma-3-4b-it", mm, trust_remote_code=True))
    assert b.hub_kwargs() == {"trust_remote_code": True}


def test_a_revision_of_a_local_folder_is_refused(model, mm):
    from vlground.errors import InputError

    a = get_adapter_class("gemma3").from_options(vlm_options(model("gemma3"), mm, revision="main"))
    with pytest.raises(InputError, match="is a local folder, not a hub id"):
        a.checkpoints()


def test_hub_fingerprint_is_the_resolved_commit_of_the_local_snapshot(tmp_path, monkeypatch):
    from vlground.probes.fingerprint import fingerprint

    commit_a, commit_b = "a" * 40, "b" * 40
    repo = tmp_path / "hub" / "models--me--vlm"
    for ref, commit in (("main", commit_a), ("v2", commit_b)):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert fingerprint("me/vlm") == f"hub:me/vlm@{commit_a}"
    assert fingerprint("me/vlm", revision="v2") == f"hub:me/vlm@{commit_b}"
    (repo / "refs" / "main").write_text(commit_b)  # the branch moved: another fingerprint, no stale cache
    assert fingerprint("me/vlm") == f"hub:me/vlm@{commit_b}"
    assert fingerprint("me/other") == "id:me/other"  # not cached, offline: unpinned
    assert fingerprint("me/other", revision="c" * 40) == f"hub:me/other@{'c' * 40}"


@pytest.mark.parametrize("name", ["qwen2vl", "internvl", "llava15"])
def test_revision_reaches_every_processor_from_pretrained(name, monkeypatch, mm):
    """A pinned --revision must reach the processor's parts too (the Qwen2-VL adapter's own
    load_processor dropped it), or the model and its tokenizer can come from different commits."""
    import transformers
    from transformers.models.got_ocr2 import image_processing_pil_got_ocr2 as got
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as q2

    seen = []

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen.append(kwargs)
        raise Stop

    for owner, attr in ((transformers.AutoTokenizer, "from_pretrained"), (transformers.AutoProcessor, "from_pretrained"),
                        (transformers.AutoConfig, "from_pretrained"), (q2.Qwen2VLImageProcessorPil, "from_pretrained"),
                        (got.GotOcr2ImageProcessorPil, "from_pretrained")):
        monkeypatch.setattr(owner, attr, record)
    a = get_adapter_class(name).from_options(vlm_options("me/some-vlm", mm, revision="0123abc"))
    with pytest.raises(Stop):
        a.load_processor("me/some-vlm")
    assert seen and all(kw.get("revision") == "0123abc" for kw in seen), seen
