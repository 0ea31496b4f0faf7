"""Build an ENV/LAN corpus folder (``vlground.corpus.format``) from CHAT transcripts.

Steps of :func:`build_corpus`:

1. list the inputs (``.cha`` files, folders, ``.zip`` archives) and read each transcript with
   the CHAT reader, in input order (folders and archives in the reader's sorted order);
2. encode each file as ``<bos> utterance tokens ... <eos>`` (:mod:`.childes_text`) and
   concatenate the files into one stream; a file with errors and no readable utterance is
   skipped, an utterance the reader drops is counted, both reported as ``path:line: reason``;
3. build the vocabulary (:mod:`.tokenizer`), with ``min_count`` per form;
4. choose the counted words (``%mor`` tags, the function-word list, or ``cooc_words``), cut the
   stream into ``chunk_len`` chunks, compute co-occurrence and apply ``drop_cooc`` (:mod:`.cooc`);
5. write every file into a temporary folder renamed into place at the end (``atomic_dir``).
"""
from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vlground.chat.types import ChatFile
from vlground.corpus.format import (ENV, FORMAT, LAN, SPECIALS, atomic_dir, check_build_options, check_out,
                                    is_corpus_folder, write_json)
from vlground.errors import InputError

from .childes_text import act_tuple
from .cooc import (choose_dropped, chunk_sources, chunk_stream, cooc_chunk_mask, cooc_matrix, counted_words, mor_tags,
                   read_cooc_words)
from .tokenizer import build_vocab, pairs_from_vocab, save_tokenizer

log = logging.getLogger(__name__)

KIND = "childes"
#: how files are joined in the stream (recorded in corpus.json)
FILE_SEPARATOR = "each file is <bos> ... <eos>; files are concatenated in input order"


@dataclass
class BuildCorpusConfig:
    """Options of ``vlground build-corpus`` for CHAT input."""

    inputs: list[str]
    """``.cha`` files, folders (searched recursively) and ``.zip`` archives, read in this order."""
    out: str
    """The corpus folder to write; it must not exist unless ``overwrite``."""
    chunk_len: int = 512
    """Tokens per chunk; the tail chunk is right-padded with ``<pad>``."""
    min_count: int = 1
    """A word form (``w<ENV>`` or ``w<LAN>``, counted separately) rarer than this becomes ``<unk>``."""
    drop_cooc: float = 0.0
    """Fraction in [0, 1] of the co-occurring chunks to remove (``round(F * n)`` of them)."""
    seed: int = 0
    """Seed of ``numpy.random.default_rng`` that chooses the dropped chunks."""
    cooc_words: str | None = None
    """A file of the words whose co-occurrence counts (one per line, e.g. the probe's targets);
    default: every pair but closed-class words (``%mor`` tags, else the function-word list)."""
    strict: bool = False
    """Stop with an error at the first problem (error-severity) instead of skipping it."""
    overwrite: bool = False
    """Replace an existing ``out`` corpus folder (only once the new one is complete; never a folder
    without vlground's corpus marker, never an input)."""
    progress: bool = True
    """Show a tqdm progress bar over files (only on a terminal)."""

    def validate(self) -> None:
        if not self.inputs:
            raise InputError("build-corpus: no input given (pass .cha files, folders or .zip archives)")
        check_build_options(self.chunk_len, self.min_count, self.drop_cooc, self.seed)
        if self.cooc_words:
            read_cooc_words(self.cooc_words)  # a bad list fails before any transcript is read
        check_out(self.out, self.inputs, overwrite=self.overwrite)


class _Ids(dict):
    """word -> provisional id, assigning the next free one on first sight."""

    def __init__(self, tokens: list[str], suffix: str):
        super().__init__()
        self.tokens = tokens
        self.suffix = suffix

    def __missing__(self, key: str) -> int:
        i = self[key] = len(self.tokens)
        self.tokens.append(f"{key}{self.suffix}")
        return i


@dataclass
class _Encoded:
    """The stream in provisional ids, before the vocabulary exists."""

    tokens: list[str] = field(default_factory=lambda: list(SPECIALS))  #: provisional id -> token
    pieces: list[np.ndarray] = field(default_factory=list)  #: one int32 array per kept file
    sources: list[str] = field(default_factory=list)
    speakers: set[str] = field(default_factory=set)
    stats: dict = field(default_factory=dict)
    tags: dict = field(default_factory=lambda: defaultdict(Counter))  #: word -> Counter of %mor categories


