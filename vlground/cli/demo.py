"""``vlground demo``: bundled corpus -> tiny models -> probes -> report, on a laptop CPU.

A local sweep (:mod:`vlground.sweep`) of ``vlground/configs/sweeps/demo.yaml`` with the
command's options applied, on an embedded Ray instance (one task per core; killing the demo stops
its tasks and the instance). Each task resumes: re-running skips what is finished.

1. generate CHILDES-like CHAT transcripts and build the ENV/LAN corpus (the generator's defaults:
   about a third of the paper's 512-token chunks hold a co-occurring pair; docs/claims.md);
2. train tiny Transformer and LSTM models, several seeds, with a checkpoint trajectory;
3. probe every checkpoint through the ``childes`` adapter: behaviour on all of them, the
   mechanistic probes (saliency, heads, ablation, lens) on a few;
4. write ``report/report.html`` over the grid and print the match/mismatch verdict.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

HELP = "bundled corpus -> tiny models -> probes -> report, on a laptop CPU"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("vlground-demo"), help="demo folder (default: ./vlground-demo)")
    p.add_argument("--archs", default="transformer,lstm", help="architectures to train (default: transformer,lstm)")
    p.add_argument("--seeds", default="0,1,2", help="seeds per architecture (default: 0,1,2)")
    p.add_argument("--steps", type=int, default=600, help="training steps per run (default: 600, as demo.yaml)")
    p.add_argument("--files", type=int, default=1000, help="generated transcripts (default: 1000, as demo.yaml)")
    p.add_argument("--probes", default="behaviour,saliency,heads,ablation,lens", help="probes to run (default: all)")
    p.add_argument("--workers", type=int, default=0, help="CPUs of the local Ray instance: tasks at once (default: one per core, at most 4)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 1 seed, 40 steps, 24 files")
    p.add_argument("--vision", action="store_true",
                   help="the vision testbed instead: synthetic scenes -> tiny DINOv2 features -> tiny LMs -> inpainted mismatches -> probes")


def demo_sweep(args: argparse.Namespace):
    """The demo's :class:`~vlground.sweep.spec.Sweep`: ``demo.yaml`` with the command's options."""
    import yaml
    from importlib import resources

    from vlground.sweep import spec

    data = yaml.safe_load((resources.files("vlground") / "configs" / "sweeps" / "demo.yaml").read_text(encoding="utf-8"))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    steps, files = args.steps, args.files
    if args.quick:
        seeds, steps, files = seeds[:1], 40, 24
    data["grid"][0].update(archs=[a.strip() for a in args.archs.split(",") if a.strip()], seeds=seeds)
    data["corpora"]["childes"]["options"]["files"] = files
    data["train"]["steps"] = steps
    data["probe"]["probes"] = [p.strip() for p in args.probes.split(",") if p.strip()]
    data["probe"]["mechanistic_checkpoints"] = sorted({0, steps // 4, steps // 2, 3 * steps // 4, steps})
    return spec.from_dict(data, "demo.yaml", args.out)


def run(args: argparse.Namespace) -> int:
    if args.vision:
        from vlground.cli.demo_vision import run as vision_run

        return vision_run(args)
    from vlground.sweep import driver

    t0 = time.perf_counter()
    sweep = demo_sweep(args)
    steps = int(sweep.data["train"]["steps"])
    archs = sweep.data["grid"][0]["archs"]
    n_runs = sum(t.kind == "train" for t in sweep.tasks)
    print(f"demo: {n_runs} runs ({', '.join(archs)} x seeds {sweep.data['grid'][0]['seeds']}, {steps} steps) "
          f"as {len(sweep.tasks)} tasks on a local Ray instance -> {sweep.out}", flush=True)
    workers = args.workers or min(4, os.cpu_count() or 1)
    outcome = driver.run_sweep(sweep, num_cpus=workers)
    driver.summary(outcome, sys.stderr)
    if not outcome.ok or outcome.report is None:
        return 1

    print("verdicts at the last checkpoint (effect size, 95% CI, corrected p; docs/statistics.md):")
    from vlground.report.verdicts import final_verdicts

    ok = True
    for v in final_verdicts(outcome.report.parent):
        print(f"      {v['text']}")
        if str(v["group"]).startswith("transformer") and not args.quick:
            ok &= v["verdict"] == "grounded"
    from vlground.claims import claims_table, render_claims_text
    from vlground.results import load

    print("the paper's claims on this run:\n" + render_claims_text(claims_table(load(outcome.report.parent))))
    print(f"report: {outcome.report.resolve()}  ({time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1
