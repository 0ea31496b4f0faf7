"""Build an image + LAN corpus folder from Visual Dialog, COCO images and a DINOv2 model.

Steps of :func:`build_visdial_corpus`:

1. read the dialogs (:mod:`.visdial`) and the COCO file (images, boxes, categories); a dialog
   whose image is missing is skipped and listed;
2. featurise every image used, once, into a features cache (:mod:`vlground.vision.features`;
   default ``<out's parent>/features-<model>-<hash>/``, shared by corpora built beside each other
   with the same vision model); images already cached are not featurised again;
3. encode each dialog as ``<bos> <image> x n_tokens <C> caption <Q> question <A> answer ... <eos>``:
   one ``<image>`` position per DINOv2 output token (CLS, registers, then the patches row-major),
   words as ``w<LAN>``; the dialogs are concatenated in file order;
4. build the vocabulary (:mod:`.tokenizer`), cut ``chunk_len`` chunks (:mod:`.cooc`), and record
   for each image position which image and token it is (``image_pos.npy``);
5. co-occurrence: pair ``p`` is a COCO category named by one word ``w`` with ``w<LAN>`` in the
   vocabulary; it co-occurs in a chunk when ``w<LAN>`` is among the chunk's tokens and some image
   with a box of that category has a token in the chunk (``cooc.npz`` as in the text testbed);
   ``--drop-cooc`` as in the text testbed;
6. write everything through ``atomic_dir``.

Extra files beside the text testbed's (``vlground.corpus.format``)::

    image_pos.npy     int32 [n_chunks, chunk_len]: image * n_tokens + token at <image> positions, else -1
    image_rows.npy    int64 [n_images]: row of each corpus image in the features cache
    images.json       [{"image_id", "file_name", "key", "categories"}] per corpus image
    corpus.json       "vision": {"cache": path relative to the corpus, "record": the featurizer's record}
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from vlground.corpus.format import (FORMAT, LAN, SPECIALS, atomic_dir, check_build_options, check_out, is_corpus_folder,
                                    lan_token, write_json)
from vlground.errors import InputError

from .cooc import choose_dropped, chunk_sources, chunk_stream
from .tokenizer import build_vocab, save_tokenizer
from .visdial import category_word, read_visdial

log = logging.getLogger(__name__)

KIND = "visdial"
#: the lock file inside a features cache, held by the build filling it
CACHE_LOCK = ".fill.lock"
IMAGE = "<image>"
CAPTION, QUESTION, ANSWER = "<C>", "<Q>", "<A>"
MARKERS = (IMAGE, CAPTION, QUESTION, ANSWER)


@dataclass
class VisdialCorpusConfig:
    """Options of ``vlground build-corpus --visdial``."""

    visdial: str
    """Visual Dialog JSON file (``visdial_1.0_train.json``)."""
    images: str
    """Folder of the COCO images the dialogs talk about (``coco/train2014``)."""
    annotations: str
    """COCO ``instances_*.json`` holding those images and their boxes."""
    vision: str
    """DINOv2 hub id or folder (``facebook/dinov2-base``)."""
    out: str
    """The corpus folder to write; it must not exist unless ``overwrite``."""
    vision_init: str = "pretrained"
    """``pretrained``, or ``random``: the vision model's config with weights drawn from ``vision_seed``."""
    vision_seed: int = 0
    """Seed of the random initialisation (``vision_init=random``)."""
    features_cache: str | None = None
    """Features cache folder (default: ``<out's parent>/features-<model>-<hash>``)."""
    chunk_len: int = 512
    """Tokens per chunk (image tokens included); the tail chunk is right-padded."""
    min_count: int = 1
    """A word rarer than this becomes ``<unk>``."""
    drop_cooc: float = 0.0
    """Fraction of the co-occurring chunks to remove, as in the text testbed."""
    seed: int = 0
    """Seed choosing the dropped chunks."""
    limit: int | None = None
    """Only the first N dialogs."""
    device: str = "auto"
    """Where the vision model runs: auto (cuda if present), cpu, cuda."""
    batch_size: int = 16
    """Images per vision forward pass."""
    overwrite: bool = False
    """Replace an existing ``out`` (once the new one is complete)."""
    progress: bool = True
    """Show a progress bar while featurising."""

    def validate(self) -> None:
        check_build_options(self.chunk_len, self.min_count, self.drop_cooc, self.seed)
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit {self.limit}: must be at least 1")
        if self.batch_size < 1:
            raise InputError(f"batch size {self.batch_size}: must be at least 1")
        check_out(self.out, [self.visdial, self.images, self.annotations, self.features_cache], overwrite=self.overwrite)


