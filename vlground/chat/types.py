"""What the CHAT reader gives to the rest of vlground.

The reader (``vlground.chat``) turns CHAT text into a :class:`ChatFile`: its utterances in
transcript order and the problems found, each with a path and a 1-based line number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One problem in one file. ``str(problem)`` is the ``check-chat`` line ``path:line: CODE message``."""

    path: str
    line: int  #: 1-based; 0 when the problem concerns the whole file
    code: str  #: TalkBank code where known (``E301``), else a vlground code (``E000``)
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code} {self.message}"


@dataclass
class Utterance:
    """One main tier (``*SPK: ...``) and its dependent tiers."""

    speaker: str  #: participant code, e.g. ``CHI``, ``MOT``
    words: list[str]  #: spoken words after the cleaning policy (docs/chat-policy.md): lower-cased, non-empty, no whitespace, no xxx/yyy/www
    line: int  #: 1-based line of the main tier in its file
    tiers: dict[str, str] = field(default_factory=dict)  #: dependent tiers by name without ``%`` (``act``, ``sit``, ``gpx``, ``com``, ...), raw text, continuation lines joined

    @property
    def act(self) -> str | None:
        """The raw ``%act`` tier, or None."""
        return self.tiers.get("act")


@dataclass
class ChatFile:
    """A whole transcript: headers, utterances in order, problems (errors and warnings)."""

    path: str
    utterances: list[Utterance]
    problems: list[Problem] = field(default_factory=list)
    participants: dict[str, str] = field(default_factory=dict)  #: code -> role, e.g. ``{"CHI": "Target_Child"}``
    languages: list[str] = field(default_factory=list)
    skipped_utterances: int = 0  #: utterances dropped because of errors (each has a Problem)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors
