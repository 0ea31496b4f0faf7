"""``vlground demo``: bundled corpus -> tiny models -> probes -> report, on a laptop CPU.

Steps (each resumable: re-running skips what is finished):

1. generate CHILDES-like CHAT transcripts and build the ENV/LAN corpus;
2. train tiny Transformer and LSTM models, several seeds, with a checkpoint trajectory;
3. probe every checkpoint through the ``childes`` adapter (behaviour; saliency, heads,
   ablation and lens where the model has them with ``--probes``);
4. write ``report.html`` and print where it is, with the final match/mismatch verdict.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

HELP = "bundled corpus -> tiny models -> probes -> report, on a laptop CPU"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("vlground-demo"), help="demo folder (default: ./vlground-demo)")
    p.add_argument("--archs", default="transformer,lstm", help="architectures to train (default: transformer,lstm)")
    p.add_argument("--seeds", default="0,1,2", help="seeds per architecture (default: 0,1,2)")
    p.add_argument("--steps", type=int, default=600, help="training steps per run (default: 600)")
    p.add_argument("--files", type=int, default=80, help="generated transcripts (default: 80)")
    p.add_argument("--probes", default="behaviour,saliency,heads,ablation,lens", help="probes to run (default: all)")
    p.add_argument("--quick", action="store_true", help="a smaller run for smoke tests (1 seed, 60 steps)")


def run(args: argparse.Namespace) -> int:
    from vlground.cli.probe import run as probe_run
    from vlground.datasets.chat_generator import build_default_corpus
    from vlground.train import TrainConfig, train

    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps = args.steps
    if args.quick:
        seeds, steps = seeds[:1], 60
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]

    corpus = out / "corpus"
    print(f"[1/4] corpus: {corpus}")
    if not (corpus / "corpus.json").is_file():
        build_default_corpus(corpus, seed=0, n_files=args.files, chat_dir=out / "chat", overwrite=True, progress=True)

    print(f"[2/4] training {', '.join(archs)} x seeds {seeds}, {steps} steps each")
    runs = []
    for arch in archs:
        sweep = out / "runs" / arch
        done = all((sweep / f"seed-{s}" / "checkpoints" / f"step-{steps}").is_dir() for s in seeds)
        if not done:
            resume = sweep.exists()
            train(TrainConfig(corpus=str(corpus), out=str(sweep), arch=arch, size="tiny", seeds=seeds, resume=resume, overrides={"steps": steps}))
        runs += [str(sweep / f"seed-{s}") for s in seeds]

    report_dir = out / "report"
    print(f"[3/4] probing every checkpoint of {len(runs)} runs")
    ns = argparse.Namespace(
        adapter="childes", out=report_dir, runs=runs, model=None, images=None, annotations=None, mismatch=None,
        templates=None, probes=args.probes, checkpoints="all", batch_size=None, device=None, dtype=None, limit=None,
        overwrite=True, no_report=False, gather_threshold=0.3, aggregate_threshold=0.3, box_thresholds="0.7,0.9", ablation_draws=10,
    )
    probe_run(ns)

    print("[4/4] verdict at the last checkpoint (mean over seeds):")
    import json

    res = json.loads((report_dir / "results.json").read_text())
    ok = True
    for arch in archs:
        last = [r for r in res["checkpoints"] if r["run"].startswith(f"{arch}/") and r["step"] == steps]
        if not last:
            continue
        m = sum(r["match_surprisal"] for r in last) / len(last)
        mm = sum(r["mismatch_surprisal"] for r in last) / len(last)
        p = max(r["p_value"] or 1.0 for r in last)
        verdict = "match < mismatch" if m < mm and p < 0.05 else "no significant effect"
        ok &= arch != "transformer" or (m < mm and p < 0.05)
        print(f"  {arch:12s} match {m:.3f}  mismatch {mm:.3f}  info gain {mm - m:+.3f}  max p {p:.2g}  -> {verdict}")
    print(f"report: {(report_dir / 'report.html').resolve()}  ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1
