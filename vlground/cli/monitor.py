"""``vlground monitor``: evaluate a grounding monitor (aggregate heads' image attention) on POPE, CHAIR or
the testbed's items, against baselines; optionally with decoding-time mitigation. See docs/monitor.md."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "flag ungrounded object words at generation time and evaluate the flags (POPE, CHAIR, testbed)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="llava15, qwen2vl, llava_next, visdial_dinov2, or package.module:ClassName")
    p.add_argument("--heads", required=True, type=Path, help="a boxheads probe output (folder or results.json) or a heads file")
    p.add_argument("--out", required=True, type=Path, help="output folder (words.csv, evaluation.csv, monitor.json, report.html)")
    p.add_argument("--task", default="pope", choices=("pope", "chair", "testbed"), help="evaluation task (default: pope)")
    p.add_argument("--model", help="hub id or local folder of a pretrained VLM")
    p.add_argument("--run", nargs="+", dest="runs", metavar="RUN", help="training run folder (visdial_dinov2; one run)")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--annotations", type=Path, required=True, help="COCO-format instances.json of those images")
    p.add_argument("--mismatch", type=Path, help="build-mismatch folder (testbed task; visdial_dinov2 always)")
    p.add_argument("--checkpoint", default="last", help="which checkpoint: last (default), first or a step")
    p.add_argument("--level", type=float, default=0.7, help="boxheads: aggregate level the heads meet on >= half the items (default 0.7)")
    p.add_argument("--heads-run", help="boxheads: whose heads, when the result holds several runs")
    p.add_argument("--pope-strategy", default="random", choices=("random", "popular", "adversarial"), help="POPE's absent objects")
    p.add_argument("--pope-per-image", type=int, default=3, help="POPE: present objects asked about per image (default 3)")
    p.add_argument("--prompt", dest="monitor_prompt", help="chair: the captioning request (default 'Describe the image.'; testbed '<C>')")
    p.add_argument("--max-new-tokens", type=int, default=32, help="chair: caption length limit (default 32)")
    p.add_argument("--limit", type=int, help="at most this many images (pope, chair) or objects (testbed)")
    p.add_argument("--random-draws", type=int, default=20, help="random head sets for the control (default 20)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="POPE draws, random head sets, bootstrap (default 0)")
    p.add_argument("--mitigate", action="store_true", help="also decode with mitigation and report its effect (off by default)")
    p.add_argument("--threshold", type=float, help="mitigation: score threshold (default: 25th percentile of the unmitigated words' scores)")
    p.add_argument("--penalty", type=float, default=5.0, help="mitigation: nats taken off object words' logits (default 5)")
    p.add_argument("--batch-size", type=int, help="adapter batch size (item featurising)")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--dtype", help="pretrained VLMs: float32, float16 or bfloat16")


def run(args: argparse.Namespace) -> int:
    from vlground.engine.registry import get_adapter_class
    from vlground.monitor.run import MonitorConfig, run_monitor
    from vlground.monitor.tasks import TaskConfig

    cls = get_adapter_class(args.adapter)
    options = dict(vars(args))
    from vlground.adapters.hf_vlm import HFVisionLanguageAdapter

    if issubclass(cls, HFVisionLanguageAdapter) and args.task != "testbed" and options.get("mismatch") is None:
        options["mismatch"] = args.images  # the adapter asks for it; pope and chair never build its items
    adapter = cls.from_options(options)
    task = TaskConfig(task=args.task, pope_strategy=args.pope_strategy, pope_per_image=args.pope_per_image,
                      prompt=args.monitor_prompt, max_new_tokens=args.max_new_tokens, limit=args.limit, seed=args.seed,
                      threshold=args.threshold, penalty=args.penalty)
    cfg = MonitorConfig(out=args.out, heads=args.heads, task=task, level=args.level, heads_run=args.heads_run,
                        random_draws=args.random_draws, n_boot=args.bootstrap, seed=args.seed, mitigate=args.mitigate,
                        checkpoint=args.checkpoint)
    res = run_monitor(adapter, cfg)
    for note in res.get("notes", []):
        log.warning(note)
    ref = res["evaluation"][0] if res["evaluation"] else {"auroc": None}
    auroc = "undefined" if ref["auroc"] is None else f"{ref['auroc']:.3f} [{ref['auroc_low']:.3f}, {ref['auroc_high']:.3f}]"
    print(f"{res['n_words']} words ({res['n_hallucinated']} hallucinated); grounding score AUROC {auroc}; "
          f"report: {(args.out / 'report.html').resolve()}")
    return 0
