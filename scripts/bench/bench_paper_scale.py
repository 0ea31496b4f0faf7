"""Paper-size training throughput per architecture, and what the paper's text grid costs.

For each architecture at ``--size paper`` (the bundled ``<arch>-paper.json``: 12-layer GPT-2
style Transformer, 4-layer LSTM, 12-layer Mamba-2, the two 12-layer hybrids) this builds the
model exactly as ``vlground train`` does (SDPA attention, ``accelerate`` with the training's
mixed precision: bf16 autocast on a GPU that has it, fp32 on a CPU; Mamba-2 uses the
``mamba-ssm`` kernels when they are installed, else the PyTorch path) and times full optimizer
steps (forward, backward, clip, AdamW) on random token batches of ``chunk_len`` 512. Each
architecture runs in its own process so its peak memory is its own (GPU: max allocated; CPU:
peak resident set). Then it estimates the wall time of ``paper-text.yaml`` on N GPUs:

* training only (probing is extra; ``scripts/bench/bench_probe.py`` measures it);
* each run's tokens = steps x batch x chunk_len from the sweep file and the paper configs;
* tokens/s per architecture from this run if it ran on a GPU, else (on a CPU) from FLOPs:
  6 x parameters x tokens (+ attention) at ``--gpu-tflops`` x ``--mfu`` (stated in the output);
* one run per GPU (the sweep's resources), runs placed longest first on the first free GPU.

    python scripts/bench/bench_paper_scale.py [--steps 2] [--batch-size 1] [--gpus 1,8,64]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

ARCHS = ("transformer", "lstm", "mamba2", "hybrid-mid", "hybrid-even")


def one(arch: str, steps: int, batch: int, seq: int, vocab: int, threads: int) -> dict:
    """Time ``steps`` optimizer steps (after one warm-up step) of ``arch`` at paper size."""
    import torch
    from accelerate import Accelerator

    from vlground.train.config import TrainConfig, resolve
    from vlground.train.loop import _mixed_precision, make_optimizer
    from vlground.train.models import build_model

    torch.set_num_threads(threads)
    _, _, model_cfg, h, _ = resolve(TrainConfig(arch=arch, size="paper"))
    torch.manual_seed(0)
    model = build_model(arch, model_cfg, vocab, max_len=seq, attn_implementation=h.attn_implementation)
    n_params = sum(p.numel() for p in model.parameters())
    precision = _mixed_precision(h.mixed_precision)
    acc = Accelerator(mixed_precision=precision)
    opt = make_optimizer(model, h)
    model, opt = acc.prepare(model, opt)
    model.train()
    dev = acc.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        ids = torch.randint(0, vocab, (batch, seq), device=dev)
        loss = model(input_ids=ids, labels=ids).loss
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), h.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator, optimizer state
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    from vlground.train.models import ATTENTION_ARCHS

    attn = getattr(acc.unwrap_model(model).config, "_attn_implementation", None) if arch in ATTENTION_ARCHS else None
    try:
        import mamba_ssm  # noqa: F401

        kernels = "mamba-ssm"
    except ImportError:
        kernels = "torch"
    return {"arch": arch, "device": str(dev), "params": n_params, "precision": precision, "attention": attn,
            "mamba_kernels": kernels if "mamba" in arch or "hybrid" in arch else None,
            "tokens_per_s": steps * batch * seq / seconds, "seconds_per_step": seconds / steps,
            "batch": batch, "seq": seq, "peak_gib": peak}


def flops_per_token(params: int, arch: str, seq: int, n_layer: int = 12, d: int = 768) -> float:
    """Training FLOPs per token: 6 N, plus causal attention's 6 x n_layer x seq x d for attention layers."""
    attn_layers = {"transformer": n_layer, "hybrid-mid": n_layer - n_layer // 3, "hybrid-even": n_layer // 2}.get(arch, 0)
    return 6 * params + 6 * attn_layers * seq * d


def lpt_makespan(durations: list[float], n: int) -> float:
    """Longest-processing-time-first list schedule on ``n`` identical machines."""
    free = [0.0] * n
    for d in sorted(durations, reverse=True):
        i = min(range(n), key=free.__getitem__)
        free[i] += d
    return max(free)


def grid_runs(sweep_file: str) -> list[tuple[str, int, int, int]]:
    """``[(arch, steps, batch, chunk_len)]`` of each training run of a sweep file."""
    from vlground.cli.sweep import spec_path
    from vlground.sweep.spec import load
    from vlground.train.config import TrainConfig, resolve

    sweep = load(spec_path(sweep_file))
    out = []
    for t in sweep.tasks:
        if t.kind != "train":
            continue
        argv = t.args[0]
        arch = argv[argv.index("--arch") + 1]
        over = {k[2:].replace("-", "_"): argv[i + 1] for i, k in enumerate(argv) if k in ("--steps", "--batch-size")}
        _, _, _, h, _ = resolve(TrainConfig(arch=arch, size="paper", overrides={k: int(v) for k, v in over.items()}))
        chunk = int((sweep.data["corpora"][next(iter(sweep.data["corpora"]))].get("options") or {}).get("chunk_len", 512))
        out.append((arch, h.steps, h.batch_size, chunk))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=0, help="timed steps per arch (default: 2 on CPU, 20 on GPU)")
    ap.add_argument("--batch-size", type=int, default=0, help="chunks per step (default: 1 on CPU, 32 = the paper's on GPU)")
    ap.add_argument("--seq", type=int, default=512, help="tokens per chunk (the paper's 512)")
    ap.add_argument("--vocab", type=int, default=16000, help="vocabulary size (whole words, ENV and LAN forms: CHILDES-sized)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--sweep", default="paper-text", help="sweep file whose training time to estimate")
    ap.add_argument("--gpus", default="1,8,32", help="GPU counts to estimate the sweep's wall time for")
    ap.add_argument("--gpu-tflops", type=float, default=989.0, help="no GPU here: peak bf16 dense TFLOP/s assumed (H100 SXM: 989)")
    ap.add_argument("--mfu", type=float, default=0.25, help="no GPU here: model FLOP utilisation assumed for 100M-parameter models")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the measurements to this file")
    args = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    steps = args.steps or (20 if gpu else 2)
    batch = args.batch_size or (32 if gpu else 1)
    if args.one:
        print(json.dumps(one(args.one, steps, batch, args.seq, args.vocab, args.threads)))
        return

    rows = []
    for arch in args.archs.split(","):
        cmd = [sys.executable, __file__, "--one", arch, "--steps", str(steps), "--batch-size", str(batch),
               "--seq", str(args.seq), "--vocab", str(args.vocab), "--threads", str(args.threads)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            print(f"{arch}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{arch:12s} {r['params'] / 1e6:6.1f} M params  {r['device']:5s} {r['precision']:4s} attn={r['attention']} "
              f"mamba={r['mamba_kernels']}  {r['tokens_per_s']:9.1f} tokens/s  ({r['seconds_per_step']:.2f} s/step of "
              f"{r['batch']}x{r['seq']})  peak {r['peak_gib']:.2f} GiB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)

    by_arch = {r["arch"]: r for r in rows}
    runs = [r for r in grid_runs(args.sweep) if r[0] in by_arch]
    if not runs:
        return
    measured_gpu = gpu
    rate = {}
    for arch, r in by_arch.items():
        if measured_gpu:
            rate[arch] = r["tokens_per_s"]
        else:
            rate[arch] = args.gpu_tflops * 1e12 * args.mfu / flops_per_token(r["params"], arch, args.seq)
    hours = [steps_ * b * chunk / rate[arch] / 3600 for arch, steps_, b, chunk in runs]
    total_tokens = sum(s * b * c for _, s, b, c in runs)
    basis = ("tokens/s measured on this GPU" if measured_gpu else
             f"no GPU here: tokens/s = {args.gpu_tflops:g} TFLOP/s x MFU {args.mfu:g} / (6 x params + attention) FLOPs per token")
    print(f"\n{args.sweep}: {len(runs)} training runs, {total_tokens / 1e9:.2f} G tokens; {basis}")
    for arch in by_arch:
        n = sum(1 for r in runs if r[0] == arch)
        if n:
            h = sum(hh for r, hh in zip(runs, hours) if r[0] == arch)
            print(f"  {arch:12s} {n:3d} runs x {h / n:6.2f} GPU-h = {h:7.1f} GPU-h  ({rate[arch]:,.0f} tokens/s per GPU)")
    print(f"  total training: {sum(hours):.1f} GPU-hours (probing not included)")
    for n in [int(x) for x in args.gpus.split(",")]:
        print(f"  on {n:3d} GPU(s), one run per GPU, longest first: ~{lpt_makespan(hours, n):.1f} h wall")
    if not measured_gpu:
        cpu_h = sum(s * b * c / by_arch[a]["tokens_per_s"] / 3600 for a, s, b, c in runs)
        print(f"  (on this CPU at the measured rates: {cpu_h:,.0f} CPU-process-hours)")


if __name__ == "__main__":
    main()
