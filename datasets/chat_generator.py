"""A seeded generator of CHILDES-like CHAT transcripts: the bundled default corpus.

Real CHILDES cannot be downloaded here, so the demo and the tests use transcripts written by
this module. They are real ``.cha`` text (``@UTF8 @Begin @Languages @Participants @ID ... @End``)
read by the same CHAT reader as CHILDES. Each file is one play session of a child (``CHI``)
and a parent (``MOT``, sometimes ``FAT``) with a *scene* of a few objects:

* ``%act`` tiers describe a speaker acting on an object (``picks up the ball``, ``gives MOT the
  cup``, ``asked for a new book``), often on a ``0 .`` (action-only) utterance;
* the object is named in speech some of the time (``naming_prob``), in the same utterance
  (``same_utterance_prob``) or one to ``max_delay`` utterances later, with a linguistic frame
  (:data:`LAN_FRAMES`: ``look at the ball``, ``I love this ball`` ...);
* frames are also used with objects nobody acts on (``mention_prob``), so the frame alone does
  not predict the word; only the ``%act`` context does;
* filler talk and the codes real transcripts carry: retracings ``[/] [//]``, replacements
  ``[: x]``, fillers ``&-uh``, events ``&=laughs``, ``xxx``, pauses ``(.)``, ``@b`` forms,
  overlaps ``[>] [<]``, postcodes ``[+ imit]``, ``+...`` trailing off, ``%com`` tiers.

Sessions are of four kinds: ``play`` (acts, namings and mentions), ``quiet`` (acts and filler
talk, no object named), ``book`` (mentions, no ``%act``) and ``talk`` (everyday talk with
occasional mentions and no ``%act`` tier at all, like the many CHILDES corpora that do not code
actions). The defaults (:data:`DEFAULT_OPTIONS`) are matched to the one documented statistic of
the paper's corpus: "In the CHILDES corpus, roughly one-third of the data contains such
co-occurring pairs" (co-occurrence = both forms of a word in one 512-token training chunk; blog
post of arXiv 2510.13796). :func:`corpus_statistics` measures it; ``docs/claims.md`` records the
figures and what is an assumption. :data:`DENSE_OPTIONS` is the earlier, denser corpus (84% of
512-token chunks co-occurring), kept for fast tests that need a strong signal in a few files.
Everything is drawn from ``random.Random(seed)``: the same arguments give the same bytes.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: object words (the probes' targets); the scene of each session draws from these
OBJECTS = [
    "ball", "cup", "dog", "cat", "horse", "car", "truck", "book", "spoon", "duck",
    "bear", "block", "doll", "train", "apple", "banana", "cookie", "shoe", "hat", "sock",
    "boat", "bird", "fish", "cow", "pig", "sheep", "bus", "plane", "bottle", "bowl",
    "brush", "phone", "key", "box", "bunny", "frog", "egg", "juice", "crayon", "puzzle",
]  # fmt: skip

#: ``%act`` frames (``{o}`` the object, ``{a}`` the other participant's code). Apart from
#: ``the``, ``a`` and ``at`` (words of the probes' frames), no word of the ENV frames and ENV
#: fillers is ever spoken, so every other ENV/LAN pair is an object word.
ENV_FRAMES = [
    "picks up the {o}", "gives {a} the {o}", "holds the {o}", "points at the {o}",
    "asked for a new {o}", "plays with the {o}", "puts the {o} in the basket", "throws the {o}",
    "drops the {o}", "reaches for the {o}", "takes the {o} from {a}", "shows {a} the {o}",
    "pushes the {o}", "looks at the {o}", "hugs the {o}", "puts away the {o}",
]  # fmt: skip

#: linguistic frames naming an object (as written in CHAT; the reader lower-cases)
LAN_FRAMES = [
    "look at the {o}", "what a nice {o}", "I love this {o}", "where is the {o}",
    "that's a {o}", "do you want the {o}", "here is the {o}", "is that your {o}",
    "can you find the {o}", "you have the {o}", "it's a {o}", "give me the {o}",
]  # fmt: skip

#: actions with no object
ENV_FILLERS = [
    "claps hands", "laughs", "runs around", "sits on the floor", "looks at {a}",
    "stands up", "shakes head", "nods", "waves at {a}", "climbs on the couch",
    "walks away", "lies on the rug",
]  # fmt: skip

#: talk with no object
LAN_FILLERS = [
    "yeah", "okay", "no", "uhoh", "good job", "let's play", "what's that", "I'm hungry",
    "thank you", "you did it", "come here", "all done", "more", "again", "be careful",
    "do you want to play", "that's funny", "I don't know", "are you tired", "let's see",
    "it's my turn", "your turn", "wow", "very good", "what are you doing", "oh",
    "can you do it", "I want to go outside", "where did it go", "sit here please",
]  # fmt: skip

_REPLACEMENTS = [("gonna", "going to"), ("wanna", "want to"), ("dat", "that"), ("goed", "went")]
_BABBLE = ["baba@b", "dada@b", "mama@b", "gaga@b"]
_EVENTS = ["&=laughs", "&=coughs", "&=sighs", "&=squeals"]
_FILLERS = ["&-uh", "&-um"]
_POSTCODES = ["[+ imit]", "[+ bch]", "[+ trn]"]
_COMMENTS = ["CHI is sitting on the floor", "toys spread out on the rug", "MOT is smiling"]


@dataclass(frozen=True)
class GeneratorOptions:
    """Knobs of :func:`generate_transcripts` (defaults give the bundled corpus)."""

    utterances_per_file: int = 300
    """Main tiers per transcript (approximately: a scheduled naming may add one)."""
    n_objects: int = 40
    """How many of :data:`OBJECTS` are used (the first ``n_objects``; up to ``len(OBJECTS)``)."""
    scene_size: int = 16
    """Objects in the scene of one session."""
    zipf: float = 0.6
    """Object popularity ~ rank ** -zipf (0: all objects equally likely)."""
    act_prob: float = 0.3
    """Chance that an utterance carries an ``%act`` on a scene object (play and quiet sessions);
    a quarter as many more carry an object-less ``%act`` (``claps hands``)."""
    naming_prob: float = 0.85
    """Chance that an acted-on object is named afterwards (play sessions only)."""
    same_utterance_prob: float = 0.7
    """Of the namings, the share in the same utterance as the ``%act``."""
    max_delay: int = 2
    """A later naming comes 1..max_delay utterances after the ``%act``."""
    mention_prob: float = 0.05
    """Chance that an utterance names a random object with a frame, with no ``%act`` (play sessions)."""
    book_mention_prob: float = 0.35
    """The same in book sessions (70 % of these name a scene object)."""
    talk_mention_prob: float = 0.05
    """The same in talk sessions (no ``%act`` tier)."""
    code_prob: float = 0.15
    """Chance of each kind of CHAT code decoration on an utterance."""
    session_kinds: tuple[tuple[str, float], ...] = (("play", 0.16), ("quiet", 0.04), ("book", 0.1), ("talk", 0.7))
    """Session kinds and their weights."""


#: the bundled corpus: about a third of 512-token chunks hold a co-occurring pair (see the module doc)
DEFAULT_OPTIONS = GeneratorOptions()
#: the earlier dense corpus (84 % of 512-token chunks co-occurring, %act on 59 % of utterances)
DENSE_OPTIONS = GeneratorOptions(act_prob=0.6, session_kinds=(("play", 0.7), ("book", 0.1), ("quiet", 0.2)))


class _Session:
    """Writes one transcript (state: the scene and the namings due)."""

    def __init__(self, rng: random.Random, opts: GeneratorOptions, objects: list[str], weights: list[float]):
        self.rng, self.opts = rng, opts
        self.objects, self.weights = objects, weights
        self.kind = rng.choices([k for k, _ in opts.session_kinds], [w for _, w in opts.session_kinds])[0]
        self.speakers = ["CHI", "MOT"] + (["FAT"] if rng.random() < 0.3 else [])
        k = min(opts.scene_size, len(objects))
        scene: list[str] = []
        while len(scene) < k:
            o = rng.choices(objects, weights)[0]
            if o not in scene:
                scene.append(o)
        self.scene = scene
        self.due: dict[int, list[tuple[str, str]]] = {}  # utterance index -> [(speaker, object)]
        self.lines: list[str] = []
        self.overlap_with: str | None = None  # who must speak next, overlapping (after a [>])

    # -- pieces ---------------------------------------------------------------------------
    def other(self, speaker: str) -> str:
        return self.rng.choice([s for s in self.speakers if s != speaker])

    def naming(self, obj: str) -> str:
        return self.rng.choice(LAN_FRAMES).format(o=obj)

    def decorate(self, text: str, speaker: str, naming: bool) -> tuple[str, str]:
        """Add CHAT codes to plain speech; returns (main tier body before terminator, terminator).

        In a naming (a frame + an object) codes go only before the frame or after the object,
        so the frame's words stay contiguous once the reader has removed the codes.
        """
        rng, p = self.rng, self.opts.code_prob
        words = text.split()

        def pos() -> int:
            if naming:
                return 0 if rng.random() < 0.5 else len(words)
            return rng.randrange(len(words) + 1)
        if rng.random() < p and len(words) > 1:  # retracing of the first word(s)
            n = 1 if len(words) < 3 or rng.random() < 0.5 else 2
            head = " ".join(words[:n])
            # one list item, so later insertions never split the retraced words from their code
            words = [f"{head if n == 1 else f'<{head}>'} {rng.choice(['[/]', '[//]'])}"] + words
        if rng.random() < p / 2:
            words.insert(0, rng.choice(_FILLERS))
        if rng.random() < p / 2:
            words.insert(pos(), "(.)")
        if rng.random() < p / 3:
            words.append(rng.choice(_EVENTS))
        if rng.random() < p / 3:
            words.insert(pos(), "xxx")
        if speaker == "CHI" and rng.random() < p / 2:
            words.insert(pos(), rng.choice(_BABBLE))
        if not naming and rng.random() < p / 3:
            bad, good = rng.choice(_REPLACEMENTS)
            words.insert(rng.randrange(len(words) + 1), f"{bad} [: {good}]")
        r = rng.random()
        term = "?" if r < 0.15 else "!" if r < 0.25 else "+..." if r < 0.28 else "."
        return " ".join(words), term

    def utterance(self, speaker: str, speech: str | None, act: str | None, naming: bool = False) -> None:
        """Append one main tier (``0 .`` without speech) and its tiers; may open an overlap."""
        rng = self.rng
        if speech:
            body, term = self.decorate(speech, speaker, naming)
            if self.overlap_with is not None:  # this utterance answers the previous one's [>]
                body, self.overlap_with = f"<{body}> [<]" if "<" not in body else f"{body} [<]", None
            elif "<" not in body and rng.random() < self.opts.code_prob / 3:
                body, self.overlap_with = f"<{body}> [>]", self.other(speaker)
            tail = f" {rng.choice(_POSTCODES)}" if rng.random() < self.opts.code_prob / 4 else ""
            self.lines.append(f"*{speaker}:\t{body} {term}{tail}")
        else:
            self.lines.append(f"*{speaker}:\t0 .")
        if act:
            self.lines.append(f"%act:\t{act}")
        if rng.random() < self.opts.code_prob / 10:
            self.lines.append(f"%com:\t{rng.choice(_COMMENTS)}")

    # -- the session ----------------------------------------------------------------------
    def run(self, n_utterances: int) -> None:
        rng, o = self.rng, self.opts
        # play: acts, namings, mentions; quiet: acts only; book: mentions only
        naming = o.naming_prob if self.kind == "play" else 0.0
        act_prob = 0.0 if self.kind in ("book", "talk") else o.act_prob
        mention = {"play": o.mention_prob, "quiet": 0.0, "book": o.book_mention_prob, "talk": o.talk_mention_prob}[self.kind]
        for i in range(n_utterances):
            due = self.due.pop(i, [])
            speech: str | None = None
            named = False
            if due:
                speaker, obj = due[0]
                self.due.setdefault(i + 1, []).extend(due[1:])
                speech, named = self.naming(obj), True
            else:
                speaker = rng.choice(self.speakers)
            if self.overlap_with is not None:
                speaker = self.overlap_with
            act = None
            if rng.random() < act_prob:
                obj = rng.choice(self.scene)
                act = rng.choice(ENV_FRAMES).format(o=obj, a=self.other(speaker))
                if speech is None and rng.random() < naming:
                    if rng.random() < o.same_utterance_prob:
                        speech, named = self.naming(obj), True
                    else:
                        later = i + rng.randint(1, max(1, o.max_delay))
                        self.due.setdefault(later, []).append((rng.choice(self.speakers), obj))
            elif rng.random() < act_prob / 4:
                act = rng.choice(ENV_FILLERS).format(a=self.other(speaker))
            if speech is None:
                if rng.random() < mention:
                    pool = self.scene if self.kind == "book" and rng.random() < 0.7 else self.objects
                    speech, named = self.naming(rng.choice(pool)), True
                elif act is None or self.overlap_with is not None or rng.random() < 0.5:
                    speech = rng.choice(LAN_FILLERS)
            self.utterance(speaker, speech, act, named)

    def text(self, name: str, seed: int, index: int) -> str:
        roles = {"CHI": "Target_Child", "MOT": "Mother", "FAT": "Father"}
        age = f"{self.rng.randint(1, 3)};{self.rng.randint(0, 11):02d}."
        sex = self.rng.choice(["female", "male"])
        head = [
            "@UTF8",
            "@Begin",
            "@Languages:\teng",
            "@Participants:\t" + ", ".join(f"{s} {roles[s]}" for s in self.speakers),
        ]
        for s in self.speakers:
            head.append(
                f"@ID:\teng|vlground|CHI|{age}|{sex}|||Target_Child|||"
                if s == "CHI"
                else f"@ID:\teng|vlground|{s}|||||{roles[s]}|||"
            )
        head.append(f"@Comment:\t{name}: generated by vlground (seed {seed}, file {index}, {self.kind} session)")
        return "\n".join(head + self.lines + ["@End"]) + "\n"


def _object_weights(n_objects: int, zipf: float) -> tuple[list[str], list[float]]:
    if not 1 <= n_objects <= len(OBJECTS):
        raise ValueError(f"n_objects must be between 1 and {len(OBJECTS)}")
    objects = OBJECTS[:n_objects]
    return objects, [(r + 1) ** -zipf for r in range(n_objects)]


def transcript_text(seed: int, index: int = 0, options: GeneratorOptions = DEFAULT_OPTIONS) -> str:
    """The CHAT text of transcript ``index`` of a seeded collection (independent of the others)."""
    rng = random.Random(f"vlground-chat/{seed}/{index}")
    objects, weights = _object_weights(options.n_objects, options.zipf)
    session = _Session(rng, options, objects, weights)
    session.run(options.utterances_per_file)
    return session.text(f"s{seed:03d}_{index:04d}.cha", seed, index)


def generate_transcripts(
    out_dir: str | os.PathLike,
    n_files: int = 80,
    seed: int = 0,
    options: GeneratorOptions | None = None,
    **overrides,
) -> list[Path]:
    """Write ``n_files`` transcripts ``s{seed}_{i}.cha`` into ``out_dir`` (created); returns their paths.

    ``overrides`` are :class:`GeneratorOptions` fields (``utterances_per_file=100``, ``n_objects=30``).
    """
    from dataclasses import replace

    opts = replace(options or DEFAULT_OPTIONS, **overrides)
    if n_files < 1:
        raise ValueError("n_files must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        p = out / f"s{seed:03d}_{i:04d}.cha"
        p.write_text(transcript_text(seed, i, opts), encoding="utf-8")
        paths.append(p)
    log.info("wrote %d transcripts to %s", n_files, out)
    return paths


def corpus_statistics(corpus_dir: str | os.PathLike) -> dict:
    """The statistics the bundled corpus is matched to, from a built corpus's ``stats.json``:
    ``cooc_chunk_share`` (chunks holding a co-occurring pair of counted words / chunks, at the
    corpus's ``chunk_len``; ``vlground.datasets.cooc``), ``cooc_chunk_share_all_words`` (the same
    over every pair, function words included), ``act_share`` (utterances with an ``%act`` tier /
    utterances), and the sizes."""
    import json

    st = json.loads((Path(corpus_dir) / "stats.json").read_text(encoding="utf-8"))
    n = max(st["chunks"], 1)
    return {
        "chunk_len": st["chunk_len"], "chunks": st["chunks"], "cooc_chunk_share": st["cooc_chunks"] / n,
        "cooc_chunk_share_all_words": st.get("cooc_chunks_all_words", st["cooc_chunks"]) / n,
        "utterances": st["utterances"], "act_share": st["utterances_with_act"] / max(st["utterances"], 1),
        "tokens": st["tokens"], "files": st["files"],
    }


def default_chat_dir(corpus_dir: str | os.PathLike) -> Path:
    """Where :func:`build_default_corpus` keeps the transcripts of ``corpus_dir``: ``<corpus_dir>-chat``."""
    corpus_dir = Path(corpus_dir)
    return corpus_dir.with_name(corpus_dir.name + "-chat")


def build_default_corpus(
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    n_files: int = 80,
    chat_dir: str | os.PathLike | None = None,
    chunk_len: int = 512,
    min_count: int = 1,
    drop_cooc: float = 0.0,
    overwrite: bool = False,
    progress: bool = False,
    **generator_options,
) -> Path:
    """Generate the default transcripts and build the corpus folder ``out_dir`` from them.

    The transcripts go to ``chat_dir`` (default ``<out_dir>-chat``, replaced if it exists) and
    stay there, so ``vlground build-corpus <chat_dir> --out ... --drop-cooc F`` builds variants
    of the same data. ``generator_options`` are :class:`GeneratorOptions` fields. Returns
    ``out_dir`` (open it with ``vlground.corpus.format.Corpus.load``).
    """
    import shutil

    from .childes_corpus import BuildCorpusConfig, build_corpus

    out_dir = Path(out_dir)
    chat = Path(chat_dir) if chat_dir is not None else default_chat_dir(out_dir)
    if out_dir.exists() and not overwrite:
        from vlground.errors import InputError

        raise InputError(f"{out_dir}: already exists (choose another folder or pass overwrite=True)")
    if chat.exists():
        shutil.rmtree(chat)
    generate_transcripts(chat, n_files=n_files, seed=seed, **generator_options)
    config = BuildCorpusConfig(
        inputs=[str(chat)],
        out=str(out_dir),
        chunk_len=chunk_len,
        min_count=min_count,
        drop_cooc=drop_cooc,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
    )
    return build_corpus(config)


def main(argv: list[str] | None = None) -> int:
    """``python -m vlground.datasets.chat_generator OUT_DIR [--n-files N] [--seed S] ...``"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m vlground.datasets.chat_generator", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--n-files", type=int, default=80)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utterances", type=int, default=DEFAULT_OPTIONS.utterances_per_file)
    p.add_argument("--n-objects", type=int, default=DEFAULT_OPTIONS.n_objects)
    a = p.parse_args(argv)
    generate_transcripts(a.out_dir, a.n_files, a.seed, utterances_per_file=a.utterances, n_objects=a.n_objects)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
