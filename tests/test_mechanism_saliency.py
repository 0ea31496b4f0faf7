"""attention_saliency against an independent per-item, per-head computation."""
from __future__ import annotations

import pytest
import torch

from vlground.mechanism import attention_saliency
from vlground.mechanism.errors import MechanismError
from vlground.mechanism.saliency import target_loss
from vlground.mechanism.sites import attention_layer_indices

from _mechanism_models import tiny_bamba, tiny_gpt2, tiny_llama, tiny_llava  # noqa: F401  (fixtures)


def reference_saliency(model, ids, pos, tgt, embeds=None):
    """One item at a time, one head at a time: grad of that item's loss w.r.t. one head's map."""
    model.set_attn_implementation("eager")
    out_items = []
    for b in range(pos.shape[0]):
        if embeds is None:
            out = model(ids[b : b + 1], output_attentions=True)
        else:
            out = model(inputs_embeds=embeds[b : b + 1], output_attentions=True)
        loss = target_loss(out.logits, pos[b : b + 1], tgt[b : b + 1]).sum()
        layers = []
        for att in out.attentions:
            heads = []
            for h in range(att.shape[1]):
                (g,) = torch.autograd.grad(loss, att, retain_graph=True)
                heads.append((g * att)[0, h].detach())
            layers.append(torch.stack(heads))
        out_items.append(torch.stack(layers))
    return torch.stack(out_items)


def items(vocab=50, batch=3, seq=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    pos = torch.tensor([seq - 1, seq - 3, 4][:batch])
    tgt = torch.randint(0, vocab, (batch,), generator=g)
    return ids, pos, tgt


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bamba"])
def test_matches_per_item_per_head_reference(fixture, request):
    model = request.getfixturevalue(fixture)
    ids, pos, tgt = items()
    sal = attention_saliency(model, ids, pos, tgt)
    ref = reference_saliency(model, ids, pos, tgt)
    n_att = len(attention_layer_indices(model))
    assert sal.shape == (3, n_att, 4, 9, 9) and sal.dtype == torch.float32
    assert torch.allclose(sal, ref, atol=1e-6, rtol=1e-4)
    assert sal.abs().sum() > 0
    assert torch.all(sal.triu(1) == 0)  # causal: nothing flows from the future


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bamba", "tiny_llava"])
def test_sdpa_kernel_recomputes_the_maps_of_the_per_item_per_head_reference(fixture, chunked, request, monkeypatch):
    """kernel="sdpa": sdpa in every layer, each map and its gradient recomputed per layer in the backward
    pass (none in the graph); the same saliency as the eager reference, with padding too."""
    from vlground.mechanism import saliency_sdpa
    from vlground.mechanism.saliency_sdpa import IMPLEMENTATION, _TAPPED

    if chunked:  # one group of query heads (per key/value head) at a time
        monkeypatch.setattr(saliency_sdpa, "CHUNK_BYTES", 1)
    model = request.getfixturevalue(fixture)
    before = model.config._attn_implementation
    ids, pos, tgt = items()
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    seen = []
    h = model.register_forward_pre_hook(lambda m, a: seen.append(m.config._attn_implementation))
    try:
        sal = attention_saliency(model, ids, pos, tgt, kernel="sdpa")
        padded = attention_saliency(model, ids, pos, tgt, mask, kernel="sdpa", layers=attention_layer_indices(model)[-1:])
    finally:
        h.remove()
    assert seen == [IMPLEMENTATION, IMPLEMENTATION] and model.config._attn_implementation == before and not len(_TAPPED)
    ref = reference_saliency(model, ids, pos, tgt)
    assert torch.allclose(sal, ref, atol=1e-6, rtol=1e-4) and sal.abs().sum() > 0
    eager = attention_saliency(model, ids, pos, tgt, mask, layers=attention_layer_indices(model)[-1:])
    assert torch.allclose(padded, eager, atol=1e-6, rtol=1e-4) and padded.abs().sum() > 0


def test_layers_subset_and_frozen_params(tiny_gpt2):
    ids, pos, tgt = items()
    full = attention_saliency(tiny_gpt2, ids, pos, tgt)
    tiny_gpt2.requires_grad_(False)
    sub = attention_saliency(tiny_gpt2, ids, pos, tgt, layers=[1])
    assert torch.allclose(sub[:, 0], full[:, 1])
    assert all(p.grad is None for p in tiny_gpt2.parameters())
    with pytest.raises(MechanismError, match="no attention"):
        attention_saliency(tiny_gpt2, ids, pos, tgt, layers=[5])


def test_inputs_embeds_and_padding(tiny_gpt2):
    ids, pos, tgt = items()
    full = attention_saliency(tiny_gpt2, ids, pos, tgt)
    emb = tiny_gpt2.get_input_embeddings()(ids)
    via_embeds = attention_saliency(tiny_gpt2, None, pos, tgt, inputs_embeds=emb)
    assert torch.allclose(via_embeds, full, atol=1e-7)
    # Right padding does not change an item's saliency on its real tokens.
    short = ids[2:3, :6]
    padded = torch.cat([short, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 3])
    a = attention_saliency(tiny_gpt2, short, pos[2:3], tgt[2:3])
    b = attention_saliency(tiny_gpt2, padded, pos[2:3], tgt[2:3], attention_mask=mask)
    assert torch.allclose(b[..., :6, :6], a, atol=1e-6, rtol=1e-4)


def test_sdpa_model_is_switched_and_restored(tiny_gpt2):
    tiny_gpt2.set_attn_implementation("sdpa")
    tiny_gpt2.train()
    ids, pos, tgt = items()
    attention_saliency(tiny_gpt2, ids, pos, tgt)
    assert tiny_gpt2.config._attn_implementation == "sdpa" and tiny_gpt2.training


def test_llava_language_model_with_inputs_embeds(tiny_llava):
    """LLaVA fed features directly (as image features would be): saliency of its language model."""
    embeds = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(0))
    pos, tgt = torch.tensor([8, 5]), torch.tensor([1, 2])
    sal = attention_saliency(tiny_llava, None, pos, tgt, inputs_embeds=embeds)
    ref = reference_saliency(tiny_llava, None, pos, tgt, embeds=embeds)
    assert sal.shape == (2, 2, 4, 9, 9) and torch.allclose(sal, ref, atol=1e-6, rtol=1e-4)


