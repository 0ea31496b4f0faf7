"""``vlground check-chat PATH...``: validate CHAT transcripts.

Prints one line per problem on stdout (``path:line: CODE message``), a summary on stderr,
and exits 1 when any file has an error (warnings alone exit 0).

``--talkbank`` also runs TalkBank's own parser (from the ``batchalign`` package, extra
``vlground[talkbank]``) on every file and prints a ``path:line: talkbank: ...`` line wherever
the two disagree (one rejects a file the other accepts, or flags a line the other does not);
the exit status stays vlground's verdict.
"""
from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from vlground.chat import count_chat_sources, iter_chat_sources, read_chat
from vlground.chat.talkbank import compare, load_parser

HELP = "validate CHAT transcripts (.cha files, folders, .zip archives)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help=".cha file, folder (searched recursively) or .zip archive")
    parser.add_argument("--errors-only", action="store_true", help="do not print warnings")
    parser.add_argument("--talkbank", action="store_true",
                        help="also run TalkBank's parser (pip install 'vlground[talkbank]') and "
                             "report where it and vlground disagree")


def run(args: argparse.Namespace) -> int:
    parse = load_parser() if args.talkbank else None  # one-line error before any output
    total = count_chat_sources(args.paths)  # raises InputError for a bad path before any output
    files = bad_files = errors = warnings = 0
    disagree = only_ours = only_theirs = 0
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
        if parse is not None:
            try:
                text = source.data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            cmp = compare(chat, text, parse)
            lines += cmp.lines()
            if not cmp.agree:
                disagree += 1
                only_ours += bool(cmp.ours)
                only_theirs += bool(cmp.theirs)
        if lines:
            try:
                bar.write("\n".join(lines), file=sys.stdout)
            except BrokenPipeError:  # `| head`: stop quietly
                return 1 if bad_files else 0
        bar.update()
    bar.close()
    print(f"check-chat: {files} files, {bad_files} with errors, {errors} errors, "
          f"{warnings} warnings", file=sys.stderr)
    if parse is not None:
        print(f"check-chat --talkbank: vlground and TalkBank disagree on {disagree} of {files} "
              f"files ({only_ours} rejected only by vlground, {only_theirs} only by TalkBank)",
              file=sys.stderr)
    return 1 if bad_files else 0
