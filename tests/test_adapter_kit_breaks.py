"""The kit fails the breaks of issue 21 with a message naming the cause, in at least two families each,
and passes the shipped adapters. Each break is a short subclass of a shipped adapter; the kit's checks
read the model (vision attention zeroed, the plain processor output, changed later sub-tokens), never
the adapter's own layout, so none of them can cancel out.

| break | families |
|---|---|
| layout one row off | Qwen2-VL, PaliGemma 2, Gemma 3 |
| tiles in another order | LLaVA-NeXT, Idefics3 (read row-major across the canvas) |
| global view left out / misplaced | LLaVA-NeXT, Idefics3 (assumed first) |
| token_type_ids dropped from both paths | PaliGemma 2, Gemma 3 |
| token types padded with 0 for the target's later sub-tokens | PaliGemma 1, PaliGemma 2 |
| zero image projection | Gemma 3, LLaVA-1.5 |
| image_token_id of the processor (start-of-image) | Gemma 3 |
| a ValueError in a hook | Qwen2-VL (one line naming the hook, CLI) |

"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from _vlm import grey_box_mismatch, vlm_options

from vlground.adapters.gemma3 import Gemma3Adapter
from vlground.adapters.hf_vlm import AdapterHookError, HFVisionLanguageAdapter
from vlground.adapters.idefics3 import Idefics3Adapter
from vlground.adapters.llava15 import Llava15Adapter
from vlground.adapters.llava_next import LlavaNextAdapter
from vlground.adapters.paligemma import PaliGemmaAdapter
from vlground.adapters.qwen2vl import Qwen2VLAdapter
from vlground.kit.geometry import check_model_geometry
from vlground.kit.inputs import check_image_matters, check_image_tokens, check_no_leak, check_plain_processor
from vlground.testing import check_adapter


# -- breaks of the layout ----------------------------------------------------------------------------
def row_off(layout, view: int = 0):
    """Every cell of one view read one row later than it is (positions wrap, so the count still fits)."""
    g = layout.grids[view]
    n = len(g.positions)
    moved = dataclasses.replace(g, positions=tuple(g.positions[(k + g.cols) % n] for k in range(n)))
    return dataclasses.replace(layout, grids=tuple(moved if i == view else x for i, x in enumerate(layout.grids)))


def tiles_swapped(layout):
    """LLaVA-NeXT's stitched crops read with the left and right crops swapped."""
    g = next(x for x in layout.grids if x.name == "tiles")
    half = g.cols // 2
    pos = tuple(g.positions[r * g.cols + (c + half) % g.cols] for r in range(g.rows) for c in range(g.cols))
    return dataclasses.replace(layout, grids=tuple(dataclasses.replace(x, positions=pos) if x is g else x for x in layout.grids))


def base_left_out(layout):
    return dataclasses.replace(layout, grids=tuple(g for g in layout.grids if g.name != "base"))


def base_last(layout):
    """The base view assumed after the tiles (it comes first): every position relabelled accordingly."""
    base = next(g for g in layout.grids if g.name == "base")
    P = [int(p) for p in layout.positions]
    nb = len(base.positions)
    index = {p: i for i, p in enumerate(P)}
    f = {p: (P[len(P) - nb + i] if i < nb else P[i - nb]) for p, i in index.items()}
    grids = tuple(dataclasses.replace(g, positions=tuple(f[p] for p in g.positions)) for g in layout.grids)
    return dataclasses.replace(layout, grids=grids, separators=tuple(f[p] for p in layout.separators))


def canvas_row_major(layout):
    """Idefics3's tiles read row-major across the canvas (they come tile by tile)."""
    g = next(x for x in layout.grids if x.name == "tiles")
    return dataclasses.replace(layout, grids=tuple(dataclasses.replace(x, positions=tuple(sorted(x.positions))) if x is g
                                                   else x for x in layout.grids))


def global_first(layout):
    """Idefics3's global view assumed before the tiles (it comes after them)."""
    glob = next(g for g in layout.grids if g.name == "global")
    P = [int(p) for p in layout.positions]
    ng = len(glob.positions)
    at = {p: i for i, p in enumerate(P)}
    f = {p: (P[i - (len(P) - ng)] if i >= len(P) - ng else P[i + ng]) for p, i in at.items()}
    return dataclasses.replace(layout, grids=tuple(dataclasses.replace(g, positions=tuple(f[p] for p in g.positions))
                                                   for g in layout.grids))


