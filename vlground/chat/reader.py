"""Read CHAT text into a :class:`ChatFile`: one pass over the lines, checks, then the words.

Steps of :func:`read_chat_text`:

1. split the lines into headers, main tiers and their dependent tiers (continuation lines
   joined), with 1-based line numbers; line-structure problems are recorded on the way;
2. check headers and each utterance (:mod:`vlground.chat.validate`); an utterance with an
   error is skipped, the others are kept;
3. words: main tiers of common markup (``u.fast``, see :mod:`vlground.chat.fast`) by whole-file
   regex passes; the others go to pylangacq (Rust core) in one call for the CHAT word grammar,
   then the rest of the cleaning policy (:func:`vlground.chat.words.finish_words`).
"""
from __future__ import annotations

import logging
import re
import warnings

import pylangacq

from vlground.chat import validate
from vlground.chat.fast import common_words
from vlground.chat.sources import ChatSource
from vlground.chat.types import ChatFile, Problem, Utterance
from vlground.chat.words import before_pylangacq, finish_words

log = logging.getLogger(__name__)

_HEADER = re.compile(r"@([^:\t]*)(?::(\t?)(.*))?")
#: longest line, and longest utterance with its continuation lines, that is read (characters):
#: far above any spoken utterance; a longer one is an error and its text is not kept, so a
#: one-line file of many megabytes is refused in bounded memory instead of parsed
MAX_LINE_CHARS = 20_000


class RawUtterance:
    """A main tier and its dependent tiers as written, before checks and cleaning."""

    __slots__ = ("line", "speaker", "text", "tiers", "tier_lines", "bad", "fast")

    def __init__(self, line: int, speaker: str, text: str) -> None:
        self.line = line
        self.speaker = speaker
        self.text = text
        self.tiers: dict[str, str] = {}
        self.tier_lines: dict[str, int] = {}
        self.bad = False
        self.fast = False  #: set by the checks: the main tier matches fast.COMMON


def read_chat(source: ChatSource) -> ChatFile:
    """Decode a source as UTF-8 and read it; a non-UTF-8 file gives one error and no utterance."""
    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source.data.count(b"\n", 0, exc.start) + 1
        problem = Problem(source.display_path, line, "E001",
                          f"not UTF-8 (byte 0x{source.data[exc.start]:02x} at offset {exc.start})")
        return ChatFile(source.display_path, [], [problem])
    return read_chat_text(text, source.display_path)


def read_chat_text(text: str, path: str) -> ChatFile:
    """Read CHAT text. Never raises on bad CHAT: problems go into ``ChatFile.problems``.

    An utterance with an error (in its main tier or one of its dependent tiers) is skipped and
    counted in ``skipped_utterances``; the others are kept. Errors in headers do not drop
    utterances.
    """
    problems: list[Problem] = []
    headers: list[tuple[int, str, str | None]] = []
    utts: list[RawUtterance] = []
    _split(text, path, headers, utts, problems)
    check = validate.Checker(path, problems)
    participants, languages = check.headers(headers, utts, text)
    check.utterances(utts, participants, languages)

    kept = [u for u in utts if not u.bad]
    words = _words(kept, path, problems)
    out = [
        Utterance(u.speaker, w, u.line, u.tiers)
        for u, w in zip(kept, words)
        if w is not None
    ]
    problems.sort(key=lambda p: p.line)
    return ChatFile(
        path=path,
        utterances=out,
        problems=problems,
        participants=participants,
        languages=languages,
        skipped_utterances=len(utts) - len(out),
    )


