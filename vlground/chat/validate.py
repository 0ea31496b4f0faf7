"""Checks on CHAT that pylangacq does not make, with TalkBank error codes where known.

pylangacq reads leniently and reports nothing usable (no codes, no lines), so the checks here
cover what a corpus builder needs to trust a transcript. They are split by job:

* :mod:`vlground.chat.headers` — required headers and their formats, ``@Options``;
* :mod:`vlground.chat.maintier` — one pass over a main tier's tokens;
* :mod:`vlground.chat.tiers` — dependent tiers and their alignment with the main tier;
* this module — the :class:`Checker` that runs them over a file, and the checks that span
  utterances (overlap points matched between speakers, long features and nonvocal scopes).

The codes follow TalkBank's validator (the Rust ``talkbank-chat`` crate that batchalign ships);
``E000`` is used where no code fits. Main tiers of common, well-formed markup
(:data:`vlground.chat.fast.COMMON`, one regex call) pass every main-tier check by construction
and skip the token pass.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from vlground.chat.fast import COMMON
from vlground.chat.headers import SPEAKER, HeaderInfo, check_headers
from vlground.chat.maintier import CONTROL, NUMBER_LANGUAGES, MainTier, common_tier_counts, has_digit
from vlground.chat.tiers import check_dependents
from vlground.chat.types import Problem

if TYPE_CHECKING:
    from vlground.chat.reader import RawUtterance

_TIMED_PAUSE = re.compile(r"\([0-9:.]+\)")

#: headers that may appear between a main tier and its dependent tiers without ending it
HEADERS_INSIDE_UTTERANCE_BLOCK: frozenset[str] = frozenset()


class Checker:
    """Collects the problems of one file; marks utterances with an error as bad."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.bullets: dict[str, int] = {}  #: last bullet start per speaker (E701)
        self.info = HeaderInfo()

    def add(self, line: int, code: str, message: str,
            severity: Literal["error", "warning"] = "error") -> None:
        self.problems.append(Problem(self.path, line, code, message, severity))

    def headers(self, headers: list, utts: list["RawUtterance"], text: str
                ) -> tuple[dict[str, str], list[str]]:
        """Check the headers; return participants (code -> role) and languages."""
        self.info = check_headers(self.add, self.path, headers, bool(utts), text)
        end = next((h[0] for h in headers if h[1] == "End"), 0)
        for u in reversed(utts if end else ()):  # in line order: only the last ones can follow @End
            if u.line < end:
                break
            self._flag(u, "E501", "utterance after @End")
        return self.info.participants, self.info.languages

    def utterances(self, utts: list["RawUtterance"], participants: dict[str, str],
                   languages: list[str]) -> None:
        """Check every utterance; mark those with an error as bad (they are skipped)."""
        longs: list[tuple[str, str, int]] = []  # open &{l= / &{n= features: kind, label, index
        points: list[list[str]] = []  # per utterance: overlap begin marks (⌈, ⌊2, ...)
        no_points: list[str] = []  # shared by every fast-path utterance (never changed)
        multilingual = len(languages) > 1
        # digits in words are checked on the token pass (E220); most languages ban them
        # (by the word's language on the token pass; the fast path sends utterances with digits
        # there only where no language of the file writes them, as its words have no @s:lang)
        digits_checked = bool(languages) and has_digit("\n".join([u.text for u in utts]))
        digits_banned = digits_checked and NUMBER_LANGUAGES.isdisjoint(languages)
        digit = has_digit
        ca_mode = self.info.ca_mode
        problems = self.problems
        good_speakers: set[str] = set()
        common = COMMON.fullmatch
        for index, u in enumerate(utts):
            start = len(problems)
            speaker = u.speaker
            if speaker not in good_speakers:
                if not speaker:
                    self.add(u.line, "E301", "empty speaker code")
                elif not SPEAKER.fullmatch(speaker):
                    self.add(u.line, "E302", f"invalid speaker code {speaker!r}")
                elif participants and speaker not in participants:
                    self.add(u.line, "E308", f"speaker {speaker} is not in @Participants")
                else:
                    good_speakers.add(speaker)
            text = u.text
            tiers = u.tiers
            # fast path: common well-formed markup passes every main-tier check (fast.py)
            stripped = text.strip()
            u.fast = ("\x15" not in text and "\x02" not in text and ", ," not in text
                      and not (digits_banned and digit(text) and digit(_TIMED_PAUSE.sub("", text)))
                      and common(stripped) is not None and CONTROL.search(text) is None)
            if u.fast:
                points.append(no_points)
                if tiers:
                    aligned = "mor" in tiers or "pho" in tiers or "sin" in tiers
                    counts = common_tier_counts(stripped) if aligned else (None, None)
                    check_dependents(self.add, u, counts)
            else:
                mor, pho, marks = MainTier(self, u, index, multilingual, longs, ca_mode,
                                           participants, languages, digits_checked).run()
                points.append(marks)
                check_dependents(self.add, u, (mor, pho))
            if len(problems) > start and any(p.severity == "error" for p in problems[start:]):
                u.bad = True
        for kind, label, index in longs:
            code = "E358" if kind == "l" else "E367"
            self._flag(utts[index], code, f"&{{{kind}={label} without matching &}}{kind}={label}")
        self._overlaps(utts, points)

    def _overlaps(self, utts: list["RawUtterance"], points: list[list[str]]) -> None:
        """Match bottom overlaps ``⌊n`` to earlier top overlaps ``⌈n`` of another speaker.

        CHAT manual, "Overlap": ``⌈ ⌉`` marks the stretch of one speaker's utterance that the
        next speaker's ``⌊ ⌋`` overlaps; indices 2-9 tell several overlaps apart. A top stays
        open until a bottom with the same index answers it (a later bottom may answer an
        already answered top: several listeners). Unanswered tops and unmatched indexed bottoms
        are E347 (as in TalkBank's validator, an unindexed bottom alone is not flagged); a
        bottom whose only top is the same speaker's is E704.
        """
        tops: list[tuple[str, int, bool]] = []  # (mark index, utterance, answered)
        for i, marks in enumerate(points):
            if not marks:
                continue
            speaker = utts[i].speaker
            for mark in marks:
                if mark[0] != "\u230a":
                    continue
                index = mark[1:]
                same = [k for k, (ix, j, _) in enumerate(tops) if ix == index and j != i]
                other = [k for k in same if utts[tops[k][1]].speaker != speaker]
                if other:
                    k = next((k for k in other if not tops[k][2]), other[-1])
                    tops[k] = (tops[k][0], tops[k][1], True)
                elif same:
                    k = same[-1]
                    tops[k] = (tops[k][0], tops[k][1], True)  # reported once, as E704
                    self._flag(utts[i], "E704", f"speaker {speaker} overlaps with self")
                elif index:  # an unindexed bottom may answer a top outside the excerpt
                    self._flag(utts[i], "E347", f"bottom overlap {mark} with no top overlap before it")
            tops.extend((mark[1:], i, False) for mark in marks if mark[0] == "\u2308")
        for index, i, answered in tops:
            if not answered:
                self._flag(utts[i], "E347",
                           f"top overlap \u2308{index} with no bottom overlap \u230a{index} after it")

    def _flag(self, u: "RawUtterance", code: str, message: str) -> None:
        self.add(u.line, code, message)
        u.bad = True
