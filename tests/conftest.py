"""Shared test set-up: offline hub, one torch thread (tiny models run fastest and most stably so
on a 2-core machine), and a session-wide pair of tiny trained runs for probe tests."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """A generated CHILDES-like corpus (64-token chunks) and tiny Transformer and LSTM runs
    (12 steps each, checkpoints at 0, 4, 8, 12). Returns ``{"corpus": Path, "transformer": Path, "lstm": Path}``."""
    from vlground.datasets.chat_generator import build_default_corpus
    from vlground.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny-runs")
    corpus = build_default_corpus(root / "corpus", seed=0, n_files=12, chunk_len=64)
    runs = {"corpus": corpus}
    for arch in ("transformer", "lstm"):
        runs[arch] = train(TrainConfig(
            corpus=str(corpus), out=str(root / arch), arch=arch, size="tiny", seed=0, progress=False,
            overrides={"steps": 12, "batch_size": 4, "checkpoint_every": 4, "checkpoint_dense_until": 0, "warmup_steps": 2},
        ))
    return runs
