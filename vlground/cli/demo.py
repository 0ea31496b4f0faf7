"""``vlground demo``: bundled corpus -> tiny models -> probes -> report, on a laptop CPU.

Steps (each resumable: re-running skips what is finished):

1. generate CHILDES-like CHAT transcripts and build the ENV/LAN corpus (128-token chunks, so
   that tiny models see enough context windows in a few CPU minutes; the paper uses 512);
2. train tiny Transformer and LSTM models, several seeds, one process per CPU core (one
   thread each), with a checkpoint trajectory;
3. probe every checkpoint through the ``childes`` adapter: behaviour on all of them, the
   mechanistic probes (saliency, heads, ablation, lens) on a few;
4. write ``report.html`` and print where it is, with the match/mismatch verdict.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HELP = "bundled corpus -> tiny models -> probes -> report, on a laptop CPU"

log = logging.getLogger(__name__)

#: training settings of the demo (over the bundled <arch>-tiny.json configs)
DEMO_TRAIN = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 50, "checkpoint_every": 125, "checkpoint_dense_until": 64, "log_every": 25}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("vlground-demo"), help="demo folder (default: ./vlground-demo)")
    p.add_argument("--archs", default="transformer,lstm", help="architectures to train (default: transformer,lstm)")
    p.add_argument("--seeds", default="0,1,2", help="seeds per architecture (default: 0,1,2)")
    p.add_argument("--steps", type=int, default=1000, help="training steps per run (default: 1000)")
    p.add_argument("--files", type=int, default=80, help="generated transcripts (default: 80)")
    p.add_argument("--probes", default="behaviour,saliency,heads,ablation,lens", help="probes to run (default: all)")
    p.add_argument("--workers", type=int, default=0, help="training processes (default: one per CPU core, at most 4)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 seed, 40 steps, 24 files")
    p.add_argument("--vision", action="store_true",
                   help="the vision testbed instead: synthetic scenes -> tiny DINOv2 features -> tiny LMs -> inpainted mismatches -> probes")


def _train_one(corpus: str, out: str, arch: str, seed: int, steps: int) -> tuple[str, float, float | None]:
    """Worker: one run with one torch thread (runs go in parallel, one per core)."""
    import torch

    torch.set_num_threads(1)
    from vlground.train import TrainConfig, train

    t0 = time.perf_counter()
    train(TrainConfig(corpus=corpus, out=out, arch=arch, size="tiny", seed=seed, resume=Path(out).exists(),
                      progress=False, overrides={**DEMO_TRAIN, "steps": steps}))
    loss = None
    log_f = Path(out) / "train_log.jsonl"
    if log_f.is_file():
        lines = [json.loads(x) for x in log_f.read_text().splitlines() if x.strip()]
        losses = [x["loss"] for x in lines if "loss" in x]
        loss = losses[-1] if losses else None
    return out, time.perf_counter() - t0, loss


def run(args: argparse.Namespace) -> int:
    if args.vision:
        from vlground.cli.demo_vision import run as vision_run

        return vision_run(args)
    from vlground.cli.probe import run as probe_run
    from vlground.datasets.chat_generator import build_default_corpus

    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps, files = args.steps, args.files
    if args.quick:
        seeds, steps, files = seeds[:1], 40, 24
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]

    corpus = out / "corpus"
    print(f"[1/4] corpus: {corpus}", flush=True)
    if not (corpus / "corpus.json").is_file():
        build_default_corpus(corpus, seed=0, n_files=files, chat_dir=out / "chat", chunk_len=128, overwrite=True, progress=True)

    jobs = [(arch, s, out / "runs" / arch / f"seed-{s}") for arch in archs for s in seeds]
    todo = [j for j in jobs if not (j[2] / "checkpoints" / f"step-{steps}").is_dir()]
    workers = args.workers or min(4, os.cpu_count() or 1)
    print(f"[2/4] training {', '.join(archs)} x seeds {seeds}, {steps} steps each ({len(todo)} to do, {workers} in parallel)", flush=True)
    if todo:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            futures = [pool.submit(_train_one, str(corpus), str(run_dir), arch, s, steps) for arch, s, run_dir in todo]
            for f in futures:
                run_dir, secs, loss = f.result()
                print(f"      {run_dir}: done in {secs:.0f} s, last loss {loss if loss is None else round(loss, 3)}", flush=True)

    report_dir = out / "report"
    import torch

    # tiny models gain nothing from a second thread, and two threads on a busy machine can be
    # many times slower than one (OpenMP waits): probe with one
    torch.set_num_threads(1)
    mech = ",".join(str(s) for s in sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps}))
    print(f"[3/4] probing every checkpoint of {len(jobs)} runs (mechanistic probes at steps {mech})", flush=True)
    ns = argparse.Namespace(
        adapter="childes", out=report_dir, runs=[str(j[2]) for j in jobs], model=None, images=None, annotations=None, mismatch=None,
        templates=None, prompt=None, question=None, answer_prefix=None, probes=args.probes, checkpoints="all", mechanistic_checkpoints=mech, batch_size=None, device="cpu",
        dtype=None, limit=None, min_env=None, min_lan=None, overwrite=True, no_report=False, gather_threshold=0.3, aggregate_threshold=0.3,
        box_thresholds="0.7,0.9", ablation_draws=10,
    )
    probe_run(ns)

    print("[4/4] verdicts at the last checkpoint (effect size, 95% CI, corrected p; docs/statistics.md):")
    from vlground.report.verdicts import final_verdicts

    ok = True
    for v in final_verdicts(report_dir):
        print(f"      {v['text']}")
        if str(v["group"]).startswith("transformer") and not args.quick:
            ok &= v["verdict"] == "grounded"
    print(f"report: {(report_dir / 'report.html').resolve()}  ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1
