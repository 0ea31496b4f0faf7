"""Optional cross-check with TalkBank's own CHAT parser (``check-chat --talkbank``).

TalkBank's validator is the Rust ``talkbank-chat`` parser that the ``batchalign`` package
ships (``batchalign._core.CHATFile.parse``; extra ``vlground[talkbank]``). It raises one
``ValueError`` for a whole file whose message holds one ``error[CODE]: message (bytes a..b)``
line per problem; :func:`talkbank_problems` turns that into (line, code, message) triples so
they can be set beside vlground's own problems.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from vlground.chat.types import ChatFile, Problem
from vlground.errors import VlgroundError

_ERROR = re.compile(r"^(error|warning)\[(\w+)\]: (.*?)(?: \(bytes (\d+)\.\.(\d+)\))?$")
MISSING = ("--talkbank needs TalkBank's CHAT parser from the batchalign package; "
           "install it with: pip install 'vlground[talkbank]'")


def load_parser() -> Callable[[str], None]:
    """``CHATFile.parse`` of batchalign; a one-line :class:`VlgroundError` when not installed."""
    try:
        from batchalign._core import CHATFile  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise VlgroundError(MISSING) from exc
    return CHATFile.parse


def talkbank_problems(parse: Callable[[str], None], text: str, path: str) -> list[Problem]:
    """TalkBank's errors for one file (empty: TalkBank accepts it), with 1-based lines."""
    try:
        parse(text)
        return []
    except ValueError as exc:
        message = str(exc)
    data = text.encode("utf-8")
    out = []
    for raw in message.splitlines():
        m = _ERROR.match(raw.strip())
        if m is None:
            if raw.strip():
                out.append(Problem(path, 0, "E???", raw.strip()))
            continue
        line = data.count(b"\n", 0, int(m.group(4))) + 1 if m.group(4) else 0
        out.append(Problem(path, line, m.group(2), m.group(3),
                           "warning" if m.group(1) == "warning" else "error"))
    if not out:
        out.append(Problem(path, 0, "E???", message or "rejected"))
    return out


@dataclass
class Comparison:
    """vlground's and TalkBank's verdicts on one file."""

    path: str
    ours: list[Problem]  #: vlground's errors
    theirs: list[Problem]  #: TalkBank's errors

    @property
    def agree(self) -> bool:
        """Both accept or both reject the file."""
        return bool(self.ours) == bool(self.theirs)

    def lines(self) -> list[str]:
        """One ``check-chat`` line per disagreement (file verdict, then lines flagged by one only)."""
        if not self.agree:
            who, other, problems = (("vlground", "TalkBank", self.ours) if self.ours
                                    else ("TalkBank", "vlground", self.theirs))
            first = problems[0]
            return [f"{self.path}:{first.line}: talkbank: only {who} rejects the file "
                    f"({other} accepts it): {first.code} {first.message}"]
        ours = {p.line for p in self.ours}
        theirs = {p.line for p in self.theirs}
        out = [f"{self.path}:{p.line}: talkbank: only TalkBank flags this line: {p.code} {p.message}"
               for p in self.theirs if p.line and p.line not in ours]
        out += [f"{self.path}:{p.line}: talkbank: only vlground flags this line: {p.code} {p.message}"
                for p in self.ours if p.line and p.line not in theirs]
        return out


def compare(chat: ChatFile, text: str | None, parse: Callable[[str], None]) -> Comparison:
    """Compare vlground's reading of a file with TalkBank's (text None: not UTF-8, both reject)."""
    theirs = ([Problem(chat.path, 0, "E001", "not UTF-8")] if text is None
              else talkbank_problems(parse, text, chat.path))
    return Comparison(chat.path, chat.errors, [p for p in theirs if p.severity == "error"])
