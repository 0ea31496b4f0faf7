"""Tools for testing adapters: a conformance check any adapter's tests can call, and a fake
adapter that exercises the whole engine without weights.

In your adapter's tests::

    from vlground.testing import check_adapter

    def test_conformance(tmp_path):
        adapter = MyAdapter.from_options({...})   # on a tiny model you build and save
        check_adapter(adapter)

``check_adapter`` raises ``AssertionError`` with a message saying which rule of the interface
(:mod:`vlground.engine.adapter`) the adapter breaks.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from vlground.engine.adapter import (
    Adapter,
    Capability,
    Checkpoint,
    LoadedModel,
    ProbeBatch,
    ProbeItem,
)


def check_adapter(adapter: Adapter, max_checkpoints: int = 2, max_items: int = 8, atol: float = 1e-4) -> None:
    """Check that ``adapter`` keeps the interface's semantics on its first checkpoints."""
    ckpts = adapter.checkpoints()
    assert ckpts, "checkpoints() returned nothing"
    assert all(isinstance(c, Checkpoint) for c in ckpts), "checkpoints() must return Checkpoint objects"
    for ckpt in ckpts[:max_checkpoints]:
        loaded = adapter.load(ckpt)
        assert isinstance(loaded, LoadedModel), "load() must return a LoadedModel"
        assert not loaded.model.training, "load() must put the model in eval mode"
        items = adapter.items(loaded)
        _check_items(items)
        sample = _sample_pairs(items, max_items)
        batch = adapter.batch(loaded, sample)
        _check_batch(batch, sample)
        _check_pairs_differ_only_in_environment(batch)
        lp = adapter.target_logprobs(loaded, batch)
        assert lp.shape == (len(sample),), f"target_logprobs shape {tuple(lp.shape)} != ({len(sample)},)"
        assert torch.isfinite(lp).all() and (lp <= 1e-5).all(), "log-probabilities must be finite and <= 0"
        lp2 = adapter.target_logprobs(loaded, adapter.batch(loaded, sample))
        assert torch.allclose(lp, lp2, atol=atol), "target_logprobs is not deterministic"
        for i in (0, len(sample) - 1):  # padding must not change an item's score
            alone = adapter.target_logprobs(loaded, adapter.batch(loaded, [sample[i]]))
            assert torch.allclose(alone[0], lp[i], atol=atol), (
                f"item {sample[i].item_id}: log-prob alone {alone[0].item():.5f} != in batch {lp[i].item():.5f} (padding leaks)"
            )
        caps = adapter.capabilities(loaded)
        if Capability.ATTENTION in caps:
            site = adapter.attention_site(loaded)
            assert site is not None, "Capability.ATTENTION needs attention_site()"
            out = adapter.forward(loaded, batch.to(loaded.device), output_attentions=True)
            atts = [a for a in out.attentions if a is not None]
            assert len(atts) == len(site.layers), f"{len(atts)} attention maps for {len(site.layers)} attention layers"
            assert atts[0].shape[1] == site.n_heads, "attention maps disagree with attention_site().n_heads"
        if Capability.HIDDEN_STATES in caps:
            unembed = adapter.unembed(loaded)
            assert unembed is not None, "Capability.HIDDEN_STATES needs unembed()"
            out = adapter.forward(loaded, batch.to(loaded.device), output_hidden_states=True)
            logits = unembed(out.hidden_states[-2])
            assert logits.shape == out.logits.shape, "unembed(h) must give logits of the model's shape"
        if Capability.COOCCURRENCE in caps:
            words = sorted({it.word for it in items})
            cooc = adapter.cooccurrence(loaded, words)
            assert cooc is not None and set(cooc) == set(words), "cooccurrence() must give a count per word"
            assert all(isinstance(v, int) and v >= 0 for v in cooc.values()), "co-occurrence counts are ints >= 0"
        del loaded


