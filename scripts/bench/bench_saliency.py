"""Benchmark: all-head saliency for a batch in one backward pass vs the naive per-item, per-head loop,
and vs vlground's earlier one-pass implementation (a list of per-layer products, then ``torch.stack``,
with every map's gradient and the parameters' gradient paths alive).

All compute I(l,h) = dL/dA(l,h) * A(l,h) for every item, layer and head of the same random GPT-2
on the same items; the script checks they agree, then prints per method the median time over
rounds, the median of the per-round time ratios (the methods alternate within a round, so load
from other jobs hits each) and the peak memory (CUDA: ``max_memory_allocated``; CPU: peak RSS
from ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs`` before each method,
above the RSS before it).  Torch runs on 1 thread by default (``--threads 0``: torch's default);
on a loaded 2-core machine 2 threads gave a 10-20x spread between runs.

``--dtype bfloat16`` also times the pass under bf16 autocast and reports how often the
gather/aggregate classification (both gather rules) of an (item, layer, head) differs from
float32, plus the per-head mass correlation and relative L2 of the maps.  ``--checkpoint DIR``
uses a trained vlground checkpoint (its token ids) instead of a random GPT-2.

    python scripts/bench/bench_saliency.py [--batch 8 --layers 4 --heads 8 --d-model 128 --seq 48 --device cpu --repeats 3 --threads 1]

``--memory 512,2048`` measures instead what the probes keep: the peak memory of one saliency pass
at each length, with the full ``[B, L, H, S, S]`` maps kept (``full``: what ``saliency_parts``
memoised per chunk before the per-layer reductions, commit 77239e9), with the reductions the probes
read (``summary``: :func:`vlground.mechanism.saliency_summary.saliency_summary`, eager attention) and
with the reductions and the sdpa pass the probes run now (``summary-sdpa``: no map in the autograd
graph, each recomputed per layer in the backward pass), each in a
fresh process (peak RSS, ``VmHWM`` above the RSS before the pass, on the CPU; ``max_memory_allocated``
on a GPU), and the bytes each keeps per item afterwards; then the same figures for a 7B VLM from its
shapes (32 layers x 32 heads, 2,500 tokens, fp16 and fp32).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from vlground.mechanism import attention_saliency
from vlground.mechanism.saliency import target_loss


@dataclass
class BenchConfig:
    """Model and batch of the benchmark."""

    batch: int = 8
    layers: int = 4
    heads: int = 8
    d_model: int = 128
    seq: int = 48
    vocab: int = 1000
    device: str = "cpu"
    seed: int = 0
    repeats: int = 3
    threads: int = 1
    dtype: str = ""
    checkpoint: str = ""
    only: str = ""  # internal: run one method once in this process and print its peak memory (new | stacked | full | summary)
    memory: str = ""  # comma-separated lengths: peak memory of full maps vs per-layer reductions at each (see the docstring)
    baseline_src: str = ""  # --memory: a checkout of the earlier commit (e.g. `git worktree add /tmp/b 77239e9`); its full-map pass is measured too


def naive_saliency(model, ids, pos, tgt, pass_times=None):
    """What a naive script does: one forward + backward per item, per layer, per head."""
    pass_times = [] if pass_times is None else pass_times
    items = []
    for b in range(ids.shape[0]):
        layers = []
        for layer in range(model.config.n_layer):
            heads = []
            for h in range(model.config.n_head):
                t0 = time.perf_counter()
                out = model(ids[b : b + 1], output_attentions=True)
                att = out.attentions[layer]
                att.retain_grad()
                model.zero_grad()
                target_loss(out.logits, pos[b : b + 1], tgt[b : b + 1]).sum().backward()
                heads.append((att.grad * att)[0, h].detach().float().cpu())
                pass_times.append(time.perf_counter() - t0)
            layers.append(torch.stack(heads))
        items.append(torch.stack(layers))
    return torch.stack(items)


def stacked_saliency(model, ids, pos, tgt):
    """vlground's earlier implementation: grads of all maps at once, a list of products, torch.stack."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = model(inputs_embeds=embeds, output_attentions=True)
    grads = torch.autograd.grad(target_loss(out.logits, pos, tgt).sum(), out.attentions)
    maps = [(g * a).detach().float().cpu() for a, g in zip(out.attentions, grads)]
    return torch.stack(maps, dim=1)


