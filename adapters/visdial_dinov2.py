"""``visdial_dinov2``: language models trained from scratch on Visual Dialog with DINOv2 patch
features as the environment (no projector), probed with inpainted mismatches.

The runs are ``vlground train`` runs on a corpus built with ``build-corpus --visdial``; the
adapter is the text testbed's (:class:`~vlground.adapters.childes.ChildesAdapter`: checkpoints,
loading, co-occurrence, lens) with images in place of ENV words:

* items: one pair per annotated object of ``--annotations`` (the COCO file of ``--images``):
  match = the source image, mismatch = the image ``build-mismatch`` made from it (``--mismatch``;
  its ``annotations.json`` names the source file and category, and a record that does not fit
  the annotations is skipped with a note). Target: ``w<LAN>`` for the object's category word
  (:func:`vlground.datasets.visdial.category_word`; a category with no single word or no
  ``w<LAN>`` in the vocabulary is skipped with a note);
* context: ``<bos> <image> x n_tokens`` + ``--prompt`` (default ``<Q> what is this <A> it is a``;
  ``<...>`` markers as written, other words as ``w<LAN>``), the corpus's own dialog format; the
  target is read at the prompt's last position;
* model inputs: ``input_ids`` with ``<image>`` placeholders, ``image_mask`` (bool ``[B, S]``)
  and ``image_features`` (float32 ``[B, n_tokens, d]``); the loaded model is an
  :class:`ImageFeatureLM` that puts the features in place of the placeholders' embeddings, as
  training did (:func:`vlground.train.data.merge_image_features`);
* features of the probe images come from the vision model recorded in the corpus (same id, init,
  seed, preprocessing; checked), computed once into ``MISMATCH/features-<model>-<hash>/``;
* ``env_mask``: the patch positions inside the object's box (:func:`box_to_patches` on the
  corpus's recorded preprocessing; patch ``k`` sits at ``1 + n_prefix + k``, ``n_prefix`` = CLS +
  registers); ``env_span``: every patch position (CLS and registers excluded).

Runs are named ``dinov2:<run>`` or ``dinov2-random:<run>`` from their corpus's ``vision_init``, so
a pretrained and a random-init control appear as separate groups in the report.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlground.adapters.childes import ChildesAdapter
from vlground.engine.adapter import Checkpoint, LoadedModel, ProbeBatch, ProbeItem
from vlground.errors import InputError

log = logging.getLogger(__name__)


class ImageFeatureLM(nn.Module):
    """A trained causal LM whose ``<image>`` positions take feature vectors as input embeddings.

    ``forward(input_ids | inputs_embeds, attention_mask, image_features [B, n, d] or [n, d],
    image_mask [B, S], **kwargs)``; ``config``, ``get_input_embeddings`` and module paths
    (``lm.<...>``) are the wrapped model's, so saliency, head ablation and the lens work on it.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.config = lm.config

    def get_input_embeddings(self):
        return self.lm.get_input_embeddings()

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def set_attn_implementation(self, impl):
        return self.lm.set_attn_implementation(impl)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, image_features=None, image_mask=None, **kwargs):
        from vlground.train.data import merge_image_features

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if image_features is not None:
            inputs_embeds = merge_image_features(inputs_embeds, image_features, image_mask)
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)


@dataclass
class _Prepared:
    """Per run: the prompt ids, the features cache and the items (meta holds rows and patches)."""

    prefix: list[int]
    n_tokens: int
    n_prefix: int
    features: np.ndarray
    items: list[ProbeItem]


