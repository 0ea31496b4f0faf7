"""The probes' per-layer saliency reductions (computed inside the backward pass, maps freed at once)
against the same quantities computed from the full ``[B, L, H, S, S]`` maps, on a tiny GPT-2 (with
padding) and a tiny LLaVA through its adapter (pixels, image tokens), and the classification / flow
/ share functions on them against classify_heads / flow_into / mechanism_share on the full maps."""
from __future__ import annotations

import pytest
import torch
from _mechanism_models import tiny_gpt2  # noqa: F401  (fixture)
from _vlm import grey_box_mismatch, vlm_options

from vlground.mechanism import attention_saliency
from vlground.mechanism.flow import flow_into
from vlground.mechanism.patterns import GATHER_RULES, GatherAggregateThresholds, classify_heads, mechanism_share
from vlground.mechanism.saliency_summary import (
    classify_from_summary,
    flow_from_summary,
    mechanism_share_from_summary,
    saliency_summary,
)

TOL = dict(atol=1e-7, rtol=1e-5)


def gpt2_batch(vocab=50, batch=4, seq=11, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 8:] = 0  # right padding
    mask[3, 6:] = 0
    pos = torch.tensor([seq - 1, 7, 5, 5])
    tgt = torch.randint(0, vocab, (batch,), generator=g)
    env = torch.zeros(batch, seq, dtype=torch.bool)
    env[0, [2, 3]] = True
    env[1, [1, 4]] = True
    env[2, [0]] = True
    env[3, [2, 3, 4]] = True
    return ids, mask, pos, tgt, env


def assert_reductions_match(full: torch.Tensor, s, pos: torch.Tensor, valid: torch.Tensor | None):
    """Every field of the summary against the full maps ``[B, L, H, S, S]``."""
    B, L, H, S, _ = full.shape
    b = torch.arange(B)
    mass = full.abs() * torch.ones(S, S, dtype=torch.bool).tril()
    assert s.row.shape == (B, L, H, S) and s.total.shape == (B, L, H)
    torch.testing.assert_close(s.row, full[b, :, :, pos], **TOL)
    torch.testing.assert_close(s.row_mass, mass.sum(-1), **TOL)
    torch.testing.assert_close(s.row_max, mass.amax(-1), **TOL)
    torch.testing.assert_close(s.total, mass.sum((-1, -2)), **TOL)
    torch.testing.assert_close(s.dot, mass.flatten(-2).amax(-1), **TOL)
    at = mass.flatten(-2).gather(-1, s.dot_index[..., None])[..., 0]  # the cell it names holds the max
    torch.testing.assert_close(at, s.dot, **TOL)
    layer = full.sum(2).abs()  # [B, L, S, S]
    torch.testing.assert_close(s.layer_row, layer[b, :, pos], **TOL)
    v = torch.ones(B, S, dtype=torch.bool) if valid is None else valid.bool()
    pairs = torch.ones(S, S, dtype=torch.bool).tril() & v[:, :, None] & v[:, None, :]
    torch.testing.assert_close(s.layer_mass, (layer * pairs[:, None]).sum((-1, -2)), **TOL)
    assert s.total.sum() > 0 and s.row.abs().sum() > 0


def assert_probe_functions_match(full: torch.Tensor, s, pos: torch.Tensor, env: torch.Tensor, valid):
    for rule in GATHER_RULES:
        th = GatherAggregateThresholds(gather=0.2, aggregate=0.2, gather_rule=rule)
        for pp in (pos, None):
            a, b = classify_heads(full, th, pp), classify_from_summary(s, th, pp)
            assert torch.equal(a.gather, b.gather) and torch.equal(a.aggregate, b.aggregate), rule
            torch.testing.assert_close(b.strip_share, a.strip_share, **TOL)
            torch.testing.assert_close(b.dot_share, a.dot_share, **TOL)
            assert torch.equal(a.strip_row, b.strip_row)
            assert torch.equal(a.dot_row, b.dot_row) and torch.equal(a.dot_col, b.dot_col)
    want, got = flow_into(full, pos, env, valid=valid), flow_from_summary(s, env, valid=valid)
    torch.testing.assert_close(got.env, want.env, **TOL)
    torch.testing.assert_close(got.rest, want.rest, **TOL)
    assert (want.env > 0).any() and (want.rest > 0).all()
    heads = torch.zeros(full.shape[1:3], dtype=torch.bool)
    heads[0, 1] = heads[-1, 0] = True
    torch.testing.assert_close(mechanism_share_from_summary(s, heads), mechanism_share(full, heads), **TOL)


