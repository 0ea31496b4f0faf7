"""Benchmark: the tuned-lens fit on minibatches of cached positions against whole batches.

The model is frozen, so the fit runs it once over the fit tokens (``sdpa``, no grad;
``HiddenStateCache``) and every optimisation step reads the cache.  Each step now reads
``--batch-tokens`` positions drawn at random from all fit tokens (``LensTrainConfig.batch_tokens``);
before, each step read one whole input batch (``batch_tokens=None``: 4,096 tokens of a childes run),
and before that, each step re-ran the model on that batch (``LazyLensBatches``, ``--with-lazy``).
On the same model, the same held-out tokens and the same steps, this script prints

* the time of one forward pass over the fit tokens (``sdpa``, no grad): the unit;
* the fit's time (the caching pass + the steps) of each schedule, in seconds and in units, and of
  the KL evaluation on the held-out tokens;
* the held-out KL per layer of the whole-batch lens and of the minibatch lens (``--seeds`` draw
  orders), their difference with its standard error over held-out sequences (paired: the same
  tokens), and the spread over the seeds: "within noise" is read from these;
* with ``--run``: the whole ``lens`` probe of a checkpoint of the run at ``--steps`` and at
  ``--steps-high`` (default 150 and 600), each round afresh (the saved lens removed), and the
  median of the per-round ratios.  The run is never written to: its ``run.json``, ``split.json``,
  ``order.npy`` and the checkpoint are copied into a temporary folder first.

Rounds alternate the variants; medians over ``--repeats``; torch on 1 thread by default.  Times
are this process's CPU seconds by default (``--clock cpu``: with one thread, the work done, which
other load on a shared machine barely changes; ``--clock wall`` for wall-clock seconds).

    python scripts/bench/bench_lens.py [--run RUN [--checkpoint STEP]] [--layers 4 --d-model 64 --vocab 1000 --lens-tokens 250000]

Without ``--run``: a random GPT-2 on random tokens (chunks of ``--chunk`` x ``--batch``).
With ``--run`` (a ``vlground train`` folder): its last checkpoint (or ``--checkpoint``) and its
held-out chunks (:meth:`ChildesAdapter.lens_batches`, ``--lens-tokens``).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
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
    batch_tokens: int = 1024
    seeds: int = 3
    repeats: int = 1
    threads: int = 1
    run: str = ""
    checkpoint: int = -1
    with_lazy: bool = False
    skip_probe: bool = False
    seed: int = 0
    clock: str = "cpu"


def _private_run(run: Path, step: int, tmp: Path) -> Path:
    """A copy of ``run`` holding one checkpoint (the last, or ``step``): the probe writes its lens
    beside the checkpoint, and the original run is left untouched."""
    from vlground.train.checkpoint import list_checkpoints

    ckpts = list_checkpoints(run)
    chosen = ckpts[-1][1] if step < 0 else dict(ckpts)[step]
    copy = tmp / run.name
    (copy / "checkpoints").mkdir(parents=True)
    for name in ("run.json", "split.json", "order.npy"):
        if (run / name).is_file():
            shutil.copy2(run / name, copy / name)
    shutil.copytree(chosen, copy / "checkpoints" / chosen.name, ignore=shutil.ignore_patterns("tuned-lens*"))
    return copy


def _model_and_inputs(cfg: BenchConfig, tmp: Path):
    if cfg.run:
        from vlground.adapters.childes import ChildesAdapter

        run = _private_run(Path(cfg.run), cfg.checkpoint, tmp)
        adapter = ChildesAdapter.from_options({"runs": [str(run)], "device": "cpu"})
        loaded = adapter.load(adapter.checkpoints()[-1])
        return loaded.model, adapter.lens_batches(loaded, n_tokens=cfg.lens_tokens), (adapter, loaded)
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.d_model, vocab_size=cfg.vocab,
                                       n_positions=cfg.chunk, bos_token_id=0, eos_token_id=0, attn_implementation="eager"))
    g = torch.Generator().manual_seed(cfg.seed)
    n_batches = -(-cfg.lens_tokens // (cfg.batch * cfg.chunk))
    return model, [{"input_ids": torch.randint(1, cfg.vocab, (cfg.batch, cfg.chunk), generator=g)} for _ in range(n_batches)], None


def _timed(fn):
    """``(fn(), seconds)``: this process's CPU seconds (``--clock cpu``, the default: with one torch
    thread, the work done, whatever else loads the machine) or wall seconds (``--clock wall``)."""
    clock = time.process_time if CLOCK[0] == "cpu" else time.perf_counter
    t0 = clock()
    out = fn()
    return out, clock() - t0


CLOCK = ["cpu"]


def _rows(inputs):
    """Each input batch split into its rows (one held-out sequence per cache batch)."""
    return [{k: v[i:i + 1] for k, v in b.items()} for b in inputs for i in range(b["input_ids"].shape[0])]


def _per_sequence_kl(lens, unembedding, held: HiddenStateCache) -> tuple[torch.Tensor, torch.Tensor]:
    """``([sequences, L] KL per held-out sequence, [sequences] its token counts)``."""
    kls, counts = [], []
    for i in range(len(held)):
        part = held[i:i + 1]
        if part.n_tokens():
            kls.append(lens_kl(lens, unembedding, part))
            counts.append(part.n_tokens())
    return torch.stack(kls).double(), torch.tensor(counts, dtype=torch.float64)


def _weighted(kl: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (kl * w[:, None]).sum(0) / w.sum()


def _paired_se(diff: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Standard error over sequences of the token-weighted mean of per-sequence differences ``[L]``
    (a ratio estimator: sequences are the independent units)."""
    n = diff.shape[0]
    mean = _weighted(diff, w)
    resid = (diff - mean) * (w / w.mean())[:, None]
    return (resid.pow(2).sum(0) / (n * (n - 1))).sqrt()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in vars(BenchConfig()).items():
        if isinstance(value, bool):
            parser.add_argument("--" + name.replace("_", "-"), action="store_true")
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    cfg = BenchConfig(**vars(parser.parse_args(argv)))
    CLOCK[0] = cfg.clock
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="bench-lens-") as tmp:
        return _bench(cfg, Path(tmp))


