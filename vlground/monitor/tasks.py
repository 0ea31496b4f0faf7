"""The monitor's evaluation tasks: labelled words with their grounding scores and baselines.

Each task decodes greedily through the adapter with the attention capture on (:mod:`.generate`) and
returns one :class:`WordRow` per labelled word, its label True when the word is wrong / hallucinated:

* ``pope``: POPE's questions (:func:`~.labels.pope_questions`). With "yes"/"no" in the vocabulary the
  question ``Is there a {object} in the image?`` is asked and the answer is the more probable of
  "yes" and "no" at the first answer position (forced choice, the usual logit form of POPE); the
  monitored word is the answer, wrong when it disagrees with the annotations. A model with no such
  words (the vision testbed) answers by naming: the naming prompt (``what is this ... it is a``) is
  decoded once per image and the model says "yes" to ``object`` when its greedy next word is
  ``object``; the monitored word is the object word, read at that same naming position.
* ``chair``: a free caption per image (``--prompt``; default ``Describe the image.``, or ``<C>`` on
  the testbed), up to ``max_new_tokens``; every CHAIR object word in it is labelled hallucinated when
  its category is not annotated in the image, and is scored at the position that predicts its first
  sub-token.
* ``testbed``: the adapter's probe items (match: the photo; mismatch: the object inpainted away);
  the model answers the naming prompt; the first word, when it names a category, is hallucinated
  when that category is not in the image shown (for a mismatch image: not among its *other*
  annotations).

Baselines on the same words: the word's probability (its first sub-token's; for a POPE answer the
summed probability of its spellings), the predictive entropy at that position, the image-attention
score and share of *all* heads, and the score of random head sets as large as the chosen set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from vlground.errors import InputError
from vlground.monitor import labels as L
from vlground.monitor.backends import Backend
from vlground.monitor.generate import Mitigation, Step, decode
from vlground.monitor.score import capture_attention, head_components

log = logging.getLogger(__name__)

TASKS = ("pope", "chair", "testbed")


@dataclass
class TaskConfig:
    task: str = "pope"  #: pope, chair or testbed
    pope_strategy: str = "random"  #: POPE's absent objects: random, popular or adversarial
    pope_per_image: int = 3  #: present objects asked about per image (POPE: 3)
    question: str = "Is there a {} in the image?"  #: POPE's question template
    prompt: str | None = None  #: chair: the captioning request (None: "Describe the image.", testbed "<C>")
    max_new_tokens: int = 32  #: chair: caption length limit
    limit: int | None = None  #: use at most this many images (pope, chair) or objects (testbed)
    topk: int = 4  #: k of the top-k image share (reported)
    seed: int = 0  #: POPE's random draws
    threshold: float | None = None  #: mitigation: score below which object words are down-weighted
    penalty: float = 5.0  #: mitigation: nats subtracted from the object words' logits


@dataclass
class WordRow:
    """One labelled word (a row of the items table)."""

    task: str
    query: str  #: question / caption / item id
    image_id: int
    image: str
    word: str
    category: str
    label: bool  #: True: wrong answer / hallucinated object
    position: int  #: generated-token index of the word's first sub-token
    prob: float
    entropy: float
    score: float = float("nan")
    share: float = float("nan")
    concentration: float = float("nan")
    topk: float = float("nan")
    all_share: float = float("nan")
    all_score: float = float("nan")
    penalised: bool = False
    text: str = ""  #: the generated text or the answer
    random_scores: list[float] = field(default_factory=list)


@dataclass
class Scorer:
    """Scores of a step's attention rows for the chosen heads, all heads and random sets."""

    heads: torch.Tensor  #: bool [layers, heads]
    random_sets: torch.Tensor  #: bool [draws, layers, heads]
    k: int = 4

    def fill(self, row: WordRow, step: Step, image: torch.Tensor) -> WordRow:
        share, conc, topk = head_components(step.rows[None], image, self.k)  # [1, L, H]
        s, c, t = share[0], conc[0], topk[0]
        g = s * c
        row.score, row.share = float(g[self.heads].mean()), float(s[self.heads].mean())
        row.concentration, row.topk = float(c[self.heads].mean()), float(t[self.heads].mean())
        row.all_share, row.all_score = float(s.mean()), float(g.mean())
        row.random_scores = [float(g[m].mean()) for m in self.random_sets]
        row.penalised = step.penalised
        return row