def _check_items(items: list[ProbeItem]) -> None:
    assert items, "items() returned nothing"
    assert len({it.item_id for it in items}) == len(items), "item_id must be unique"
    by_pair: dict[str, list[ProbeItem]] = defaultdict(list)
    for it in items:
        assert it.condition in ("match", "mismatch"), f"{it.item_id}: condition {it.condition!r}"
        by_pair[it.pair_id].append(it)
    for pid, its in by_pair.items():
        conds = Counter(it.condition for it in its)
        assert conds == Counter({"match": 1, "mismatch": 1}), f"pair {pid}: needs one match and one mismatch item, has {dict(conds)}"
        assert len({(it.word, it.direction) for it in its}) == 1, f"pair {pid}: match and mismatch must share word and direction"
        match = next(it for it in its if it.condition == "match")
        mism = next(it for it in its if it.condition == "mismatch")
        if match.env_word is not None:
            assert match.env_word == match.word, f"pair {pid}: the match environment must hold the target"
            assert mism.env_word != mism.word, f"pair {pid}: the mismatch environment must not hold the target"


def _sample_pairs(items: list[ProbeItem], max_items: int) -> list[ProbeItem]:
    pairs: dict[str, list[ProbeItem]] = defaultdict(list)
    for it in items:
        pairs[it.pair_id].append(it)
    out: list[ProbeItem] = []
    for its in pairs.values():
        if len(out) + len(its) > max_items and out:
            break
        out.extend(sorted(its, key=lambda i: i.condition))
    return out


def _check_batch(batch: ProbeBatch, items: list[ProbeItem]) -> None:
    B = len(items)
    assert batch.items == items, "batch.items must be the items asked for, in order"
    assert batch.target_ids.dim() == 2 and batch.target_ids.shape[0] == B, "target_ids must be [B, T]"
    assert batch.target_positions.shape == batch.target_ids.shape, "target_positions must match target_ids"
    assert batch.env_mask.dim() == 2 and batch.env_mask.shape[0] == B, "env_mask must be [B, S]"
    S = batch.env_mask.shape[1]
    for k, v in batch.model_inputs.items():
        if k in ("input_ids", "attention_mask", "inputs_embeds"):
            assert v.shape[0] == B and v.shape[1] == S, f"model_inputs[{k!r}] is not [B, S={S}, ...]"
    valid = batch.target_ids >= 0
    assert valid[:, 0].all(), "every item needs at least one target sub-token"
    pos = batch.target_positions
    assert ((pos >= 0) & (pos < S))[valid].all(), "target_positions out of range"
    assert (batch.env_mask.sum(1) > 0).all(), "every item needs at least one environment position"
    first_env_after = [
        int(batch.env_mask[b].nonzero().max()) >= int(batch.predict_positions[b]) for b in range(B)
    ]
    assert not any(first_env_after), "environment positions must come before the predicted position"
    if "input_ids" in batch.model_inputs:
        ids = batch.model_inputs["input_ids"]
        for b in range(B):
            for k in range(1, int(valid[b].sum())):  # teacher forcing: sub-token k-1 sits at position p_k
                assert ids[b, pos[b, k]] == batch.target_ids[b, k - 1], "later sub-tokens must be fed after the earlier ones"


def _check_pairs_differ_only_in_environment(batch: ProbeBatch) -> None:
    if "input_ids" not in batch.model_inputs or batch.env_span is None:
        return
    ids = batch.model_inputs["input_ids"]
    idx = {it.item_id: b for b, it in enumerate(batch.items)}
    pairs: dict[str, dict[str, int]] = defaultdict(dict)
    for it in batch.items:
        pairs[it.pair_id][it.condition] = idx[it.item_id]
    for pid, d in pairs.items():
        if len(d) != 2:
            continue
        a, b = d["match"], d["mismatch"]
        if ids[a].shape != ids[b].shape:
            continue
        diff = ids[a] != ids[b]
        # a VLM's pair has the same tokens (image placeholders) and differs in the pixels
        pixels_differ = any(
            k not in ("input_ids", "attention_mask") and v.shape[:1] == ids.shape[:1] and not torch.equal(v[a], v[b])
            for k, v in batch.model_inputs.items()
        )
        assert diff.any() or pixels_differ, f"pair {pid}: match and mismatch inputs are identical"
        assert not (diff & ~(batch.env_span[a] | batch.env_span[b])).any(), (
            f"pair {pid}: match and mismatch differ outside the environment"
        )


