"""Checks on CHAT that pylangacq does not make, with TalkBank error codes where known.

pylangacq reads leniently and reports nothing usable (no codes, no lines), so the checks here
cover what a corpus builder needs to trust a transcript: required headers and their formats,
declared speakers, main-tier syntax (terminators, brackets, groups, replacements, word
markers, overlap, long features, bullets) and dependent-tier syntax and alignment
(``%mor``/``%gra``/``%pho``/``%sin``). The codes follow TalkBank's validator (the Rust
``talkbank-chat`` crate that batchalign ships); ``E000`` is used where no code fits.

Each utterance is checked in one pass over its tokens, except main tiers of common,
well-formed markup (:data:`vlground.chat.fast.COMMON`, one regex call), which pass every
main-tier check by construction.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from vlground.chat.fast import COMMON, common_counts
from vlground.chat.types import Problem

if TYPE_CHECKING:
    from vlground.chat.reader import RawUtterance

#: headers that may appear between a main tier and its dependent tiers without ending it
HEADERS_INSIDE_UTTERANCE_BLOCK: frozenset[str] = frozenset()

ROLES = frozenset("""
Target_Child Target_Adult Child Mother Father Brother Sister Sibling Grandfather Grandmother
Relative Participant Investigator Partner Boy Girl Adult Teenager Male Female Visitor Friend
Playmate Caretaker Environment Group Unidentified Uncertain Other Text Media PlayRole LENA
Justice Attorney Doctor Nurse Student Teacher Host Guest Leader Member Narrator Speaker
Audience Interpreter Observer Camera_Operator Non_Human Subject Babysitter Housekeeper
Therapist Clinician Examiner Patient Informant Interviewer Interviewee Aunt Uncle Cousin
Husband Wife Son Daughter Stepmother Stepfather Nanny Nurse_Practitioner Sibling_Child
Toy Animal Pet Teacher_Assistant Classmate Peer Family_Friend Researcher Announcer
Unknown Niece Nephew Godmother Godfather Grandparent Parent Respondent
""".split())

DEPENDENT_TIERS = frozenset("""
act add alt cod coh com def eng err exp fac flo gls gpx gra grt int mod mor par pho sin sit
spa tim wor ort pht modsyl phosyl phoaln trn umor ugra lan spn xsyn
""".split())

FORM_TYPES = frozenset("a b c d e f fp g i k l ls n nv o p q s sas si sl t u wp x z".split())
_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DATE = re.compile(r"(\d\d)-([A-Z]{3})-(\d{4})")
_AGE = re.compile(r"\d{1,3};(\d{1,2})?(\.(\d{1,2})?)?")
_SPEAKER = re.compile(r"[A-Za-z0-9_']+")
_LANG = re.compile(r"[a-z]{2,3}")
_PLACEHOLDER_LANGS = frozenset({"xyz", "xxx", "yyy", "zzz", "und"})

# --- main tier ---------------------------------------------------------------------------
TERMINATORS = frozenset("""
. ? ! +... +..? +/. +//. +///. +/? +//? +!? +"/. +". +. +.. +=. +/?. +...?
\u2248 \u224b \u21d7 \u2197 \u2192 \u2198 \u21d8
""".split()) | {"+\u224b", "+\u2248"}
LINKERS = frozenset({"+<", "++", "+^", "+\"", "+,", "+\u224b", "+\u2248", "+"})
# a plain utterance: words of letters/digits/apostrophes/hyphens/underscores, commas, one terminator
_W = r"[^\W\u02b0-\u02ff]"  # a word character that is not a modifier letter (stress marks)
_PLAIN = re.compile(rf"(?:[{_W[1:-1]}'\-]+ )+(?:, (?:[{_W[1:-1]}'\-]+ )+)*[.?!]")
_UNTRANSCRIBED = re.compile(r"(?<!\S)(?:xxx|yyy|www)(?!\S)")  # not aligned: not plain words
_ILLEGAL_UNTRANSCRIBED = re.compile(r"(?<!\S)(?:xx|yy|ww)(?!\S)")
_TOKEN = re.compile(r"\[[^\]\[]*\]|\[|\]|\x15[^\x15]*\x15|\x15|[^\s\[\]\x15]+")
_BULLET = re.compile(r"\x15(\d+)_(\d+)(-?)\x15")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x14\x16-\x1f\x7f]")  # after removing \x02\x01 / \x02\x02
_UNDERLINE = re.compile("\x02[\x01\x02]")
_PAUSE = re.compile(r"\(\.{1,3}\)|\((\d+:)?\d*\.?\d*\)")
_CA_PAIRED = "\u2206\u2207\u00b0\u2581\u2594\u263a\u264b\u2047\u222c\u03ab\u222e\u21ab\u204e\u25c9"
_CA_CHARS = re.compile(f"[{_CA_PAIRED}]")
_MARK_CHARS = re.compile(f"[{_CA_PAIRED}\u2308\u2309\u230a\u230b]")
_OVERLAP = re.compile(r"[\u2308\u2309\u230a\u230b](\d?)")
_RETRACE = frozenset({"[/]", "[//]", "[///]", "[/-]", "[/?]", "[e]"})
_SIMPLE_CODES = re.compile(
    r"\[(?:/|//|///|/-|/\?|e|!|!!|\?|[<>]\d?|\"|\^c|\*|\+|-|=|=!|=\?|%|:|::|#|\^|%\w+:|\+\+|e)"
    r"(?:\s[^\]]*)?\]"
)
_DEPRECATED_TIERS = frozenset({"xpho", "xmod", "xmor", "xgra"})
_PLAIN_TIERS = DEPENDENT_TIERS - _DEPRECATED_TIERS
_ALIGNED = frozenset({"mor", "gra", "pho", "sin"})  # tiers checked further (syntax, alignment)
_DEP_UNITS = re.compile(r"\u2039[^\u203a]*\u203a|\u3014[^\u3015]*\u3015|\S+")
_MOR_SIMPLE = re.compile(r"(?:[^|\s~$+]+\|[^|\s~+]+(?:~[^|\s~$+]+\|[^|\s~+]+)* |, )*[.?!]")
_GRA_ITEM = re.compile(r"(\d+)\|(\d+)\|([A-Za-z][\w:\-]*)")
_MOR_PUNCT = frozenset({".", "?", "!", ",", "+...", "+/.", "+//.", "+/?", "+!?", "+\"/.", "+\".",
                        "+..?", "+.", "\u201e", "\u2021", "cm|cm", "end|end", "beg|beg"})


class Checker:
    """Collects the problems of one file; marks utterances with an error as bad."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        self.bullets: dict[str, int] = {}

    def add(self, line: int, code: str, message: str,
            severity: Literal["error", "warning"] = "error") -> None:
        self.problems.append(Problem(self.path, line, code, message, severity))

    # --- headers --------------------------------------------------------------------------
    def headers(self, headers: list, utts: list["RawUtterance"], text: str
                ) -> tuple[dict[str, str], list[str]]:
        """Check the headers; return participants (code -> role) and languages."""
        names = [h[1] for h in headers]
        if not text.strip():
            self.add(0, "E003", "empty file")
            return {}, []
        participants: dict[str, str] = {}
        languages: list[str] = []
        ids: set[str] = set()
        part_line = 0
        if "Begin" not in names:
            self.add(1, "E504", "missing required header @Begin")
        if "End" not in names:
            self.add(len(text.splitlines()), "E502", "missing @End header at end of file")
        for key in ("Languages", "Participants"):
            if key not in names:
                self.add(1, "E504", f"missing required header @{key}")
        gems: list[tuple[str, int]] = []
        end_line = 0
        for line, name, value in headers:
            if end_line:
                self.add(line, "E501", "content after @End")
            val = (value or "").strip()
            if name == "End":
                end_line = line
            elif name == "Languages":
                languages = [c.strip() for c in val.replace(" ", ",").split(",") if c.strip()]
                if not languages:
                    self.add(line, "E507", "@Languages is empty")
                for code in languages:
                    if not _LANG.fullmatch(code) or code in _PLACEHOLDER_LANGS:
                        self.add(line, "E519", f"invalid language code {code!r}")
            elif name == "Participants":
                part_line = line
                entries = [e.split() for e in val.split(",")]
                if not val:
                    self.add(line, "E506", "@Participants is empty")
                for entry in entries:
                    if not entry:
                        continue
                    code, role = entry[0], entry[-1] if len(entry) > 1 else ""
                    if not _SPEAKER.fullmatch(code):
                        self.add(line, "E307", f"invalid speaker code {code!r}")
                    if not role:
                        self.add(line, "E513", f"participant {code} has no role")
                    elif role not in ROLES:
                        self.add(line, "E532", f"unknown participant role {role!r}")
                    participants[code] = role
            elif name == "ID":
                self._id(line, val, participants, ids)
            elif name == "Date":
                self._date(line, val, "Date")
            elif name.startswith("Birth of "):
                who = name[len("Birth of "):]
                if who not in participants:
                    self.add(line, "E524", f"@Birth of {who}: not a declared participant")
                self._date(line, val, name)
            elif name == "Media":
                self._media(line, val)
            elif name == "Options" and not val:
                self.add(line, "E533", "@Options is empty")
            elif name in ("Bg", "Eg", "G"):
                self._gem(line, name, val, gems)
        for label, line in gems:
            self.add(line, "E526", f"@Bg:{label} without matching @Eg")
        if not utts and "Begin" in names:
            self.add(0, "W310", "no utterances", "warning")
        for code in participants:
            if code not in ids and part_line:
                self.add(part_line, "E522", f"participant {code} has no @ID header")
        return participants, languages

    def _id(self, line: int, val: str, participants: dict, ids: set) -> None:
        fields = val.split("|")
        if len(fields) < 10 or any(f.strip() for f in fields[10:]):
            self.add(line, "E505", f"@ID must have 10 fields separated by '|', found {len(fields) - 1}")
        fields += [""] * (10 - len(fields))
        lang, _, code, age, sex, _, _, role = (f.strip() for f in fields[:8])
        if not lang:
            self.add(line, "E510", "@ID language is empty")
        if not code:
            self.add(line, "E511", "@ID speaker code is empty")
        elif code not in participants:
            self.add(line, "E523", f"@ID for {code}, who is not in @Participants")
        ids.add(code)
        if len(fields) >= 10 and not role:
            self.add(line, "E515", "@ID role is empty")
        if age and not _AGE.fullmatch(age):
            self.add(line, "E517", f"age {age!r} is not years;months.days")
        if sex and sex not in ("male", "female"):
            self.add(line, "E542", f"sex {sex!r} is not male or female")

    def _media(self, line: int, val: str) -> None:
        name = val.split(",")[0].strip()
        stem = re.split(r"[/\\!]", self.path)[-1].rsplit(".", 1)[0]
        if name and not name.startswith('"') and name != stem:
            self.add(line, "E000", f"@Media {name!r} does not match the file name {stem!r} (CLAN CHECK 157)")

    def _date(self, line: int, val: str, name: str) -> None:
        if not val:
            self.add(line, "E508", f"@{name} is empty")
            return
        m = _DATE.fullmatch(val)
        if not m or m.group(2) not in _MONTHS or not 1 <= int(m.group(1)) <= 31:
            self.add(line, "E518", f"@{name} {val!r} is not DD-MMM-YYYY")

    def _gem(self, line: int, name: str, val: str, gems: list) -> None:
        if name == "G":
            if gems:
                self.add(line, "E530", "lazy gem @G inside a @Bg scope")
            return
        if name == "Bg":
            if not val and gems:
                self.add(line, "E530", "lazy @Bg without label inside a @Bg scope")
            if any(label == val for label, _ in gems):
                self.add(line, "E529", f"@Bg:{val} nested inside a @Bg with the same label")
            gems.append((val, line))
            return
        if not gems:
            self.add(line, "E527", f"@Eg:{val} without matching @Bg")
            return
        label, _ = gems.pop()
        if label != val:
            self.add(line, "E528", f"@Eg:{val} does not match @Bg:{label}")

    # --- utterances -----------------------------------------------------------------------
    def utterances(self, utts: list["RawUtterance"], participants: dict[str, str],
                   languages: list[str]) -> None:
        """Check every utterance; mark those with an error as bad (they are skipped)."""
        longs: list[tuple[str, str, int]] = []  # open &{l= / &{n= features: kind, label, index
        overlaps: list[tuple[int, int]] = []  # per utterance: (tops, bottoms)
        multilingual = len(languages) > 1
        problems = self.problems
        good_speakers: set[str] = set()
        common = COMMON.fullmatch
        no_marks = (0, 0)
        for index, u in enumerate(utts):
            start = len(problems)
            speaker = u.speaker
            if speaker not in good_speakers:
                if not speaker:
                    self.add(u.line, "E301", "empty speaker code")
                elif not _SPEAKER.fullmatch(speaker):
                    self.add(u.line, "E302", f"invalid speaker code {speaker!r}")
                elif participants and speaker not in participants:
                    self.add(u.line, "E308", f"speaker {speaker} is not in @Participants")
                else:
                    good_speakers.add(speaker)
            text = u.text
            tiers = u.tiers
            # fast path: common well-formed markup passes every main-tier check (fast.py)
            stripped = text.strip()
            u.fast = ("\x15" not in text and "\x02" not in text
                      and common(stripped) is not None and _CONTROL.search(text) is None)
            if u.fast:
                overlaps.append(no_marks)
                if tiers:
                    aligned = "mor" in tiers or "pho" in tiers or "sin" in tiers
                    mor, pho = _counts(stripped) if aligned else (None, None)
                    self._dependents(u, (mor, pho, None))
            else:
                counts = _MainTier(self, u, index, multilingual, longs).run()
                overlaps.append(counts[2])
                self._dependents(u, counts)
            if len(problems) > start and any(p.severity == "error" for p in problems[start:]):
                u.bad = True
        for kind, label, index in longs:
            code = "E358" if kind == "l" else "E367"
            self._flag(utts[index], code, f"&{{{kind}={label} without matching &}}{kind}={label}")
        for i, (tops, _) in enumerate(overlaps):
            if not tops:
                continue
            for j in range(i + 1, min(i + 4, len(utts))):
                if overlaps[j][1]:
                    if utts[j].speaker == utts[i].speaker:
                        self._flag(utts[j], "E704", f"speaker {utts[j].speaker} overlaps with self")
                    break
            else:
                self._flag(utts[i], "E347", "top overlap \u2308 with no bottom overlap \u230a after it")

    def _flag(self, u: "RawUtterance", code: str, message: str) -> None:
        self.add(u.line, code, message)
        u.bad = True

    def _dependents(self, u: "RawUtterance", counts: tuple) -> None:
        mor_main, pho_main, _ = counts
        tiers = u.tiers
        for name, value in tiers.items():
            if name in _PLAIN_TIERS and value and not value.isspace():
                continue  # a known tier, not empty, not deprecated: nothing to report
            line = u.tier_lines[name]
            if name not in DEPENDENT_TIERS and not name.startswith("x"):
                self.add(line, "E605", f"unknown dependent tier %{name}")
            if not value.strip():
                self.add(line, "E756", f"dependent tier %{name} is empty")
            elif name in _DEPRECATED_TIERS:
                self.add(line, "W602", f"deprecated tier %{name} (use %{name[1:]})", "warning")
        if _ALIGNED.isdisjoint(tiers):
            return
        mor = tiers.get("mor")
        chunks = 0
        if mor is not None and mor.strip():
            line = u.tier_lines["mor"]
            items = mor.split()
            simple = _MOR_SIMPLE.fullmatch(" ".join(items)) is not None
            if simple:
                chunks = len(items) + mor.count("~")
            for item in ([] if simple else items):
                if item in _MOR_PUNCT:
                    chunks += 1
                    continue
                for piece in item.split("~"):
                    chunks += 1
                    if not _mor_ok(piece.lstrip("$")):
                        self.add(line, "E702", f"%mor item {item!r} is not pos|stem")
                        break
            if mor_main is not None and mor_main != len(items):
                code = "E705" if mor_main > len(items) else "E706"
                self.add(line, code, f"main tier has {mor_main} alignable items, %mor has {len(items)}")
        gra = tiers.get("gra")
        if gra is not None and gra.strip():
            line = u.tier_lines["gra"]
            if mor is None:
                self.add(line, "E604", "%gra without %mor")
            self._gra(line, gra.split(), chunks if mor is not None else None)
        pho = tiers.get("pho")
        if pho is not None and "*" in pho:
            self.add(u.tier_lines["pho"], "E365", "'*' in %pho")
        if "\u3014" in u.text or "\u2039" in u.text:  # grouped words align as one: not counted
            return
        for name, few, many in (("pho", "E714", "E715"), ("sin", "E718", "E719")):
            value = tiers.get(name)
            if value is None or pho_main is None or not value.strip():
                continue
            n = len(_DEP_UNITS.findall(value))
            if n != pho_main:
                self.add(u.tier_lines[name], few if n < pho_main else many,
                         f"main tier has {pho_main} words, %{name} has {n} items")

    def _gra(self, line: int, items: list[str], chunks: int | None) -> None:
        if chunks is not None and chunks != len(items):
            self.add(line, "E720", f"%mor has {chunks} chunks, %gra has {len(items)} relations")
        heads: list[int] = []
        found = _GRA_ITEM.findall(" ".join(items))
        if len(found) == len(items) and all(int(i) == k for k, (i, _, _) in enumerate(found, 1)):
            heads = [int(h) for _, h, _ in found]  # fast path: well-formed and sequential
            items = []
        for k, item in enumerate(items, 1):
            m = _GRA_ITEM.fullmatch(item)
            if m is None:
                parts = item.split("|")
                if len(parts) != 3 or not parts[2]:
                    code = "E711"
                elif not parts[0] or not parts[1]:
                    code = "E709"
                else:
                    code = "E710"
                self.add(line, code, f"%gra item {item!r} is not index|head|relation")
                return
            if int(m.group(1)) != k:
                self.add(line, "E721", f"%gra indices not sequential: expected {k}, found {m.group(1)}")
                return
            heads.append(int(m.group(2)))
        n = len(heads)
        if any(h > n for h in heads):
            self.add(line, "E713", f"%gra head index out of range (1..{n})")
            return
        if 0 not in heads:
            self.add(line, "E722", "%gra has no ROOT (head 0)")
        reaches_root = [False] * (n + 1)  # index 0 is the root itself
        reaches_root[0] = True
        for k in range(1, n + 1):  # follow heads; a path longer than n is a cycle
            path, h = [], k
            while not reaches_root[h] and len(path) <= n:
                path.append(h)
                h = heads[h - 1]
            if not reaches_root[h]:
                self.add(line, "E724", "%gra has a circular dependency")
                return
            for j in path:
                reaches_root[j] = True


def _plain_counts(stripped: str) -> tuple[int, int]:
    """(%mor items, %pho words) of a plain main tier: every token is one %mor item.

    NB: this counts ``0word`` as aligned, where :meth:`_MainTier._tokens` does not; kept as it
    was (the fixture ``omitted_word_alignment`` relies on it; see docs/chat-policy.md).
    """
    n = stripped.count(" ") + 1
    return n, n - 1 - stripped.count(",")


def _counts(stripped: str) -> tuple[int, int]:
    """Alignment counts of a main tier that fast.COMMON matches (as _MainTier.run gives them)."""
    if _PLAIN.fullmatch(stripped) and not _UNTRANSCRIBED.search(stripped):
        return _plain_counts(stripped)
    return common_counts(stripped)


def _mor_ok(piece: str) -> bool:
    pos, bar, rest = piece.partition("|")
    if not pos or not bar or not rest:
        return False
    if rest.startswith("+"):
        return all(_mor_ok(part) for part in rest[1:].split("+"))
    return "|" not in rest


class _MainTier:
    """One pass over a main tier's tokens: syntax checks and alignment counts."""

    def __init__(self, checker: Checker, u: "RawUtterance", index: int, multilingual: bool,
                 longs: list) -> None:
        self.c, self.u, self.index = checker, u, index
        self.multilingual, self.longs = multilingual, longs
        self.line = u.line

    def err(self, code: str, message: str) -> None:
        self.c.add(self.line, code, message)

    def run(self) -> tuple[int | None, int | None, tuple[int, int]]:
        """Check; return (items aligned to %mor, words aligned to %pho, (tops, bottoms))."""
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
        if _CONTROL.search(text):
            self.err("E315", "control character in main tier")
        stripped = text.strip()
        if _PLAIN.fullmatch(stripped) and not _UNTRANSCRIBED.search(stripped):
            if _ILLEGAL_UNTRANSCRIBED.search(stripped):
                self.err("E241", "xx, yy and ww are not legal; use xxx, yyy or www")
            return (*_plain_counts(stripped), (0, 0))
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

    def _tokens(self, text: str) -> tuple[int | None, int | None, tuple[int, int]]:
        items: list[list] = []  # [kind, mor, pho] per alignable unit
        groups: list[int] = []
        target: tuple[int, int] | None = None
        terminated = content = False
        pending_retrace = False
        quote = 0
        tops = bottoms = 0
        ca = {}
        tokens = _TOKEN.findall(text)
        marks = _MARK_CHARS.search(text) is not None  # overlap or CA delimiters somewhere
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
            if tok in TERMINATORS:
                terminated = True
                items.append(["term", 1, 0])
                target = None
                continue
            if terminated:
                self.err("E304", f"{tok!r} after the terminator")
                continue
            opens = len(tok) - len(tok.lstrip("<"))
            if opens and not tok.startswith("+"):
                groups.extend([len(items)] * opens)
                tok = tok[opens:]
            closes = len(tok) - len(tok.rstrip(">"))
            if closes:
                tok = tok[:-closes]
            if tok:
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
                        if m.group(1) in ("0", "1"):
                            self.err("E373", f"overlap index {m.group(1)} (must be 2-9)")
                        if m.group()[0] == "\u2308":
                            tops += 1
                        elif m.group()[0] == "\u230a":
                            bottoms += 1
                        ca[m.group()[0]] = ca.get(m.group()[0], 0) + 1
                    for ch in _CA_CHARS.findall(tok):
                        ca[ch] = ca.get(ch, 0) + 1
                target = (len(items) - 1, len(items)) if kind else None
            for _ in range(closes):
                if not groups:
                    self.err("E316", "'>' without '<'")
                    break
                start = groups.pop()
                nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
                if not nxt.startswith("[") and not groups:
                    self.err("E345", "group <...> not followed by an annotation")
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
        if ca.get("\u2308", 0) != ca.get("\u2309", 0) or ca.get("\u230a", 0) != ca.get("\u230b", 0):
            self.err("E348", "overlap marker not closed in this utterance")
        if not terminated:
            self.err("E304", "missing terminator")
        elif not content:
            self.err("E306", "utterance has no content")
        mor = sum(i[1] for i in items)
        pho = sum(i[2] for i in items)
        return mor, pho, (tops, bottoms)

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
            if kind == "event" and tok[-1] in ".!?":
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
        if tok == ",,":
            self.err("E258", "consecutive commas")
            return None
        if _PAUSE.fullmatch(tok):
            return None
        if tok in ("xxx", "yyy", "www"):
            items.append(["untranscribed", 0, 1 if tok != "www" else 0])
            return "untranscribed"
        if tok in ("xx", "yy", "ww"):
            self.err("E241", f"{tok!r} is not legal; use xxx, yyy or www")
            return None
        if first == "0":
            items.append(["omitted", 0, 0])
            return "omitted"
        if tok.strip("#") == "":
            self.err("E309", f"unexpected {tok!r}")
            return None
        self._check_word(tok)
        items.append(["word", 1, 1])
        return "word"

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
