"""Labels from COCO-format annotations: POPE questions and CHAIR object words (no model, no torch).

* :func:`pope_questions` follows POPE (Li et al., EMNLP 2023; ``AoiDragon/POPE`` ``utils.pope``): per
  image, the first ``n`` annotated categories (annotation order, each once) are asked about ("yes"),
  and for each of them one absent category is drawn ("no"), never one already asked about that image:

  - ``random``: uniformly among the categories annotated anywhere in the file;
  - ``popular``: the most frequent category (number of images it is annotated in) not yet used;
  - ``adversarial``: the category that co-occurs most often (number of images holding both) with the
    present category just asked about; when none is left, a random one (as POPE does).

  Deviation, documented: POPE asks about exactly three present objects per image and only uses
  images with at least three; here an image with fewer asks about the ones it has (the synthetic
  scenes hold one or two objects).
* :class:`ChairVocabulary` finds CHAIR object words (Rohrbach, Hendricks et al., EMNLP 2018;
  ``LisaAnne/Hallucination`` ``utils/chair.py``) in a text: lower-cased words, plural -> singular, the
  two-word names and CHAIR's special rules (``baby dog`` -> dog, ``toilet seat`` is a toilet, not a
  chair), then each word's category through the synonym list. Only categories of the annotation file
  count: a category name of the file maps to itself (it wins over a synonym, so the scenes' ``ball``
  is the category ``ball``, not COCO's ``sports ball``), and a synonym maps to its COCO category when
  that category is in the file. A word is *hallucinated* when its category is not annotated in the image.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Literal, Mapping, Sequence

Strategy = Literal["random", "popular", "adversarial"]
STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")


@dataclass(frozen=True)
class PopeQuestion:
    """One POPE question: is ``category`` in image ``image_id``?"""

    image_id: int
    category: str
    present: bool  #: the right answer is "yes"
    strategy: str  #: how an absent category was drawn ("" for a present one)

    def text(self, template: str = "Is there a {} in the image?") -> str:
        """The question; "a" becomes "an" before a vowel, as POPE writes it."""
        t = template.replace(" a {}", " an {}") if self.category[:1].lower() in "aeiou" else template
        return t.format(self.category)


def objects_by_image(annotations: Iterable, image_ids: Iterable[int] | None = None) -> dict[int, list[str]]:
    """``image_id -> categories`` (annotation order, each once) of COCO annotations (``.image_id``, ``.category``)."""
    out: dict[int, list[str]] = {i: [] for i in (image_ids or ())}
    for a in annotations:
        cats = out.setdefault(a.image_id, [])
        if a.category not in cats:
            cats.append(a.category)
    return out


def pope_questions(objects: Mapping[int, Sequence[str]], strategy: Strategy = "random", n_per_image: int = 3,
                   seed: int = 0) -> list[PopeQuestion]:
    """POPE's questions for every image of ``objects`` (see the module docstring), seeded."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    rng = random.Random(seed)
    frequency = Counter(c for cats in objects.values() for c in set(cats))
    categories = sorted(frequency)
    popular = sorted(categories, key=lambda c: (-frequency[c], c))
    cooc: dict[str, Counter] = {}
    for cats in objects.values():
        for a in set(cats):
            cooc.setdefault(a, Counter()).update(b for b in set(cats) if b != a)
    out: list[PopeQuestion] = []
    for image_id in sorted(objects):
        present = list(objects[image_id])
        used: list[str] = []
        for cat in present[:n_per_image]:
            used.append(cat)
            out.append(PopeQuestion(image_id, cat, True, ""))
            free = [c for c in categories if c not in used and c not in present]
            if not free:
                continue
            if strategy == "popular":
                neg = next(c for c in popular if c in free)
            elif strategy == "adversarial":
                ranked = sorted(cooc.get(cat, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))
                neg = next((c for c, _ in ranked if c in free), None) or rng.choice(free)
            else:
                neg = rng.choice(free)
            used.append(neg)
            out.append(PopeQuestion(image_id, neg, False, strategy))
    return out


# -- CHAIR -----------------------------------------------------------------------------------------
#: CHAIR's two-word names read as one word, and its rules for qualifiers (utils/chair.py)
_DOUBLE = {w: w for w in ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                           "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
                           "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
                           "mobile phone", "teddy bear", "hair drier", "potted plant", "bow tie", "laptop computer",
                           "stove top oven", "home plate", "dining table")}
