"""``vlground probe --adapter NAME ...``: run probes on checkpoints through an adapter."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "run grounding probes on checkpoints through an adapter"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="registered adapter name (childes, visdial_dinov2, llava15) or package.module:ClassName")
    p.add_argument("--out", required=True, type=Path, help="output folder (results.json, CSV, plots, report.html)")
    p.add_argument("--run", nargs="+", dest="runs", metavar="RUN", help="training run folder(s) (childes, visdial_dinov2)")
    p.add_argument("--model", help="hub id or local folder of a pretrained model (llava15)")
    p.add_argument("--images", type=Path, help="image folder (llava15)")
    p.add_argument("--annotations", type=Path, help="COCO-format instances.json (llava15)")
    p.add_argument("--mismatch", type=Path, help="folder written by build-mismatch")
    p.add_argument("--templates", type=Path, help="templates JSON: {env: [...], lan: [...], targets: [...]}")
    p.add_argument("--prompt", help="VLMs: the whole prompt, holding the image token once; the object's name is the next word")
    p.add_argument("--question", help="VLMs: the user turn of the chat format (default: 'What is in the picture?')")
    p.add_argument("--answer-prefix", help="VLMs: start of the answer; the object's name is the next word (default: 'It is a')")
    p.add_argument("--probes", default="behaviour", help="comma list: behaviour,saliency,lens,heads,ablation (default: behaviour)")
    p.add_argument("--checkpoints", default="all", help="all, last, first, or step numbers, comma-separated (default: all)")
    p.add_argument("--mechanistic-checkpoints", default="all", help="the checkpoints that also get the probes other than behaviour (same syntax; default: all)")
    p.add_argument("--batch-size", type=int, help="items per forward pass")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (pretrained VLMs)")
    p.add_argument("--min-env", type=int, help="childes: a target needs at least this many w<ENV> in the corpus (default 3)")
    p.add_argument("--min-lan", type=int, help="childes: ... and this many w<LAN> (default 3)")
    p.add_argument("--limit", type=int, help="probe at most this many objects/targets")
    p.add_argument("--overwrite", action="store_true", help="replace an --out that holds another probe's results")
    p.add_argument("--no-report", action="store_true", help="write results.json only")
    p.add_argument("--gather-threshold", type=float, default=0.3, help="gather head: one row holds >= this share of saliency")
    p.add_argument("--aggregate-threshold", type=float, default=0.3, help="aggregate head: one cell holds >= this share")
    p.add_argument("--box-thresholds", default="0.7,0.9", help="aggregate head (images): inside-box share thresholds")
    p.add_argument("--ablation-draws", type=int, default=10, help="random control-head draws per checkpoint")


def run(args: argparse.Namespace) -> int:
    from vlground.engine.registry import get_adapter_class
    from vlground.engine.runner import ProbeConfig, run_probes
    from vlground.report import write_report

    cls = get_adapter_class(args.adapter)
    adapter = cls.from_options(vars(args))
    probes = tuple(p.strip() for p in args.probes.split(",") if p.strip())
    cfg = ProbeConfig(
        out=args.out,
        probes=probes,
        checkpoints=args.checkpoints,
        mechanistic_checkpoints=getattr(args, "mechanistic_checkpoints", "all"),
        overwrite=args.overwrite,
        probe_options={
            "gather_threshold": args.gather_threshold,
            "aggregate_threshold": args.aggregate_threshold,
            "box_thresholds": [float(x) for x in args.box_thresholds.split(",")],
            "ablation_draws": args.ablation_draws,
        },
    )
    results = run_probes(adapter, cfg)
    n = len(results["checkpoints"])
    for note in results.get("notes", []):
        log.warning(note)  # each once: the runner keeps one copy of a repeated note
    if not args.no_report:
        path = write_report(args.out, results)
        print(f"probed {n} checkpoint(s); report: {path}")
    else:
        print(f"probed {n} checkpoint(s); results: {args.out / 'results.json'}")
    return 0
