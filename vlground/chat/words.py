"""The cleaning policy: CHAT main-tier tokens -> spoken words (docs/chat-policy.md).

pylangacq (its Rust core ``rustling``) does the CHAT word grammar: it drops retraced material
(``<a b> [/]``), fillers ``&-uh``, fragments ``&+fr``, nonwords ``&~baba``, events
``&=laughs``, ``&*SPK:word``, untranscribed ``xxx yyy www``, omitted ``0word``, pauses and
bracketed codes; it keeps the replacement of ``w [: x]``, expands shortenings
``(be)cause``, strips form markers (``doggy@b``) and keeps compounds (``ice+cream``).
:func:`finish_words` does the rest: lower-casing, removing prosody and CA marks inside words,
and dropping punctuation and terminators.
"""
from __future__ import annotations

import re
from typing import Iterable

# prosody / CA marks that may sit inside or around a word: lengthening, stress, pitch,
# tone, blocking, CA delimiters, overlap brackets, quotation marks, tag marker
_MARKS = re.compile(
    "[:\u02c8\u02cc^\u2260\u2191\u2193\u21d7\u2197\u2192\u2198\u21d8\u221e\u224b\u2261\u2219"
    "\u2308\u2309\u230a\u230b\u2039\u203a\u201c\u201d\u201e\u2021\u2206\u2207\u00b0\u2581"
    "\u2594\u263a\u264b\u2047\u222c\u03ab\u222e\u2193\u2191\u0001\u0002\u00a7\u2248\u224b"
    "\u2219\u21bb\u2907\u223e\u2053\u2016\u00b7\u0015~\u25c9\u204e\u21ab\u2051\u2906]"
)
# overlap points with their index (⌈2), segment repetitions inside a word (↫b-b↫ball -> ball),
# and CA marks that lower-casing would turn into letters (Ἡ laughter in a word); removed first
_BEFORE = re.compile("[\u2308\u2309\u230a\u230b][1-9]?|\u21ab[^\u21ab\\s]*\u21ab|\u1f29")
# a token made of no letter or digit: punctuation, terminators (+..., +/.), separators
_NOT_A_WORD = re.compile(r"(?:(?<=\s)|^)[^\w\s]+(?=\s|$)")


_OVERLAP_POINT = re.compile("[\u2308\u2309\u230a\u230b][1-9]?")


def before_pylangacq(main_tier: str) -> str:
    """Main-tier text as given to pylangacq: overlap points removed with their index (pylangacq
    drops ``⌈`` but keeps the ``2`` of ``⌈2`` as a word)."""
    if "\u2308" <= max(main_tier, default=" ") and _OVERLAP_POINT.search(main_tier):
        return _OVERLAP_POINT.sub("", main_tier)
    return main_tier


def finish_words(tokens: Iterable[str]) -> list[str]:
    """Lower-case pylangacq's word tokens, strip marks inside words, drop non-words."""
    text = " ".join(tokens)
    if not text:
        return []
    text = _BEFORE.sub("", text)
    text = _MARKS.sub("", text.lower())
    text = _NOT_A_WORD.sub("", text)
    return text.split()
