"""A tiny synthetic corpus in the ``vlground-corpus/1`` format, for tests that must not depend on
the corpus builder.

Each "utterance" is a speaker token, a few ``w<ENV>`` tokens and then the same words as
``w<LAN>`` tokens, so a model can learn to predict a LAN token from its ENV token earlier in
the chunk (and the loss falls quickly).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse

from vlground.corpus.format import FORMAT, SPECIALS, env_token, lan_token, speaker_token

WORDS = ["ball", "dog", "cup", "car", "cat", "book", "shoe", "milk", "hat", "duck", "apple", "bird"]
SPEAKERS = ["CHI", "MOT"]


def write_tiny_corpus(path: str | Path, *, n_chunks: int = 48, chunk_len: int = 32, seed: int = 0) -> Path:
    """Write a synthetic corpus folder at ``path`` and return it.

    ``chunks.npy`` is int32 ``[n_chunks, chunk_len]``; the last chunk is right-padded with
    ``<pad>`` so trainers' label masking is exercised.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokens = list(SPECIALS) + [speaker_token(s) for s in SPEAKERS]
    tokens += [env_token(w) for w in WORDS] + [lan_token(w) for w in WORDS] + ["the", "look", "a"]
    vocab = {t: i for i, t in enumerate(tokens)}
    pad = vocab["<pad>"]

    rng = np.random.default_rng(seed)
    stream: list[int] = []
    need = n_chunks * chunk_len - chunk_len // 2  # leave the tail chunk half empty
    while len(stream) < need:
        words = rng.choice(WORDS, size=int(rng.integers(1, 4)), replace=False)
        stream.append(vocab[speaker_token(str(rng.choice(SPEAKERS)))])
        stream += [vocab[env_token(w)] for w in words]
        stream += [vocab["look"], vocab["the"]] + [vocab[lan_token(w)] for w in words]
    stream = stream[:need]
    flat = np.full(n_chunks * chunk_len, pad, dtype=np.int32)
    flat[: len(stream)] = stream
    chunks = flat.reshape(n_chunks, chunk_len)
    np.save(path / "chunks.npy", chunks)
    np.save(path / "chunk_source.npy", np.zeros(n_chunks, dtype=np.int32))
    np.save(path / "token_counts.npy", np.bincount(chunks[chunks != pad].ravel(), minlength=len(vocab)).astype(np.int64))

    pairs = [{"word": w, "env_id": vocab[env_token(w)], "lan_id": vocab[lan_token(w)]} for w in WORDS]
    cooc = np.zeros((n_chunks, len(pairs)), dtype=bool)
    for p, pair in enumerate(pairs):
        cooc[:, p] = (chunks == pair["env_id"]).any(1) & (chunks == pair["lan_id"]).any(1)
    scipy.sparse.save_npz(path / "cooc.npz", scipy.sparse.csr_matrix(cooc))

    def dump(name, obj):
        (path / name).write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")

    dump("vocab.json", vocab)
    dump("pairs.json", pairs)
    dump("sources.json", ["synthetic.cha"])
    dump("stats.json", {"n_chunks": n_chunks, "n_tokens": int((chunks != pad).sum()), "skipped": []})
    dump("corpus.json", {"format": FORMAT, "kind": "synthetic", "chunk_len": chunk_len,
                         "n_chunks": n_chunks, "options": {"seed": seed, "drop_cooc": False}})

    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>")
    fast.save_pretrained(str(path))
    return path
