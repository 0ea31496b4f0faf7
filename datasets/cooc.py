"""Chunking a token stream, the *counted words*, per-chunk co-occurrence, and ``--drop-cooc``.

The one definition of co-occurrence in vlground (``build-corpus`` statistics and ``--drop-cooc``,
``train --drop-cooc``, the R² regression's cumulative counts through
:meth:`vlground.corpus.format.Corpus.cumulative_cooc`); ``docs/corpus.md`` states the same:

* The stream is cut into consecutive chunks of ``chunk_len`` tokens; the tail chunk is
  right-padded with ``<pad>``. Chunk boundaries are computed before any drop.
* Pair ``p`` (a word with both forms in the vocabulary) *co-occurs* in chunk ``c`` when both
  ``w<ENV>`` and ``w<LAN>`` ids appear among the chunk's tokens (anywhere, any order).
* The *counted words* (:func:`counted_words`) are the words the experiment is about. With an
  explicit list (``--cooc-words FILE``) they are the pairs in that list. Otherwise a pair counts
  unless it is a closed-class word: every word of
  :data:`~vlground.datasets.function_words.FUNCTION_WORDS` is left out, and where the corpus has
  ``%mor`` tags for the word, it counts only when its most frequent tag is open-class
  (:data:`OPEN_CLASS_POS`: noun, verb, adjective; adverbs are left out because MOR tags verb
  particles such as ``up``/``away`` as adverbs).
* A *co-occurring chunk* holds at least one co-occurring pair of counted words
  (:func:`cooc_chunk_mask`); the same over all pairs is the *all-words* figure
  (``stats.json``'s ``cooc_chunks_all_words``), kept for comparison only.
* ``drop_cooc=F, seed=S`` removes ``n_drop = round(F * n_cooc_chunks)`` of the co-occurring
  chunks (Python ``round``: halves go to the even integer). With ``cooc_idx`` their ascending
  indices, the dropped chunks are
  ``sorted(cooc_idx[np.random.default_rng(S).permutation(len(cooc_idx))[:n_drop]])``.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import scipy.sparse

from .function_words import FUNCTION_WORDS

#: main part-of-speech categories (before ``:``) that are open-class, in MOR and in UD spelling
OPEN_CLASS_POS = frozenset({"n", "v", "adj", "noun", "verb", "propn"})
#: how the counted words were chosen (``cooc_words.json``'s ``rule``)
RULE_FILE, RULE_MOR, RULE_LIST = "file", "mor+function-words", "function-words"
_MOR_SKIP = frozenset({"cm|cm", "end|end", "beg|beg", "bq|bq", "eq|eq", ",", "\u201e", "\u2021"})


@dataclass(frozen=True)
class CountedWords:
    """Which pairs count as co-occurring words, and why the others do not."""

    rule: str  #: :data:`RULE_FILE`, :data:`RULE_MOR` (some words had ``%mor`` tags) or :data:`RULE_LIST`
    words: tuple[str, ...]  #: the counted words, sorted
    not_counted: dict[str, str] = field(default_factory=dict)  #: word -> reason (``function word``, ``%mor adv``, ``not in FILE``)
    source: str | None = None  #: the ``--cooc-words`` file, if any

    def mask(self, pair_words: Iterable[str]) -> np.ndarray:
        """bool [n_pairs]: which of ``pair_words`` (pairs.json order) count."""
        keep = set(self.words)
        return np.fromiter((w in keep for w in pair_words), dtype=bool)

    def to_json(self) -> dict:
        return {"rule": self.rule, "source": self.source, "n_counted": len(self.words), "words": list(self.words),
                "not_counted": dict(sorted(self.not_counted.items()))}


def mor_pos(item: str) -> str:
    """Main category of one ``%mor`` item (its first clitic piece): ``det:art|the`` -> ``det``,
    ``pro:sub|it~cop|be&3S`` -> ``pro``, ``un#adj|happy`` -> ``adj``, ``n|+n|teddy+n|bear`` -> ``n``."""
    head = item.lstrip("$").split("~", 1)[0].split("|", 1)[0]
    return head.rsplit("#", 1)[-1].split(":", 1)[0].lower()


def mor_tags(words: list[str], mor: str | None) -> list[tuple[str, str]]:
    """``(word, pos)`` of one utterance, when its ``%mor`` items (less punctuation) align one to
    one with the reader's ``words``; ``[]`` otherwise (no tag is better than a shifted one)."""
    if not mor or not words:
        return []
    items = [it for it in mor.split() if it not in _MOR_SKIP and "|" in it]
    if len(items) != len(words):
        return []
    return [(w, mor_pos(it)) for w, it in zip(words, items)]


def counted_words(pair_words: Iterable[str], *, tags: Mapping[str, Counter] | None = None,
                  explicit: Iterable[str] | None = None, source: str | None = None) -> CountedWords:
    """The counted words among ``pair_words`` (see the module docstring).

    ``tags``: word -> Counter of its ``%mor`` main categories over the corpus (words with no tag
    fall back to the function-word list); ``explicit``: the ``--cooc-words`` list, which replaces
    both rules.
    """
    pair_words = list(pair_words)
    not_counted: dict[str, str] = {}
    if explicit is not None:
        wanted = set(explicit)
        words = sorted(w for w in pair_words if w in wanted)
        not_counted = {w: f"not in {source or 'the --cooc-words list'}" for w in pair_words if w not in wanted}
        return CountedWords(RULE_FILE, tuple(words), not_counted, source)
    tags = tags or {}
    words = []
    for w in pair_words:
        if w in FUNCTION_WORDS:
            not_counted[w] = "function word"
            continue
        counts = tags.get(w)
        if counts:
            pos = max(sorted(counts), key=lambda t: counts[t])  # most frequent tag, ties alphabetical
            if pos not in OPEN_CLASS_POS:
                not_counted[w] = f"%mor {pos}"
                continue
        words.append(w)
    rule = RULE_MOR if any(tags.get(w) for w in pair_words) else RULE_LIST
    return CountedWords(rule, tuple(sorted(words)), not_counted)