def global_left_out(layout):
    return dataclasses.replace(layout, grids=tuple(g for g in layout.grids if g.name != "global"))


def broken(cls, layout_fn=None, **attrs):
    """A subclass of ``cls`` whose ``image_layout`` is passed through ``layout_fn``."""
    body = dict(attrs)
    if layout_fn is not None:
        body["image_layout"] = lambda self, loaded, enc, size: layout_fn(cls.image_layout(self, loaded, enc, size))
    return type(f"{cls.__name__}Broken", (cls,), body)


class DropTypes:
    """token_type_ids dropped from the processor output, so from both the scoring and the saliency pass."""

    def encode(self, loaded, image_file):
        return {k: v for k, v in super().encode(loaded, image_file).items() if k != "token_type_ids"}


# -- fixtures: tiny models, built once ---------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("breaks")


@pytest.fixture(scope="module")
def mm(root):
    return grey_box_mismatch(root / "mismatched")


def _folder(root, name, build):
    folder = root / name
    return folder if folder.exists() else build(folder)


def _load(cls, folder, mm, **extra):
    adapter = cls.from_options(vlm_options(folder, mm, **{"limit": 2, **extra}))
    loaded = adapter.load(adapter.checkpoints()[0])
    items = adapter.items(loaded)
    return adapter, loaded, items


FAMILIES = {
    "qwen2vl": (Qwen2VLAdapter, "vlground.vision.tiny_qwen2vl:save_tiny_qwen2vl", {}),
    "paligemma2": (PaliGemmaAdapter, "vlground.vision.tiny_gemma:save_tiny_paligemma", {}),
    "paligemma1": (PaliGemmaAdapter, "vlground.vision.tiny_gemma:save_tiny_paligemma", {"version": 1}),
    "gemma3": (Gemma3Adapter, "vlground.vision.tiny_gemma:save_tiny_gemma3", {}),
    "llava_next": (LlavaNextAdapter, "vlground.vision.tiny_llava_next:save_tiny_llava_next", {}),
    "llava15": (Llava15Adapter, "vlground.vision.tiny_llava:save_tiny_llava", {}),
    "idefics3": (Idefics3Adapter, "vlground.vision.tiny_idefics3:save_tiny_idefics3", {}),
}


@pytest.fixture(scope="module")
def family(root):
    import importlib

    def get(name):
        _, spec, kw = FAMILIES[name]
        mod, fn = spec.split(":")
        return _folder(root, name, lambda f: getattr(importlib.import_module(mod), fn)(f, **kw))

    return get


def _match(items):
    return [it for it in items if it.condition == "match"]


# -- geometry --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2vl", "paligemma2", "gemma3"])
def test_layout_one_row_off_fails_the_model_geometry(name, family, mm):
    cls = FAMILIES[name][0]
    adapter, loaded, items = _load(cls, family(name), mm)
    good = check_model_geometry(adapter, loaded, _match(items))
    assert min(good.pattern_agreement.values()) >= 0.95
    bad, loaded, items = _load(broken(cls, row_off), family(name), mm)
    with pytest.raises(AssertionError, match=r"view 'image': with the vision attention zeroed.*agreement 0\.\d\d.*"
                                             r"agrees \(1\.00\) with a layout whose every cell sits one row earlier.*fix image_layout"):
        check_model_geometry(bad, loaded, _match(items))