def test_parameters_are_frozen_inside_and_restored_after(tiny_gpt2):
    """No parameter requires grad during the pass (no weight-gradient activations saved); flags
    and .grad are as before afterwards, also when the call raises."""
    seen = []
    handle = tiny_gpt2.transformer.h[0].register_forward_hook(
        lambda m, a, o: seen.append(any(p.requires_grad for p in tiny_gpt2.parameters())))
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    try:
        attention_saliency(tiny_gpt2, ids, [5, 4], [1, 2])
    finally:
        handle.remove()
    assert seen == [False]
    assert all(p.requires_grad and p.grad is None for p in tiny_gpt2.parameters())
    with pytest.raises(MechanismError):
        attention_saliency(tiny_gpt2, ids, [5, 4], [1, 2], layers=[9])
    assert all(p.requires_grad for p in tiny_gpt2.parameters())


def test_row_only_is_the_predicted_row_of_the_full_maps(tiny_gpt2):
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    pos = torch.tensor([6, 3, 5])
    full = attention_saliency(tiny_gpt2, ids, pos, [1, 2, 3])
    rows = attention_saliency(tiny_gpt2, ids, pos, [1, 2, 3], predict_row_only=True)
    assert rows.shape == full.shape[:-1]
    assert torch.allclose(rows, full[torch.arange(3), :, :, pos], atol=1e-7)


def test_bf16_probe_dtype_is_close_and_returns_float32(tiny_gpt2):
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(2))
    ref = attention_saliency(tiny_gpt2, ids, [7, 6], [1, 2])
    bf = attention_saliency(tiny_gpt2, ids, [7, 6], [1, 2], dtype=torch.bfloat16)
    assert bf.dtype == torch.float32 and bf.shape == ref.shape
    assert float((bf - ref).norm() / ref.norm()) < 0.1
    assert all(p.dtype == torch.float32 for p in tiny_gpt2.parameters())  # the model is not converted
