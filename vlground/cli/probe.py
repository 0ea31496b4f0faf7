"""``vlground probe --adapter NAME ...``: run probes on checkpoints through an adapter.

Probe flags are generated from each registered probe's ``Options`` dataclass
(:mod:`vlground.options`), so their defaults live in one place.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

HELP = "run grounding probes on checkpoints through an adapter"

EXAMPLES = """examples:
  vlground probe --adapter childes --run runs/tf-s0 runs/tf-s1 --out reports/tf
  vlground probe --adapter childes --run runs/tf-s* --probes behaviour,saliency,heads,ablation,lens --out reports/tf
  vlground probe --adapter llava15 --model llava-hf/llava-1.5-7b-hf --images photos/ --annotations instances.json \\
      --mismatch mismatched/ --probes behaviour,boxheads,boxablation --out reports/llava
"""

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser, argv=()) -> None:
    from vlground import options as opt
    from vlground.errors import InputError
    from vlground.probes import get_probe_class, known_probes

    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("what to probe")
    from vlground.engine.registry import known_adapters

    g.add_argument("--adapter", required=True, help=f"registered adapter name ({', '.join(known_adapters())}) or "
                   "package.module:ClassName; --adapter NAME --help lists its own options")
    g.add_argument("--out", required=True, type=Path, help="output folder (results.json, items.parquet, CSV, plots, report.html)")
    g.add_argument("--probes", default="behaviour", help=f"comma list of probes: {', '.join(known_probes())} (default: behaviour)")
    g.add_argument("--checkpoints", default="all", help="all, last, first, or step numbers, comma-separated (default: all)")
    g.add_argument("--mechanistic-checkpoints", default="all", help="the checkpoints that also get the probes other than behaviour (same syntax; default: all)")
    g.add_argument("--overwrite", action="store_true", help="replace an --out that holds probe results, whole, once the new results are complete "
                   "(without it, the same probe resumes and another probe's folder is refused)")
    g.add_argument("--no-report", action="store_true", help="write results only, no report")
    g.add_argument("--log-with", metavar="TRACKERS",
                   help="also log each checkpoint's behaviour metrics to tensorboard, wandb, mlflow or all (files in OUT/tracking/)")
    st = p.add_argument_group("verdicts (docs/statistics.md)")
    st.add_argument("--min-effect", type=float, default=0.1, metavar="NATS",
                    help="minimum effect of interest: a smaller information gain is 'no meaningful effect' whatever its p (default 0.1)")
    st.add_argument("--correction", default="holm", choices=("holm", "bonferroni", "bh", "by", "hommel", "none"),
                    help="multiple-testing correction across each group's checkpoints (default holm)")
    t = p.add_argument_group("text testbed and trained runs (childes, visdial_dinov2)")
    t.add_argument("--run", nargs="+", dest="runs", metavar="RUN", help="training run folder(s)")
    t.add_argument("--templates", type=Path, help="templates JSON: {env: [...], lan: [...], targets: [...]}")
    t.add_argument("--min-env", type=int, help="childes: a target needs at least this many w<ENV> in the corpus (default 3)")
    t.add_argument("--min-lan", type=int, help="childes: ... and this many w<LAN> (default 3)")
    v = p.add_argument_group("images and pretrained VLMs (llava15, qwen2vl, llava_next, visdial_dinov2)")
    v.add_argument("--model", help="hub id or local folder of a pretrained model")
    v.add_argument("--images", type=Path, help="image folder")
    v.add_argument("--annotations", type=Path, help="COCO-format instances.json")
    v.add_argument("--mismatch", type=Path, help="folder written by build-mismatch")
    v.add_argument("--prompt", help="the whole prompt, holding the image token once; the object's name is the next word")
    v.add_argument("--question", help="the user turn of the chat format (default: 'What is in the picture?')")
    v.add_argument("--answer-prefix", help="start of the answer; the object's name is the next word (default: 'It is a')")
    v.add_argument("--dtype", help="float32, float16 or bfloat16")
    v.add_argument("--limit", type=int, help="probe at most this many objects/targets")
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=int, help="items per forward pass")
    r.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    _add_adapter_flags(p, argv)
    o = p.add_argument_group("probe options (each flag serves every probe that has the option)")
    seen: dict = {}
    for name in known_probes():
        try:
            cls = get_probe_class(name)
        except InputError as exc:  # a broken plugin must not break --help for the others
            log.warning("%s", exc)
            continue
        opt.add_arguments(o, cls.Options, seen)


#: the flags above that belong to adapters: given to an adapter whose Options lack them, they are an error
ADAPTER_FLAGS = ("runs", "templates", "min_env", "min_lan", "model", "images", "annotations", "mismatch", "prompt",
                 "question", "answer_prefix", "dtype", "limit", "batch_size", "device")


def _adapter_name(argv) -> str | None:
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--adapter" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--adapter="):
            return a.split("=", 1)[1]
    return None


def _add_adapter_flags(p: argparse.ArgumentParser, argv) -> None:
    """The chosen adapter's own flags (its Options fields not defined above), in their own group."""
    from vlground.engine.adapter import adapter_cli_flags
    from vlground.engine.registry import get_adapter_class
    from vlground.errors import InputError

    name = _adapter_name(argv)
    if name is None:
        return
    try:
        cls = get_adapter_class(name)
    except InputError:
        return  # run() reports the unknown adapter on one line
    g = p.add_argument_group(f"options of adapter {name}")
    for flags, kw in adapter_cli_flags(cls):
        try:
            g.add_argument(*flags, **kw)
        except argparse.ArgumentError:  # already a flag above (--model, --device ...)
            pass


def run(args: argparse.Namespace) -> int:
    from vlground.engine.registry import get_adapter_class
    from vlground.probes.runner import run_probes
    from vlground.report import write_report
    from vlground.train.tracking import parse_log_with

    parse_log_with(getattr(args, "log_with", None))  # an unknown or missing tracker fails before any probing
    cls = get_adapter_class(args.adapter)
    own = {f.name for f in dataclasses.fields(cls.Options)}
    foreign = [f for f in ADAPTER_FLAGS if getattr(args, f, None) is not None and f not in own]
    if foreign:
        from vlground.errors import InputError

        raise InputError(f"adapter {cls.name} has no option {', '.join('--' + f.replace('_', '-') for f in foreign)} "
                         f"(see vlground probe --adapter {args.adapter} --help)")
    adapter = cls.from_options(vars(args))
    probes = tuple(p.strip() for p in args.probes.split(",") if p.strip())
    results = run_probes(adapter, probes, vars(args), args.out, checkpoints=args.checkpoints,
                         mechanistic_checkpoints=args.mechanistic_checkpoints, overwrite=args.overwrite)
    n = len(results.checkpoints)
    if getattr(args, "log_with", None):
        from vlground.train.tracking import log_probe_results

        log_probe_results(args.out, args.log_with, results.checkpoint_rows())
    expected = [n for n in results.all_notes() if "(model has no " in n]  # a probe the architecture cannot have
    for note in results.all_notes():
        (log.info if note in expected else log.warning)(note)
    if expected:
        log.info("%d probe(s) skipped where a model lacks what they need (listed in the report's Notes)", len(expected))
    if not args.no_report:
        argv = getattr(args, "argv", None)
        path = write_report(args.out, min_effect=getattr(args, "min_effect", 0.1), correction=getattr(args, "correction", "holm"),
                            command=" ".join(["vlground", *argv]) if argv else None)
        print(f"probed {n} checkpoint(s); report: {path}")
    else:
        print(f"probed {n} checkpoint(s); results: {args.out / 'results.json'}")
    return 0
