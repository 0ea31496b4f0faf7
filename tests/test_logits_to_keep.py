"""Scoring computes only the logits it reads (``logits_to_keep``) and gives the same scores as
the full-logits path, for the text testbed and a tiny LLaVA (multi-sub-token targets)."""
from __future__ import annotations

import pytest
import torch
from _vlm import grey_box_mismatch, vlm_options

from vlground.engine.adapter import gather_target_logprobs


def _check(adapter, loaded, items):
    head = loaded.model.get_output_embeddings()
    for chunk in (items[:8], items[8:16]):
        batch = adapter.batch(loaded, chunk)
        shapes = []
        handle = head.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
        try:
            kept = adapter.target_logprobs(loaded, batch)
        finally:
            handle.remove()
        with torch.no_grad():
            full = gather_target_logprobs(adapter.forward(loaded, batch).logits, batch.target_ids, batch.target_positions)
        assert torch.allclose(kept, full, atol=1e-5), float((kept - full).abs().max())
        S = batch.model_inputs["input_ids"].shape[1]
        distinct = len(set(batch.target_positions[batch.target_ids >= 0].tolist()))
        assert shapes[0][1] == distinct < S  # the head ran on the distinct target positions only


def test_text_scoring_keeps_only_target_logits(tiny_runs):
    from vlground.adapters.childes import ChildesAdapter

    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu"})
    loaded = adapter.load(adapter.checkpoints()[-1])
    _check(adapter, loaded, adapter.items(loaded))


@pytest.mark.slow
def test_vlm_scoring_keeps_only_target_logits(tmp_path):
    from vlground.adapters.llava15 import Llava15Adapter
    from vlground.vision.tiny_llava import save_tiny_llava

    model_dir = save_tiny_llava(tmp_path / "tiny-llava")
    adapter = Llava15Adapter.from_options(vlm_options(model_dir, grey_box_mismatch(tmp_path / "mismatch")))
    loaded = adapter.load(adapter.checkpoints()[0])
    items = adapter.items(loaded)
    assert items
    _check(adapter, loaded, items)
