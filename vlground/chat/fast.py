"""Fast paths for common, well-formed main tiers: one regex decides, a few regex passes clean.

:data:`COMMON` fully matches a main tier made only of common, well-formed CHAT: words (letters,
digits, ``' - _``, compounds ``a+b``, a few form markers ``@b @c @f @l``...), fillers
``&-uh``, fragments ``&+fr``, nonwords ``&~ba``, events ``&=laughs``, ``xxx yyy www``,
omissions ``0`` / ``0is``, pauses ``(.) (..) (...) (1.5)``, commas, replacements
``w [: x y]``, error marks ``[*] [* m]``, retracings ``[/] [//] [///]`` on a word or a
``<group>`` that is followed by more speech, overlaps ``[<] [>]``, ``[!] [?] [!!]``,
explanations ``[= ...] [=! ...] [% ...]``, one level of ``<group>`` each followed by an
annotation, an optional leading linker (``+< ++ +^ +, +"``), one terminator, postcodes
``[+ x]``. Single spaces only. Not consecutive commas ``, ,`` (the caller checks: a substring
test is cheaper than a lookahead). Everything the grammar accepts passes every check of
:class:`vlground.chat.maintier.MainTier` (tested on the fixtures and generated corpora), so
such a main tier needs no token-by-token pass unless a ``%mor``/``%pho``/``%sin`` tier needs
its alignment counts.

:func:`common_words` turns many such main tiers (one per line) into cleaned words with a few
whole-string regex substitutions, giving the same words as pylangacq + ``finish_words``
(checked on every fast-path utterance of the fixture and generated corpora by the tests).
"""
from __future__ import annotations

import re

_W = r"[^\W_]"  # a letter or digit
# a word is not xx yy ww xxx yyy www in any case (the character class is as fast as the
# lower-case alternatives and sends upper-case XXX, and a few non-words like "wy", to the token
# pass, which flags XXX as E241)
_WORD = (
    rf"(?![xXyYwW]{{2,3}}(?![\w'\-+@]))(?!0){_W}[\w'\-]*(?:\+{_W}[\w'\-]*)*"
    r"(?:@(?:b|c|d|f|i|k|l|n|o|p|q|u|wp|x))?"
)
_RWORD = rf"(?!(?:xxx|yyy|www)[\] ])(?!0){_W}[\w'\-]*(?:\+{_W}[\w'\-]*)*"  # in [: ...]
_OTHER = r"&[-+~][\w'\-]+|&=[\w'\-:]+|xxx|yyy|www|0[\w'\-]*"
_PAUSE = r"\((?:\.{1,3}|\d+\.\d*|\d*\.\d+|\d+)\)"
_TERM = r"(?:[.?!]|\+\.\.\.|\+/\.|\+//\.|\+\.\.\?|\+/\?|\+//\?|\+!\?|\+\"/\.|\+\"\.)"
_AFTER_RETRACE = r"(?= <?[^\s\[&.?!+<>])"  # more speech (not a filler/event, not the end)
_RETRACE = rf" \[/{{1,3}}\]{_AFTER_RETRACE}"
_MARK = r" \[(?:[<>]\d?|!|!!|\?|\*(?: [^\]\[\n<>]*)?|=!? [^\]\[\n<>]*|% [^\]\[\n<>]*)\]"
_ANNOT = rf"(?:{_MARK}|{_RETRACE})"
_NOT_PAUSE = (
    rf"{_WORD}(?: \[: {_RWORD}(?: {_RWORD})*\])?{_ANNOT}*"
    rf"|(?:{_OTHER}){_ANNOT}*|[,\u201e\u2021]"
)
_ITEM = rf"(?:{_NOT_PAUSE}|{_PAUSE})"
# a group of pauses only is left to pylangacq (which retraces the word before <(.)> [/])
_GROUP = rf"<(?:{_PAUSE} )*(?:{_NOT_PAUSE})(?: {_ITEM})*>{_ANNOT}+"
# no stress marks or other modifier letters, no CA delimiter Ϋ (word characters to \w); the
# caller also leaves consecutive commas ", ," (E258) to the token pass
_NO_MARKS = r"(?![^\n]*[\u02b0-\u02ff\u03ab])"
COMMON = re.compile(
    rf"{_NO_MARKS}(?:\+[<^,+\"] )?(?:{_ITEM}|{_GROUP})(?: (?:{_ITEM}|{_GROUP}))* {_TERM}"
    r"(?: \[\+ [^\]\[\n<>]*\])*"
)