class TaskRunner:
    """Runs one task on one loaded model (see the module docstring)."""

    def __init__(self, backend: Backend, sites, scorer: Scorer, cfg: TaskConfig, coco):
        self.b, self.sites, self.scorer, self.cfg, self.coco = backend, sites, scorer, cfg, coco
        self.objects = L.objects_by_image(coco.annotations)
        self.vocab = L.ChairVocabulary(coco.categories.values())
        self.notes: list[str] = []
        self.captions: list[list[bool]] = []  #: chair: per caption, its words' labels
        self.answers: list[bool] = []  #: pope / testbed: per question, answered right
        self.penalised = 0  #: decoding steps where mitigation lowered the object words

    # -- shared -----------------------------------------------------------------------------------
    def _decode(self, enc, max_new: int, mitigation: Mitigation | None) -> list[Step]:
        model = self.b.loaded.model
        with capture_attention(model, self.sites) as rec:
            steps = decode(self.b.adapter, self.b.loaded, enc.inputs, max_new_tokens=max_new, stop_ids=self.b.stop_ids,
                           recorder=rec, image=enc.image, heads=self.scorer.heads, mitigation=mitigation, k=self.scorer.k)
        self.penalised += sum(s.penalised for s in steps)
        return steps

    def _images(self) -> list[int]:
        ids = sorted(i for i in self.objects if self.objects[i])
        return ids[: self.cfg.limit] if self.cfg.limit is not None else ids

    def _mitigation(self, words: list[str], mitigate: bool) -> Mitigation | None:
        if not mitigate:
            return None
        if self.cfg.threshold is None:
            raise InputError("--mitigate needs a threshold")
        ids = self.b.word_token_ids(words)
        return Mitigation(self.cfg.threshold, self.cfg.penalty, torch.tensor(ids, dtype=torch.long))

    def run(self, mitigate: bool = False) -> list[WordRow]:
        self.captions, self.answers, self.penalised = [], [], 0
        return {"pope": self.pope, "chair": self.chair, "testbed": self.testbed}[self.cfg.task](mitigate)

    # -- tasks ------------------------------------------------------------------------------------
    def pope(self, mitigate: bool) -> list[WordRow]:
        cfg = self.cfg
        images = set(self._images())
        questions = L.pope_questions({i: self.objects[i] for i in images}, cfg.pope_strategy, cfg.pope_per_image, cfg.seed)
        rows: list[WordRow] = []
        if self.b.yes_no is None:
            return self._pope_naming(questions, mitigate)
        yes, no = self.b.yes_no
        for q in questions:
            img = self.coco.images[q.image_id]
            enc = self.b.encode(str(img.path), self.b.prompt(q.text(cfg.question)))
            step = self._decode(enc, 1, None)[0]
            lp_yes = torch.logsumexp(step.logprobs[yes], 0)
            lp_no = torch.logsumexp(step.logprobs[no], 0)
            step.penalised = bool(mitigate and step.score is not None and step.score < cfg.threshold)
            self.penalised += step.penalised
            said_yes = bool(lp_yes - (cfg.penalty if step.penalised else 0.0) > lp_no)
            self.answers.append(said_yes == q.present)
            row = WordRow("pope", f"{q.image_id}:{q.category}:{q.strategy or 'present'}", q.image_id, str(img.path),
                          "yes" if said_yes else "no", q.category, said_yes != q.present, 0,
                          float((lp_yes if said_yes else lp_no).exp()), step.entropy, text="yes" if said_yes else "no")
            rows.append(self.scorer.fill(row, step, enc.image))
        return rows

    def _naming_prompt(self) -> str:
        o = self.b.adapter.options
        if hasattr(self.b, "vocab"):  # the testbed's corpus vocabulary
            return o.prompt
        return self.b.prompt(o.question, o.answer_prefix)

    def _pope_naming(self, questions, mitigate: bool) -> list[WordRow]:
        cats = sorted(set(self.coco.categories.values()))
        mit = self._mitigation(cats, mitigate)
        rows, by_image = [], {}
        for q in questions:
            by_image.setdefault(q.image_id, []).append(q)
        for image_id, qs in sorted(by_image.items()):
            img = self.coco.images[image_id]
            try:
                enc = self.b.encode(str(img.path), self._naming_prompt())
            except InputError as exc:
                self.notes.append(f"pope: image {image_id} skipped ({exc})")
                continue
            step = self._decode(enc, 1, mit)[0]
            for q in qs:
                ids = self.b.word_token_ids([q.category])
                if not ids:
                    self.notes.append(f"pope: {q.category!r} is not in the vocabulary; question skipped")
                    continue
                said_yes = step.token == ids[0]
                self.answers.append(said_yes == q.present)
                row = WordRow("pope", f"{image_id}:{q.category}:{q.strategy or 'present'}", image_id, str(img.path),
                              q.category, q.category, said_yes != q.present, 0, float(step.logprobs[ids[0]].exp()),
                              step.entropy, text=self.b.text([step.token])[0])
                rows.append(self.scorer.fill(row, step, enc.image))
        return rows

    def chair(self, mitigate: bool) -> list[WordRow]:
        cfg = self.cfg
        testbed = hasattr(self.b, "vocab")
        prompt = cfg.prompt or ("<C>" if testbed else self.b.prompt("Describe the image."))
        mit = self._mitigation(self.vocab.words(), mitigate)
        rows = []
        for image_id in self._images():
            img = self.coco.images[image_id]
            try:
                enc = self.b.encode(str(img.path), prompt)
            except InputError as exc:
                self.notes.append(f"chair: image {image_id} skipped ({exc})")
                continue
            steps = self._decode(enc, cfg.max_new_tokens, mit)
            text, spans = self.b.text([s.token for s in steps])
            found = self.vocab.find(text)
            flags = L.chair_labels(found, self.objects[image_id])
            self.captions.append(flags)
            for w, hallucinated in zip(found, flags):
                pos = next(k for k, (s, e) in enumerate(spans) if e > w.start)
                st = steps[pos]
                row = WordRow("chair", f"{image_id}", image_id, str(img.path), w.word, w.category, hallucinated, pos,
                              float(np.exp(st.logprob)), st.entropy, text=text)
                rows.append(self.scorer.fill(row, st, enc.image))
        return rows

    def testbed(self, mitigate: bool) -> list[WordRow]:
        items = self.b.adapter.items(self.b.loaded)
        if self.cfg.limit is not None:
            items = items[: 2 * self.cfg.limit]
        mit = self._mitigation(self.vocab.words(), mitigate)
        prompt = self._naming_prompt()
        rows, unnamed = [], 0
        for it in items:
            obj = it.meta["object"]
            ann = next(a for a in self.coco.annotations if a.id == obj.annotation_id)
            others = [a.category for a in self.coco.annotations if a.image_id == ann.image_id and a.id != ann.id]
            present = set(others) | ({ann.category} if it.condition == "match" else set())
            image = obj.image if it.condition == "match" else obj.mismatch_image
            enc = self.b.encode(image, prompt)
            steps = self._decode(enc, 4 if not hasattr(self.b, "vocab") else 1, mit)
            text, spans = self.b.text([s.token for s in steps])
            found = [w for w in self.vocab.find(text) if w.start < spans[0][1]]  # the first word only
            if not found:
                unnamed += 1
                self.answers.append(it.condition == "mismatch")  # naming nothing is right only when it is gone
                continue
            w = found[0]
            self.answers.append(w.category in present and (it.condition == "mismatch" or w.category == ann.category))
            st = steps[0]
            row = WordRow("testbed", it.item_id, ann.image_id, image, w.word, w.category, w.category not in present, 0,
                          float(np.exp(st.logprob)), st.entropy, text=text)
            rows.append(self.scorer.fill(row, st, enc.image))
        if unnamed:
            self.notes.append(f"testbed: {unnamed} of {len(items)} answers named no object (not labelled)")
        return rows

    def outcome(self) -> dict:
        """What mitigation is judged on: CHAIR rates (chair) or answer accuracy (pope, testbed)."""
        if self.cfg.task == "chair":
            return L.chair_rates(self.captions)
        n = len(self.answers)
        return {"accuracy": sum(self.answers) / n if n else float("nan"), "answers": n}
