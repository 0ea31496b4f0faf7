"""The ``vlground`` command line.

Each subcommand is a module ``vlground.cli.<name>`` exposing

* ``HELP: str``: the one-line summary shown by ``vlground --help``;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit status.

Modules are imported only when their command runs, so ``vlground --help`` stays fast and a
broken optional dependency of one command never breaks another. ``main(argv)`` is callable
in-process (tests do so). A :class:`vlground.errors.VlgroundError` becomes a one-line
``vlground: error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
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
}

_HELP = {
    "check-chat": "validate CHAT transcripts (.cha files, folders, .zip archives)",
    "build-corpus": "build an ENV/LAN corpus from CHAT transcripts (or Visual Dialog)",
    "train": "train testbed language models with a checkpoint trajectory",
    "probe": "run grounding probes on checkpoints through an adapter",
    "build-mismatch": "make mismatched images by inpainting annotated objects",
    "demo": "bundled corpus -> tiny models -> probes -> report, on a laptop CPU",
    "monitor": "flag ungrounded object words at generation time; evaluate on POPE, CHAIR, testbed",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (``vlground build-corpus: error: ...; see --help``), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _command_module(name: str):
    return importlib.import_module(f"vlground.cli.{COMMANDS[name]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="vlground", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        p = sub.add_parser(name, help=_HELP[name], description=_HELP[name])
        if name == command:
            _command_module(name).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        parser = build_parser(command)
    except ImportError as exc:  # an optional dependency of that one command
        print(f"vlground: error: {command}: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(_command_module(args.command).run(args) or 0)
    except VlgroundError as exc:
        print(f"vlground: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlground: interrupted; finished work is kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
