"""The tuned lens on cached hidden states: same batches and lens as the per-step forward path,
the hand-made gradient equals autograd's, the mapped-file cache equals the in-memory one, the
saved lens is keyed and written under a lock; minibatches of positions recover a planted
translator, cover every token before repeating one, and the held-out KL is the mean over tokens."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from vlground.mechanism.lens import LazyLensBatches, LensBatch, LensTrainConfig, TunedLens, _kl_step, fit_lens, lens_kl
from vlground.mechanism.lens_cache import HiddenStateCache
from vlground.mechanism.unembed import resolve_unembedding

from _mechanism_models import VOCAB, make_gpt2  # noqa: F401


def _inputs(n=3, batch=4, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, seq // 2:] = 0  # a padded row
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


@pytest.fixture
def eager_gpt2():
    model = make_gpt2(seed=0)
    model.set_attn_implementation("eager")
    return model.eval()


def _reference_kl(lens, unembedding, batch: LensBatch) -> torch.Tensor:
    """[L] mean KL with plain autograd ops (log_softmax of both distributions), independent of _kl_step."""
    target = torch.log_softmax(batch.logits.float(), -1)
    mask = batch.mask.bool()
    kls = []
    for i, h in enumerate(batch.hidden_states[:-1]):
        logq = torch.log_softmax(unembedding(lens.transform(h, i)).float(), -1)
        kls.append((target.exp() * (target - logq)).sum(-1)[mask].mean())
    return torch.stack(kls)


def test_cache_holds_the_counted_tokens_of_each_batch(eager_gpt2):
    inputs = _inputs()
    cache = HiddenStateCache.build(eager_gpt2, inputs)
    assert len(cache) == 3 and cache.n_tokens() == sum(int(b["attention_mask"].sum()) for b in inputs)
    assert eager_gpt2.config._attn_implementation == "eager"  # the sdpa switch is undone
    with torch.no_grad():
        out = eager_gpt2(**inputs[1], output_hidden_states=True)
    mask = inputs[1]["attention_mask"].bool()
    for layer, h in enumerate(cache[1].hidden_states):
        assert torch.allclose(h, out.hidden_states[layer][mask], atol=1e-5)  # sdpa vs eager: float noise only
    assert len(cache[1:]) == 2 and cache[1:].n_tokens() == cache.n_tokens() - int(inputs[0]["attention_mask"].sum())


def test_handmade_gradient_equals_autograd(eager_gpt2):
    unembedding = resolve_unembedding(eager_gpt2)
    (batch,) = list(LazyLensBatches(eager_gpt2, _inputs(1)))
    lens = TunedLens.for_unembedding(2, 32, unembedding)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.normal_(0, 0.05)
            t.bias.normal_(0, 0.05)
    kl, grads = _kl_step(lens, unembedding, batch, grad=True)
    ref = _reference_kl(lens, unembedding, batch)
    ref_grads = torch.autograd.grad(ref.sum(), list(lens.parameters()))
    assert torch.allclose(kl, ref.detach(), atol=1e-6)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-4), float((g - r).abs().max())


def test_fit_on_the_cache_equals_the_per_step_forward_fit(eager_gpt2):
    unembedding = resolve_unembedding(eager_gpt2)
    inputs = _inputs(4)
    held = HiddenStateCache.build(eager_gpt2, _inputs(2, seed=9))
    lenses = []
    for batches in (LazyLensBatches(eager_gpt2, inputs), HiddenStateCache.build(eager_gpt2, inputs)):
        lens = TunedLens.for_unembedding(2, 32, unembedding)
        losses = fit_lens(lens, unembedding, batches, LensTrainConfig(steps=12, lr=1e-2, batch_tokens=None))
        assert losses[-1] < losses[0]
        lenses.append(lens)
    kl_lazy, kl_cache = (lens_kl(lens, unembedding, held) for lens in lenses)
    assert torch.all(kl_cache < lens_kl(TunedLens.for_unembedding(2, 32, unembedding), unembedding, held))
    assert torch.allclose(kl_lazy, kl_cache, rtol=1e-3, atol=1e-6)


def test_a_cache_over_its_budget_goes_to_an_unlinked_mapped_file(eager_gpt2, tmp_path):
    inputs = _inputs()
    memory = HiddenStateCache.build(eager_gpt2, inputs)
    mapped = HiddenStateCache.build(eager_gpt2, inputs, memory_bytes=1, directory=tmp_path)
    assert mapped.on_disk and not memory.on_disk and list(tmp_path.iterdir()) == []
    assert torch.equal(memory.states, mapped.states) and memory.digest() == mapped.digest()


def test_saved_lens_is_keyed_by_the_weights_and_fit_once_under_concurrency(tiny_runs, tmp_path):
    import shutil

    from vlground.adapters.childes import ChildesAdapter
    from vlground.probes.base import ProbeContext
    from vlground.probes.lens import FIT_INFO, LensProbe

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["transformer"], run)
    adapter = ChildesAdapter.from_options({"runs": [str(run)], "device": "cpu", "pairing": "diagonal"})
    ckpt = adapter.checkpoints()[-1]
    probe = LensProbe(LensProbe.Options(lens_steps=3, lens_tokens=10_000))
    results, fits = [], []
    real_fit = fit_lens

    import vlground.mechanism.lens as lens_mod

    def counting_fit(*args, **kwargs):
        fits.append(1)
        return real_fit(*args, **kwargs)

    lens_mod.fit_lens = counting_fit
    try:
        # models are loaded before the threads start: transformers' from_pretrained (meta-device
        # initialisation) is not thread-safe; the concurrency under test is the lens cache's
        models = [adapter.load(ckpt) for _ in range(2)]

        def one(loaded):
            results.append(probe.run(ProbeContext(adapter, loaded, adapter.items(loaded))))

        threads = [threading.Thread(target=one, args=(m,)) for m in models]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        lens_mod.fit_lens = real_fit
    assert len(results) == 2 and len(fits) == 1  # the second waited for the lock and reused the lens
    assert [r.tables["lens"] for r in results][0] == results[1].tables["lens"]
    info = json.loads((Path(ckpt.path) / "tuned-lens" / FIT_INFO).read_text())
    assert len(info["key"]) == 64 and info["fit_tokens"] == results[0].tables["lens"][0].fit_tokens
    note = [n for n in results[0].notes if n.startswith("lens: fit on")][0]
    assert f"fit on {info['fit_tokens']} held-out tokens" in note
    row = results[0].tables["lens"][0]
    assert row.fit_positions == min(row.fit_tokens, 3 * 1024) and f"{row.fit_positions} distinct tokens read" in note
    assert LensProbe.Options().lens_batch_tokens == LensTrainConfig().batch_tokens  # one default
    assert f"{results[0].tables['lens'][0].held_out_tokens} other held-out tokens" in note
    # other weights at the same path: the key differs, so the lens is refit
    loaded = adapter.load(ckpt)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(0.01)
    again = probe.run(ProbeContext(adapter, loaded, adapter.items(loaded)))
    assert any("other weights" in n and "retrained" in n for n in again.notes)


class _CountingCache(HiddenStateCache):
    """A cache that records how many positions each step gathered."""

    sizes: list

    def gather(self, positions):
        self.sizes.append(len(positions))
        return super().gather(positions)


def _planted(n_tokens=3000, d=8, vocab=40, seed=0):
    """Hidden states of a 2-layer "model" whose own output is an exact affine function of each
    layer's state: ``h_final = h_l + A_l h_l + b_l``, so translator ``l`` = ``(A_l, b_l)`` gives KL 0."""
    from vlground.mechanism.unembed import Unembedding

    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(d, vocab)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, d, generator=g))
        head.bias.copy_(torch.randn(vocab, generator=g) * 0.1)
    planted = [(0.3 / d**0.5 * torch.randn(d, d, generator=g), 0.3 * torch.randn(d, generator=g)) for _ in range(2)]
    h0 = torch.randn(n_tokens, d, generator=g)
    final = h0 + h0 @ planted[0][0].T + planted[0][1]
    a1, b1 = planted[1]
    h1 = torch.linalg.solve(torch.eye(d) + a1, (final - b1).T).T  # h1 + a1 h1 + b1 = final
    states = torch.stack([h0, h1, final])  # [L + 1, tokens, d]
    return states, Unembedding(head=head, norm=None), planted