for _a in ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub"):
    _DOUBLE[f"baby {_a}"] = _DOUBLE[f"adult {_a}"] = _a
for _v in ("jet", "train"):
    _DOUBLE[f"passenger {_v}"] = _v
_DOUBLE.update({"bow tie": "tie", "toilet seat": "toilet", "wine glas": "wine glass"})
_IRREGULAR = {"men": "man", "women": "woman", "children": "child", "people": "person", "mice": "mouse", "knives": "knife",
              "geese": "goose", "teeth": "tooth", "feet": "foot", "skis": "skis", "glasses": "glass", "buses": "bus"}
_WORD = re.compile(r"[A-Za-z]+")


def read_synonyms(text: str | None = None) -> list[list[str]]:
    """CHAIR's synonym lines: ``[[category, synonym, ...], ...]`` (lower-cased; ``#`` lines skipped)."""
    if text is None:
        text = resources.files("vlground.monitor").joinpath("chair_synonyms.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append([w.strip().lower() for w in line.split(",") if w.strip()])
    return out


@dataclass(frozen=True)
class ObjectWord:
    """An object word found in a text: its characters ``[start, end)`` and its category."""

    word: str  #: as normalised (lower case, singular, two-word names joined by a space)
    category: str
    start: int
    end: int


class ChairVocabulary:
    """Object words of a set of categories (see the module docstring)."""

    def __init__(self, categories: Iterable[str], synonyms: list[list[str]] | None = None):
        cats = {c.lower(): c for c in categories}
        self.to_category: dict[str, str] = {}
        for line in synonyms if synonyms is not None else read_synonyms():
            if line[0] in cats:
                for w in line:
                    self.to_category.setdefault(w, cats[line[0]])
        self.to_category.update({low: c for low, c in cats.items()})  # a category's own name wins

    def words(self) -> list[str]:
        """Every word (and two-word name) that names a category."""
        return sorted(self.to_category)

    def _singular(self, w: str) -> str:
        if w in self.to_category or w in _DOUBLE:
            return w
        if w in _IRREGULAR:
            return _IRREGULAR[w]
        for suffix, repl in (("ies", "y"), ("ves", "f"), ("es", ""), ("s", "")):
            if w.endswith(suffix) and w[: -len(suffix)] + repl in self.to_category:
                return w[: -len(suffix)] + repl
        return w

    def find(self, text: str) -> list[ObjectWord]:
        """The object words of ``text`` in order (CHAIR's ``caption_to_words``, with character spans)."""
        toks = [(self._singular(m.group().lower()), m.start(), m.end()) for m in _WORD.finditer(text)]
        merged: list[tuple[str, int, int]] = []
        i = 0
        while i < len(toks):
            if i + 1 < len(toks):
                pair = f"{toks[i][0]} {toks[i + 1][0]}"
                if pair in _DOUBLE:
                    merged.append((_DOUBLE[pair], toks[i][1], toks[i + 1][2]))
                    i += 2
                    continue
            merged.append(toks[i])
            i += 1
        names = {w for w, _, _ in merged}
        if "toilet" in names:  # a toilet seat is not a chair
            merged = [t for t in merged if t[0] != "seat"]
        return [ObjectWord(w, self.to_category[w], s, e) for w, s, e in merged if w in self.to_category]


def chair_labels(found: Sequence[ObjectWord], present: Iterable[str]) -> list[bool]:
    """Per object word: True when hallucinated (its category is not in ``present``)."""
    have = set(present)
    return [w.category not in have for w in found]


def chair_rates(words_per_caption: Sequence[Sequence[bool]]) -> dict[str, float | int]:
    """CHAIR_i (hallucinated object words / object words) and CHAIR_s (captions with one / captions)."""
    n_words = sum(len(c) for c in words_per_caption)
    n_hall = sum(sum(c) for c in words_per_caption)
    n_caps = len(words_per_caption)
    return {"chair_i": n_hall / n_words if n_words else float("nan"),
            "chair_s": sum(any(c) for c in words_per_caption) / n_caps if n_caps else float("nan"),
            "object_words": n_words, "captions": n_caps}
