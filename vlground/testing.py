"""Tools for testing adapters: a conformance check any adapter's tests can call (also
``vlground check-adapter NAME --model PATH``), and a fake adapter that exercises the whole engine
without weights.

In your adapter's tests::

    from vlground.testing import check_adapter

    def test_conformance(tmp_path):
        adapter = MyAdapter.from_options({...})   # on a tiny model you build and save
        check_adapter(adapter)

``check_adapter`` raises ``AssertionError`` with a message naming the item and the rule of the
interface (:mod:`vlground.engine.adapter`) the adapter breaks. Beyond the shapes and the scoring
rule it checks:

* **painted boxes** (image adapters with :meth:`image_layout` and :meth:`view_pixels`): each
  item's box is painted white on black at the image's size and run through the adapter's real
  processor; tokens whose cell is clearly white (> 0.8) must be in ``env_mask``, tokens clearly
  black (< 0.2, when the box covers at least one cell by half) must not;
* **one forward path**: the saliency pass calls the model with every input of the scoring pass
  (``input_ids`` as ``inputs_embeds``) and gives the same log-probabilities at the predicted row;
* **pairs** differ only in the environment, compared one item at a time (flattened pixel inputs
  such as Qwen2-VL's ``pixel_values`` have no per-item row);
* **a box-heads step**: saliency from image tokens into the predicted position gives inside-box
  shares in [0, 1] per head;
* padding does not change a score.

Image adapters (items holding an ``ObjectItem``) also get the checks that do not trust the adapter
(:mod:`vlground.kit`): geometry read from the model with its vision attention zeroed
(:mod:`vlground.kit.geometry`), the image tokens of ``input_ids`` against the layout and the
model config's image token, the scoring pass against the model run on the plain processor output,
no leak from the target's later sub-tokens, and an image that changes the scores
(:mod:`vlground.kit.inputs`). :func:`check_adapter` returns a :class:`KitReport` with the measured
agreement figures.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

from vlground.engine.adapter import (
    Adapter,
    Capability,
    Checkpoint,
    LoadedModel,
    ProbeBatch,
    ProbeItem,
)


@dataclass
class KitReport:
    """What :func:`check_adapter` measured (it raises on a failed check)."""

    checks: list[str] = field(default_factory=list)  #: the checks that ran and passed, in order
    geometry: list = field(default_factory=list)  #: one :class:`vlground.kit.geometry.GeometryReport` per checkpoint
    notes: list[str] = field(default_factory=list)  #: e.g. processor outputs left out (``labels``)


def check_adapter(adapter: Adapter, max_checkpoints: int = 2, max_items: int = 8, atol: float = 1e-4,
                  paint: bool = True) -> KitReport:
    """Check that ``adapter`` keeps the interface's semantics on its first checkpoints (see the module
    docstring); ``paint=False`` skips both geometry checks (painted boxes and the model-based one)."""
    report = KitReport()
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
        image = bool(sample) and all("object" in it.meta for it in sample) and hasattr(adapter, "call_hook")
        if image:
            from vlground.kit.inputs import check_image_tokens

            check_image_tokens(adapter, loaded, sample[0])
            report.checks.append("image tokens: config id, count and views")
        batch = adapter.batch(loaded, sample)
        _check_batch(batch, sample)
        _check_pairs_differ_only_in_environment(adapter, loaded, sample)
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
        if image:
            from vlground.kit.inputs import check_image_matters, check_no_leak, check_plain_processor

            check_image_matters(sample, lp)
            report.checks.append("the image changes the scores")
            match = next(it for it in sample if it.condition == "match")
            if check_no_leak(adapter, loaded, match):
                report.checks.append("no leak from the target's later sub-tokens")
            plain = check_plain_processor(adapter, loaded, match, atol=atol)
            report.checks.append(f"scoring pass = model on the plain processor output (max |diff| {plain['max_diff']:.1e})")
            report.notes.extend(n for n in adapter.skipped() if n.startswith("processor output"))
        if paint and hasattr(adapter, "view_pixels") and all("object" in it.meta for it in sample):
            check_painted_boxes(adapter, loaded, sample)
            report.checks.append("painted boxes")
        if paint and image and Capability.ATTENTION in adapter.capabilities(loaded):
            from vlground.kit.geometry import check_model_geometry

            geo = check_model_geometry(adapter, loaded, [it for it in sample if it.condition == "match"])
            report.geometry.append(geo)
            report.notes.extend(geo.notes)
            report.checks.append("model-based geometry (" + ", ".join(
                f"{v} {a:.2f}" for v, a in geo.pattern_agreement.items()) + (
                f"; boxes {geo.box_agreement:.2f}" if geo.box_agreement is not None else "") + ")")
        caps = adapter.capabilities(loaded)
        if Capability.ATTENTION in caps:
            site = adapter.attention_site(loaded)
            assert site is not None, "Capability.ATTENTION needs attention_site()"
            out = adapter.forward(loaded, batch, output_attentions=True)
            atts = [a for a in out.attentions if a is not None]
            assert len(atts) == len(site.layers), f"{len(atts)} attention maps for {len(site.layers)} attention layers"
            assert atts[0].shape[1] == site.n_heads, "attention maps disagree with attention_site().n_heads"
            check_forward_path(adapter, loaded, batch)
            report.checks.append("one forward path")
            if batch.env_span is not None:
                _check_box_shares(adapter, loaded, batch)
                report.checks.append("a box-heads step")
        if Capability.HIDDEN_STATES in caps:
            unembed = adapter.unembed(loaded)
            assert unembed is not None, "Capability.HIDDEN_STATES needs unembed()"
            out = adapter.forward(loaded, batch, output_hidden_states=True)
            logits = unembed(out.hidden_states[-2])
            assert logits.shape == out.logits.shape, "unembed(h) must give logits of the model's shape"
        if Capability.COOCCURRENCE in caps:
            words = sorted({it.word for it in items})
            cooc = adapter.cooccurrence(loaded, words)
            assert cooc is not None and set(cooc) == set(words), "cooccurrence() must give a count per word"
            assert all(isinstance(v, int) and v >= 0 for v in cooc.values()), "co-occurrence counts are ints >= 0"
        del loaded
    return report


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


def _check_pairs_differ_only_in_environment(adapter: Adapter, loaded: LoadedModel, items: list[ProbeItem]) -> None:
    """Match and mismatch of a pair, one item per batch: same tokens outside the environment, and
    some input differs (the tokens, or any other input such as flattened pixel values)."""
    pairs: dict[str, dict[str, ProbeItem]] = defaultdict(dict)
    for it in items:
        pairs[it.pair_id][it.condition] = it
    for pid, d in pairs.items():
        if len(d) != 2:
            continue
        a, b = adapter.batch(loaded, [d["match"]]), adapter.batch(loaded, [d["mismatch"]])
        if "input_ids" not in a.model_inputs or a.env_span is None:
            continue
        ia, ib = a.model_inputs["input_ids"][0], b.model_inputs["input_ids"][0]
        if ia.shape != ib.shape:
            continue
        diff = ia != ib
        others = [k for k in a.model_inputs if k not in ("input_ids", "attention_mask")]
        differ = [k for k in others if a.model_inputs[k].shape != b.model_inputs.get(k, a.model_inputs[k]).shape
                  or not torch.equal(a.model_inputs[k], b.model_inputs[k])]
        assert diff.any() or differ, f"pair {pid}: match and mismatch inputs are identical ({', '.join(['input_ids'] + others)})"
        outside = diff & ~(a.env_span[0] | b.env_span[0])
        assert not outside.any(), (
            f"pair {pid}: match and mismatch differ outside the environment at positions {outside.nonzero()[:, 0].tolist()[:5]}")


def check_forward_path(adapter: Adapter, loaded: LoadedModel, batch: ProbeBatch) -> None:
    """The saliency pass (:meth:`Adapter.saliency`) must call the model with every input of the scoring
    pass (:meth:`Adapter.forward`; ``input_ids`` may become ``inputs_embeds``) and give the same
    log-probabilities at each item's predicted position."""
    calls: list[tuple[dict, torch.Tensor]] = []

    def record(module, args, kwargs, output):
        calls.append(({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}, output.logits.detach()))

    handle = loaded.model.register_forward_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.forward(loaded, batch)
        adapter.saliency(loaded, batch)
    finally:
        handle.remove()
    assert len(calls) == 2, f"expected one model call per pass, saw {len(calls)} (saliency must call loaded.model once)"
    (scoring, ref), (sal, got) = calls
    for k, v in scoring.items():
        if k == "input_ids":
            assert "input_ids" in sal or "inputs_embeds" in sal, "the saliency pass gets neither input_ids nor inputs_embeds"
            continue
        assert k in sal, (f"items {[it.item_id for it in batch.items]}: the saliency pass drops the model input {k!r} "
                          "that the scoring pass gives (route every input through adapter.model_inputs)")
        assert v.shape == sal[k].shape and torch.equal(v.to(sal[k].device), sal[k]), (
            f"the saliency pass gives the model input {k!r} another value than the scoring pass")
    pos = batch.predict_positions.to(ref.device)
    rows = torch.arange(len(batch), device=ref.device)
    want = torch.log_softmax(ref[rows, pos].float(), -1)
    at = pos if got.shape[1] == ref.shape[1] else torch.searchsorted(torch.unique(pos), pos)  # logits_to_keep
    have = torch.log_softmax(got.to(ref.device)[rows, at].float(), -1)
    tol = 1e-4 if ref.dtype == torch.float32 else 5e-2
    worst = (have - want).abs().amax(-1)
    for b, it in enumerate(batch.items):
        assert worst[b] <= tol, (f"item {it.item_id}: the saliency pass gives other log-probabilities than the scoring pass "
                                 f"(max |diff| {float(worst[b]):.2e} at the predicted position)")