def _encode(files: Iterable[ChatFile], strict: bool) -> _Encoded:
    enc = _Encoded()
    tokens = enc.tokens
    env, lan = _Ids(tokens, ENV), _Ids(tokens, LAN)
    spk_ids: dict[str, int] = {}
    bos, eos = SPECIALS.index("<bos>"), SPECIALS.index("<eos>")
    skipped_files: list[str] = []
    skipped_utts: list[str] = []
    warnings: list[str] = []
    n_utt = n_act = n_empty = n_skipped_utt = 0
    for cf in files:
        errors = cf.errors
        if strict and errors:
            raise InputError(f"{errors[0]} (--strict)")
        if errors and not cf.utterances:
            skipped_files.append(str(errors[0]))
            continue
        skipped_utts.extend(str(p) for p in errors)
        warnings.extend(str(p) for p in cf.problems if p.severity != "error")
        n_skipped_utt += cf.skipped_utterances
        ids = [bos]
        append, extend = ids.append, ids.extend
        env_get, lan_get = env.__getitem__, lan.__getitem__
        for utt in cf.utterances:  # the hot loop: locals only, the common case inline
            spk = spk_ids.get(utt.speaker)
            if spk is None:
                spk = spk_ids[utt.speaker] = len(tokens)
                tokens.append(f"<{utt.speaker}>")
            empty = True
            act = utt.tiers.get("act")
            if act:
                ws = act_tuple(act)
                if ws:
                    n_act += 1
                    empty = False
                    append(spk)
                    extend(map(env_get, ws))
            ws = utt.words  # the reader's contract: clean words (Utterance.words), used as they are
            mor = utt.tiers.get("mor")
            if mor:
                for w, pos in mor_tags(ws, mor):
                    enc.tags[w][pos] += 1
            if ws:
                empty = False
                append(spk)
                extend(map(lan_get, ws))
            if empty:
                n_empty += 1
        append(eos)
        n_utt += len(cf.utterances)
        enc.pieces.append(np.asarray(ids, dtype=np.int32))
        enc.sources.append(cf.path)
    enc.speakers = {f"<{s}>" for s in spk_ids}
    enc.stats = {
        "files": len(enc.sources),
        "files_skipped": len(skipped_files),
        "utterances": n_utt,
        "utterances_with_act": n_act,
        "utterances_empty": n_empty,
        "utterances_skipped": n_skipped_utt,
        "skipped_files": skipped_files,
        "skipped_utterances": skipped_utts,
        "warnings": len(warnings),
    }
    return enc


def _read(inputs: list[str], progress: bool) -> Iterator[ChatFile]:
    from tqdm import tqdm

    from vlground.chat import iter_chat_sources, read_chat

    try:
        from vlground.chat.sources import count_chat_sources

        total = count_chat_sources(inputs) if progress else None
    except ImportError:
        total = None
    bar = tqdm(iter_chat_sources(inputs), total=total, desc="build-corpus", unit=" files",
               disable=None if progress else True)
    for source in bar:
        yield read_chat(source)


def build_corpus(config: BuildCorpusConfig) -> Path:
    """Read the CHAT inputs of ``config`` and write the corpus folder; returns its path."""
    config.validate()
    return build_corpus_from_files(_read(list(config.inputs), config.progress), config)