@pytest.mark.parametrize("kernel", ["eager", "sdpa", "sdpa-by-head"])
def test_gpt2_reductions_equal_the_full_map_computation(tiny_gpt2, kernel, monkeypatch):
    if kernel == "sdpa-by-head":  # the sdpa pass gives the sink one head at a time
        from vlground.mechanism import saliency_sdpa

        monkeypatch.setattr(saliency_sdpa, "CHUNK_BYTES", 1)
        kernel = "sdpa"
    ids, mask, pos, tgt, env = gpt2_batch()
    full = attention_saliency(tiny_gpt2, ids, pos, tgt, mask)  # eager: every map from output_attentions
    s = saliency_summary(tiny_gpt2, ids, pos, tgt, mask, map_items=[0, 2], map_length=6, kernel=kernel)
    assert_reductions_match(full, s, pos, mask)
    assert_probe_functions_match(full, s, pos, env, mask)
    torch.testing.assert_close(s.map_mean, full[[0, 2], :, :, :6, :6].mean(0), **TOL)
    assert s.nbytes() < full.numel() * 4 / 2  # O(S) per head, not O(S^2)


def test_gpt2_reductions_of_chosen_layers_and_under_bf16(tiny_gpt2):
    ids, mask, pos, tgt, env = gpt2_batch(seed=5)
    full = attention_saliency(tiny_gpt2, ids, pos, tgt, mask, layers=[1])
    s = saliency_summary(tiny_gpt2, ids, pos, tgt, mask, layers=[1])
    assert s.map_mean is None and s.row.shape[1] == 1
    assert_reductions_match(full, s, pos, mask)
    low_full = attention_saliency(tiny_gpt2, ids, pos, tgt, mask, dtype=torch.bfloat16)
    low = saliency_summary(tiny_gpt2, ids, pos, tgt, mask, dtype=torch.bfloat16)  # eager, as low_full
    assert_reductions_match(low_full, low, pos, mask)  # the same autocast pass, reduced on the fly


@pytest.fixture(scope="module")
def tiny_llava_adapter(tmp_path_factory):
    from vlground.adapters.llava15 import Llava15Adapter
    from vlground.vision.tiny_llava import save_tiny_llava

    root = tmp_path_factory.mktemp("summary-llava")
    adapter = Llava15Adapter.from_options(vlm_options(save_tiny_llava(root / "tiny-llava"), grey_box_mismatch(root / "mm")))
    loaded = adapter.load(adapter.checkpoints()[0])
    return adapter, loaded, adapter.items(loaded)