def _check_box_shares(adapter: Adapter, loaded: LoadedModel, batch: ProbeBatch) -> None:
    """One ``boxheads`` step (:class:`vlground.probes.boxheads.BoxHeadsProbe`) on the batch's match items:
    env_mask within env_span, and every head's shares in [0, 1]."""
    from vlground.probes.base import ProbeContext
    from vlground.probes.boxheads import BoxHeadsProbe

    match = [it for it in batch.items if it.condition == "match"] or list(batch.items)
    sub = adapter.batch(loaded, match)
    for b, it in enumerate(sub.items):
        assert not (sub.env_mask[b] & ~sub.env_span[b]).any(), f"item {it.item_id}: env_mask marks positions outside env_span"
    probe = BoxHeadsProbe(BoxHeadsProbe.Options(mech_items=len(match)))
    res = probe.run(ProbeContext(adapter, loaded, match))
    rows = res.tables.get("heads", [])
    assert rows, f"boxheads gave no head rows ({'; '.join(res.notes)})"
    for r in rows:
        for name in ("inside_share", "artefact_share", "saliency_share"):
            v = getattr(r, name)
            assert 0 <= v <= 1 + 1e-6, f"boxheads: layer {r.layer} head {r.head}: {name} {v} outside [0, 1]"
        assert r.inside_vs_chance >= 0, f"boxheads: layer {r.layer} head {r.head}: inside_vs_chance {r.inside_vs_chance} < 0"
    assert sum(r.saliency_share for r in rows) > 0, "boxheads: no saliency reaches the image tokens from the predicted position"