class VisdialDinov2Adapter(ChildesAdapter):
    name = "visdial_dinov2"

    @dataclass
    class Options(ChildesAdapter.Options):
        images: Path | None = None  #: folder of the probe images (``coco/val2014``)
        annotations: Path | None = None  #: COCO ``instances.json`` of those images (boxes, categories)
        mismatch: Path | None = None  #: folder written by ``vlground build-mismatch`` from them
        prompt: str = "<Q> what is this <A> it is a"  #: text after the image; the object's word comes next
        min_overlap: float = 0.5  #: a patch is inside the box when this share of it is covered
        vision_batch_size: int = 16  #: images per vision forward pass when featurising probe images

    def __init__(self, options=None):
        super().__init__(options)
        o = self.options
        missing = [f for f, v in (("--images", o.images), ("--annotations", o.annotations), ("--mismatch", o.mismatch)) if v is None]
        if missing:
            raise InputError(f"adapter {self.name}: give {', '.join(missing)}")
        self._prepared: dict[str, _Prepared] = {}

    # -- checkpoints and loading -------------------------------------------------------------------
    def _corpus_meta(self, run: Path) -> dict:
        corpus = self._run_info(run).get("corpus")
        f = Path(str(corpus)) / "corpus.json"
        if not f.is_file():
            raise InputError(f"{run}: its corpus {corpus} is missing")
        meta = json.loads(f.read_text(encoding="utf-8"))
        if not meta.get("vision"):
            raise InputError(f"{run}: trained on a text corpus ({corpus}); adapter {self.name} needs one built with --visdial")
        return meta

    def checkpoints(self) -> list[Checkpoint]:
        tags = {}
        for run in self.options.runs:
            meta = self._corpus_meta(Path(run))
            tags[str(Path(run))] = "dinov2-random" if meta.get("vision_init") == "random" else "dinov2"
        out = []
        for c in super().checkpoints():
            run = str(Path(c.path).parent.parent)
            out.append(Checkpoint(run=f"{tags[run]}:{c.run}", path=c.path, seed=c.seed, step=c.step, group=f"{tags[run]}:{c.group}"))
        return out

    def load(self, ckpt: Checkpoint) -> LoadedModel:
        loaded = super().load(ckpt)
        if loaded.extra.get("corpus") is None:
            raise InputError(f"{ckpt.path}: the run's corpus is missing (needed for the vision model and features)")
        loaded.model = ImageFeatureLM(loaded.model).eval()
        return loaded

    def unembed(self, loaded: LoadedModel):
        from vlground.mechanism.unembed import resolve_unembedding

        return resolve_unembedding(loaded.model.lm)

    # -- items ----------------------------------------------------------------------------------
    def items(self, loaded: LoadedModel) -> list[ProbeItem]:
        return self._prepare(loaded).items

    def _prepare(self, loaded: LoadedModel) -> _Prepared:
        key = str(loaded.extra.get("run_dir"))
        if key not in self._prepared:
            self._prepared[key] = self._make(loaded)
        return self._prepared[key]

    def _note(self, msg: str) -> None:
        log.warning("skipped %s", msg)
        self._notes.append(msg)

    def _make(self, loaded: LoadedModel) -> _Prepared:
        from vlground.adapters.hf_vlm import ObjectItem, _match_mismatch, _read_mismatch
        from vlground.datasets.visdial import category_word
        from vlground.datasets.visdial_corpus import IMAGE, _loader, image_key
        from vlground.vision.coco import load_coco
        from vlground.vision.features import FeatureCache, Featurizer, VisionSpec, content_key, default_cache_dir, identity
        from vlground.vision.geometry import Preprocess, box_to_patches

        o = self.options
        corpus = loaded.extra["corpus"]
        record = corpus.meta["vision"]["record"]
        vocab = loaded.tokenizer.get_vocab()
        # the prompt in the corpus's vocabulary
        words = o.prompt.split()
        toks = [w if w.startswith("<") and w.endswith(">") else f"{w.lower()}<LAN>" for w in words]
        missing = [t for t in toks + ["<bos>", IMAGE] if t not in vocab]
        if missing:
            raise InputError(f"--prompt {o.prompt!r}: not in the vocabulary of {corpus.path}: {', '.join(missing)}")
        n_tok, n_prefix = int(record["n_tokens"]), int(record["n_prefix"])
        prefix = [vocab["<bos>"]] + [vocab[IMAGE]] * n_tok + [vocab[t] for t in toks]
        pre = Preprocess(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in record["preprocess"].items()})
        # objects, mismatched images, target words
        coco = load_coco(o.annotations, o.images)
        self._notes.extend(str(p) for p in coco.skipped)
        mismatched = _read_mismatch(Path(o.mismatch))
        chosen = []
        annotations = coco.annotations[: o.limit] if o.limit is not None else coco.annotations
        for ann in annotations:
            image = coco.images[ann.image_id]
            where = f"{coco.path.name}: annotation {ann.id}"
            w = category_word(ann.category)
            if w is None or f"{w}<LAN>" not in vocab:
                self._note(f"{where}: category {ann.category!r} has no single word in the vocabulary")
                continue
            try:
                mm_file, replacement = _match_mismatch(mismatched, Path(o.mismatch), ann, image)
            except InputError as exc:
                self._note(f"{where}: {exc}")
                continue
            pm = box_to_patches(ann.bbox, (image.width, image.height), pre, min_overlap=o.min_overlap)
            if pm.problem:
                self._note(f"{where}: {pm.problem}")
                continue
            chosen.append((ann, image, w, mm_file, replacement, pm))
        if not chosen:
            first = f" (first: {self._notes[-1]})" if self._notes else ""
            raise InputError(f"{o.annotations}: no probe items; all {len(annotations)} objects were skipped{first}")
        # features of every image, once, by the corpus's vision model
        featurizer = Featurizer(VisionSpec.from_record(record), device=str(loaded.device), batch_size=o.vision_batch_size)
        now = featurizer.record()
        if identity(now) != identity(record):
            raise InputError(f"{record['model']}: no longer the vision model {corpus.path} was featurised with "
                             "(config, weights, processor or preprocessing changed)")
        cache = FeatureCache.open(default_cache_dir(Path(o.mismatch), record), record)
        todo = {}
        for ann, image, w, mm_file, _, _ in chosen:
            todo[image_key(image)] = _loader(image.path)
            todo[content_key(mm_file)] = _loader(mm_file)  # keyed by content, never by name
        bad: dict[str, str] = {}
        cache.fill(todo, featurizer, progress=True, on_error=lambda k, why: bad.__setitem__(k, why))
        items = []
        for ann, image, w, mm_file, replacement, pm in chosen:
            k_m, k_x = image_key(image), content_key(mm_file)
            if k_m in bad or k_x in bad:
                self._note(f"{coco.path.name}: annotation {ann.id}: {bad.get(k_m) or bad.get(k_x)}")
                continue
            rows = tuple(int(r) for r in cache.rows([k_m, k_x]))
            obj = ObjectItem(ann.id, str(image.path), str(mm_file), (image.width, image.height), tuple(ann.bbox),
                             tuple(int(i) for i in pm.indices), (vocab[f"{w}<LAN>"],))
            pid = f"ann{ann.id}"
            meta = {"object": obj, "rows": rows}
            items.append(ProbeItem(f"{pid}-m", pid, w, "match", env_word=w, meta=meta))
            items.append(ProbeItem(f"{pid}-x", pid, w, "mismatch", env_word=category_word(replacement or "") , meta=meta))
        log.info("%d objects probed, %d notes", len(items) // 2, len(self._notes))
        return _Prepared(prefix, n_tok, n_prefix, cache.array(), items)

    # -- batches ------------------------------------------------------------------------------------
    def batch(self, loaded: LoadedModel, items: list[ProbeItem]) -> ProbeBatch:
        p = self._prepare(loaded)
        B, S = len(items), len(p.prefix)
        ids = torch.tensor(p.prefix, dtype=torch.long).repeat(B, 1)
        image_mask = torch.zeros((B, S), dtype=torch.bool)
        image_mask[:, 1:1 + p.n_tokens] = True
        env_mask = torch.zeros((B, S), dtype=torch.bool)
        env_span = torch.zeros((B, S), dtype=torch.bool)
        env_span[:, 1 + p.n_prefix:1 + p.n_tokens] = True
        rows, targets = [], []
        for b, it in enumerate(items):
            obj = it.meta["object"]
            rows.append(it.meta["rows"][0 if it.condition == "match" else 1])
            env_mask[b, 1 + p.n_prefix + torch.tensor(obj.patches, dtype=torch.long)] = True
            targets.append(obj.word_ids[0])
        feats = torch.from_numpy(np.asarray(p.features[np.asarray(rows)], dtype=np.float32))  # [B, n_tokens, d]
        inputs = {"input_ids": ids, "attention_mask": torch.ones((B, S), dtype=torch.long),
                  "image_features": feats, "image_mask": image_mask}
        target_ids = torch.tensor(targets, dtype=torch.long)[:, None]
        target_pos = torch.full((B, 1), S - 1, dtype=torch.long)
        return ProbeBatch(list(items), inputs, target_ids, target_pos, env_mask, env_span)

    # -- lens -----------------------------------------------------------------------------------
    def lens_batches(self, loaded: LoadedModel, n_chunks: int = 16, max_len: int | None = None):
        from vlground.train.data import make_batch
        from vlground.vision.features import corpus_images

        corpus = loaded.extra.get("corpus")
        if corpus is None:
            return None
        images = corpus_images(corpus)
        split_f = Path(loaded.extra["run_dir"]) / "split.json"
        held = json.loads(split_f.read_text()).get("val", []) if split_f.is_file() else []
        idx = np.asarray(list(held[:n_chunks]) or list(range(min(n_chunks, corpus.n_chunks))), dtype=np.int64)
        out = []
        for i in range(0, len(idx), 8):
            b = make_batch(corpus.chunks, idx[i:i + 8], corpus.pad_id, images)
            b.pop("labels")
            out.append(b)
        return out

    def settings(self) -> dict:
        s = super().settings()
        s.pop("templates", None)
        for k in ("images", "annotations", "mismatch"):
            s[k] = str(Path(getattr(self.options, k)).resolve())
        return s