@pytest.mark.slow
def test_llava_next_tiles_and_base_view_breaks_fail(family, mm):
    folder = family("llava_next")
    adapter, loaded, items = _load(LlavaNextAdapter, folder, mm)
    good = check_model_geometry(adapter, loaded, _match(items))
    assert set(good.pattern_agreement) == {"base", "tiles"} and min(good.pattern_agreement.values()) >= 0.95
    bad, loaded, items = _load(broken(LlavaNextAdapter, tiles_swapped), folder, mm)
    with pytest.raises(AssertionError, match=r"view 'tiles': .*agreement 0\.[0-8]\d.*tiles in another order"):
        check_model_geometry(bad, loaded, _match(items))
    bad, loaded, items = _load(broken(LlavaNextAdapter, base_last), folder, mm)
    with pytest.raises(AssertionError, match=r"lie outside every view of image_layout .*which the layout calls a separator.*"
                                             r"missing from the layout or misplaced"):
        check_model_geometry(bad, loaded, _match(items))
    bad, loaded, items = _load(broken(LlavaNextAdapter, base_left_out), folder, mm)
    with pytest.raises(AssertionError, match=r"input_ids hold \d+ image tokens .* but image_layout has \d+; \d+ image tokens in no view"):
        check_image_tokens(bad, loaded, items[0])
    with pytest.raises(AssertionError, match=r"depend on the image lie outside every view of image_layout.*a view is missing"):
        check_model_geometry(bad, loaded, _match(items))


@pytest.mark.slow
def test_idefics3_tile_order_and_global_view_breaks_fail(family, mm):
    folder = family("idefics3")
    adapter, loaded, items = _load(Idefics3Adapter, folder, mm)
    good = check_model_geometry(adapter, loaded, _match(items))
    assert set(good.pattern_agreement) == {"tiles", "global"} and min(good.pattern_agreement.values()) >= 0.95
    bad, loaded, items = _load(broken(Idefics3Adapter, canvas_row_major), folder, mm)
    with pytest.raises(AssertionError, match=r"view 'tiles': .*agreement 0\.[0-8]\d.*tiles in another order"):
        check_model_geometry(bad, loaded, _match(items))
    bad, loaded, items = _load(broken(Idefics3Adapter, global_first), folder, mm)
    with pytest.raises(AssertionError, match=r"view '(tiles|global)': .*agreement 0\.[0-8]\d.*a view misplaced"):
        check_model_geometry(bad, loaded, _match(items))
    bad, loaded, items = _load(broken(Idefics3Adapter, global_left_out), folder, mm)
    with pytest.raises(AssertionError, match=r"input_ids hold 80 image tokens .* but image_layout has 64; 16 image tokens in no view"):
        check_image_tokens(bad, loaded, items[0])


