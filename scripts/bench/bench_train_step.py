"""One training step of the tiny Transformer per model variant, tokens/s on one thread.

The bundled configs use ``activation_function: gelu_pytorch_tanh`` (one fused kernel for GPT-2's
tanh-approximated GELU) instead of GPT-2's default ``gelu_new`` (the same function as six
element-wise operations). This measures what that buys, beside variants that change the model
(2 heads, 2 layers) for scale. Variants alternate within each round, so load from other jobs hits
every variant of a round alike; the ratio printed is the median of per-round ratios to ``gelu_new``.

    python scripts/bench/bench_train_step.py [--rounds 3] [--steps 5] [--batch 8] [--vocab 202]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources

import torch

from vlground.train.models import build_model

VARIANTS = {
    "gelu_new (GPT-2 default)": {"activation_function": "gelu_new"},
    "gelu_pytorch_tanh (bundled)": {"activation_function": "gelu_pytorch_tanh"},
    "bundled, 2 heads": {"activation_function": "gelu_pytorch_tanh", "n_head": 2},
    "bundled, 2 layers": {"activation_function": "gelu_pytorch_tanh", "n_layer": 2},
}


def tokens_per_s(model_cfg: dict, vocab: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    m = build_model("transformer", model_cfg, vocab, max_len=512, attn_implementation="sdpa")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (batch, 512))

    def step():
        m(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * 512 * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=202)
    a = p.parse_args()
    torch.set_num_threads(1)
    base = json.loads((resources.files("vlground") / "configs" / "transformer-tiny.json").read_text())["model"]
    runs = {k: [] for k in VARIANTS}
    for _ in range(a.rounds):
        for k, override in VARIANTS.items():
            runs[k].append(tokens_per_s({**base, **override}, a.vocab, a.batch, a.steps))
    ref = runs["gelu_new (GPT-2 default)"]
    print(f"tiny Transformer, batch {a.batch} x 512, 1 thread, {a.rounds} rounds x {a.steps} steps")
    for k, v in runs.items():
        ratio = statistics.median(x / r for x, r in zip(v, ref))
        print(f"  {k:30s} {statistics.median(v):8.0f} tokens/s  x{ratio:.2f}")


if __name__ == "__main__":
    main()
