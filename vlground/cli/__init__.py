"""The ``vlground`` command line.

Each subcommand is a module ``vlground.cli.<name>`` exposing

* ``HELP: str``: the one-line summary shown by ``vlground --help``;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit status.

Modules are imported only when their command runs, so ``vlground --help`` stays fast and a
broken optional dependency of one command never breaks another. ``main(argv)`` is callable
in-process (tests do so). A :class:`vlground.errors.VlgroundError` becomes a one-line
``vlground: error: ...`` on stderr and exit status 2; an :class:`OSError` (an unwritable
folder, a full disk, a file that vanished) becomes ``vlground: error: <path>: <what>`` and exit
status 1. Every command writes through temporary names renamed into place, so what was already
written is intact after either.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Sequence

from vlground.errors import VlgroundError

#: command name -> module under vlground.cli
COMMANDS: dict[str, str] = {
    "check-chat": "check_chat",
    "build-corpus": "build_corpus",
    "train": "train",
    "probe": "probe",
    "build-mismatch": "build_mismatch",
    "demo": "demo",
    "monitor": "monitor",
    "sweep": "sweep",
    "check-adapter": "check_adapter",
    "list": "list_cmd",
}

_HELP = {
    "check-chat": "validate CHAT transcripts (.cha files, folders, .zip archives)",
    "build-corpus": "build an ENV/LAN corpus from CHAT transcripts (or Visual Dialog)",
    "train": "train testbed language models with a checkpoint trajectory",
    "probe": "run grounding probes on checkpoints through an adapter",
    "build-mismatch": "make mismatched images by inpainting annotated objects",
    "demo": "two bundled corpora (a dense control, CHILDES density) -> tiny models -> probes -> report, on a laptop CPU (--long: the positive control's budget)",
    "monitor": "flag ungrounded object words at generation time; evaluate on POPE, CHAIR, testbed",
    "sweep": "a grid of corpora x architectures x seeds as tasks on Ray (local or a cluster)",
    "check-adapter": "check an adapter against the interface (geometry, forward path, pairs, scoring)",
    "list": "list adapters (with model types), probes, architectures and sizes, bundled sweeps and templates",
}


#: command name -> examples shown at the end of its --help
EXAMPLES = {
    "check-chat": ["vlground check-chat transcripts/", "vlground check-chat Brown.zip --errors-only"],
    "build-corpus": ["vlground build-corpus transcripts/ Brown.zip --out corpora/childes",
                     "vlground build-corpus --visdial visdial_1.0_train.json --images coco/train2014 "
                     "--annotations coco/instances_train2014.json --out corpora/visdial"],
    "train": ["vlground train --corpus corpora/childes --arch transformer --size tiny --seed 0 --out runs/tf-s0",
              "vlground train --corpus corpora/childes --arch lstm --seeds 0,1,2 --out runs/lstm --log-with tensorboard",
              "tensorboard --logdir runs/lstm  # loss, val loss, lr, tokens/s, grad norm"],
    "probe": ["vlground probe --adapter childes --run runs/tf-s0 runs/tf-s1 --out probes/tf",
              "vlground probe --adapter childes --run runs/tf-s0 --probes behaviour,saliency,heads --mechanistic-checkpoints 0,500,last --out probes/tf-mech",
              "vlground probe --adapter llava15 --model llava-hf/llava-1.5-7b-hf --images coco/val2017 "
              "--annotations coco/instances.json --mismatch mismatch/ --probes behaviour,saliency,boxheads --out probes/llava"],
    "check-adapter": ["vlground check-adapter qwen2vl --model Qwen/Qwen2-VL-7B-Instruct --images coco/val2017 "
                      "--annotations coco/instances.json --mismatch mismatch/ --limit 8",
                      "vlground check-adapter mypkg.adapters:MyVLMAdapter --help  # the adapter's own flags"],
    "build-mismatch": ["vlground build-mismatch --annotations coco/instances.json --images coco/val2017 --inpaint --out mismatch/"],
    "demo": ["vlground demo --quick   # a smoke test, under a minute on 2 idle cores",
             "vlground demo           # dense control + CHILDES density x 2 architectures x 2 seeds, <= 10 min on 2 idle cores",
             "vlground demo --vision  # the vision testbed"],
    "monitor": ["vlground monitor --adapter llava15 --model llava-hf/llava-1.5-7b-hf --heads probes/llava "
                "--images coco/val2017 --annotations coco/instances.json --task pope --out probes/llava/monitor-pope",
                "vlground monitor --adapter visdial_dinov2 --run runs/vd/seed-0 --heads probes/vd --images scenes/val/images "
                "--annotations scenes/val/instances.json --mismatch mismatch/ --task testbed --mitigate --out probes/vd/monitor-testbed"],
    "list": ["vlground list            # everything, by the names the commands take", "vlground list adapters"],
    "sweep": ["vlground sweep paper-text --dry-run       # the paper's text grid: tasks, done, left",
              "vlground sweep export paper-text > my.yaml  # a bundled sweep to edit",
              "vlground sweep my-sweep.yaml --out sweeps/a   # a local Ray instance; run again to resume",
              "vlground sweep paper-text --address auto    # an existing Ray cluster"],
}


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (``vlground build-corpus: error: ...; see --help``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_module(name: str):
    return importlib.import_module(f"vlground.cli.{COMMANDS[name]}")


def build_parser(command: str | None = None, argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    from vlground import __version__

    parser = _Parser(prog="vlground", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  vlground demo --quick\n  vlground <command> --help")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="-v: progress details (INFO); -vv: debug, with third-party logs")
    parser.add_argument("--version", action="version", version=f"vlground {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.get(name, []))
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name], epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="-v: details (INFO); -vv: debug")
        if name == command:
            mod = _command_module(name)
            if "argv" in inspect.signature(mod.add_arguments).parameters:  # flags that depend on others (--adapter X)
                mod.add_arguments(p, argv=argv)
            else:
                mod.add_arguments(p)
    return parser


def describe_os_error(exc: OSError) -> str:
    """``<path>: <what>`` on one line (``<what>`` alone when the error names no file)."""
    what = exc.strerror or (str(exc).splitlines() or [type(exc).__name__])[0]
    if exc.filename is None:
        return what
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{target}: {what}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        parser = build_parser(command, argv)
    except ImportError as exc:  # an optional dependency of that one command
        print(f"vlground: error: {command}: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = argv  # the command line, for the report's provenance
    from vlground.cli.terminal import configure

    configure(args.verbose)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_command_module(args.command).run(args) or 0)
    except VlgroundError as exc:  # several problems (a sweep file's): one line each
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"vlground: error: {line}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"vlground: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vlground: interrupted; finished work is kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
