"""Training throughput: ``vlground.train.train`` against a plain PyTorch loop, on CPU.

Both loops train the tiny Transformer from the same initialisation on the same batches (the
chunk order the run records in ``RUN/order.npy``). The plain loop is the minimum
(forward, backward, AdamW step, zero_grad); ours adds accelerate, gradient clipping, the
schedule, logging and the progress bar. Throughput is tokens (batch x chunk_len) per second
of training steps (startup and checkpoint writes excluded from both); the runs alternate and
the reported ratio is the median of the per-round ratios (ours / plain within one round, so load
from other jobs hits both sides of each ratio). Torch runs on 1 thread by default (``--threads 0``:
torch's default; 2 threads on a loaded 2-core machine gave a 10-20x spread). Goal: ratio >= 0.9.

Then the tokens/s of every architecture at tiny size (our loop).

    python scripts/bench/bench_train.py [--steps 60] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from _corpus import write_tiny_corpus  # noqa: E402

from vlground.corpus.format import Corpus  # noqa: E402
from vlground.train import ARCHS, TrainConfig, train  # noqa: E402
from vlground.train.config import resolve  # noqa: E402
from vlground.train.data import make_batch  # noqa: E402
from vlground.train.loop import make_optimizer  # noqa: E402
from vlground.train.models import build_model  # noqa: E402


def ours(corpus: Path, out: Path, arch: str, steps: int, batch: int) -> float:
    """tokens/s of training steps, from RUN/train_log.jsonl (first logging window = warm-up, skipped)."""
    cfg = TrainConfig(corpus=str(corpus), out=str(out), arch=arch, size="tiny", progress=False,
                      overrides={"steps": steps, "batch_size": batch, "checkpoint_every": 0,
                                 "checkpoint_dense_until": 0, "log_every": 10})
    train(cfg)
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r][1:]
    # windows are equal-sized except possibly the last: harmonic mean = total tokens / total time
    return len(tps) / sum(1 / t for t in tps)


def plain(corpus: Path, order: np.ndarray, steps: int, batch: int) -> float:
    """tokens/s of a bare loop over the same model and batches (first 10 steps = warm-up, skipped)."""
    c = Corpus.load(corpus)
    arch, _, model_cfg, h, _ = resolve(TrainConfig(corpus=str(corpus), out="", arch="transformer", size="tiny"))
    torch.manual_seed(0)
    model = build_model(arch, model_cfg, len(c.vocab), pad_id=c.pad_id, max_len=c.chunk_len,
                        attn_implementation=h.attn_implementation)
    model.train()
    opt = make_optimizer(model, h)
    t0 = None
    for step in range(steps):
        if step == 10:
            t0 = time.perf_counter()
        b = make_batch(c.chunks, order[step * batch : (step + 1) * batch], c.pad_id)
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - 10) * batch * c.chunk_len / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps per Transformer run (multiple of 10, > 10)")
    ap.add_argument("--arch-steps", type=int, default=20, help="steps per run in the per-architecture table")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        corpus = write_tiny_corpus(tmp / "corpus", n_chunks=256, chunk_len=args.chunk_len)
        a, b = [], []
        for r in range(args.repeats):
            run = tmp / f"tf-{r}"
            a.append(ours(corpus, run, "transformer", args.steps, args.batch_size))
            b.append(plain(corpus, np.load(run / "order.npy"), args.steps, args.batch_size))
        ra, rb = statistics.median(a), statistics.median(b)
        ratio = statistics.median(x / y for x, y in zip(a, b))
        print(f"device: cpu, torch threads {torch.get_num_threads()}, batch {args.batch_size} x {args.chunk_len} tokens")
        print(f"transformer-tiny  vlground train: {ra:9.0f} tokens/s   plain PyTorch loop: {rb:9.0f} tokens/s (medians)")
        print(f"ratio (ours / plain): {ratio:.3f} (median of per-round ratios {[round(x / y, 3) for x, y in zip(a, b)]}; goal >= 0.9)")
        print("tokens/s per architecture (tiny, vlground train):")
        for arch in ARCHS:
            tps = ours(corpus, tmp / f"arch-{arch}", arch, args.arch_steps, args.batch_size)
            print(f"  {arch:12s} {tps:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
