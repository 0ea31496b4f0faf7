"""The conformance kit fails adapters that break geometry or the one forward path, with a message
naming the item and what differs; and passes flattened pixel inputs (Qwen2-VL) it used to fail."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from _vlm import grey_box_mismatch, vlm_options

from vlground.adapters.qwen2vl import Qwen2VLAdapter
from vlground.testing import check_adapter, check_forward_path, check_painted_boxes
from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    return save_tiny_qwen2vl(root / "tiny-qwen2vl"), grey_box_mismatch(root / "mismatched")


class ShiftedEnvMask(Qwen2VLAdapter):
    """env_mask one token late: the classic off-by-one of a hand-written prefix offset."""

    def batch(self, loaded, items):
        b = super().batch(loaded, items)
        return dataclasses.replace(b, env_mask=torch.roll(b.env_mask, 1, dims=1) & b.env_span)


class SaliencyDropsPositions(Qwen2VLAdapter):
    """A saliency path that bypasses model_inputs' M-RoPE positions (what boxheads used to do)."""

    def saliency(self, loaded, batch, *, predict_row_only=True, layers=None):
        from vlground.mechanism.saliency import attention_saliency

        x = {k: v.to(loaded.device) for k, v in batch.model_inputs.items()}
        ids, mask = x.pop("input_ids"), x.pop("attention_mask")
        return attention_saliency(loaded.model, ids, batch.predict_positions, batch.target_ids[:, 0], mask,
                                  predict_row_only=predict_row_only, **x)


def _loaded(cls, setup, **extra):
    model, mm = setup
    adapter = cls.from_options(vlm_options(model, mm, **extra))
    loaded = adapter.load(adapter.checkpoints()[0])
    return adapter, loaded, adapter.items(loaded)


def test_shifted_env_mask_fails_the_painted_box_check(setup):
    adapter, loaded, items = _loaded(ShiftedEnvMask, setup, limit=4)
    with pytest.raises(AssertionError, match=r"item ann\d+-m \(box .* image\): token at position \d+ .* env_mask says"):
        check_painted_boxes(adapter, loaded, [it for it in items if it.condition == "match"])
    with pytest.raises(AssertionError, match="env_mask says"):
        check_adapter(adapter, max_items=8)


def test_saliency_path_dropping_an_input_fails(setup):
    adapter, loaded, items = _loaded(SaliencyDropsPositions, setup, limit=2)
    batch = adapter.batch(loaded, items[:2])
    with pytest.raises(AssertionError, match=r"items \['ann1-m', 'ann1-x'\]: the saliency pass drops the model input 'position_ids'"):
        check_forward_path(adapter, loaded, batch)


def test_correct_qwen_adapter_passes_each_check(setup):
    adapter, loaded, items = _loaded(Qwen2VLAdapter, setup, limit=4)
    check_painted_boxes(adapter, loaded, items)
    check_forward_path(adapter, loaded, adapter.batch(loaded, items[:4]))


def test_pair_check_sees_flattened_pixels_differ(setup):
    """Qwen2-VL's pixel_values is one flat list of patches: the pairs differ there, not in a per-item row."""
    from vlground.testing import _check_pairs_differ_only_in_environment

    adapter, loaded, items = _loaded(Qwen2VLAdapter, setup, limit=2)
    _check_pairs_differ_only_in_environment(adapter, loaded, items)

    class SameImage(Qwen2VLAdapter):
        def batch(self, loaded, items):
            same = [dataclasses.replace(it, meta={"object": dataclasses.replace(it.meta["object"], mismatch_image=it.meta["object"].image)})
                    for it in items]
            return dataclasses.replace(super().batch(loaded, same), items=list(items))

    broken = SameImage(adapter.options)
    with pytest.raises(AssertionError, match="pair ann1: match and mismatch inputs are identical"):
        _check_pairs_differ_only_in_environment(broken, loaded, items)
