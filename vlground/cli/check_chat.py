"""``vlground check-chat PATH...``: validate CHAT transcripts.

Prints one line per problem on stdout (``path:line: CODE message``), a summary on stderr,
and exits 1 when any file has an error (warnings alone exit 0).
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from vlground.chat import count_chat_sources, iter_chat_sources, read_chat

HELP = "validate CHAT transcripts (.cha files, folders, .zip archives)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=".cha file, folder (searched recursively) or .zip archive")
    parser.add_argument("--errors-only", action="store_true", help="do not print warnings")


def run(args: argparse.Namespace) -> int:
    total = count_chat_sources(args.paths)  # raises InputError for a bad path before any output
    files = bad_files = errors = warnings = 0
    bar = tqdm(total=total, unit="file", file=sys.stderr, disable=None if total > 20 else True,
               desc="check-chat")
    for source in iter_chat_sources(args.paths):
        chat = read_chat(source)
        files += 1
        n_err = len(chat.errors)
        errors += n_err
        warnings += len(chat.problems) - n_err
        bad_files += n_err > 0
        lines = [str(p) for p in chat.problems if p.severity == "error" or not args.errors_only]
        if lines:
            try:
                bar.write("\n".join(lines), file=sys.stdout)
            except BrokenPipeError:  # `| head`: stop quietly
                return 1 if bad_files else 0
        bar.update()
    bar.close()
    print(f"check-chat: {files} files, {bad_files} with errors, {errors} errors, "
          f"{warnings} warnings", file=sys.stderr)
    return 1 if bad_files else 0