def image_key(image) -> str:
    """Cache key of a COCO image: ``sha256:<hex>`` of the file's bytes, so two different images
    never share features (not even with the same name and size) and one image moved or renamed
    is found again. An unreadable file raises its :class:`OSError`."""
    from vlground.vision.features import content_key

    return content_key(image.path)


def _loader(path: Path):
    def load():
        from PIL import Image

        from vlground.vision.pixels import to_rgb

        try:
            with Image.open(path) as im:
                return to_rgb(im)
        except Image.DecompressionBombError as exc:
            raise InputError(f"decompression bomb refused ({exc})") from None

    return load


def build_visdial_corpus(config: VisdialCorpusConfig, featurizer=None) -> Path:
    """Write the corpus of ``config``; returns its path. ``featurizer`` (a
    :class:`~vlground.vision.features.Featurizer`) defaults to one of ``config.vision``."""
    from vlground.vision.coco import load_coco
    from vlground.vision.features import FeatureCache, Featurizer, VisionSpec, default_cache_dir

    config.validate()
    out = Path(config.out)
    # 1. dialogs and COCO
    vd = read_visdial(config.visdial)
    coco = load_coco(config.annotations, config.images)
    skipped: list[str] = list(vd.skipped) + [str(p) for p in coco.skipped]
    dialogs = vd.dialogs[: config.limit] if config.limit is not None else vd.dialogs
    by_image: dict[int, list] = {}
    for ann in coco.annotations:
        by_image.setdefault(ann.image_id, []).append(ann)
    name = vd.path.name
    kept = []
    for d in dialogs:
        if d.image_id not in coco.images:
            skipped.append(f"{name}: dialog {d.index} (image {d.image_id}): image not in {coco.path.name} or its file is missing/unreadable")
            continue
        kept.append(d)
    # 2. features
    if featurizer is None:
        from vlground.engine.adapter import resolve_device

        featurizer = Featurizer(VisionSpec(config.vision, config.vision_init, config.vision_seed),
                                device=str(resolve_device(config.device)), batch_size=config.batch_size)
    record = featurizer.record()
    cache_dir = Path(config.features_cache) if config.features_cache else default_cache_dir(out.resolve().parent, record)
    used = list(dict.fromkeys(d.image_id for d in kept))
    keys, bad = {}, {}
    for i in used:
        try:
            keys[i] = image_key(coco.images[i])
        except OSError as exc:
            keys[i] = f"unreadable:{i}"
            bad[keys[i]] = f"cannot read image ({exc.strerror or type(exc).__name__})"
    from vlground.locks import exclusive

    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(cache_dir / CACHE_LOCK, str(cache_dir)):  # one build fills a cache at a time
        cache = FeatureCache.open(cache_dir, record)
        cache.fill({keys[i]: _loader(coco.images[i].path) for i in used if keys[i] not in bad}, featurizer,
                   config.progress, on_error=lambda k, why: bad.__setitem__(k, why))
        good = [i for i in dict.fromkeys(d.image_id for d in kept) if keys[i] not in bad]
        rows = cache.rows([keys[i] for i in good])
    for i in used:
        if keys[i] in bad:
            skipped.append(f"{coco.path.name}: image {i} ({coco.images[i].file_name}): {bad[keys[i]]}; its dialogs skipped")
    kept = [d for d in kept if keys[d.image_id] not in bad]
    if not kept:
        first = f" (first: {skipped[0]})" if skipped else ""
        raise InputError(f"{config.visdial}: no usable dialog{first}")
    images = list(dict.fromkeys(d.image_id for d in kept))
    image_index = {iid: k for k, iid in enumerate(images)}
    no_boxes = [i for i in images if not by_image.get(i)]
    for i in no_boxes:
        skipped.append(f"{coco.path.name}: image {i} ({coco.images[i].file_name}): no boxes; its dialogs train but count no co-occurrence")
    n_tok = int(record["n_tokens"])

    # 3. encode in provisional ids (word -> id), one array per dialog
    tokens: list[str] = list(SPECIALS) + list(MARKERS)
    ids: dict[str, int] = {t: i for i, t in enumerate(tokens)}
    bos, eos = ids["<bos>"], ids["<eos>"]

    def lan(ws):
        out_ids = []
        for w in ws:
            t = w + LAN
            i = ids.get(t)
            if i is None:
                i = ids[t] = len(tokens)
                tokens.append(t)
            out_ids.append(i)
        return out_ids

    pieces, pos_pieces, sources = [], [], []
    n_rounds = 0
    for d in kept:
        seq = [bos] + [ids[IMAGE]] * n_tok + [ids[CAPTION]] + lan(d.caption)
        for r in d.rounds:
            seq += [ids[QUESTION]] + lan(r.question) + [ids[ANSWER]] + lan(r.answer)
        seq.append(eos)
        n_rounds += len(d.rounds)
        pos = np.full(len(seq), -1, dtype=np.int64)
        pos[1:1 + n_tok] = image_index[d.image_id] * n_tok + np.arange(n_tok)
        pieces.append(np.asarray(seq, dtype=np.int32))
        pos_pieces.append(pos)
        sources.append(f"{name}: dialog {d.index} (image {d.image_id})")
    stream_pid = np.concatenate(pieces)
    pos_stream = np.concatenate(pos_pieces)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]])
    del pieces, pos_pieces
    if int(pos_stream.max()) >= np.iinfo(np.int32).max:
        raise InputError(f"{config.visdial}: too many image tokens for int32 positions")

    # 4. vocabulary, chunks
    counts = np.bincount(stream_pid, minlength=len(tokens))
    word_counts = {t: int(c) for t, c in zip(tokens, counts) if t.endswith(LAN)}
    vocab = build_vocab(word_counts, MARKERS, config.min_count)
    unk = vocab["<unk>"]
    stream = np.fromiter((vocab.get(t, unk) for t in tokens), dtype=np.int32, count=len(tokens))[stream_pid]
    chunks = chunk_stream(stream, config.chunk_len, vocab["<pad>"])
    image_pos = chunk_stream(pos_stream.astype(np.int32), config.chunk_len, -1)
    sources_of = chunk_sources(starts, chunks.shape[0], config.chunk_len)

    # 5. pairs and co-occurrence
    pairs, skipped_categories = [], []
    for cid, cname in coco.categories.items():
        w = category_word(cname)
        if w is None:
            skipped_categories.append(f"{coco.path.name}: category {cid} {cname!r}: several words, no single <LAN> token names it")
        elif lan_token(w) not in vocab:
            skipped_categories.append(f"{coco.path.name}: category {cid} {cname!r}: no word {lan_token(w)!r} in the vocabulary")
        elif all(p["word"] != w for p in pairs):
            pairs.append({"word": w, "env_id": None, "lan_id": int(vocab[lan_token(w)]), "category_id": int(cid)})
    pairs.sort(key=lambda p: p["word"])
    cooc = _cooc(chunks, image_pos, n_tok, images, by_image, pairs, len(vocab))
    n_chunks_all = chunks.shape[0]
    n_cooc_all = int(np.count_nonzero(np.diff(cooc.indptr)))
    dropped = choose_dropped(cooc, config.drop_cooc, config.seed) if config.drop_cooc > 0 else None
    if dropped is not None and dropped.size:
        keep = np.ones(n_chunks_all, dtype=bool)
        keep[dropped] = False
        chunks, image_pos, sources_of, cooc = chunks[keep], image_pos[keep], sources_of[keep], cooc[keep]
    token_counts = np.bincount(chunks.reshape(-1), minlength=len(vocab)).astype(np.int64)

    # 6. write
    try:
        cache_ref = os.path.relpath(cache.folder.resolve(), out.resolve())
    except ValueError:  # another drive
        cache_ref = str(cache.folder.resolve())
    row_of = dict(zip(good, rows.tolist()))  # rows read under the lock
    rows = np.array([row_of[i] for i in images], dtype=np.int64)
    with atomic_dir(out, overwrite=config.overwrite, marker=is_corpus_folder) as tmp:
        np.save(tmp / "chunks.npy", np.ascontiguousarray(chunks, dtype=np.int32))
        np.save(tmp / "image_pos.npy", np.ascontiguousarray(image_pos, dtype=np.int32))
        np.save(tmp / "image_rows.npy", rows)
        np.save(tmp / "chunk_source.npy", sources_of.astype(np.int32))
        np.save(tmp / "token_counts.npy", token_counts)
        scipy.sparse.save_npz(tmp / "cooc.npz", cooc.tocsr(), compressed=True)
        if dropped is not None:
            np.save(tmp / "dropped_chunks.npy", dropped.astype(np.int64))
        write_json(tmp / "sources.json", sources)
        write_json(tmp / "vocab.json", vocab)
        write_json(tmp / "pairs.json", pairs)
        write_json(tmp / "images.json", [
            {"image_id": i, "file_name": coco.images[i].file_name, "key": keys[i],
             "categories": sorted({a.category for a in by_image.get(i, [])})} for i in images])
        save_tokenizer(vocab, tmp, model_max_length=config.chunk_len)
        all_counts = np.bincount(stream, minlength=len(vocab))
        is_lan = np.array([t.endswith(LAN) for t in vocab], dtype=bool)
        stats = {
            "dialogs": len(kept), "dialogs_skipped": len(dialogs) - len(kept), "rounds": n_rounds,
            "images": len(images), "images_without_boxes": len(no_boxes), "image_tokens_per_image": n_tok,
            "tokens": int(stream.shape[0]), "image_tokens": int(all_counts[vocab[IMAGE]]),
            "lan_tokens": int(all_counts[is_lan].sum()), "unk_tokens": int(all_counts[unk]),
            "vocab_size": len(vocab), "pairs": len(pairs), "chunk_len": int(config.chunk_len),
            "chunks": int(n_chunks_all), "cooc_chunks": n_cooc_all, "cooc_chunks_all_words": n_cooc_all, "chunks_kept": int(chunks.shape[0]),
            "cooc_chunks_kept": int(np.count_nonzero(np.diff(cooc.indptr))),
            "drop_cooc": float(config.drop_cooc), "seed": int(config.seed),
            "dropped_chunks": [] if dropped is None else [int(i) for i in dropped],
            "features_cache": str(cache.folder), "vision_calls": int(featurizer.calls),
            "skipped_categories": skipped_categories, "skipped": skipped,
        }
        write_json(tmp / "stats.json", stats)
        write_json(tmp / "corpus.json", {
            "format": FORMAT, "kind": KIND, "chunk_len": int(config.chunk_len), "n_chunks": int(chunks.shape[0]),
            "vocab_size": len(vocab), "n_pairs": len(pairs), "min_count": int(config.min_count),
            "drop_cooc": float(config.drop_cooc), "seed": int(config.seed),
            "inputs": [str(config.visdial), str(config.images), str(config.annotations)],
            "file_separator": "each dialog is <bos> <image> x n_tokens <C> caption (<Q> q <A> a)* <eos>; dialogs in file order",
            "image_token": IMAGE,
            "vision_init": record["init"],
            "vision": {"cache": cache_ref, "record": record},
            "options": {k: v for k, v in asdict(config).items() if k not in ("progress", "out", "device", "batch_size")},
        })
    log.info("%s: %d dialogs (%d skipped), %d images, %d chunks of %d (%d co-occurring)", out, len(kept),
             len(dialogs) - len(kept), len(images), chunks.shape[0], config.chunk_len, n_cooc_all)
    return out