def build_corpus_from_files(files: Iterable[ChatFile], config: BuildCorpusConfig) -> Path:
    """Write a corpus from already-read transcripts (``config.inputs`` is only recorded)."""
    act_tuple.cache_clear()  # memoised within one build only (fair timing, bounded memory)
    config.validate()
    out = Path(config.out)
    with atomic_dir(out, overwrite=config.overwrite, marker=is_corpus_folder) as tmp:
        # 1-2. read and encode
        enc = _encode(files, config.strict)
        stats = enc.stats
        if not enc.pieces:
            first = f" (first: {stats['skipped_files'][0]})" if stats["skipped_files"] else ""
            raise InputError(f"build-corpus: no readable transcript in the input{first}")
        stream_pid = np.concatenate(enc.pieces)
        lengths = np.fromiter((len(p) for p in enc.pieces), dtype=np.int64, count=len(enc.pieces))
        file_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        del enc.pieces

        # 3. vocabulary (per form counts over the whole input)
        pid_counts = np.bincount(stream_pid, minlength=len(enc.tokens))
        word_counts = {t: int(c) for t, c in zip(enc.tokens, pid_counts) if t.endswith(ENV) or t.endswith(LAN)}
        vocab = build_vocab(word_counts, enc.speakers, config.min_count)
        unk = vocab["<unk>"]
        pid_to_id = np.fromiter((vocab.get(t, unk) for t in enc.tokens), dtype=np.int32, count=len(enc.tokens))
        stream = pid_to_id[stream_pid]
        del stream_pid
        pairs = pairs_from_vocab(vocab)
        explicit = read_cooc_words(config.cooc_words) if config.cooc_words else None
        counted = counted_words([p["word"] for p in pairs], tags=enc.tags, explicit=explicit, source=config.cooc_words)
        counted_mask = counted.mask(p["word"] for p in pairs)
        for p, c in zip(pairs, counted_mask):
            p["counted"] = bool(c)
        env_ids = np.array([p["env_id"] for p in pairs], dtype=np.int64)
        lan_ids = np.array([p["lan_id"] for p in pairs], dtype=np.int64)

        # 4. chunks, co-occurrence, drop
        pad = vocab["<pad>"]
        chunks = chunk_stream(stream, config.chunk_len, pad)
        sources_of = chunk_sources(file_starts, chunks.shape[0], config.chunk_len)
        cooc = cooc_matrix(chunks, env_ids, lan_ids, len(vocab))
        n_chunks_all = chunks.shape[0]
        n_cooc_all = int(np.count_nonzero(cooc_chunk_mask(cooc, counted_mask)))
        n_cooc_all_words = int(np.count_nonzero(cooc_chunk_mask(cooc)))
        dropped = choose_dropped(cooc, config.drop_cooc, config.seed, counted_mask) if config.drop_cooc > 0 else None
        if dropped is not None and dropped.size:
            keep = np.ones(n_chunks_all, dtype=bool)
            keep[dropped] = False
            chunks, sources_of, cooc = chunks[keep], sources_of[keep], cooc[keep]
        token_counts = np.bincount(chunks.reshape(-1), minlength=len(vocab)).astype(np.int64)

        # 5. write
        np.save(tmp / "chunks.npy", np.ascontiguousarray(chunks, dtype=np.int32))
        np.save(tmp / "chunk_source.npy", sources_of.astype(np.int32))
        np.save(tmp / "token_counts.npy", token_counts)
        import scipy.sparse

        scipy.sparse.save_npz(tmp / "cooc.npz", cooc.tocsr(), compressed=True)
        if dropped is not None:
            np.save(tmp / "dropped_chunks.npy", dropped.astype(np.int64))
        write_json(tmp / "sources.json", enc.sources)
        write_json(tmp / "vocab.json", vocab)
        write_json(tmp / "pairs.json", pairs)
        write_json(tmp / "cooc_words.json", counted.to_json())
        save_tokenizer(vocab, tmp, model_max_length=config.chunk_len)

        is_env = np.array([t.endswith(ENV) for t in vocab], dtype=bool)
        is_lan = np.array([t.endswith(LAN) for t in vocab], dtype=bool)
        all_counts = np.bincount(stream, minlength=len(vocab))
        stats.update(
            tokens=int(stream.shape[0]),
            env_tokens=int(all_counts[is_env].sum()),
            lan_tokens=int(all_counts[is_lan].sum()),
            unk_tokens=int(all_counts[unk]),
            vocab_size=len(vocab),
            speakers=len(enc.speakers),
            pairs=len(pairs),
            chunk_len=int(config.chunk_len),
            chunks=int(n_chunks_all),
            cooc_words=len(counted.words),
            cooc_words_rule=counted.rule,
            cooc_chunks=n_cooc_all,
            cooc_chunks_all_words=n_cooc_all_words,
            chunks_kept=int(chunks.shape[0]),
            cooc_chunks_kept=int(np.count_nonzero(cooc_chunk_mask(cooc, counted_mask))),
            cooc_chunks_all_words_kept=int(np.count_nonzero(cooc_chunk_mask(cooc))),
            env_tokens_kept=int(token_counts[is_env].sum()),
            lan_tokens_kept=int(token_counts[is_lan].sum()),
            drop_cooc=float(config.drop_cooc),
            seed=int(config.seed),
            dropped_chunks=[] if dropped is None else [int(i) for i in dropped],
        )
        # keep the long lists last so stats.json reads well
        for key in ("skipped_files", "skipped_utterances"):
            stats[key] = stats.pop(key)
        write_json(tmp / "stats.json", stats)
        write_json(
            tmp / "corpus.json",
            {
                "format": FORMAT,
                "kind": KIND,
                "chunk_len": int(config.chunk_len),
                "n_chunks": int(chunks.shape[0]),
                "vocab_size": len(vocab),
                "n_pairs": len(pairs),
                "min_count": int(config.min_count),
                "drop_cooc": float(config.drop_cooc),
                "seed": int(config.seed),
                "cooc_words": counted.rule,
                "inputs": [os.fspath(p) for p in config.inputs],
                "file_separator": FILE_SEPARATOR,
                "options": {k: v for k, v in asdict(config).items() if k not in ("progress", "out")},
            },
        )
    log.info(
        "%s: %d files (%d skipped), %d utterances (%d skipped), %d chunks of %d (%d co-occurring, %d dropped)",
        out, stats["files"], stats["files_skipped"], stats["utterances"], stats["utterances_skipped"],
        stats["chunks_kept"], config.chunk_len, n_cooc_all, len(stats["dropped_chunks"]),
    )
    return out