def read_cooc_words(path: str | os.PathLike) -> list[str]:
    """The words of a ``--cooc-words`` file: one word per line (lower-cased, stripped; blank lines
    and ``#`` comments ignored), or a JSON list of strings."""
    import json

    from vlground.errors import InputError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (--cooc-words)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the --cooc-words file ({exc})") from None
    if text.lstrip().startswith("["):
        try:
            words = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not a JSON list of words ({exc})") from None
        if not all(isinstance(w, str) for w in words):
            raise InputError(f"{path}: the JSON list must hold only strings (words)")
    else:
        words = [ln.split("#", 1)[0] for ln in text.splitlines()]
    words = [w.strip().lower() for w in words if w.strip()]
    bad = next((w for w in words if any(c.isspace() for c in w)), None)
    if bad is not None:
        raise InputError(f"{path}: {bad!r} is not one word (one word per line)")
    if not words:
        raise InputError(f"{path}: no word in the --cooc-words file")
    return words


def cooc_chunk_mask(cooc: scipy.sparse.csr_matrix, counted: np.ndarray | None = None) -> np.ndarray:
    """bool [n_chunks]: chunk ``c`` holds a co-occurring pair of counted words (``counted``: bool
    [n_pairs]; None: every pair counts, the all-words figure)."""
    cooc = cooc.tocsr()
    if counted is not None:
        counted = np.asarray(counted, dtype=bool)
        if counted.shape != (cooc.shape[1],):
            raise ValueError(f"counted has shape {counted.shape}, the matrix {cooc.shape[1]} pairs")
        cooc = cooc[:, np.flatnonzero(counted)]
    return np.diff(cooc.tocsr().indptr) > 0


def chunk_stream(stream: np.ndarray, chunk_len: int, pad_id: int) -> np.ndarray:
    """int32 [n_chunks, chunk_len] from a 1-D stream (tail chunk padded; [0, chunk_len] if empty)."""
    if chunk_len < 1:
        raise ValueError("chunk_len must be >= 1")
    n = int(stream.shape[0])
    n_chunks = -(-n // chunk_len)
    out = np.full(n_chunks * chunk_len, pad_id, dtype=np.int32)
    out[:n] = stream
    return out.reshape(n_chunks, chunk_len)


def chunk_sources(file_starts: np.ndarray, n_chunks: int, chunk_len: int) -> np.ndarray:
    """int32 [n_chunks]: index of the file whose tokens hold each chunk's first position.

    ``file_starts`` is the ascending stream offset at which each file begins.
    """
    if n_chunks == 0:
        return np.zeros(0, dtype=np.int32)
    pos = np.arange(n_chunks, dtype=np.int64) * chunk_len
    return (np.searchsorted(np.asarray(file_starts, dtype=np.int64), pos, side="right") - 1).astype(np.int32)


def cooc_matrix(
    chunks: np.ndarray, env_ids: np.ndarray, lan_ids: np.ndarray, vocab_size: int, block: int = 4096
) -> scipy.sparse.csr_matrix:
    """CSR bool [n_chunks, n_pairs]: pair ``p`` co-occurs in chunk ``c`` (``block`` chunks at a time)."""
    n_chunks, chunk_len = chunks.shape
    n_pairs = len(env_ids)
    if n_chunks == 0 or n_pairs == 0:
        return scipy.sparse.csr_matrix((n_chunks, n_pairs), dtype=bool)
    if n_chunks > block:
        parts = [cooc_matrix(chunks[i : i + block], env_ids, lan_ids, vocab_size, block) for i in range(0, n_chunks, block)]
        return scipy.sparse.vstack(parts, format="csr", dtype=bool)
    rows = np.repeat(np.arange(n_chunks, dtype=np.int64), chunk_len)
    data = np.ones(rows.shape[0], dtype=np.int8)
    present = scipy.sparse.csr_matrix(
        (data, (rows, chunks.reshape(-1).astype(np.int64))), shape=(n_chunks, vocab_size)
    )
    present.sum_duplicates()
    present.data[:] = 1
    both = present[:, np.asarray(env_ids)].multiply(present[:, np.asarray(lan_ids)])
    out = scipy.sparse.csr_matrix(both, dtype=bool)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def choose_dropped(cooc: scipy.sparse.csr_matrix, fraction: float, seed: int | None,
                   counted: np.ndarray | None = None) -> np.ndarray:
    """int64 ascending indices of the co-occurring chunks (of counted words, see
    :func:`cooc_chunk_mask`) to drop (see the module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("drop fraction must be in [0, 1]")
    cooc_idx = np.flatnonzero(cooc_chunk_mask(cooc, counted)).astype(np.int64)
    n_drop = int(round(fraction * len(cooc_idx)))
    if n_drop == 0:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(cooc_idx))
    return np.sort(cooc_idx[perm[:n_drop]])
