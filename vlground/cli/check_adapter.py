"""``vlground check-adapter NAME --model PATH ...``: run the conformance kit on an adapter.

The flags after ``NAME`` are the adapter's own options (its ``Options`` dataclass, see
:func:`vlground.engine.adapter.adapter_cli_flags`); ``vlground check-adapter NAME --help`` lists
them, and an unknown flag is an error. Exit status 0 when every check passes, 1 with the failed
check's message (naming the item and what differs) otherwise.
"""
from __future__ import annotations

import argparse
import logging

HELP = "check an adapter against the interface (geometry, forward path, pairs, scoring)"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", help="registered adapter name or package.module:ClassName")
    p.add_argument("--max-items", type=int, default=8, help="items checked per checkpoint (default 8)")
    p.add_argument("--no-paint", action="store_true", help="skip the painted-box geometry check")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the adapter's own flags (NAME --help lists them)")


def adapter_parser(cls, prog: str) -> argparse.ArgumentParser:
    """A parser of ``cls``'s own flags (one-line usage errors, exit 2)."""
    from vlground.cli import _Parser
    from vlground.engine.adapter import adapter_cli_flags

    parser = _Parser(prog=prog, description=f"options of adapter {cls.name}")
    for flags, kw in adapter_cli_flags(cls):
        parser.add_argument(*flags, **kw)
    return parser


def run(args: argparse.Namespace) -> int:
    from vlground.engine.registry import get_adapter_class

    cls = get_adapter_class(args.adapter)
    rest = _own_flags(args, list(args.options))  # --max-items / --no-paint may come after NAME too
    try:
        opts = adapter_parser(cls, f"vlground check-adapter {args.adapter}").parse_args(rest)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return int(exc.code or 0)
    from vlground.testing import check_adapter  # the kit (torch, transformers): not for NAME --help

    adapter = cls.from_options(vars(opts))
    try:
        report = check_adapter(adapter, max_items=args.max_items, paint=not args.no_paint)
    except AssertionError as exc:
        print(f"vlground check-adapter: {args.adapter} fails: {exc}")
        return 1
    print(f"vlground check-adapter: {args.adapter} passes every check")
    for line in dict.fromkeys(report.checks):
        print(f"  ok  {line}")
    for note in dict.fromkeys(report.notes):
        print(f"  note: {note}")
    return 0


def _own_flags(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Take ``--max-items N`` / ``--max-items=N`` / ``--no-paint`` out of the adapter's flags into ``args``."""
    from vlground.errors import InputError

    out, i = [], 0
    while i < len(rest):
        a = rest[i]
        if a == "--no-paint":
            args.no_paint = True
        elif a == "--max-items" or a.startswith("--max-items="):
            value = a.split("=", 1)[1] if "=" in a else (rest[i + 1] if i + 1 < len(rest) else None)
            i += 0 if "=" in a else 1
            try:
                args.max_items = int(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InputError(f"--max-items: expected a whole number, got {value!r}") from None
            if args.max_items < 1:
                raise InputError(f"--max-items: must be at least 1, got {args.max_items}")
        else:
            out.append(a)
        i += 1
    return out