# -- inputs dropped from both paths, prefix-LM leak ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["paligemma2", "gemma3"])
def test_token_type_ids_dropped_from_both_paths_fail(name, family, mm):
    cls = FAMILIES[name][0]
    adapter, loaded, items = _load(cls, family(name), mm)
    assert check_plain_processor(adapter, loaded, items[0])["max_diff"] <= 1e-4
    bad, loaded, items = _load(type("NoTypes", (DropTypes, cls), {}), family(name), mm)
    with pytest.raises(AssertionError, match=r"other log-probabilities .* than the model run on the plain processor output "
                                             r".*the processor gives \['token_type_ids'\] that the scoring pass does not"):
        check_plain_processor(bad, loaded, items[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paligemma1", "paligemma2"])
def test_token_types_padded_with_0_for_later_sub_tokens_leak(name, family, mm):
    adapter, loaded, items = _load(PaliGemmaAdapter, family(name), mm)
    assert check_no_leak(adapter, loaded, items[0])
    bad, loaded, items = _load(broken(PaliGemmaAdapter, token_inputs={"token_type_ids": 0}), family(name), mm)
    with pytest.raises(AssertionError, match=r"change .* when the target's later sub-tokens .* change: the prediction sees "
                                             r"the answer \(prefix-LM leak; check the fill value of \['token_type_ids'\]"):
        check_no_leak(bad, loaded, items[0])


def test_paligemma_labels_are_left_out_with_a_note(family, mm):
    adapter, loaded, items = _load(PaliGemmaAdapter, family("paligemma2"), mm)
    batch = adapter.batch(loaded, items)
    assert "labels" not in batch.model_inputs and "token_type_ids" in batch.model_inputs
    assert any("'labels' is not given to the model" in s for s in adapter.skipped())
    adapter.saliency(loaded, batch)  # the pass that crashed on labels [1, P] vs a batch of items


# -- dead image pathway, wrong image token -------------------------------------------------------------
def _zero_projection(name, loaded):
    with torch.no_grad():
        if name == "gemma3":
            loaded.model.model.multi_modal_projector.mm_input_projection_weight.zero_()
        else:
            for p in loaded.model.model.multi_modal_projector.linear_2.parameters():
                p.zero_()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3", "llava15"])
def test_zero_image_projection_is_reported(name, family, mm):
    cls = FAMILIES[name][0]
    adapter, loaded, items = _load(cls, family(name), mm)
    check_image_matters(items, adapter.target_logprobs(loaded, adapter.batch(loaded, items)))
    _zero_projection(name, loaded)
    with pytest.raises(AssertionError, match="the image changes no score: .* dead or all-zero image pathway"):
        check_image_matters(items, adapter.target_logprobs(loaded, adapter.batch(loaded, items)))
    with pytest.raises(AssertionError, match="no position of the language model's input depends on the image.*dead or zero"):
        check_model_geometry(adapter, loaded, _match(items))


def test_processor_image_token_id_points_at_image_token_id(family, mm):
    """Gemma3Processor.image_token_id is <start_of_image>: the error names image_token_id, not only image_layout."""
    wrong = broken(Gemma3Adapter, image_token_id=HFVisionLanguageAdapter.image_token_id)
    adapter = wrong.from_options(vlm_options(family("gemma3"), mm, limit=2))
    loaded = adapter.load(adapter.checkpoints()[0])
    with pytest.raises(AdapterHookError, match=r"image_layout\(\) raised ValueError: .*override image_layout; or rather "
                                               r"image_token_id: it gives \d+ but the model replaces token \d+"):
        adapter.items(loaded)
    good, loaded, items = _load(Gemma3Adapter, family("gemma3"), mm)
    loaded.extra["image_token_id"] = loaded.extra["processor"].image_token_id
    with pytest.raises(AssertionError, match=r"image_token_id\(\) gives \d+ \('<start_of_image>'\) but the model replaces "
                                             r"token \d+ \('<image_soft_token>'\).*override image_token_id"):
        check_image_tokens(good, loaded, items[0])


# -- hooks' errors, and the whole kit on a break ---------------------------------------------------------
class HookRaises(Qwen2VLAdapter):
    def image_layout(self, loaded, enc, image_size):
        raise ValueError("grid of 0 rows")


def test_a_value_error_in_a_hook_is_one_line_naming_the_hook(family, mm, capsys):
    from vlground.cli import main

    adapter = HookRaises.from_options(vlm_options(family("qwen2vl"), mm, limit=2))
    loaded = adapter.load(adapter.checkpoints()[0])
    with pytest.raises(AdapterHookError, match=r"HookRaises\.image_layout\(\) raised ValueError: grid of 0 rows \(fix or override image_layout\)"):
        adapter.items(loaded)
    o = vlm_options(family("qwen2vl"), mm)
    rc = main(["check-adapter", "test_adapter_kit_breaks:HookRaises", "--model", o["model"], "--images", str(o["images"]),
               "--annotations", str(o["annotations"]), "--mismatch", str(o["mismatch"]), "--device", "cpu", "--limit", "2"])
    err = capsys.readouterr().err
    assert rc != 0 and "HookRaises.image_layout() raised ValueError: grid of 0 rows" in err
    mine = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("vlground")]  # not transformers' notices
    assert "Traceback" not in err and len(mine) == 1 and "error:" in mine[0]


@pytest.mark.slow
def test_the_whole_kit_fails_a_row_shift_and_passes_the_adapter(family, mm):
    folder = family("paligemma2")
    report = check_adapter(PaliGemmaAdapter.from_options(vlm_options(folder, mm, limit=2)), max_items=2)
    assert any(c.startswith("model-based geometry (image 1.00") for c in report.checks)
    assert any("no leak" in c for c in report.checks) and any("plain processor" in c for c in report.checks)
    assert any("'labels'" in n for n in report.notes)
    with pytest.raises(AssertionError, match="one row earlier"):
        check_adapter(broken(PaliGemmaAdapter, row_off).from_options(vlm_options(folder, mm, limit=2)), max_items=2)