@pytest.mark.parametrize("chunked", [False, True])
def test_vlm_reductions_through_the_adapter_equal_the_full_maps(tiny_llava_adapter, chunked, monkeypatch):
    if chunked:  # grouped-query heads two at a time
        from vlground.mechanism import saliency_sdpa

        monkeypatch.setattr(saliency_sdpa, "CHUNK_BYTES", 1)
    adapter, loaded, items = tiny_llava_adapter
    batch = adapter.batch(loaded, items[:3])
    full = adapter.saliency(loaded, batch, predict_row_only=False, kernel="eager")
    s = adapter.saliency_summary(loaded, batch, map_items=[0, 1], map_length=int(batch.predict_positions[0]) + 1)  # sdpa
    pos, valid = batch.predict_positions, batch.model_inputs.get("attention_mask")
    assert_reductions_match(full, s, pos, valid)
    assert_probe_functions_match(full, s, pos, batch.env_mask, valid)
    n = int(batch.predict_positions[0]) + 1
    torch.testing.assert_close(s.map_mean, full[[0, 1], :, :, :n, :n].mean(0), **TOL)
    span = batch.env_span[0]
    assert s.row[0][..., span].abs().sum() > 0  # image tokens carry saliency into the predicted position
    # the box probes' in-box mass, from the same rows
    from vlground.probes.boxheads import head_inside_shares

    got, _ = head_inside_shares(s.row, batch.env_mask, batch.env_span)
    want, _ = head_inside_shares(full[torch.arange(len(batch)), :, :, pos], batch.env_mask, batch.env_span)
    torch.testing.assert_close(got, want, **TOL)


VLMS = {
    "paligemma": ("vlground.vision.tiny_gemma:save_tiny_paligemma", {}, "paligemma"),  # soft-capping, prefix-LM mask
    "gemma3": ("vlground.vision.tiny_gemma:save_tiny_gemma3", {}, "gemma3"),
    "idefics3": ("vlground.vision.tiny_idefics3:save_tiny_idefics3", {}, "idefics3"),
    "internvl": ("vlground.vision.tiny_internvl:save_tiny_internvl", {}, "internvl"),
    "qwen2vl": ("vlground.vision.tiny_qwen2vl:save_tiny_qwen2vl", {}, "qwen2vl"),  # M-RoPE
    "llava_next": ("vlground.vision.tiny_llava_next:save_tiny_llava_next", {}, "llava_next"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VLMS))
def test_sdpa_saliency_and_monitor_rows_equal_eager_on_each_vlm(name, tmp_path, monkeypatch):
    """The probes' sdpa saliency pass (maps recomputed per layer, one head group at a time) and the
    monitor's sdpa rows give the eager results on every VLM adapter's tiny model (their sites come
    from the adapter: no resolver is registered for these model types)."""
    import importlib

    from vlground.engine.registry import get_adapter_class
    from vlground.mechanism import saliency_sdpa
    from vlground.monitor.backends import backend_for
    from vlground.monitor.generate import forward
    from vlground.monitor.score import capture_attention

    spec, kw, adapter_name = VLMS[name]
    mod, fn = spec.split(":")
    folder = getattr(importlib.import_module(mod), fn)(tmp_path / name, **kw)
    adapter = get_adapter_class(adapter_name).from_options(vlm_options(folder, grey_box_mismatch(tmp_path / "mm"), limit=2))
    loaded = adapter.load(adapter.checkpoints()[0])
    items = adapter.items(loaded)
    batch = adapter.batch(loaded, items[:2])
    eager = adapter.saliency(loaded, batch, predict_row_only=False, kernel="eager")
    monkeypatch.setattr(saliency_sdpa, "CHUNK_BYTES", 1)
    sdpa = adapter.saliency(loaded, batch, predict_row_only=False)
    assert not torch.equal(sdpa, eager)  # really another pass
    torch.testing.assert_close(sdpa, eager, atol=1e-6 * float(eager.abs().max()), rtol=1e-4)
    b = backend_for(adapter, loaded)
    enc = b.encode(str(items[0].meta["object"].image), b.prompt("Describe the image."))
    sites = adapter.attention_site(loaded)
    ref = forward(adapter, loaded, enc.inputs, output_attentions=True)
    want = torch.stack([ref.attentions[layer][0, :, -1, :] for layer in sites.layers]).float()
    with capture_attention(loaded.model, sites) as rec:
        forward(adapter, loaded, enc.inputs)
        rows = rec.pop()[0]
    torch.testing.assert_close(rows, want, atol=1e-6, rtol=1e-5)
