"""Run-level --drop-cooc: each training seed leaves out its own subset of the co-occurring
training chunks; validation chunks are never dropped."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vlground.corpus.format import Corpus
from vlground.errors import InputError
from vlground.train import TrainConfig, train
from vlground.train.data import drop_cooc_chunks

from _corpus import write_tiny_corpus


def test_drop_cooc_chunks_by_hand():
    train_idx = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9])  # chunk 4 is a validation chunk
    cooc = np.zeros(10, dtype=bool)
    cooc[[1, 3, 4, 5, 7, 9]] = True  # co-occurring training chunks: 1, 3, 5, 7, 9 (n = 5)
    kept, dropped = drop_cooc_chunks(train_idx, cooc, 0.4, seed=0)  # k = round(0.4 * 5) = 2
    assert len(dropped) == 2 and set(dropped) <= {1, 3, 5, 7, 9} and 4 not in dropped
    assert sorted(np.concatenate([kept, dropped]).tolist()) == train_idx.tolist()
    assert list(kept) == sorted(kept) and list(dropped) == sorted(dropped)
    perm = np.random.default_rng([0, 1]).permutation(5)
    assert dropped.tolist() == sorted(np.array([1, 3, 5, 7, 9])[perm[:2]].tolist())  # the documented draw
    subsets = {tuple(drop_cooc_chunks(train_idx, cooc, 0.4, seed=s)[1]) for s in range(6)}
    assert len(subsets) > 1  # seeds draw different subsets
    assert drop_cooc_chunks(train_idx, cooc, 0.4, seed=3)[1].tolist() == drop_cooc_chunks(train_idx, cooc, 0.4, seed=3)[1].tolist()
    assert drop_cooc_chunks(train_idx, cooc, 1.0, seed=0)[1].tolist() == [1, 3, 5, 7, 9]
    assert drop_cooc_chunks(train_idx, cooc, 0.0, seed=0)[1].tolist() == []
    with pytest.raises(InputError, match="no training chunk left"):
        drop_cooc_chunks(np.array([1, 3]), cooc, 1.0, seed=0)


def test_training_seeds_drop_different_chunks(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "c", n_chunks=40, chunk_len=16)
    cooc = Corpus.load(corpus).cooc_chunk_mask()
    dropped = {}
    for seed in (0, 1):
        run = train(TrainConfig(corpus=str(corpus), out=str(tmp_path / f"s{seed}"), size="tiny", seed=seed, progress=False,
                                overrides={"steps": 2, "batch_size": 4, "checkpoint_every": 0, "checkpoint_dense_until": 0,
                                           "drop_cooc": 0.5}))
        split = json.loads((run / "split.json").read_text())
        order = np.load(run / "order.npy")
        d = split["dropped"]
        train_cooc = [c for c in range(40) if cooc[c] and c not in split["val"]]
        assert split["drop_cooc"] == 0.5 and len(d) == round(0.5 * len(train_cooc))
        assert not set(d) & set(order.tolist()) and not set(d) & set(split["val"])
        assert json.loads((run / "run.json").read_text())["train"]["drop_cooc"] == 0.5
        dropped[seed] = d
    assert dropped[0] != dropped[1]
    with pytest.raises(InputError, match="drop_cooc"):
        train(TrainConfig(corpus=str(corpus), out=str(tmp_path / "bad"), size="tiny", progress=False,
                          overrides={"steps": 2, "drop_cooc": 1.5}))