def check_painted_boxes(adapter, loaded: LoadedModel, items: list[ProbeItem], white: float = 0.8, black: float = 0.2) -> None:
    """Paint each item's box white on black, run it through the adapter's processor, and compare each
    image token's brightness (its cell in :meth:`view_pixels`) with the batch's ``env_mask``."""
    import dataclasses
    import tempfile

    import numpy as np
    from PIL import Image

    from vlground.vision.layout import clip_box, token_brightness

    seen = set()
    with tempfile.TemporaryDirectory(prefix="vlground-paint-") as tmp:
        for it in items:
            obj = it.meta["object"]
            if obj.annotation_id in seen:
                continue
            seen.add(obj.annotation_id)
            w, h = obj.image_size
            x0, y0, x1, y1 = clip_box(obj.bbox, (w, h))
            pixels = np.zeros((h, w, 3), np.uint8)
            pixels[int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = 255
            file = f"{tmp}/painted-{obj.annotation_id}.png"
            Image.fromarray(pixels).save(file)
            painted = dataclasses.replace(it, meta={**it.meta, "object": dataclasses.replace(obj, image=file, mismatch_image=file)})
            batch = adapter.batch(loaded, [painted])
            env = batch.env_mask[0]
            enc = adapter.encode(loaded, file)
            layout = adapter.image_layout(loaded, enc, (w, h))
            views = adapter.view_pixels(loaded, enc, layout)
            where = f"item {it.item_id} (box {[round(float(v), 1) for v in obj.bbox]} in a {w}x{h} image)"
            for g in layout.grids:
                bright = token_brightness(g, views[g.name])
                clear = bright.max() >= 0.5  # a box smaller than half a cell keeps only its centre cell
                for k, p in enumerate(g.positions):
                    r, c = divmod(k, g.cols)
                    tok = f"token at position {p} (view {g.name!r}, row {r}, col {c})"
                    assert not (bright[k] > white and not env[p]), (
                        f"{where}: {tok} is {bright[k]:.0%} white in the painted image but env_mask says outside the box")
                    assert not (clear and bright[k] < black and env[p]), (
                        f"{where}: {tok} is {bright[k]:.0%} white in the painted image but env_mask says inside the box")


def grey_box_mismatch(out, annotations, images):
    """A mismatch folder in ``build-mismatch``'s format made without a diffusion model, for adapter
    tests and benchmarks: each annotation's image with its box filled grey (the pixels differ inside
    the box only); the replacement category is the next category by id."""
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    out, annotations, images = Path(out), Path(annotations), Path(images)
    src = json.loads(annotations.read_text())
    cats = {c["id"]: c["name"] for c in src["categories"]}
    order = sorted(cats)
    by_id = {im["id"]: im for im in src["images"]}
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for ann in src["annotations"]:
        im = by_id.get(ann["image_id"])
        if im is None or ann["category_id"] not in cats or not (images / im["file_name"]).is_file():
            continue
        with Image.open(images / im["file_name"]) as f:
            pixels = np.asarray(f.convert("RGB")).copy()
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        pixels[max(y, 0):y + h, max(x, 0):x + w] = 128
        name = f"{Path(im['file_name']).stem}__ann{ann['id']}.png"
        Image.fromarray(pixels).save(out / name)
        repl = order[(order.index(ann["category_id"]) + 1) % len(order)]
        records.append({"id": ann["id"], "file_name": name, "width": im["width"], "height": im["height"],
                        "source_file": im["file_name"], "annotation_id": ann["id"],
                        "original_category": cats[ann["category_id"]], "replacement_category": cats[repl]})
    (out / "annotations.json").write_text(json.dumps({"images": records}))
    return out


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
