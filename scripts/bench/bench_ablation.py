"""Benchmark: the head ablation as single-item passes vs batched rows with a per-row head mask.

``ablation_test`` runs ``1 + n + n x draws`` surprisal evaluations per head type (the original
pass, one intervention per item, ``draws`` controls per item).  With ``batch_size=1`` each is a
single-item forward pass (vlground's earlier path); with ``batch_size=B`` the (item, head set)
rows run ``B`` at a time, each row zeroing its own heads through a ``[batch, layers, heads]``
mask.  Both run on the same random GPT-2 and the same planted head sets; the script checks the
surprisals agree (max abs difference, nats), then reports the median over rounds of the
per-round time ratio (the two paths alternate within a round, so machine load hits both).

    python scripts/bench/bench_ablation.py [--items 48 --draws 10 --layers 12 --heads 12 --threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from vlground.mechanism.ablation import ablation_test


@dataclass
class BenchConfig:
    """Model, items and rounds of the benchmark."""

    items: int = 48
    draws: int = 10
    layers: int = 12
    heads: int = 12
    d_model: int = 192
    seq: int = 24
    vocab: int = 500
    batch_size: int = 32
    heads_per_item: int = 4
    rounds: int = 3
    threads: int = 1
    seed: int = 0


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(BenchConfig()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.d_model, vocab_size=cfg.vocab,
                                       n_positions=cfg.seq, bos_token_id=0, eos_token_id=0)).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(1, cfg.vocab, (cfg.items, cfg.seq), generator=g)
    lengths = torch.randint(cfg.seq // 2, cfg.seq + 1, (cfg.items,), generator=g)
    targets = torch.randint(1, cfg.vocab, (cfg.items,), generator=g)

    def surprisal(model, indices=None):
        idx = list(range(cfg.items)) if indices is None else list(indices)
        length = int(lengths[idx].max())
        mask = (torch.arange(length)[None] < lengths[idx, None]).long()
        logits = model(ids[idx, :length] * mask, attention_mask=mask).logits
        rows = torch.arange(len(idx))
        return -torch.log_softmax(logits[rows, lengths[idx] - 1].float(), -1)[rows, targets[idx]]

    identified = torch.zeros(cfg.items, cfg.layers, cfg.heads, dtype=torch.bool)
    for i in range(cfg.items):
        flat = torch.randperm(cfg.layers * cfg.heads, generator=g)[: cfg.heads_per_item]
        identified[i].view(-1)[flat] = True
    kwargs = dict(n_draws=cfg.draws, seed=cfg.seed)

    def run(batch_size):
        t0 = time.perf_counter()
        res = ablation_test(surprisal, model, identified, ~identified, batch_size=batch_size, **kwargs)
        return res, time.perf_counter() - t0

    run(cfg.batch_size)  # warm-up
    ratios, t_one, t_many, diff = [], [], [], 0.0
    for _ in range(cfg.rounds):
        one, a = run(1)
        many, b = run(cfg.batch_size)
        diff = max(diff, float((one.intervention - many.intervention).abs().max()),
                   float((one.control - many.control).abs().max()))
        ratios.append(a / b)
        t_one.append(a)
        t_many.append(b)
    n_passes = 1 + cfg.items * (1 + cfg.draws)
    ratio = statistics.median(ratios)
    print(f"model: GPT-2 {cfg.layers} layers x {cfg.heads} heads, d_model {cfg.d_model}; {cfg.items} items x seq <= {cfg.seq}, "
          f"{cfg.draws} draws ({n_passes} evaluations); torch threads {torch.get_num_threads()}")
    print(f"single-item passes: median {statistics.median(t_one):.2f} s   batched ({cfg.batch_size} rows): "
          f"median {statistics.median(t_many):.2f} s")
    print(f"speed-up: {ratio:.2f}x (median of per-round ratios {[round(r, 2) for r in ratios]}); "
          f"max |surprisal difference| {diff:.2g} nats")
    if diff > 1e-4:
        raise SystemExit(f"surprisals differ by {diff:.3g} nats")
    return ratio


if __name__ == "__main__":
    main()