def classification_agreement(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Share of (item, layer, head) whose gather / aggregate label is the same in ``a`` and ``b``."""
    from vlground.mechanism.patterns import GatherAggregateThresholds, classify_heads

    out = {}
    for rule in ("strip", "strip-minus-dot"):
        pa, pb = (classify_heads(x, GatherAggregateThresholds(gather_rule=rule)) for x in (a, b))
        out[f"gather ({rule})"] = float((pa.gather == pb.gather).float().mean())
    out["aggregate"] = float((pa.aggregate == pb.aggregate).float().mean())
    return out


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(fn, device: str):
    """(result, seconds, peak bytes above the start)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_mem = torch.cuda.memory_allocated()
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        start_mem = _rss_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else _rss_kib("VmHWM") * 1024
    return result, seconds, max(peak - start_mem, 0)


def chunk_heads(heads: int, seq: int, batch: int = 1) -> int:
    """Heads per chunk of the sdpa pass's backward hook (``vlground.mechanism.saliency_sdpa.CHUNK_BYTES``; no grouped keys)."""
    from vlground.mechanism.saliency_sdpa import CHUNK_BYTES

    return min(heads, max(1, CHUNK_BYTES // (batch * seq * seq * 4)))


def bytes_7b(layers: int = 32, heads: int = 32, hidden: int = 4096, seq: int = 2500, dtype_bytes: int = 2) -> dict[str, int]:
    """Saliency-pass memory of one item of a Llama-style 7B decoder, from shapes (attention only).

    ``graph_eager``: what the autograd graph holds with eager attention until the backward pass
    reaches each layer: the float32 softmax output and, in fp16/bf16, its cast to the model dtype
    (the input of ``attn @ V``), ``(4 + dtype_bytes)`` bytes per entry of ``[heads, seq, seq]`` (fp32:
    4); ``graph_sdpa``: what it holds with sdpa instead (per layer query, key, value and output,
    ``[seq, hidden]`` each, and the log-sum-exp); ``layer_eager`` / ``layer_sdpa``: the transient of
    one layer in the backward hook (eager: its gradient and the float32 product; sdpa also the
    recomputed scores, float32 softmax and its cast, ``dL/dA``, for one chunk of heads, and the layer's
``[S, S]`` sum over heads); ``full``: the ``[L, H, S, S]`` float32
    maps that were kept per item (on the host; the probe memo kept every item's); ``summary``: the
    reductions kept now.  The MLP and residual activations, ``O(seq x hidden)`` per layer, come on
    top in both and are not counted.
    """
    cells = heads * seq * seq
    cast = dtype_bytes if dtype_bytes != 4 else 0
    return {"graph_eager": layers * cells * (4 + cast),
            "graph_sdpa": layers * (4 * seq * hidden * dtype_bytes + heads * seq * 4),
            "layer_eager": cells * (dtype_bytes + 4) + seq * seq * 4,
            "layer_sdpa": chunk_heads(heads, seq) * seq * seq * (dtype_bytes + 4 + cast + dtype_bytes + 4) + seq * seq * 4,
            "full": layers * cells * 4,
            "summary": (layers * heads * (3 * seq + 3) + layers * (seq + 1)) * 4 + 8 * layers * heads}


def memory_table(cfg: "BenchConfig", argv) -> float:
    """Peak memory of the full-map pass vs the per-layer reductions at each length (fresh processes)."""
    import subprocess
    import sys

    lengths = [int(x) for x in cfg.memory.split(",") if x]
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    drop = {"--memory", "--seq", "--only", "--baseline-src"}
    kept_args: list[str] = []
    skip = False
    for a in base:
        if skip:
            skip = False
            continue
        if a.split("=")[0] in drop:
            skip = "=" not in a
            continue
        kept_args.append(a)
    print(f"model: GPT-2 {cfg.layers} layers x {cfg.heads} heads, d_model {cfg.d_model}; batch {cfg.batch}; device {cfg.device}; "
          "peak = VmHWM above the RSS before the pass (CPU) or max_memory_allocated (GPU), each pass in a fresh process")
    ratio = 0.0
    for seq in lengths:
        res = {}
        runs = [("full", "full", None), ("summary", "summary", None), ("sdpa", "summary-sdpa", None)]
        if cfg.baseline_src:
            import os

            env = {**os.environ, "PYTHONPATH": os.pathsep.join([cfg.baseline_src, os.environ.get("PYTHONPATH", "")])}
            runs.insert(0, ("before", "full", env))
        for name, how, env in runs:
            out = subprocess.run([sys.executable, __file__, *kept_args, "--seq", str(seq), "--only", how],
                                 capture_output=True, text=True, check=True, env=env).stdout.split()
            res[name] = (int(out[-2]), int(out[-1]))
        if "before" in res:
            print(f"  {seq:5d} tokens: the earlier commit's full-map pass ({cfg.baseline_src}): peak +{res['before'][0] / 2**20:8.1f} MiB "
                  f"({res['before'][0] / max(res['summary'][0], 1):.2f}x the reductions' peak)")
        print(f"  {seq:5d} tokens: peak +{res['sdpa'][0] / 2**20:8.1f} MiB with the reductions and sdpa (maps recomputed per "
              f"layer, none in the graph): {res['full'][0] / max(res['sdpa'][0], 1):.2f}x lower than with full maps (eager)"
              + (f", {res['before'][0] / max(res['sdpa'][0], 1):.2f}x lower than the earlier commit" if "before" in res else ""))
        ratio = res["full"][0] / max(res["sdpa"][0], 1)
        print(f"  {seq:5d} tokens: peak +{res['full'][0] / 2**20:8.1f} MiB with full maps, +{res['summary'][0] / 2**20:8.1f} MiB "
              f"with the reductions, eager ({res['full'][0] / max(res['summary'][0], 1):.2f}x lower); kept per item {res['full'][1] / cfg.batch / 2**20:8.2f} MiB vs "
              f"{res['summary'][1] / cfg.batch / 2**20:6.3f} MiB ({res['full'][1] / max(res['summary'][1], 1):.0f}x less)")
    gib = 2**30
    for name, nbytes in (("fp16", 2), ("fp32", 4)):
        b = bytes_7b(dtype_bytes=nbytes)
        print(f"  7B VLM (32 layers x 32 heads, d 4096, 2,500 tokens, {name}), per item, attention only: "
              f"before (77239e9: eager, full maps kept) the graph held {b['graph_eager'] / gib:.1f} GiB of maps on the device "
              f"(+ {b['layer_eager'] / gib:.2f} GiB for one layer in the backward pass) and {b['full'] / gib:.1f} GiB of maps "
              f"stayed on the host per item (x 48 mechanistic items in the probe memo: {48 * b['full'] / gib:,.0f} GiB); now "
              f"(sdpa, maps recomputed per layer) the graph holds {b['graph_sdpa'] / gib:.2f} GiB "
              f"(+ {b['layer_sdpa'] / gib:.2f} GiB for one layer) and {b['summary'] / 2**20:.1f} MiB of reductions stay "
              f"(x 48: {48 * b['summary'] / gib:.2f} GiB); device peak {(b['graph_eager'] + b['layer_eager']) / gib:.1f} -> "
              f"{(b['graph_sdpa'] + b['layer_sdpa']) / gib:.1f} GiB "
              f"({(b['graph_eager'] + b['layer_eager']) / (b['graph_sdpa'] + b['layer_sdpa']):.1f}x lower)")
    return ratio


def main(argv=None) -> float:
    import statistics

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
        cfg.vocab, cfg.layers, cfg.heads = model.config.vocab_size, model.config.n_layer, model.config.n_head
        cfg.seq = min(cfg.seq, model.config.n_positions)
    else:
        model = GPT2LMHeadModel(GPT2Config(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.d_model, vocab_size=cfg.vocab,
                                           n_positions=cfg.seq, bos_token_id=0, eos_token_id=0))
    model = model.to(cfg.device).eval()
    model.set_attn_implementation("eager")
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=g).to(cfg.device)
    pos = torch.randint(cfg.seq // 2, cfg.seq, (cfg.batch,), generator=g).to(cfg.device)
    tgt = torch.randint(0, cfg.vocab, (cfg.batch,), generator=g).to(cfg.device)

    if cfg.memory:
        return memory_table(cfg, argv)
    if cfg.only in ("full", "summary", "summary-sdpa"):  # one pass at cfg.seq in this fresh process: peak and kept bytes
        if cfg.only == "full":
            fn = lambda: attention_saliency(model, ids, pos, tgt)  # noqa: E731
        else:
            from vlground.mechanism.saliency_summary import saliency_summary

            kernel = "sdpa" if cfg.only == "summary-sdpa" else "eager"
            fn = lambda: saliency_summary(model, ids, pos, tgt, kernel=kernel)  # noqa: E731
        kept, _, peak = measure(fn, cfg.device)
        nbytes = kept.numel() * 4 if isinstance(kept, torch.Tensor) else kept.nbytes()
        print(peak, nbytes)
        return 0.0
    if cfg.only:  # a fresh process per method: peak RSS is not blurred by the allocator's cache
        fn = {"new": attention_saliency, "stacked": stacked_saliency}[cfg.only]
        fn(model, ids[:1], pos[:1], tgt[:1])
        print(measure(lambda: fn(model, ids, pos, tgt), cfg.device)[2])
        return 0.0
    attention_saliency(model, ids[:1], pos[:1], tgt[:1])  # warm-up
    t = {"new": [], "stacked": [], "naive": []}
    mem = {"new": 0, "stacked": 0, "naive": 0}
    pass_times: list[float] = []
    for _ in range(cfg.repeats):
        fast, sec, m = measure(lambda: attention_saliency(model, ids, pos, tgt), cfg.device)
        t["new"].append(sec)
        mem["new"] = max(mem["new"], m)
        old, sec, m = measure(lambda: stacked_saliency(model, ids, pos, tgt), cfg.device)
        t["stacked"].append(sec)
        mem["stacked"] = max(mem["stacked"], m)
        slow, sec, m = measure(lambda: naive_saliency(model, ids, pos, tgt, pass_times), cfg.device)
        t["naive"].append(sec)
        mem["naive"] = max(mem["naive"], m)
        for name, other in (("naive", slow), ("stacked", old)):
            if not torch.allclose(fast, other, atol=1e-6, rtol=1e-3):
                raise SystemExit(f"results differ from {name}: max abs diff {(fast - other).abs().max():.3g}")
    model.zero_grad(set_to_none=True)
    med = {k: statistics.median(v) for k, v in t.items()}
    if not cfg.device.startswith("cuda"):
        import subprocess
        import sys

        base = [sys.executable, __file__] + [a for a in (argv if argv is not None else sys.argv[1:])]
        for name in ("new", "stacked"):
            out = subprocess.run(base + ["--only", name], capture_output=True, text=True, check=True).stdout.split()
            mem[name] = int(out[-1])
    r_naive = statistics.median(a / b for a, b in zip(t["naive"], t["new"]))
    r_stacked = statistics.median(a / b for a, b in zip(t["stacked"], t["new"]))
    n_passes = cfg.batch * cfg.layers * cfg.heads
    print(f"model: GPT-2 {cfg.layers} layers x {cfg.heads} heads, vocab {cfg.vocab}{' (' + cfg.checkpoint + ')' if cfg.checkpoint else ''}; "
          f"batch {cfg.batch} x seq {cfg.seq}; device {cfg.device}; torch threads {torch.get_num_threads()}; {cfg.repeats} rounds")
    print("peak memory of the two one-pass methods: each in a fresh process")
    print(f"one backward pass:            median {med['new'] * 1e3:9.1f} ms   peak memory +{mem['new'] / 2**20:7.1f} MiB")
    print(f"earlier pass (list + stack):  median {med['stacked'] * 1e3:9.1f} ms   peak memory +{mem['stacked'] / 2**20:7.1f} MiB")
    print(f"naive loop ({n_passes} passes):  median {med['naive'] * 1e3:9.1f} ms   peak memory +{mem['naive'] / 2**20:7.1f} MiB")
    print(f"speed-up vs naive: {r_naive:.1f}x (median of per-round ratios; goal >= 20x); vs the earlier pass: {r_stacked:.2f}x; "
          f"peak memory earlier/now: {mem['stacked'] / max(mem['new'], 1):.2f}x; results agree (allclose)")
    if cfg.dtype:
        dt = getattr(torch, cfg.dtype)
        tb, tf = [], []
        for _ in range(cfg.repeats):
            low, sec, m_low = measure(lambda: attention_saliency(model, ids, pos, tgt, dtype=dt), cfg.device)
            tb.append(sec)
            _, sec, _ = measure(lambda: attention_saliency(model, ids, pos, tgt), cfg.device)
            tf.append(sec)
        mass_a, mass_b = fast.abs().sum((-1, -2)).flatten(), low.abs().sum((-1, -2)).flatten()
        corr = float(torch.corrcoef(torch.stack([mass_a, mass_b]))[0, 1])
        rel = float((low - fast).norm() / fast.norm())
        agree = classification_agreement(fast, low)
        print(f"{cfg.dtype} autocast: speed-up {statistics.median(a / b for a, b in zip(tf, tb)):.2f}x vs float32 "
              f"(median of per-round ratios), peak memory +{m_low / 2**20:.1f} MiB; per-head mass correlation {corr:.5f}, "
              f"relative L2 {rel:.3%}")
        print("classification agreement with float32 (share of item x layer x head): "
              + ", ".join(f"{k} {v:.2%}" for k, v in agree.items()))
    return r_naive


if __name__ == "__main__":
    main()
