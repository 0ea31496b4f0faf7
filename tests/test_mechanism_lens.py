"""Tuned lens: the last layer is the model's own output; fitting, surprisal, save/load."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import Mamba2Config, Mamba2ForCausalLM

from vlground.mechanism.errors import MechanismError
from vlground.mechanism.lens import (
    LensBatch,
    LensTrainConfig,
    TunedLens,
    fit_lens,
    hf_lens_batches,
    lens_kl,
    lens_surprisal,
)
from vlground.mechanism.unembed import Unembedding, resolve_unembedding

from _mechanism_models import VOCAB, _perturb_norms, make_gpt2, tiny_bamba, tiny_gpt2, tiny_llama  # noqa: F401


class TinyLSTMLM(nn.Module):
    """A 2-layer LSTM LM returning its hidden states in the HF convention (L + 1 entries)."""

    def __init__(self, d=16, n_layers=2):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(nn.LSTM(d, d, batch_first=True) for _ in range(n_layers))
        self.head = nn.Linear(d, VOCAB)

    def forward(self, ids):
        h = self.emb(ids)
        hidden = [h]
        for lstm in self.layers:
            h = lstm(h)[0]
            hidden.append(h)
        return hidden, self.head(h)

    def get_unembedding(self):
        return Unembedding(head=self.head, norm=None)


@pytest.fixture
def tiny_mamba2():
    torch.manual_seed(0)
    cfg = Mamba2Config(num_hidden_layers=2, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1,
                       vocab_size=VOCAB, chunk_size=8, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return _perturb_norms(Mamba2ForCausalLM(cfg).eval())


def tokens(n=2, seq=8, seed=0):
    return torch.randint(0, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_bamba", "tiny_mamba2"])
def test_last_layer_is_the_models_own_distribution(fixture, request):
    model = request.getfixturevalue(fixture)
    unembedding = resolve_unembedding(model)
    (batch,) = hf_lens_batches(model, [tokens()])
    n_layers = len(batch.hidden_states) - 1
    lens = TunedLens.for_unembedding(n_layers, batch.hidden_states[0].shape[-1], unembedding)
    with torch.no_grad():
        logits = lens.layer_logits(batch.hidden_states, unembedding)
    assert len(logits) == n_layers + 1
    assert torch.allclose(logits[-1], batch.logits, atol=1e-5)
    # The identity translator on the pre-norm residual after the last layer (not among
    # hidden_states: the last entry is already normed) reproduces the model: the resolver
    # found the right norm and head.
    seen = {}
    handle = unembedding.norm.register_forward_pre_hook(lambda m, args: seen.setdefault("h", args[0].detach()))
    try:
        with torch.no_grad():
            model(tokens())
    finally:
        handle.remove()
    with torch.no_grad():
        assert torch.allclose(unembedding(seen["h"]), batch.logits, atol=1e-5)
        assert not torch.allclose(unembedding(batch.hidden_states[-1]), batch.logits, atol=1e-3)  # double norm differs
    surprisal = lens_surprisal(lens, unembedding, batch.hidden_states, [7, 3], [1, 2])
    own = -torch.log_softmax(batch.logits[[0, 1], [7, 3]], -1)[[0, 1], [1, 2]]
    assert surprisal.shape == (2, n_layers + 1) and torch.allclose(surprisal[:, -1], own, atol=1e-5)


def test_fit_reduces_held_out_kl_gpt2(tiny_gpt2):
    unembedding = resolve_unembedding(tiny_gpt2)
    train = list(hf_lens_batches(tiny_gpt2, [tokens(8, 12, s) for s in range(2)]))
    held_out = list(hf_lens_batches(tiny_gpt2, [tokens(8, 16, 99)]))
    lens = TunedLens.for_unembedding(2, 32, unembedding)
    before = lens_kl(lens, unembedding, held_out)
    params_before = [p.clone() for p in tiny_gpt2.parameters()]
    losses = fit_lens(lens, unembedding, train, LensTrainConfig(steps=25, lr=2e-2))
    after = lens_kl(lens, unembedding, held_out)
    assert losses[-1] < losses[0] and torch.all(after < before)
    assert all(torch.equal(a, b) for a, b in zip(params_before, tiny_gpt2.parameters()))
    assert all(p.grad is None for p in tiny_gpt2.parameters())


def test_lstm_lens():
    torch.manual_seed(0)
    model = TinyLSTMLM().eval()
    unembedding = resolve_unembedding(model)
    with torch.no_grad():
        batches = [LensBatch(*model(tokens(4, 10, s))) for s in range(3)]
    lens = TunedLens.for_unembedding(2, 16, unembedding)
    assert torch.allclose(lens.layer_logits(batches[0].hidden_states, unembedding)[-1], batches[0].logits)
    before = lens_kl(lens, unembedding, batches)
    fit_lens(lens, unembedding, batches, LensTrainConfig(steps=40, lr=1e-2))
    assert torch.all(lens_kl(lens, unembedding, batches) < before)


def test_save_load_checks_unembedding_hash(tiny_gpt2, tmp_path):
    unembedding = resolve_unembedding(tiny_gpt2)
    lens = TunedLens.for_unembedding(2, 32, unembedding)
    with torch.no_grad():
        lens.translators[1].weight.normal_()
    lens.save(tmp_path / "lens")
    loaded = TunedLens.load(tmp_path / "lens", unembedding)
    assert all(torch.equal(a, b) for a, b in zip(lens.state_dict().values(), loaded.state_dict().values()))
    other = resolve_unembedding(make_gpt2(seed=1))
    with pytest.raises(MechanismError, match="hash mismatch"):
        TunedLens.load(tmp_path / "lens", other)
    with pytest.raises(MechanismError, match="not a saved lens"):
        TunedLens.load(tmp_path / "nothing", unembedding)