def _bench(cfg: BenchConfig, tmp: Path) -> dict:
    model, inputs, probe_ctx = _model_and_inputs(cfg, tmp)
    model.eval()
    unembedding = resolve_unembedding(model)
    train_in, held_in = split_held_out(inputs)
    held = HiddenStateCache.build(model, _rows(held_in))
    n_layers, d = held.n_layers, held.d_model
    fit_tokens = sum(count_tokens(b) for b in train_in)
    whole = LensTrainConfig(steps=cfg.steps, batch_tokens=None, min_epochs=1)  # the earlier schedule: every batch at least once
    mini = [LensTrainConfig(steps=cfg.steps, batch_tokens=cfg.batch_tokens, seed=s) for s in range(cfg.seeds)]

    def forward_pass():
        with torch.no_grad(), attention_kernel(model, "sdpa"):
            for b in train_in:
                model(**b)

    def on_cache(train_cfg):
        def fit():
            cache = HiddenStateCache.build(model, train_in)
            lens = TunedLens.for_unembedding(n_layers, d, unembedding)
            fit_lens(lens, unembedding, cache, train_cfg)
            return lens
        return fit

    def lazy():
        lens = TunedLens.for_unembedding(n_layers, d, unembedding)
        fit_lens(lens, unembedding, LazyLensBatches(model, train_in), whole)
        return lens

    variants = {"forward": forward_pass, "minibatch": on_cache(mini[0]), "whole": on_cache(whole)}
    if cfg.with_lazy:
        variants["lazy"] = lazy
    times: dict[str, list[float]] = {k: [] for k in variants}
    lenses: dict[str, TunedLens] = {}
    names = list(variants)
    for k in range(cfg.repeats):
        for name in names if k % 2 == 0 else names[::-1]:
            out, t = _timed(variants[name])
            times[name].append(t)
            if isinstance(out, TunedLens):
                lenses[name] = out
    unit = statistics.median(times["forward"])

    def units(name: str) -> float:
        """Median over rounds of the round's time / that round's forward pass."""
        return statistics.median(t / f for t, f in zip(times[name], times["forward"]))
    _, t_kl = _timed(lambda: lens_kl(lenses["minibatch"], unembedding, held))
    attn = getattr(model.config, "_attn_implementation", "?")
    whole_steps = max(cfg.steps, len(train_in))
    print(f"model: {type(model).__name__} {n_layers} layers, d_model {d}, vocab {unembedding.head.out_features}, loaded with "
          f"{attn} attention; {fit_tokens} fit tokens in {len(train_in)} batches, {held.n_tokens()} held-out tokens in "
          f"{len(held)} sequences; torch threads {torch.get_num_threads()}; {cfg.repeats} interleaved rounds, medians")
    print(f"clock: {cfg.clock} seconds of this process; units: median over rounds of time / that round's forward pass")
    print(f"one forward pass over the fit tokens (sdpa, no grad): {unit:.2f} s = 1 unit")
    out = {"forward_s": unit, "kl_eval_s": t_kl}
    labels = {"minibatch": f"now: caching pass + {cfg.steps} steps x {cfg.batch_tokens} positions",
              "whole": f"before: caching pass + {whole_steps} steps x one whole batch",
              "lazy": f"first: {whole_steps} steps x (one {attn} forward pass + the batch)"}
    for name in ("minibatch", "whole", "lazy"):
        if name in times:
            s = statistics.median(times[name])
            out[f"{name}_s"], out[f"{name}_units"] = s, units(name)
            print(f"{labels[name]}: {s:.2f} s = {units(name):.2f} units")
    print(f"held-out KL evaluation ({held.n_tokens()} tokens): {t_kl:.2f} s = {t_kl / unit:.2f} units; "
          f"fit + KL now: {out['minibatch_units'] + t_kl / unit:.2f} units")

    # quality: the whole-batch lens against the minibatch lenses, paired over held-out sequences
    kl_whole, w = _per_sequence_kl(lenses["whole"], unembedding, held)
    seeds = [lenses["minibatch"]] + [on_cache(c)() for c in mini[1:]]
    kl_seeds = [_per_sequence_kl(lens, unembedding, held)[0] for lens in seeds]
    mean_whole = _weighted(kl_whole, w)
    print(f"held-out KL per layer (nats/token; layer k = output of layer k, 0 = embeddings); minibatch: seed 0, "
          f"difference (minibatch - whole) +- its standard error over {len(w)} held-out sequences, and the range over "
          f"{cfg.seeds} draw orders:")
    diffs = []
    for layer in range(n_layers):
        m0 = float(_weighted(kl_seeds[0], w)[layer])
        diff = kl_seeds[0] - kl_whole
        dm, se = float(_weighted(diff, w)[layer]), float(_paired_se(diff, w)[layer])
        per_seed = [float(_weighted(k, w)[layer]) for k in kl_seeds]
        diffs.append((dm, se))
        print(f"  layer {layer:2d}: whole {float(mean_whole[layer]):.5f}   minibatch {m0:.5f}   difference {dm:+.5f} +- {se:.5f} "
              f"({dm / float(mean_whole[layer]):+.2%})   seeds {min(per_seed):.5f}..{max(per_seed):.5f}")
    out["kl_whole"] = [float(x) for x in mean_whole]
    out["kl_minibatch"] = [float(x) for x in _weighted(kl_seeds[0], w)]
    out["kl_diff_se"] = diffs
    if "lazy" in lenses:
        out["kl_lazy_max_abs_diff"] = float((lens_kl(lenses["lazy"], unembedding, held) - lens_kl(lenses["whole"], unembedding, held)).abs().max())
        print(f"per-step forward lens vs whole-batch cache lens: max |KL difference| {out['kl_lazy_max_abs_diff']:.2e}")
    if probe_ctx is not None and not cfg.skip_probe:
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
            probe = LensProbe(LensProbe.Options(lens_steps=steps, lens_tokens=cfg.lens_tokens, lens_batch_tokens=cfg.batch_tokens))
            result, t = _timed(lambda: probe.run(ProbeContext(adapter, loaded, items)))
            times[steps].append(t)
        print(f"round {k + 1}: lens probe {cfg.steps} steps {times[cfg.steps][-1]:.2f} s, "
              f"{cfg.steps_high} steps {times[cfg.steps_high][-1]:.2f} s", flush=True)
    ratios = [h / lo for h, lo in zip(times[cfg.steps_high], times[cfg.steps])]
    ratio = statistics.median(ratios)
    print(f"lens probe ({result.notes[-1]}): {cfg.steps} steps {statistics.median(times[cfg.steps]):.2f} s, "
          f"{cfg.steps_high} steps {statistics.median(times[cfg.steps_high]):.2f} s: {ratio:.2f}x "
          f"(median of per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")
    return {"probe_low_s": statistics.median(times[cfg.steps]), "probe_high_s": statistics.median(times[cfg.steps_high]),
            "probe_ratio": ratio}


if __name__ == "__main__":
    main()