def test_minibatch_fit_recovers_a_planted_linear_translator():
    states, unembedding, planted = _planted()
    cache = _CountingCache(states, [0, 1000, 2000, 3000])
    cache.sizes = []
    lens = TunedLens.for_unembedding(2, states.shape[-1], unembedding)
    before = lens_kl(lens, unembedding, cache)
    fit_lens(lens, unembedding, cache, LensTrainConfig(steps=600, batch_tokens=64, lr=2e-2))
    assert cache.sizes == [64] * 600  # every step read 64 positions, never a whole batch
    after = lens_kl(lens, unembedding, cache)
    assert torch.all(after < 1e-3 * before), (before, after)
    for t, (a, b) in zip(lens.translators, planted):
        assert float((t.weight.detach() - a).norm() / a.norm()) < 0.05
        assert float((t.bias.detach() - b).norm() / b.norm()) < 0.05


def test_positions_stream_covers_every_token_before_repeating():
    from vlground.mechanism.lens import PositionStream, positions_drawn

    stream = PositionStream(10, 4, seed=1)
    steps = [stream.next() for _ in range(5)]  # 20 positions: two full passes
    assert all(len(s) == 4 and torch.equal(s, s.sort().values) for s in steps)
    assert len(set(torch.cat(steps[:2]).tolist())) == 8  # no repeat within the first pass
    assert torch.equal(torch.bincount(torch.cat(steps), minlength=10), torch.full((10,), 2))
    other = PositionStream(10, 4, seed=2)
    assert not all(torch.equal(a, other.next()) for a in steps)  # the seed sets the order
    assert torch.equal(PositionStream(3, 512).next(), torch.arange(3))  # more positions than tokens: all of them
    assert positions_drawn(10, 2, 4) == 8 and positions_drawn(10, 5, 4) == 10 and positions_drawn(3, 1, 512) == 3


