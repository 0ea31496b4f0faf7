"""Main-tier checks: one pass over the tokens of one ``*SPK:`` line.

Rules from the CHAT manual ("Words", "Utterance Terminators", "Utterance Linkers",
"Scoped Symbols", "Conversation Analysis"): terminators (optional with ``@Options: CA``),
CA intonation contours and latching marks as terminators or, inside an utterance, separators;
linkers only at the start; groups ``<...>`` (a nested group needs its code; a top-level one may
go without); replacements; retracings; word-level markers (form types, stress, quotation,
shortenings, CA omissions ``(word)`` in CA mode only); CA delimiters in pairs; overlap points
``⌈ ⌉ ⌊ ⌋`` (balanced in the utterance; matched across utterances by
:mod:`vlground.chat.validate`); other-spoken events ``&*SPK:word``; long features and
nonvocal events; media bullets. The pass also counts the items aligned to ``%mor`` and
``%pho``.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from vlground.chat.fast import common_counts

if TYPE_CHECKING:
    from vlground.chat.reader import RawUtterance
    from vlground.chat.validate import Checker  # noqa: F401

FORM_TYPES = frozenset("a b c d e f fp g i k l ls n nv o p q s sas si sl t u wp x z".split())
#: CA final contours (rising to high, rising to mid, level, falling to mid, falling to low)
CONTOURS = frozenset("\u21d7 \u2197 \u2192 \u2198 \u21d8".split())
#: CA latching: no break, technical break
LATCHING = frozenset("\u2248 \u224b".split())
TERMINATORS = frozenset("""
. ? ! +... +..? +/. +//. +/? +//? +!? +"/. +". +.
""".split()) | CONTOURS | LATCHING | {"+\u224b", "+\u2248"}
#: separators that align to nothing: contours and latching inside an utterance, uptake, unmarked ending
CA_SEPARATORS = CONTOURS | LATCHING | {"\u2261", "\u221e"}
LINKERS = frozenset({"+<", "++", "+^", "+\"", "+,", "+\u224b", "+\u2248"})
# a plain utterance: words of letters/digits/apostrophes/hyphens/underscores, commas, one terminator
_W = r"[^\W\u02b0-\u02ff]"  # a word character that is not a modifier letter (stress marks)
_PLAIN = re.compile(rf"(?:[{_W[1:-1]}'\-]+ )+(?:, (?:[{_W[1:-1]}'\-]+ )+)*[.?!]")
_UNTRANSCRIBED = re.compile(r"(?<!\S)(?:xxx|yyy|www)(?!\S)")  # not aligned: not plain words
# xx yy ww (any case), and XXX Xxx ... : untranscribed material is written xxx yyy www
_ILLEGAL_UNTRANSCRIBED = re.compile(r"(?<!\S)(?:(?i:xx|yy|ww)|(?!xxx|yyy|www)(?i:xxx|yyy|www))(?!\S)")
_TOKEN = re.compile(r"\[[^\]\[]*\]|\[|\]|\x15[^\x15]*\x15|\x15|[^\s\[\]\x15]+")
_BULLET = re.compile(r"\x15(\d+)_(\d+)(-?)\x15")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x14\x16-\x1f\x7f]")  # after removing \x02\x01 / \x02\x02
_UNDERLINE = re.compile("\x02[\x01\x02]")
_PAUSE = re.compile(r"\(\.{1,3}\)|\((\d+:)?\d*\.?\d*\)")
_CA_OMISSION = re.compile(r"\([^\s()]*[^\W\d_][^\s()]*\)")  # (word): the whole token in parentheses
#: languages whose words may hold digits (tone numbers ...), TalkBank's validNumberLanguages
NUMBER_LANGUAGES = frozenset("zho cym vie tha nan yue min hak".split())
DIGIT = re.compile(r"[1-9]|\S0")  # a digit that is not the omission prefix 0word


def has_digit(text: str) -> bool:
    """``DIGIT.search(text)``, several times faster on text without such digits (substring tests)."""
    if "1" in text or "2" in text or "3" in text or "4" in text or "5" in text or "6" in text \
            or "7" in text or "8" in text or "9" in text:
        return True
    i = text.find("0")
    while i != -1:
        if i and not text[i - 1].isspace():
            return True
        i = text.find("0", i + 1)
    return False
_PRECODE = re.compile(r"\[- ([a-z]{2,3})\]")
_OTHER_SPOKEN = re.compile(r"&\*([A-Za-z0-9_']+):(\S+)")
_P = r"\((?:\.{1,3}|\d+(?::\d+)?\.\d*)\)"
_GLUED_PAUSE = re.compile(rf"[^\W_]{_P}|{_P}[^\W_]")  # a pause glued to a letter or digit
_GLUED_CODE = re.compile(r"(?<=\S)\[")  # a code must follow a space
_CA_PAIRED = "\u2206\u2207\u00b0\u2581\u2594\u263a\u264b\u2047\u222c\u03ab\u222e\u21ab\u204e\u25c9\u00a7"
_CA_CHARS = re.compile(f"[{_CA_PAIRED}]")
_MARK_CHARS = re.compile(f"[{_CA_PAIRED}\u2308\u2309\u230a\u230b]")
_OVERLAP = re.compile(r"[\u2308\u2309\u230a\u230b](\d?)")
_OVERLAP_BEGIN, _OVERLAP_END = "\u2308\u230a", "\u2309\u230b"
_OVERLAP_PAIR = {"\u2308": "\u2309", "\u230a": "\u230b", "\u2309": "\u2308", "\u230b": "\u230a"}
_RETRACE = frozenset({"[/]", "[//]", "[///]", "[/-]", "[/?]", "[e]"})
_SIMPLE_CODES = re.compile(
    r"\[(?:/|//|///|/-|/\?|e|!|!!|\?|[<>]\d?|\"|\^c|\*|\+|-|=|=!|=\?|%|:|::|#|\^|\+\+|e)"
    r"(?:\s[^\]]*)?\]"
)


def _plain_counts(stripped: str) -> tuple[int, int]:
    """(%mor items, %pho words) of a plain main tier: every token is one %mor item.

    NB: this counts ``0word`` as aligned, where :meth:`MainTier._tokens` does not; kept as it
    was (the fixture ``omitted_word_alignment`` relies on it; see docs/chat-policy.md).
    """
    n = stripped.count(" ") + 1
    return n, n - 1 - stripped.count(",")


def common_tier_counts(stripped: str) -> tuple[int, int]:
    """Alignment counts of a main tier that fast.COMMON matches (as MainTier.run gives them)."""
    if _PLAIN.fullmatch(stripped) and not _UNTRANSCRIBED.search(stripped):
        return _plain_counts(stripped)
    return common_counts(stripped)



class MainTier:
    """One pass over a main tier's tokens: syntax checks and alignment counts."""

    def __init__(self, checker: "Checker", u: "RawUtterance", index: int, multilingual: bool,
                 longs: list, ca_mode: bool = False,
                 participants: dict[str, str] | None = None,
                 languages: list[str] | None = None, check_digits: bool = True) -> None:
        self.c, self.u, self.index = checker, u, index
        self.multilingual, self.longs = multilingual, longs
        self.ca_mode = ca_mode  #: @Options: CA: terminator optional, (word) omissions legal
        self.participants = participants or {}  #: for &*SPK:word; empty: not checked
        self.languages = languages or []  #: @Languages (digits in words: E220)
        #: digits in words checked: @Languages known, none writes digits, the file has some
        self.check_digits = check_digits
        self.line = u.line

    def err(self, code: str, message: str) -> None:
        self.c.add(self.line, code, message)

    def run(self) -> tuple[int | None, int | None, list[str]]:
        """Check; return (items aligned to %mor, words aligned to %pho, overlap points).

        The overlap points are the begin marks with their index, in order (``"⌈"``, ``"⌊2"``),
        for the cross-utterance matching in :class:`vlground.chat.validate.Checker`.
        """
        text = self.u.text
        if "\x15" in text:
            text = self._bullets(text)
        if "\x02" in text:
            opened = 0
            for m in _UNDERLINE.finditer(text):
                opened += 1 if m.group() == "\x02\x01" else -1
                if opened < 0:
                    self.err("E357", "underline end without begin")
                    opened = 0
            text = _UNDERLINE.sub("", text)
        if CONTROL.search(text):
            self.err("E315", "control character in main tier")
        stripped = text.strip()
        if (_PLAIN.fullmatch(stripped) and not _UNTRANSCRIBED.search(stripped)
                and not (self.languages and self.check_digits and DIGIT.search(stripped))):
            if _ILLEGAL_UNTRANSCRIBED.search(stripped):
                self.err("E241", "xx, yy, ww and upper-case XXX YYY WWW are not legal; use xxx, yyy or www")
            return (*_plain_counts(stripped), [])
        return self._tokens(stripped)

    def _bullets(self, text: str) -> str:
        for m in _BULLET.finditer(text):
            start, end = int(m.group(1)), int(m.group(2))
            if m.group(3):
                self.err("E360", "deprecated skip bullet (dash before the closing \\x15)")
            if start >= end:
                self.err("E362", f"bullet start {start} is not before its end {end}")
            prev = self.c.bullets.get(self.u.speaker)
            if prev is not None and start < prev:
                self.err("E701", f"bullet start {start} before the previous one of {self.u.speaker} ({prev})")
            self.c.bullets[self.u.speaker] = start
        rest = _BULLET.sub(" ", text)
        if "\x15" in rest:
            self.err("E360", "malformed media bullet")
            rest = rest.replace("\x15", " ")
        return rest

    def _tokens(self, text: str) -> tuple[int | None, int | None, list[str]]:
        items: list[list] = []  # [kind, mor, pho] per alignable unit
        groups: list[int] = []  # item index where each open <group> starts
        target: tuple[int, int] | None = None
        terminated = content = False
        pending_retrace = False
        quote = 0
        points: list[str] = []
        ca: dict[str, int] = {}
        tokens = _TOKEN.findall(text)
        if "&*" in text:  # &*SPK:word. : the terminator glued to an other-spoken event ends the utterance
            tokens = [part for t in tokens for part in (
                (t[:-1], t[-1]) if t[:2] == "&*" and t[-1] in ".?!" and len(t) > 3 else (t,))]
        if "[" in text and _GLUED_CODE.search(text):
            self.err("E375", "no space before a [...] code")
        # the last token that is not a code or bullet: a contour/latching mark there ends the
        # utterance; anywhere before, it is a separator inside it
        last = -1
        if not CA_SEPARATORS.isdisjoint(tokens):
            last = max((k for k, t in enumerate(tokens) if t[0] not in "[\x15"), default=-1)
        marks = _MARK_CHARS.search(text) is not None  # overlap or CA delimiters somewhere
        comma = False
        for k, tok in enumerate(tokens):
            first = tok[0]
            if first == "[":
                if tok == "[" or not tok.endswith("]"):
                    self.err("E312", "unclosed '['")
                    continue
                retrace, target = self._bracket(tok, items, target)
                if retrace:
                    pending_retrace = True
                continue
            if tok == "]":
                self.err("E316", "']' without '['")
                continue
            if tok in CA_SEPARATORS and (k != last or tok not in TERMINATORS):
                target = None  # a contour, latching or uptake mark inside the utterance
                continue
            if tok in TERMINATORS and not (tok in LINKERS and not content):
                terminated = True
                items.append(["term", 1, 0])
                target = None
                continue
            if terminated:
                self.err("E304", f"{tok!r} after the terminator")
                continue
            if tok == ",":
                if comma:
                    self.err("E258", "consecutive commas")
                comma = True
            else:
                comma = False
            opens = len(tok) - len(tok.lstrip("<"))
            if opens and not tok.startswith("+"):
                groups.extend([len(items)] * opens)
                tok = tok[opens:]
            closes = len(tok) - len(tok.rstrip(">"))
            if closes:
                tok = tok[:-closes]
            if tok:
                if tok in LINKERS:
                    if content:
                        self.err("E766", f"linker {tok} after the start of the utterance")
                    continue
                content = True
                if pending_retrace and not tok.startswith("&"):
                    pending_retrace = False
                kind = self._word(tok, items, groups)
                quote += tok.count("\u201c") - tok.count("\u201d")
                if quote > 1 or (quote == 1 and tok.count("\u201c") > 1):
                    self.err("E372", "nested quotation")
                    quote = 1
                elif quote < 0:
                    self.err("E242", "closing quotation mark without opening one")
                    quote = 0
                if marks:
                    for m in _OVERLAP.finditer(tok):
                        mark, index = m.group()[0], m.group(1)
                        if index in ("0", "1"):
                            self.err("E373", f"overlap index {index} (must be 2-9)")
                        if mark in "\u2308\u230a":
                            points.append(m.group())
                        ca[m.group()] = ca.get(m.group(), 0) + 1
                    for ch in _CA_CHARS.findall(tok):
                        ca[ch] = ca.get(ch, 0) + 1
                target = (len(items) - 1, len(items)) if kind else None
            for _ in range(closes):
                if not groups:
                    self.err("E316", "'>' without '<'")
                    break
                start = groups.pop()
                nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
                if groups and (_ < closes - 1 or not nxt.startswith("[")):
                    # a top-level group may go without a code; a nested one scopes one
                    self.err("E345", "nested group <...> not followed by a code")
                target = (start, len(items))
        if groups:
            self.err("E345", "'<' without '>'")
        if quote:
            self.err("E242", "unbalanced quotation marks")
        if pending_retrace:
            self.err("E370", "retracing with nothing after it")
        for ch, n in ca.items():
            if ch in _CA_PAIRED and n % 2:
                self.err("E230", f"unbalanced CA delimiter {ch}")
        for mark in [m for m in ca if m[0] in _OVERLAP_BEGIN] + [m for m in ca if m[0] in _OVERLAP_END]:
            other = _OVERLAP_PAIR[mark[0]] + mark[1:]
            if mark[0] in _OVERLAP_BEGIN and ca[mark] != ca.get(other, 0):
                self.err("E348", f"overlap {mark} not closed by {other} in this utterance")
            elif mark[0] in _OVERLAP_END and other not in ca:
                self.err("E348", f"overlap {mark} without {other} before it in this utterance")
        if not terminated and not self.ca_mode:
            self.err("E304", "missing terminator")
        elif not content:
            self.err("E306", "utterance has no content")
        mor = sum(i[1] for i in items)
        pho = sum(i[2] for i in items)
        return mor, pho, points

    def _bracket(self, tok: str, items: list, target: tuple[int, int] | None
                 ) -> tuple[bool, tuple[int, int] | None]:
        """Apply one ``[...]`` annotation to its target; return (is a retracing, new target)."""
        if tok in _RETRACE:
            if target is None:
                self.err("E316", f"{tok} with nothing before it")
            else:
                for i in range(*target):
                    items[i][1] = 0
            return tok != "[e]", target
        if tok.startswith("[:"):
            return False, self._replacement(tok, items, target)
        if not _SIMPLE_CODES.fullmatch(tok):
            self.err("E207", f"unknown annotation {tok}")
        return False, target

    def _replacement(self, tok: str, items: list, target: tuple[int, int] | None
                     ) -> tuple[int, int] | None:
        """Check ``w [: x]``; the replacement takes the place of its target for %mor."""
        body = tok[2:-1].lstrip(":").split()
        if target is None:
            self.err("E209", "replacement [: ...] with no word before it")
            return None
        kinds = {items[i][0] for i in range(*target)}
        for kind, code in (("fragment", "E387"), ("nonword", "E388"), ("event", "E388"),
                           ("filler", "E389")):
            if kind in kinds:
                self.err(code, f"replacement [: ...] on a {kind}")
                return target
        if not body:
            self.err("E208", "empty replacement")
            return target
        for w in body:
            if w in ("xxx", "yyy", "www"):
                self.err("E391", f"replacement contains untranscribed {w}")
            elif w.startswith("0"):
                self.err("E390", f"replacement contains omission {w}")
        for i in range(*target):
            items[i][1] = 0
        items.append(["replacement", sum(1 for w in body if w[0] not in "&("), 0])
        return target[0], len(items)

    def _word(self, tok: str, items: list, groups: list) -> str | None:
        """Check one word token and add its alignment unit; return its kind."""
        first = tok[0]
        if first == "&":
            kind = {"-": "filler", "+": "fragment", "~": "nonword", "=": "event",
                    "*": "other", "{": "long", "}": "long"}.get(tok[1:2], "nonword")
            if kind == "other":
                m = _OTHER_SPOKEN.fullmatch(tok)
                if m is None:
                    self.err("E316", f"{tok!r}: an other-spoken event is &*SPK:word")
                elif self.participants and m.group(1) not in self.participants:
                    self.err("E308", f"{tok!r}: speaker {m.group(1)} is not in @Participants")
            elif kind == "event" and tok[-1] in ".!?":
                self.err("E364", f"terminator inside event {tok!r}")
            elif kind == "long":
                if not tok.endswith("}"):  # &{n=BANG} is a point event, not a scope
                    self._long(tok)
                return None
            items.append([kind, 0, 1 if kind in ("filler", "fragment", "nonword") else 0])
            return kind
        if first == "+":
            if tok in LINKERS:
                return None
            self.err("E316", f"{tok!r}: '+' at the start of a word")
            return None
        if tok in (",", "\u201e", "\u2021", "\u00b1"):
            items.append(["mark", 1, 0])
            return None
        if ",," in tok:
            self.err("E258", f"{tok!r}: consecutive commas")
            return None
        if _PAUSE.fullmatch(tok):
            return None
        if "(" in tok and _GLUED_PAUSE.search(tok):
            self.err("E751", f"{tok!r}: a pause glued to a word (put a space around it)")
            return None
        if tok in ("xxx", "yyy", "www"):
            items.append(["untranscribed", 0, 1 if tok != "www" else 0])
            return "untranscribed"
        if len(tok) < 4 and tok.lower() in ("xx", "yy", "ww", "xxx", "yyy", "www"):
            self.err("E241", f"{tok!r} is not legal; use xxx, yyy or www")
            return None
        if first == "0":
            items.append(["omitted", 0, 0])
            return "omitted"
        if tok.strip("#") == "":
            self.err("E309", f"unexpected {tok!r}")
            return None
        if self.check_digits and DIGIT.search(tok) and not self._digits_allowed(tok):
            self.err("E220", f"{tok!r}: digits in a word (write numbers as words)")
        if first == "(" and not self.ca_mode and _CA_OMISSION.fullmatch(tok):
            self.err("E212", f"{tok!r}: a CA omission (word) needs @Options: CA (else use 0word)")
        self._check_word(tok)
        items.append(["word", 1, 1])
        return "word"

    def _digits_allowed(self, tok: str) -> bool:
        """Digits are legal in words of a few languages: the word's ``@s:lang``, else the
        utterance's ``[- lang]``, else any of @Languages (no @Languages: not checked)."""
        base, _, form = tok.partition("@")
        if not DIGIT.search(_OVERLAP.sub("", base)):
            return True  # the digits are overlap indices (⌈2) or in the form marker (@z:x1)
        if form.startswith("s:"):
            return not NUMBER_LANGUAGES.isdisjoint(re.split(r"[+&]", form[2:]))
        precode = _PRECODE.search(self.u.text)
        if precode:
            return precode.group(1) in NUMBER_LANGUAGES
        return not self.languages or not NUMBER_LANGUAGES.isdisjoint(self.languages)

    def _check_word(self, tok: str) -> None:
        if "@" in tok:
            base, _, form = tok.partition("@")
            ftype = form.split(":")[0]
            if not base.strip("\u201c\u201d\u2308\u2309\u230a\u230b"):
                self.err("E251", f"{tok!r}: form marker with no word")
            elif not form:
                self.err("E202", f"{tok!r}: '@' without a form type")
            elif "@" in form:
                self.err("E203", f"{tok!r}: more than one '@' suffix")
            elif ftype == "t" and ":" not in form:
                self.err("E248", f"{tok!r}: @t needs a language code (@t:code)")
            elif ftype not in FORM_TYPES and not ftype.startswith("z"):
                self.err("E203", f"{tok!r}: unknown form type @{ftype}")
            elif form == "s" and not self.multilingual:
                self.err("E249", f"{tok!r}: @s with only one language in @Languages")
        if tok[0] == ":":
            self.err("E246", f"{tok!r}: lengthening ':' before any sound")
        if "^" in tok and (tok[0] == "^" or tok[-1] == "^"):
            self.err("E252", f"{tok!r}: a syllable pause ^ goes between sounds of a word")
        if "++" in tok:
            self.err("E233", f"{tok!r}: empty compound part")
        if '"' in tok:
            self.err("E242", f"{tok!r}: ASCII quotation mark in a word (use \u201c \u201d)")
        if "{" in tok or "}" in tok:
            self.err("E316", f"{tok!r}: unexpected brace")
        if tok.count("(") != tok.count(")"):
            self.err("E231", f"{tok!r}: unbalanced parentheses")
        if "\u02c8" in tok and tok.count("\u02c8") > 1:
            self.err("E247", f"{tok!r}: more than one primary stress")
        if "\u02cc" in tok and "\u02c8" not in tok:
            self.err("E250", f"{tok!r}: secondary stress without primary stress")

    def _long(self, tok: str) -> None:
        kind, _, label = tok[2:].partition("=")
        label = label.rstrip("}")
        if tok[1] == "{":
            self.longs.append((kind, label, self.index))
            return
        for k in range(len(self.longs) - 1, -1, -1):
            if self.longs[k][:2] == (kind, label):
                del self.longs[k]
                return
        self.err("E368" if kind == "n" else "E359", f"{tok!r} without matching begin")