def _split(text: str, path: str, headers: list, utts: list[RawUtterance],
           problems: list[Problem]) -> None:
    """Step 1: lines -> headers and utterances (continuation lines joined by one space)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:  # CRLF: drop the "\r" ending each line
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    current: RawUtterance | None = None
    last: tuple[str, object] | None = None  # what a continuation line extends
    for i, line in enumerate(lines, 1):
        first = line[:1]
        if len(line) > MAX_LINE_CHARS:
            problems.append(Problem(path, i, "E004", f"line of {len(line)} characters, longer than {MAX_LINE_CHARS} "
                                    "(not read; is this a CHAT file with line breaks?)"))
            if first == "*" or current is not None:
                if first == "*":
                    current = RawUtterance(i, line[1:].partition(":")[0][:40], "")
                    utts.append(current)
                current.bad = True
            last = None
            lines[i - 1] = ""  # release the text
            continue
        if first == "*":
            # *SPK:<tab>text; the speaker is everything before the first ':' and has no tab
            speaker, colon, rest = line[1:].partition(":")
            if not colon or "\t" in speaker:
                problems.append(Problem(path, i, "E323", "main tier without ':' after the speaker"))
                current, last = None, None
                continue
            current = RawUtterance(i, speaker, rest[1:] if rest[:1] == "\t" else rest)
            utts.append(current)
            last = ("main", current)
        elif first == "%":
            name, colon, rest = line[1:].partition(":")
            if not colon or "\t" in name:
                problems.append(Problem(path, i, "E602", f"malformed dependent tier header: {line[:20]}"))
                if current is not None:
                    current.bad = True
                last = None
                continue
            value = rest[1:] if rest[:1] == "\t" else rest
            if current is None:
                problems.append(Problem(path, i, "E404", f"dependent tier %{name} before any main tier"))
                last = None
                continue
            if name in current.tiers:
                problems.append(Problem(path, i, "E401", f"duplicate dependent tier %{name}"))
                current.bad = True
            current.tiers[name] = value
            current.tier_lines[name] = i
            last = ("dep", (current, name))
        elif first == "@":
            m = _HEADER.fullmatch(line)
            name, tab, value = m.group(1), m.group(2), m.group(3)
            if value and not tab:
                problems.append(Problem(path, i, "E316", f"header @{name}: no tab after ':'"))
            headers.append([i, name, value])
            last = ("header", headers[-1])
            if current is not None and name not in validate.HEADERS_INSIDE_UTTERANCE_BLOCK:
                current = None
        elif first == "\t":
            cont = line[1:]
            if last is None:
                problems.append(Problem(path, i, "E101", "continuation line with nothing to continue"))
            elif last[0] == "main":
                last[1].text += " " + cont
                if len(last[1].text) > MAX_LINE_CHARS:
                    problems.append(Problem(path, i, "E004", f"utterance longer than {MAX_LINE_CHARS} characters "
                                            "with its continuation lines (not read)"))
                    last[1].bad, last[1].text, last = True, "", None
            elif last[0] == "dep":
                u, name = last[1]
                u.tiers[name] += " " + cont
            else:
                h = last[1]
                h[2] = (h[2] or "") + " " + cont
        elif line.strip() == "":
            problems.append(Problem(path, i, "E747", "blank line", "warning"))
        else:
            problems.append(Problem(path, i, "E101", f"line is not a header, tier or continuation: {line[:30]!r}"))
            if current is not None:
                current.bad = True


def _words(kept: list[RawUtterance], path: str, problems: list[Problem]) -> list[list[str] | None]:
    """Step 3: cleaned words of each kept utterance (None where pylangacq could not read it).

    Main tiers of common markup (``u.fast``) are cleaned by whole-text regex passes
    (:func:`vlground.chat.fast.common_words`); the others go to pylangacq in one call.
    """
    if not kept:
        return []
    fast = [u for u in kept if u.fast]
    if len(fast) == len(kept):
        return common_words([u.text for u in kept])
    slow = [u for u in kept if not u.fast]
    slow_words = iter(_slow_words(slow, path, problems))
    fast_words = iter(common_words([u.text for u in fast]))
    return [next(fast_words) if u.fast else next(slow_words) for u in kept]


def _slow_words(kept: list[RawUtterance], path: str, problems: list[Problem]) -> list[list[str] | None]:
    if not kept:
        return []
    body = "".join(f"*{u.speaker or 'XXX'}:\t{before_pylangacq(u.text)}\n" for u in kept)
    try:
        tokens = _pylangacq_words("@UTF8\n@Begin\n" + body + "@End\n")
        if len(tokens) == len(kept):
            return [finish_words(t) for t in tokens]
        log.debug("%s: pylangacq returned %d utterances for %d; reading one by one",
                  path, len(tokens), len(kept))
    except Exception as exc:  # noqa: BLE001 - pylangacq's errors have no common base class
        log.debug("%s: pylangacq failed (%s); reading one by one", path, exc)
    out: list[list[str] | None] = []
    for u in kept:
        try:
            tokens = _pylangacq_words(
                f"@UTF8\n@Begin\n*{u.speaker or 'XXX'}:\t{before_pylangacq(u.text)}\n@End\n")
            out.append(finish_words(tokens[0]) if len(tokens) == 1 else [])
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem(path, u.line, "E316", f"unreadable main tier ({exc})"))
            out.append(None)
    return out


def _pylangacq_words(text: str) -> list[list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reader = pylangacq.CHAT.from_strs([text], parallel=False, strict=False,
                                          mor_tier=None, gra_tier=None)
        return reader.words(by_utterance=True)