@pytest.mark.parametrize("batch_tokens", [None, 7])
def test_a_minibatch_fit_of_a_lazy_sequence_equals_the_fit_on_its_cache(eager_gpt2, batch_tokens):
    unembedding = resolve_unembedding(eager_gpt2)
    inputs = _inputs(3)
    cfg = LensTrainConfig(steps=8, lr=1e-2, batch_tokens=batch_tokens, min_epochs=1)
    lenses = []
    for batches in (LazyLensBatches(eager_gpt2, inputs), HiddenStateCache.build(eager_gpt2, inputs)):
        lens = TunedLens.for_unembedding(2, 32, unembedding)
        fit_lens(lens, unembedding, batches, cfg)
        lenses.append(lens)
    for a, b in zip(lenses[0].parameters(), lenses[1].parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    cache = HiddenStateCache.build(eager_gpt2, inputs)
    pooled = HiddenStateCache.from_batches(LazyLensBatches(eager_gpt2, inputs))
    assert pooled.bounds == cache.bounds and torch.allclose(pooled.states, cache.states, atol=1e-5)


def test_held_out_kl_is_the_mean_over_tokens_in_chunks(eager_gpt2):
    unembedding = resolve_unembedding(eager_gpt2)
    inputs = _inputs(2)
    lens = TunedLens.for_unembedding(2, 32, unembedding)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.normal_(0, 0.1)
    batches = list(LazyLensBatches(eager_gpt2, inputs))
    # reference: every counted token of both padded batches, weighted alike
    per_token = []
    for b in batches:
        target = torch.log_softmax(b.logits.float(), -1)
        for i, h in enumerate(b.hidden_states[:-1]):
            logq = torch.log_softmax(unembedding(lens.transform(h, i)).float(), -1)
            per_token.append(((target.exp() * (target - logq)).sum(-1)[b.mask.bool()], i))
    ref = torch.stack([torch.cat([k for k, i in per_token if i == layer]).mean() for layer in range(2)])
    cache = HiddenStateCache.build(eager_gpt2, inputs)
    assert torch.allclose(lens_kl(lens, unembedding, cache, chunk_tokens=5), ref, atol=1e-5)
    assert torch.allclose(lens_kl(lens, unembedding, batches), ref, atol=1e-5)


def test_a_step_on_precomputed_target_statistics_equals_the_plain_step(eager_gpt2):
    from vlground.mechanism.lens import TargetStats

    unembedding = resolve_unembedding(eager_gpt2)
    cache = HiddenStateCache.build(eager_gpt2, _inputs(2))
    lens = TunedLens.for_unembedding(2, 32, unembedding)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.normal_(0, 0.05)
    idx = torch.tensor([0, 3, 4, 9, 17])
    stats = TargetStats.of_cache(unembedding, cache, chunk_tokens=7)
    plain = _kl_step(lens, unembedding, cache.gather(idx), grad=True)
    fast = _kl_step(lens, unembedding, cache.gather(idx), grad=True, target=stats.gather(idx))
    assert torch.allclose(plain[0], fast[0], atol=1e-6)
    for a, b in zip(plain[1], fast[1]):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