def _cooc(chunks, image_pos, n_tok, images, by_image, pairs, vocab_size) -> scipy.sparse.csr_matrix:
    """CSR bool [n_chunks, n_pairs] (step 5 of the module docstring)."""
    n_chunks, chunk_len = chunks.shape
    if n_chunks == 0 or not pairs:
        return scipy.sparse.csr_matrix((n_chunks, len(pairs)), dtype=bool)
    rows = np.repeat(np.arange(n_chunks, dtype=np.int64), chunk_len)
    lan = scipy.sparse.csr_matrix((np.ones(rows.size, np.int8), (rows, chunks.reshape(-1).astype(np.int64))),
                                  shape=(n_chunks, vocab_size))
    lan = (lan[:, [p["lan_id"] for p in pairs]] > 0).astype(np.int8)
    pos = image_pos.reshape(-1)
    at = pos >= 0
    chunk_img = scipy.sparse.csr_matrix((np.ones(int(at.sum()), np.int8), (rows[at], pos[at] // n_tok)),
                                        shape=(n_chunks, len(images)))
    col = {p["category_id"]: j for j, p in enumerate(pairs)}
    r, c = [], []
    for k, iid in enumerate(images):
        for j in {col[a.category_id] for a in by_image.get(iid, []) if a.category_id in col}:
            r.append(k)
            c.append(j)
    img_pair = scipy.sparse.csr_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(images), len(pairs)))
    seen = ((chunk_img > 0).astype(np.int32) @ img_pair.astype(np.int32)) > 0
    both = scipy.sparse.csr_matrix(seen.multiply(lan), dtype=bool)
    both.eliminate_zeros()
    both.sort_indices()
    return both
