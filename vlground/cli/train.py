"""``vlground train``: train testbed LMs with a checkpoint trajectory.

Options come from :class:`vlground.train.config.TrainConfig` (run-level) and
:class:`vlground.train.config.Hyper` (each hyperparameter overrides the config file). Examples::

    vlground train --corpus corpora/childes --arch transformer --size tiny --seed 0 --out runs/tf-s0
    vlground train --corpus corpora/childes --arch mamba2 --size paper --seeds 0,1,2,3,4 --out runs/mamba2
    accelerate launch -m vlground train --corpus corpora/childes --size paper --out runs/tf-s0
"""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields

HELP = "train testbed language models with a checkpoint trajectory"


def _seeds(text: str) -> list[int]:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds wants comma-separated integers, got {text!r}") from None
    if not out or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"--seeds wants distinct comma-separated integers, got {text!r}")
    return out


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--model-arg wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"want a whole number >= 1, got {text!r}")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlground.train.config import Hyper, TrainConfig

    run = parser.add_argument_group("run")
    for f in fields(TrainConfig):
        if f.metadata.get("cli", True) is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            if f.default:
                run.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help=f"do not {f.metadata['help']}")
            else:
                run.add_argument(flag, action="store_true", help=f.metadata["help"])
            continue
        kind = _seeds if f.name == "seeds" else _threads if f.name == "threads" else int if f.name == "seed" else str
        run.add_argument(flag, type=kind, default=f.default, required=f.metadata.get("required", False),
                         metavar=f.name.upper(), help=f.metadata["help"])
    run.add_argument("--model-arg", action="append", type=_model_arg, default=[], metavar="KEY=VALUE",
                     help="override a model kwarg of the config file (JSON value), e.g. n_layer=6; repeatable")
    run.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)

    hyper = parser.add_argument_group("training options (default: the config file's value)")
    for f in fields(Hyper):
        default = f.default if f.default is not MISSING else None
        hyper.add_argument("--" + f.name.replace("_", "-"), dest=f"h_{f.name}", type=type(default), default=None,
                           metavar=type(default).__name__.upper(), help=f.metadata["help"])


def run(args: argparse.Namespace) -> int:
    from vlground.train.config import Hyper, TrainConfig
    from vlground.train.loop import train

    overrides = {f.name: getattr(args, f"h_{f.name}") for f in fields(Hyper) if getattr(args, f"h_{f.name}") is not None}
    cfg = TrainConfig(
        corpus=args.corpus, out=args.out, arch=args.arch, size=args.size, config=args.config, seed=args.seed,
        seeds=args.seeds, resume=args.resume, progress=args.progress, log_with=args.log_with, overrides=overrides,
        model_overrides=dict(args.model_arg), stop_after=args.stop_after, threads=args.threads,
    )
    out = train(cfg)
    print(out)
    return 0
