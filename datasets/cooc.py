"""Chunking a token stream, per-chunk co-occurrence of ENV/LAN pairs, and ``--drop-cooc``.

Definitions (the same in ``docs/corpus.md``):

* The stream is cut into consecutive chunks of ``chunk_len`` tokens; the tail chunk is
  right-padded with ``<pad>``. Chunk boundaries are computed before any drop.
* Pair ``p`` (a word with both forms in the vocabulary) *co-occurs* in chunk ``c`` when both
  ``w<ENV>`` and ``w<LAN>`` ids appear among the chunk's tokens (anywhere, any order).
* A *co-occurring chunk* holds at least one co-occurring pair.
* ``drop_cooc=F, seed=S`` removes ``n_drop = round(F * n_cooc_chunks)`` of them (Python
  ``round``: halves go to the even integer). With ``cooc_idx`` the ascending indices of the
  co-occurring chunks, the dropped chunks are
  ``sorted(cooc_idx[np.random.default_rng(S).permutation(len(cooc_idx))[:n_drop]])``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse


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


def choose_dropped(cooc: scipy.sparse.csr_matrix, fraction: float, seed: int | None) -> np.ndarray:
    """int64 ascending indices of the co-occurring chunks to drop (see the module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("drop fraction must be in [0, 1]")
    cooc_idx = np.flatnonzero(np.diff(cooc.indptr) > 0).astype(np.int64)
    n_drop = int(round(fraction * len(cooc_idx)))
    if n_drop == 0:
        return np.zeros(0, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(len(cooc_idx))
    return np.sort(cooc_idx[perm[:n_drop]])