# --- words of common main tiers (one per line) ---------------------------------------------
# Retracings and replacements are matched on the *reversed* text, so that each pattern starts
# with the literal "]" of its code and the regex engine skips to it, instead of trying every
# position for the word or group before the code (3-5x faster). Forward, they read:
#   <group> [annotations]* [/]   ->  ""           word [annotations]* [/]  ->  ""
#   word [: x y]                 ->  "x y"
_R_RETRACED_GROUP = re.compile(r"\]/{1,3}\[ (?:\][^\]\[\n]*\[ )*?>(?:[^<>\[\]\n]|\][^\]\[\n]*\[)*<")
_R_RETRACED_ITEM = re.compile(r"\]/{1,3}\[ (?:\][^\]\[\n]*\[ )*?[^\s\[\]<>]+(?![^\s<])")
_R_REPLACED = re.compile(r"\]([^\]\[\n]*) :\[ [^\s\[\]<>]+(?![^\s<])")
_CODES = re.compile(r"\[[^\]\[\n]*\]|[<>]")
_FORM = re.compile(r"@[a-z]+")
# In a COMMON main tier, a token that starts with one of , „ ‡ . ? ! + & ( is never a word
# (commas, terminators, linkers, fillers/events, pauses); nor are xxx yyy www and 0... .
# Every token is preceded by a space (each line gets one in front; "<" is removed first).
_DROPPED = re.compile(r" (?:[,\u201e\u2021.?!+&(]\S*|(?:xxx|yyy|www|0\S*)(?!\S))")


def common_words(texts: list[str]) -> list[list[str]]:
    """Cleaned words of main tiers that :data:`COMMON` matches, one list per text.

    The same words as pylangacq + :func:`vlground.chat.words.finish_words` (tested), from a few
    regex passes over all the texts at once. ``finish_words``' mark stripping is not needed:
    COMMON admits none of the marks it strips.
    """
    if not texts:
        return []
    s = " " + "\n ".join(texts)
    if "[" in s:
        s = _CODES.sub("", _spoken(s))
    s = _DROPPED.sub("", s)
    if "@" in s:
        s = _FORM.sub("", s)
    s = s.lower()
    return [line.split() for line in s.split("\n")]



def _spoken(s: str) -> str:
    """Retraced material dropped and replacements put in (regexes run on the reversed text, so
    that a code finds the item or group just before it)."""
    r = s[::-1]
    if "/[" in r:
        r = _R_RETRACED_GROUP.sub("", r)
        r = _R_RETRACED_ITEM.sub("", r)
    if ":[" in r:
        r = _R_REPLACED.sub(r"\1", r)
    return r[::-1]

# --- alignment counts of one common main tier (same as maintier.MainTier._tokens) ----------
# %mor: what is left once retraced material is dropped and replacements put in, less fillers,
# events, pauses, xxx yyy www, omissions 0...; the terminator and commas count.
_NOT_MOR = re.compile(r" (?:[&(]\S*|(?:xxx|yyy|www|0\S*)(?!\S))")
# %pho/%sin: the words as spoken (retraced ones too, a replaced word once), fillers, fragments,
# nonwords, xxx yyy; not events, pauses, www, omissions, punctuation, linkers.
_NOT_PHO = re.compile(r" (?:[,\u201e\u2021.?!+(]\S*|&=\S*|(?:www|0\S*)(?!\S))")
_REPLACEMENT = re.compile(r" \[: [^\]\[\n]*\]")


def common_counts(text: str) -> tuple[int, int]:
    """(items aligned to %mor, words aligned to %pho) of one main tier that COMMON matches."""
    if text[0] == "+":  # a leading linker (+< ++ ...): aligned to nothing; "<" is not a group
        text = text.partition(" ")[2]
    s = " " + text
    if "[" not in s:
        return (len(_NOT_MOR.sub("", s).split()), len(_NOT_PHO.sub("", s).split()))
    pho = _NOT_PHO.sub("", _CODES.sub(" ", _REPLACEMENT.sub("", s)))
    mor = _NOT_MOR.sub("", _CODES.sub(" ", _spoken(s)))
    return len(mor.split()), len(pho.split())
