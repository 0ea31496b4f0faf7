"""Probe throughput: the engine's batched behaviour probe against one item at a time, on CPU.

Same model (a tiny Transformer checkpoint trained for a few steps on the generated corpus),
same items (every match/mismatch item of both directions), same adapter code; the only
difference is ``batch_size`` (default 32 vs 1). Reports items per second per checkpoint for
each, alternating the two ``--repeats`` times, and the ratio of medians. Also checks that both
give the same surprisals.

    python scripts/bench/bench_probe.py [--repeats 3] [--batch-size 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from vlground.adapters.childes import ChildesAdapter
    from vlground.datasets.chat_generator import build_default_corpus
    from vlground.probes.behaviour import item_surprisals
    from vlground.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = build_default_corpus(tmp / "corpus", seed=0, n_files=20, chunk_len=128)
        run = train(TrainConfig(corpus=str(corpus), out=str(tmp / "run"), arch="transformer", size="tiny", seed=0,
                                progress=False, overrides={"steps": 4, "batch_size": 4, "checkpoint_every": 4}))
        timings: dict[int, list[float]] = {args.batch_size: [], 1: []}
        results = {}
        for _ in range(args.repeats):
            for bs in (args.batch_size, 1):
                adapter = ChildesAdapter.from_options({"runs": [str(run)], "batch_size": bs, "device": "cpu"})
                loaded = adapter.load(adapter.checkpoints()[-1])
                items = adapter.items(loaded)
                t0 = time.perf_counter()
                results[bs] = item_surprisals(adapter, loaded, items)
                timings[bs].append(len(items) / (time.perf_counter() - t0))
        same = abs(results[args.batch_size] - results[1]).max()
        batched, single = statistics.median(timings[args.batch_size]), statistics.median(timings[1])
        print(f"items per checkpoint: {len(items)}; max |surprisal difference| batched vs single: {same:.2e}")
        print(f"batched (batch {args.batch_size}): {batched:,.0f} items/s   one at a time: {single:,.0f} items/s")
        print(f"ratio batched / one-at-a-time: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