# --------------------------------------------------------------------------------------------
# A fake adapter: no weights, known answers. Words w0..w{n-1}; ids: ENV i, LAN n+i, frame 2n.
# --------------------------------------------------------------------------------------------
class _CopyModel(torch.nn.Module):
    """logits[b, s] = strength * [LAN form of every ENV token at positions <= s] (+ tiny noise)."""

    def __init__(self, n_words: int, strength: float, seed: int):
        super().__init__()
        self.n = n_words
        self.strength = strength
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", 0.01 * torch.randn(2 * n_words + 1, generator=g))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        V = 2 * self.n + 1
        is_env = input_ids < self.n
        onehot = torch.zeros(*input_ids.shape, V)
        onehot.scatter_(-1, (input_ids + self.n).clamp(max=V - 1)[..., None], is_env[..., None].float())
        seen = onehot.cumsum(1).clamp(max=1)
        # reverse direction: a LAN token in context boosts its ENV form
        is_lan = (input_ids >= self.n) & (input_ids < 2 * self.n)
        onehot2 = torch.zeros(*input_ids.shape, V)
        onehot2.scatter_(-1, (input_ids - self.n).clamp(min=0)[..., None], is_lan[..., None].float())
        seen = seen + 0.5 * onehot2.cumsum(1).clamp(max=1)
        logits = self.strength * seen + self.noise

        @dataclass
        class Out:
            logits: torch.Tensor

        return Out(logits)


class FakeAdapter(Adapter):
    """Engine-testing adapter: grounding strength grows with the step (``strength = step / 10``),
    co-occurrence of word i at step s is ``i * s``."""

    name = "fake"

    @dataclass
    class Options(Adapter.Options):
        n_words: int = 6
        steps: tuple = (0, 10, 20)
        seeds: tuple = (0, 1)
        broken_steps: tuple = ()  #: steps whose load raises InputError

    def checkpoints(self):
        return [Checkpoint(run=f"fake-s{s}", path=f"fake://{s}/{t}", seed=s, step=t, group="fake") for s in self.options.seeds for t in self.options.steps]

    def load(self, ckpt):
        from vlground.errors import InputError

        if ckpt.step in self.options.broken_steps:
            raise InputError(f"{ckpt.path}: corrupt checkpoint")
        model = _CopyModel(self.options.n_words, strength=ckpt.step / 10, seed=ckpt.seed).eval()
        return LoadedModel(checkpoint=ckpt, model=model)

    def capabilities(self, loaded):
        return frozenset({Capability.TRAJECTORY, Capability.COOCCURRENCE})

    def items(self, loaded):
        n = self.options.n_words
        out = []
        for direction in ("env2lan", "lan2env"):
            for i in range(n):
                d = (i + 1) % n
                pid = f"{direction}-w{i}"
                out.append(ProbeItem(f"{pid}-m", pid, f"w{i}", "match", direction, env_word=f"w{i}"))
                out.append(ProbeItem(f"{pid}-x", pid, f"w{i}", "mismatch", direction, env_word=f"w{d}"))
        return out

    def batch(self, loaded, items):
        n = self.options.n_words
        frame = 2 * n
        rows, targets = [], []
        for it in items:
            e, w = int(it.env_word[1:]), int(it.word[1:])
            if it.direction == "env2lan":
                rows.append([frame, e, frame, frame])
                targets.append(n + w)
            else:
                rows.append([frame, n + e, frame, frame])
                targets.append(w)
        ids = torch.tensor(rows)
        env = torch.zeros_like(ids, dtype=torch.bool)
        env[:, 1] = True
        return ProbeBatch(
            items=list(items),
            model_inputs={"input_ids": ids},
            target_ids=torch.tensor(targets)[:, None],
            target_positions=torch.full((len(items), 1), 3),
            env_mask=env,
            env_span=env.clone(),
        )

    def cooccurrence(self, loaded, words):
        return {w: int(w[1:]) * int(loaded.checkpoint.step) for w in words}
