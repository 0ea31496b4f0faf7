"""Benchmark: the tuned lens fit on cached hidden states against the earlier per-step forward passes.

Earlier, ``fit_lens`` ran the model (eager attention, as checkpoints load) on one input batch at
every optimisation step (``LazyLensBatches``).  Now the model runs once over the fit tokens
(``sdpa``, no grad; ``HiddenStateCache``) and every step reads the cache.  On the same model, the
same held-out batches and the same steps, this script prints

* the time of one forward pass over the fit tokens (``sdpa``, no grad): the unit;
* the fit's time, earlier and now, as seconds and as multiples of that unit (now: the caching
  pass + the steps);
* the held-out KL per layer of both lenses (same held-out batches, read through a cache), which
  should agree within float noise (same batches, same steps, same zero start);
* with ``--run``: the whole ``lens`` probe of the run's last checkpoint at ``--steps`` and at
  ``--steps-high`` (default 150 and 600), each round timed afresh with the saved lens removed,
  and their ratio.

Rounds alternate the variants; medians over ``--repeats``; torch on 1 thread by default.

    python scripts/bench/bench_lens.py [--run RUN] [--layers 4 --d-model 64 --vocab 1000 --lens-tokens 250000]

Without ``--run``: a random GPT-2 on random tokens (chunks of ``--chunk`` x ``--batch``).
With ``--run`` (a ``vlground train`` folder): its last checkpoint and its held-out chunks
(:meth:`ChildesAdapter.lens_batches`, ``--lens-tokens``).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from vlground.mechanism.kernels import attention_kernel
from vlground.mechanism.lens import LazyLensBatches, LensTrainConfig, TunedLens, fit_lens, lens_kl, split_held_out
from vlground.mechanism.lens_cache import HiddenStateCache, count_tokens
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
    steps: int = 150
    steps_high: int = 600
    repeats: int = 1
    threads: int = 1
    run: str = ""
    skip_old: bool = False
    seed: int = 0


def _model_and_inputs(cfg: BenchConfig):
    if cfg.run:
        from vlground.adapters.childes import ChildesAdapter

        adapter = ChildesAdapter.from_options({"runs": [cfg.run], "device": "cpu"})
        loaded = adapter.load(adapter.checkpoints()[-1])
        return loaded.model, adapter.lens_batches(loaded, n_tokens=cfg.lens_tokens), (adapter, loaded)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.d_model, vocab_size=cfg.vocab,
                                       n_positions=cfg.chunk, bos_token_id=0, eos_token_id=0, attn_implementation="eager"))
    g = torch.Generator().manual_seed(cfg.seed)
    n_batches = -(-cfg.lens_tokens // (cfg.batch * cfg.chunk))
    return model, [{"input_ids": torch.randint(1, cfg.vocab, (cfg.batch, cfg.chunk), generator=g)} for _ in range(n_batches)], None


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(BenchConfig()).items():
        if isinstance(value, bool):
            parser.add_argument("--" + name.replace("_", "-"), action="store_true")
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, inputs, probe_ctx = _model_and_inputs(cfg)
    model.eval()
    unembedding = resolve_unembedding(model)
    train_in, held_in = split_held_out(inputs)
    held = HiddenStateCache.build(model, held_in)
    n_layers, d = held.n_layers, held.d_model
    train_cfg = LensTrainConfig(steps=cfg.steps)

    def forward_pass():
        with torch.no_grad(), attention_kernel(model, "sdpa"):
            for b in train_in:
                model(**b)

    def new():
        cache = HiddenStateCache.build(model, train_in)
        lens = TunedLens.for_unembedding(n_layers, d, unembedding)
        fit_lens(lens, unembedding, cache, train_cfg)
        return lens

    def old():
        lens = TunedLens.for_unembedding(n_layers, d, unembedding)
        fit_lens(lens, unembedding, LazyLensBatches(model, train_in), train_cfg)
        return lens

    t_fwd, t_new, t_old = [], [], []
    lens_new = lens_old = None
    for _ in range(cfg.repeats):
        t_fwd.append(_timed(forward_pass)[1])
        lens_new, t = _timed(new)
        t_new.append(t)
        if not cfg.skip_old:
            lens_old, t = _timed(old)
            t_old.append(t)
    fit_tokens = sum(count_tokens(b) for b in train_in)
    unit = statistics.median(t_fwd)
    steps = max(cfg.steps, len(train_in))
    attn = getattr(model.config, "_attn_implementation", "?")
    print(f"model: {type(model).__name__} {n_layers} layers, d_model {d}, vocab {unembedding.head.out_features}, loaded with "
          f"{attn} attention; {fit_tokens} fit tokens in {len(train_in)} batches, {held.n_tokens()} held-out tokens; "
          f"{steps} steps; torch threads {torch.get_num_threads()}")
    print(f"one forward pass over the fit tokens (sdpa, no grad): {unit:.2f} s")
    out = {"forward_s": unit, "new_s": statistics.median(t_new)}
    print(f"now (one caching pass + {steps} steps on the cache): {out['new_s']:.2f} s = {out['new_s'] / unit:.2f} forward passes")
    kl_new = lens_kl(lens_new, unembedding, held)
    if t_old:
        out["old_s"] = statistics.median(t_old)
        print(f"earlier ({steps} steps, a forward pass each, {attn} attention): {out['old_s']:.2f} s = "
              f"{out['old_s'] / unit:.2f} forward passes; now / earlier {out['new_s'] / out['old_s']:.3f}")
        kl_old = lens_kl(lens_old, unembedding, held)
        print("held-out KL per layer (nats; layer k = output of layer k, 0 = embeddings):")
        for k in range(n_layers):
            print(f"  layer {k:2d}: earlier {float(kl_old[k]):.5f}   now {float(kl_new[k]):.5f}   "
                  f"difference {float(kl_new[k] - kl_old[k]):+.2e}")
        out["kl_max_abs_diff"] = float((kl_new - kl_old).abs().max())
    if probe_ctx is not None:
        out.update(_probe_steps(cfg, *probe_ctx))
    return out


def _probe_steps(cfg: BenchConfig, adapter, loaded) -> dict:
    """Seconds of the whole ``lens`` probe at ``cfg.steps`` and ``cfg.steps_high``, interleaved."""
    from vlground.probes.base import ProbeContext
    from vlground.probes.lens import LensProbe

    items = adapter.items(loaded)
    times: dict[int, list[float]] = {cfg.steps: [], cfg.steps_high: []}
    for k in range(cfg.repeats):
        order = (cfg.steps, cfg.steps_high) if k % 2 == 0 else (cfg.steps_high, cfg.steps)
        for steps in order:
            shutil.rmtree(Path(loaded.checkpoint.path) / "tuned-lens", ignore_errors=True)
            probe = LensProbe(LensProbe.Options(lens_steps=steps, lens_tokens=cfg.lens_tokens))
            result, t = _timed(lambda: probe.run(ProbeContext(adapter, loaded, items)))
            times[steps].append(t)
        print(f"round {k + 1}: lens probe {cfg.steps} steps {times[cfg.steps][-1]:.2f} s, "
              f"{cfg.steps_high} steps {times[cfg.steps_high][-1]:.2f} s", flush=True)
    ratio = statistics.median(h / lo for h, lo in zip(times[cfg.steps_high], times[cfg.steps]))
    print(f"lens probe ({result.notes[-1]}): {cfg.steps} steps {statistics.median(times[cfg.steps]):.2f} s, "
          f"{cfg.steps_high} steps {statistics.median(times[cfg.steps_high]):.2f} s: {ratio:.2f}x")
    return {"probe_low_s": statistics.median(times[cfg.steps]), "probe_high_s": statistics.median(times[cfg.steps_high]),
            "probe_ratio": ratio}


if __name__ == "__main__":
    main()
