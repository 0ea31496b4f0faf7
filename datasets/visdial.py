"""Read Visual Dialog (v0.9 / v1.0 JSON) and join its dialogs with COCO images and boxes.

The official format::

    {"version": "1.0", "split": "train",
     "data": {"questions": ["is the cup full", ...], "answers": ["yes", ...],
              "dialogs": [{"image_id": 378466, "caption": "...",
                           "dialog": [{"question": 0, "answer": 5, "answer_options": [...], ...}]}]}}

``question`` / ``answer`` index the shared lists; ``answer`` may be missing in the test split's
last round (that round is cut). ``image_id`` is the COCO image id, looked up in a COCO
``instances.json`` (:func:`vlground.vision.coco.load_coco`), which gives the image file and
its boxes.

Text is lowercased and split into words ``[a-z0-9']+`` (punctuation dropped). Problems never
stop the read: a dialog whose image is missing, a round whose indices are out of range, are
skipped with a one-line reason (``visdial_1.0_train.json: dialog 12 (image 378466): ...``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from vlground.errors import InputError

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """Lowercased words of ``text`` (punctuation dropped)."""
    return [w.strip("'") for w in _WORD.findall(str(text).lower()) if w.strip("'")]


def category_word(name: str) -> str | None:
    """The single word naming a COCO category (``cup`` -> ``cup``), None for several words
    (``dining table``: no one ``<LAN>`` token names it)."""
    ws = words(name)
    return ws[0] if len(ws) == 1 else None


@dataclass(frozen=True)
class Round:
    question: tuple[str, ...]
    answer: tuple[str, ...]


@dataclass(frozen=True)
class Dialog:
    index: int
    """Position in the file's ``dialogs`` list."""
    image_id: int
    caption: tuple[str, ...]
    rounds: tuple[Round, ...]


@dataclass
class VisdialData:
    path: Path
    version: str
    split: str
    dialogs: list[Dialog]
    skipped: list[str] = field(default_factory=list)


def read_visdial(path: str | Path) -> VisdialData:
    """Read a Visual Dialog JSON file (see the module docstring); InputError if the file is unusable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: Visual Dialog file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        data = raw["data"]
        questions, answers, dialogs = data["questions"], data["answers"], data["dialogs"]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from None
    except (KeyError, TypeError):
        raise InputError(f"{path}: not a Visual Dialog file (needs data.questions, data.answers, data.dialogs)") from None
    name = path.name
    out, skipped = [], []
    q_words = [tuple(words(q)) for q in questions]
    a_words = [tuple(words(a)) for a in answers]
    for i, d in enumerate(dialogs):
        try:
            image_id = int(d["image_id"])
        except (KeyError, TypeError, ValueError):
            skipped.append(f"{name}: dialog {i}: no image_id")
            continue
        rounds = []
        for r, turn in enumerate(d.get("dialog") or []):
            qi, ai = turn.get("question"), turn.get("answer")
            if ai is None and r == len(d["dialog"]) - 1:
                qi = None  # the test split's open last round
            if qi is None:
                continue
            if not (isinstance(qi, int) and 0 <= qi < len(q_words) and isinstance(ai, int) and 0 <= ai < len(a_words)):
                skipped.append(f"{name}: dialog {i} (image {image_id}): round {r}: question/answer index out of range")
                continue
            rounds.append(Round(q_words[qi], a_words[ai]))
        out.append(Dialog(i, image_id, tuple(words(d.get("caption", ""))), tuple(rounds)))
    return VisdialData(path, str(raw.get("version", "")), str(raw.get("split", "")), out, skipped)
