"""Header checks (``@Languages``, ``@Participants``, ``@ID``, ``@Options``, dates, gems, ...).

Rules from the CHAT manual's "File Headers" chapter; codes from TalkBank's validator. One
function, :func:`check_headers`, reads the header lines once and returns what the utterance
checks need: participants (code -> role), languages and ``@Options`` flags (``CA`` turns on
conversation-analysis mode).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

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

#: header names the CHAT manual defines ("Birth of", "Birthplace of", "L1 of" take a speaker)
KNOWN_HEADERS = frozenset("""
UTF8 Begin End Languages Participants ID Options Media Date Location Situation Activities
Comment Transcriber Transcription Types Warning Number Page Videos Thumbnail Font Window PID
Bg Eg G Bck Blank T
""".split()) | {"Time Duration", "Time Start", "Recording Quality", "Room Layout",
                 "Tape Location", "New Episode", "Color words"}
#: headers that may stand between @UTF8 and @Begin (the manual's pre-begin headers)
PRE_BEGIN = frozenset({"PID", "Font", "Window", "Color words"})
_PER_SPEAKER = ("Birth of ", "Birthplace of ", "L1 of ")

#: ``@Options`` flags CLAN knows (the manual's "Options" header); others are E534
OPTIONS = frozenset("CA CA-Unicode NoAlign bullets dummy heritage IPA multi sign".split())
CA_OPTIONS = frozenset({"CA", "CA-Unicode"})

#: the @ID SES field (7th): an ethnicity, a socioeconomic code, or both separated by a comma
#: (the manual's "@ID Header": White, Black, Latino, Asian, Pacific, Native, Multiple, Unknown;
#: UC upper class, MC middle class, WC working class, LI limited income)
ETHNICITIES = frozenset("White Black Latino Asian Pacific Native Multiple Unknown".split())
SES_CODES = frozenset("UC MC WC LI".split())
#: @Media: the second field is the kind of media, the optional third its status
MEDIA_TYPES = frozenset({"audio", "video"})
MEDIA_STATUS = frozenset({"missing", "unlinked", "notrans"})

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DATE = re.compile(r"(\d\d)-([A-Z]{3})-(\d{4})")
_AGE = re.compile(r"\d{1,3};(\d\d)?(\.(\d\d)?)?")  # years;months.days, months and days 2 digits
SPEAKER = re.compile(r"[A-Za-z0-9_']+")
_LANG = re.compile(r"[a-z]{2,3}")
_PLACEHOLDER_LANGS = frozenset({"xyz", "xxx", "yyy", "zzz", "und"})

Add = Callable[..., None]  #: ``add(line, code, message, severity="error")``


@dataclass
class HeaderInfo:
    """What the utterance checks need from the headers."""

    participants: dict[str, str] = field(default_factory=dict)  #: code -> role
    languages: list[str] = field(default_factory=list)  #: @Languages codes in order
    options: set[str] = field(default_factory=set)  #: @Options flags

    @property
    def ca_mode(self) -> bool:
        """``@Options: CA``: conversation-analysis transcription (terminators optional, ``(word)`` omissions)."""
        return not self.options.isdisjoint(CA_OPTIONS)


def check_headers(add: Add, path: str, headers: list, has_utterances: bool, text: str) -> HeaderInfo:
    """Check the headers ``[line, name, value]``; report through ``add``; return :class:`HeaderInfo`."""
    info = HeaderInfo()
    names = [h[1] for h in headers]
    if not text.strip():
        add(0, "E003", "empty file")
        return info
    ids: set[str] = set()
    part_line = 0
    if "Begin" not in names:
        add(1, "E504", "missing required header @Begin")
    if "End" not in names:
        add(len(text.splitlines()), "E502", "missing @End header at end of file")
    for key in ("Languages", "Participants"):
        if key not in names:
            add(1, "E504", f"missing required header @{key}")
    gems: list[tuple[str, int]] = []
    end_line = 0
    begin_line = next((h[0] for h in headers if h[1] == "Begin"), 0)
    for line, name, value in headers:
        if end_line:
            add(line, "E501", "content after @End")
        val = (value or "").strip()
        if name not in KNOWN_HEADERS and not name.startswith(_PER_SPEAKER):
            add(line, "E525", f"unknown header @{name}")
        if name == "End":
            end_line = line
        elif name == "Begin" and names.count("Begin") > 1 and line != begin_line:
            add(line, "E501", "duplicate @Begin header")
        elif name == "Languages":
            info.languages = [c.strip() for c in val.replace(" ", ",").split(",") if c.strip()]
            if not info.languages:
                add(line, "E507", "@Languages is empty")
            for code in info.languages:
                if not _LANG.fullmatch(code) or code in _PLACEHOLDER_LANGS:
                    add(line, "E519", f"invalid language code {code!r}")
        elif name == "Participants":
            part_line = line
            if not val:
                add(line, "E506", "@Participants is empty")
            _participants(add, line, val, info.participants)
        elif name == "ID":
            _id(add, line, val, info, ids)
        elif name == "Date":
            _date(add, line, val, "Date")
        elif name.startswith("Birth of "):
            who = name[len("Birth of "):]
            if who not in info.participants:
                add(line, "E524", f"@Birth of {who}: not a declared participant")
            _date(add, line, val, name)
        elif name == "Media":
            if names.count("Media") > 1 and line != next(h[0] for h in headers if h[1] == "Media"):
                add(line, "E501", "duplicate @Media header")
            _media(add, path, line, val)
        elif name == "Options":
            if not val:
                add(line, "E533", "@Options is empty")
            for flag in (f.strip() for f in val.split(",")):
                if flag and flag not in OPTIONS:
                    add(line, "E534", f"unknown @Options flag {flag!r}")
                info.options.add(flag)
        elif name in ("Bg", "Eg", "G"):
            _gem(add, line, name, val, gems)
    for label, line in gems:
        add(line, "E526", f"@Bg:{label} without matching @Eg")
    _order(add, headers)
    if "\x15" in text and "Media" not in names:  # time bullets link to a media file the header names
        add(text.count("\n", 0, text.index("\x15")) + 1, "E000", "media bullets but no @Media header")
    if not has_utterances and "Begin" in names:
        add(0, "W310", "no utterances", "warning")
    for code in info.participants:
        if code not in ids and part_line:
            add(part_line, "E522", f"participant {code} has no @ID header")
    return info


def _participants(add: Add, line: int, val: str, participants: dict[str, str]) -> None:
    for entry in (e.split() for e in val.split(",")):
        if not entry:
            continue
        code, role = entry[0], entry[-1] if len(entry) > 1 else ""
        if code in participants:
            add(line, "E549", f"participant {code} declared more than once")
        if not SPEAKER.fullmatch(code):
            add(line, "E307", f"invalid speaker code {code!r}")
        if not role:
            add(line, "E513", f"participant {code} has no role")
        elif role not in ROLES:
            add(line, "E532", f"unknown participant role {role!r}")
        participants[code] = role


def _id(add: Add, line: int, val: str, info: HeaderInfo, ids: set) -> None:
    participants = info.participants
    fields = val.split("|")
    if len(fields) < 10 or any(f.strip() for f in fields[10:]):
        add(line, "E505", f"@ID must have 10 fields separated by '|', found {len(fields) - 1}")
    fields += [""] * (10 - len(fields))
    lang, _, code, age, sex, _, _, role = (f.strip() for f in fields[:8])
    if not lang:
        add(line, "E510", "@ID language is empty")
    elif info.languages and any(c.strip() not in info.languages for c in lang.split(",")):
        add(line, "E519", f"@ID language {lang!r} is not in @Languages")
    if not code:
        add(line, "E511", "@ID speaker code is empty")
    elif code not in participants:
        add(line, "E523", f"@ID for {code}, who is not in @Participants")
    ids.add(code)
    if len(fields) >= 10 and not role:
        add(line, "E515", "@ID role is empty")
    elif role and participants.get(code, role) != role:
        add(line, "E532", f"@ID role {role!r} of {code} differs from its @Participants role "
                          f"{participants[code]!r}")
    ses = fields[6].strip()
    if ses:
        parts = [x.strip() for x in ses.split(",")]
        bad = [x for x in parts if x not in ETHNICITIES and x not in SES_CODES]
        if bad or len(parts) > 2 or sum(x in ETHNICITIES for x in parts) > 1 or sum(x in SES_CODES for x in parts) > 1:
            add(line, "E546", f"@ID SES field {ses!r}: an ethnicity ({', '.join(sorted(ETHNICITIES))}) and/or "
                              f"a code ({', '.join(sorted(SES_CODES))}), separated by a comma")
    if age and not _AGE.fullmatch(age):
        add(line, "E517", f"age {age!r} is not years;months.days")
    if sex and sex not in ("male", "female"):
        add(line, "E542", f"sex {sex!r} is not male or female")


def _order(add: Add, headers: list) -> None:
    """@UTF8 is the first line; between it and @Begin only the pre-begin headers; @ID headers
    follow @Participants."""
    names = [h[1] for h in headers]
    if not headers:
        return
    if names[0] != "UTF8" or headers[0][0] != 1:
        add(headers[0][0], "E503", "the first line must be @UTF8")
    if "Begin" in names:
        for line, name, _ in headers[1:names.index("Begin")]:
            if name not in PRE_BEGIN:
                add(line, "E504", f"@{name} before @Begin (only {', '.join('@' + h for h in sorted(PRE_BEGIN))} may come there)")
    if "Participants" in names:
        first_part = names.index("Participants")
        for line, name, _ in headers[:first_part]:
            if name == "ID":
                add(line, "E523", "@ID before @Participants")


def _media(add: Add, path: str, line: int, val: str) -> None:
    fields = [f.strip() for f in val.split(",")]
    if not val.strip():
        add(line, "E508", "@Media is empty")
        return
    if len(fields) < 2 or fields[1] not in MEDIA_TYPES:
        add(line, "E000", f"@Media needs the media kind after the name: audio or video (got {fields[1] if len(fields) > 1 else 'none'!r})")
    for extra in fields[2:]:
        if extra not in MEDIA_STATUS:
            add(line, "E000", f"@Media status {extra!r} is not one of {', '.join(sorted(MEDIA_STATUS))}")
    name = val.split(",")[0].strip()
    stem = re.split(r"[/\\!]", path)[-1].rsplit(".", 1)[0]
    if name and not name.startswith('"') and name != stem:
        add(line, "E000", f"@Media {name!r} does not match the file name {stem!r} (CLAN CHECK 157)")


def _date(add: Add, line: int, val: str, name: str) -> None:
    if not val:
        add(line, "E508", f"@{name} is empty")
        return
    m = _DATE.fullmatch(val)
    if not m or m.group(2) not in _MONTHS or not 1 <= int(m.group(1)) <= 31:
        add(line, "E518", f"@{name} {val!r} is not DD-MMM-YYYY")


def _gem(add: Add, line: int, name: str, val: str, gems: list) -> None:
    if name == "G":
        if gems:
            add(line, "E530", "lazy gem @G inside a @Bg scope")
        return
    if name == "Bg":
        if not val and gems:
            add(line, "E530", "lazy @Bg without label inside a @Bg scope")
        if any(label == val for label, _ in gems):
            add(line, "E529", f"@Bg:{val} nested inside a @Bg with the same label")
        gems.append((val, line))
        return
    if not gems:
        add(line, "E527", f"@Eg:{val} without matching @Bg")
        return
    label, _ = gems.pop()
    if label != val:
        add(line, "E528", f"@Eg:{val} does not match @Bg:{label}")
