"""From one CHAT utterance to the token strings of the ENV/LAN corpus.

An utterance by speaker ``S`` with an ``%act`` tier becomes the ENV line first, then the
speech (each part only when it holds at least one word)::

    <S> w1<ENV> w2<ENV> ... <S> v1<LAN> v2<LAN> ...

Speech words are the reader's cleaned words (:attr:`Utterance.words`, already lower-cased).
``%act`` text is free text, so it is tokenized here by :func:`act_words`.
"""
from __future__ import annotations

import functools
import re

from vlground.corpus.format import ENV, LAN

#: media bullets ``\x15123_456\x15``, bracketed codes ``[/] [: x] [+ imit] [% com] [>]``,
#: scope markers ``<bef> <aft>`` and ``+...``-style terminators/linkers
_DROP_SPANS = re.compile(r"\x15[^\x15]*\x15|\[[^\]]*\]|<(?:bef|aft)>|\+[^\s\w]+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
#: a word: letters, with internal apostrophes (``don't``)
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_UNINTELLIGIBLE = frozenset({"xxx", "yyy", "www"})
_DIGIT = re.compile(r"\d")


@functools.lru_cache(maxsize=1 << 16)
def act_tuple(text: str) -> tuple[str, ...]:
    """:func:`act_words` as a tuple, memoised: ``%act`` tiers repeat a lot (``picks up the ball``)."""
    return tuple(act_words(text))


def act_words(text: str | None) -> list[str]:
    """The words of a raw ``%act`` tier: lower-cased, split on whitespace and punctuation.

    CHAT codes are dropped: media bullets, ``[...]`` codes, ``<bef>``/``<aft>``, ``&``-forms
    (``&=laughs``, ``&-uh``), ``xxx``/``yyy``/``www``, ``0``, and pieces that hold a digit (time
    codes such as ``2061689_2062652``). An ``@`` form suffix is removed (``dada@b`` -> ``dada``).

    >>> act_words("<bef> picks up the Ball [% softly] &=laughs xxx teddy-bear@b")
    ['picks', 'up', 'the', 'ball', 'teddy', 'bear']
    """
    if not text:
        return []
    out: list[str] = []
    for piece in _SPACE.split(_DROP_SPANS.sub(" ", text)):
        if not piece or piece[0] == "&" or _DIGIT.search(piece):
            continue
        at = piece.find("@")
        if at >= 0:
            piece = piece[:at]
        for w in _WORD.findall(piece.lower()):
            if w not in _UNINTELLIGIBLE:
                out.append(w.replace("\u2019", "'"))
    return out


def speech_words(words: list[str]) -> list[str]:
    """The reader's words, made safe for a whitespace-split tokenizer (no empty or spaced words)."""
    joined = "\x00".join(words)
    if _UNINTELLIGIBLE.isdisjoint(words) and " " not in joined and "\t" not in joined and "\x00\x00" not in joined and all(words[:1]) and all(words[-1:]):
        return words  # the common case, checked at C speed: nothing to change
    out = []
    for w in words:
        if not w or w in _UNINTELLIGIBLE:
            continue
        if " " in w or "\t" in w:
            out.extend(p for p in w.split() if p)
        else:
            out.append(w)
    return out


def utterance_tokens(speaker: str, words: list[str], act: str | None) -> list[str]:
    """Token strings of one utterance (ENV part first), e.g. ``['<CHI>', 'ball<ENV>', '<CHI>', 'ball<LAN>']``."""
    spk = f"<{speaker}>"
    out: list[str] = []
    env = act_words(act)
    if env:
        out.append(spk)
        out.extend(w + ENV for w in env)
    lan = speech_words(words)
    if lan:
        out.append(spk)
        out.extend(w + LAN for w in lan)
    return out
