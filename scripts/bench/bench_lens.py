"""Benchmark: the cost of fitting a tuned lens per checkpoint at the default token budget.

vlground used to fit each lens on 1,024 held-out tokens (8 chunks x 128) for 150 steps, with the
activations cached.  The ``lens`` probe now fits it on ``--lens-tokens`` tokens (default 250k;
every batch used at least once, activations recomputed per step by ``LazyLensBatches``) and
keeps the last tenth of the batches to measure the per-layer KL.  This script times both on the
same model and token stream, with the held-out KL per layer of each (on the same held-out
batches), and prints the per-checkpoint cost ratio.  Median over ``--repeats`` rounds; torch on 1
thread by default.

    python scripts/bench/bench_lens.py [--layers 4 --d-model 64 --vocab 1000 --lens-tokens 250000 --checkpoint DIR]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from vlground.mechanism.lens import LazyLensBatches, LensTrainConfig, TunedLens, fit_lens, lens_kl, split_held_out
from vlground.mechanism.unembed import resolve_unembedding


@dataclass
class BenchConfig:
    """Model, token budgets and rounds."""

    layers: int = 4
    heads: int = 4
    d_model: int = 64
    vocab: int = 1000
    chunk: int = 128
    batch: int = 8
    lens_tokens: int = 250_000
    old_tokens: int = 1024
    old_steps: int = 150
    steps: int = 150
    repeats: int = 1
    threads: int = 1
    checkpoint: str = ""
    seed: int = 0


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(BenchConfig()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.checkpoint:
        from vlground import load_checkpoint

        model, _ = load_checkpoint(cfg.checkpoint)
        cfg.vocab = model.config.vocab_size
    else:
        model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.d_model, vocab_size=cfg.vocab,
                                           n_positions=cfg.chunk, bos_token_id=0, eos_token_id=0))
    model.eval()
    unembedding = resolve_unembedding(model)
    g = torch.Generator().manual_seed(cfg.seed)
    n_batches = -(-cfg.lens_tokens // (cfg.batch * cfg.chunk))
    inputs = [{"input_ids": torch.randint(1, cfg.vocab, (cfg.batch, cfg.chunk), generator=g)} for _ in range(n_batches)]
    lazy = LazyLensBatches(model, inputs)
    fit, held = split_held_out(lazy)
    first = lazy[0]
    n_layers, d = len(first.hidden_states) - 1, first.hidden_states[0].shape[-1]

    def new() -> TunedLens:
        lens = TunedLens.for_unembedding(n_layers, d, unembedding)
        fit_lens(lens, unembedding, fit, LensTrainConfig(steps=cfg.steps))
        return lens

    def old() -> TunedLens:
        n_old = max(1, cfg.old_tokens // (cfg.batch * cfg.chunk))
        cached = [lazy[i] for i in range(n_old)]  # the earlier path: activations cached
        lens = TunedLens.for_unembedding(n_layers, d, unembedding)
        fit_lens(lens, unembedding, cached, LensTrainConfig(steps=cfg.old_steps))
        return lens

    t_new, t_old = [], []
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        lens_old = old()
        t_old.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lens_new = new()
        t_new.append(time.perf_counter() - t0)
    kl_old, kl_new = lens_kl(lens_old, unembedding, held), lens_kl(lens_new, unembedding, held)
    ratio = statistics.median(a / b for a, b in zip(t_new, t_old))
    params = n_layers * d * (d + 1)
    print(f"model: {type(model).__name__} {n_layers} layers, d_model {d}, vocab {cfg.vocab}; translators {params} parameters; "
          f"torch threads {torch.get_num_threads()}")
    print(f"earlier: {cfg.old_tokens} tokens, {cfg.old_steps} steps: {statistics.median(t_old):.1f} s per checkpoint")
    print(f"now: {fit.n_tokens()} fit + {held.n_tokens()} held-out tokens, {max(cfg.steps, len(fit))} steps: "
          f"{statistics.median(t_new):.1f} s per checkpoint ({ratio:.1f}x the earlier cost)")
    print("held-out KL per layer (nats; layer k = output of layer k, 0 = embeddings):")
    for k in range(n_layers):
        print(f"  layer {k:2d}: earlier {float(kl_old[k]):.4f}   now {float(kl_new[k]):.4f}")
    return ratio


if __name__ == "__main__":
    main()
