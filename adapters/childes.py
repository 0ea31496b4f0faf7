"""``childes``: the text testbed. Models trained by ``vlground train`` on an ENV/LAN corpus.

Items (docs/adapters.md): an environment frame holding ``w<ENV>`` (``<CHI> picks<ENV> up<ENV>
the<ENV> ball<ENV>``) followed by a neutral linguistic frame whose next token is ``w<LAN>``
(``<MOT> look<LAN> at<LAN> the<LAN>``). The mismatch item replaces ``w<ENV>`` by another
target's ENV token, counterbalanced: for frame pair ``k`` target ``i`` (targets sorted) gets
distractor ``(i + 1 + k mod (n-1)) mod n``, so every target is a distractor exactly once per
frame pair. Reverse direction (``lan2env``): the linguistic frame with ``w<LAN>`` filled in,
then the environment frame up to its slot; the target is ``w<ENV>``.

Targets: words of the corpus's pairs with at least ``min_env`` ENV and ``min_lan`` LAN
occurrences (``--templates`` may list them). Frame pairs (``pairing``): ``cross`` (default)
probes every ENV frame with every LAN frame, pair ``k = e * L + l`` is ``(env[e], lan[l])``
(``E x L`` pairs, so the blog's "asked for a new" + "I love this" is among them); ``diagonal``
pairs ``(env[k % E], lan[k % L])`` for ``k < max(E, L)`` only.

Held-out text for the tuned lens (:meth:`ChildesAdapter.lens_batches`): the run's validation
chunks (``split.json``), whole, in order, until ``n_tokens`` non-padding tokens (or all of them).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from vlground.corpus.format import Corpus, env_token, lan_token, speaker_token
from vlground.engine.adapter import Adapter, Capability, Checkpoint, LoadedModel, ProbeBatch, ProbeItem, resolve_device
from vlground.errors import InputError
from vlground.lazy import torch  # imported on first use: `probe --adapter childes --help` needs no torch

log = logging.getLogger(__name__)

_FRAME = re.compile(r"^\s*([A-Za-z0-9_]+)\s*:\s*(.*)$")


@dataclass(frozen=True)
class Frame:
    speaker: str
    words: tuple[str, ...]  #: ``{}`` marks the slot

    @property
    def slot(self) -> int:
        return self.words.index("{}")


def parse_frame(text: str, where: str) -> Frame:
    m = _FRAME.match(text)
    speaker, rest = (m.group(1), m.group(2)) if m else ("CHI", text)
    words = tuple(w.lower() for w in rest.split())
    if words.count("{}") != 1:
        raise InputError(f"{where}: frame {text!r} needs exactly one {{}} slot")
    return Frame(speaker, words)


def run_group_of(info: dict) -> str:
    """The report group of a run: its architecture and size, and the corpus it was trained on
    (runs differing only in seed share a group), from ``run.json``."""
    arch = info.get("arch") or "run"
    size = info.get("size")
    corpus = Path(str(info.get("corpus", ""))).name
    return "-".join(str(x) for x in (arch, size) if x) + (f" @ {corpus}" if corpus else "")


@dataclass
class Templates:
    env: list[Frame]
    lan: list[Frame]
    targets: list[str] | None
    source: str

    @classmethod
    def load(cls, path: str | Path | None) -> "Templates":
        if path is None:
            text = resources.files("vlground").joinpath("templates/childes_en.json").read_text(encoding="utf-8")
            where = "default templates"
        else:
            where = str(path)
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"{path}: cannot read templates ({exc.strerror})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not data.get("env") or not data.get("lan"):
            raise InputError(f"{where}: needs non-empty 'env' and 'lan' lists")
        for key in ("env", "lan", "targets"):  # every entry a string: 3 or null is a mistake, not a frame
            value = data.get(key)
            if key == "targets" and value is None:
                continue
            if not isinstance(value, list):
                raise InputError(f"{where}: '{key}' must be a list of strings, not a {type(value).__name__}")
            bad = next((i for i, t in enumerate(value) if not isinstance(t, str)), None)
            if bad is not None:
                raise InputError(f"{where}: {key}[{bad}] is {value[bad]!r}, not a string")
        lan = [parse_frame(t, where) for t in data["lan"]]
        for f in lan:
            if f.slot != len(f.words) - 1:
                raise InputError(f"{where}: LAN frame {' '.join(f.words)!r} must end with the {{}} slot")
        targets = data.get("targets")
        return cls([parse_frame(t, where) for t in data["env"]], lan, [t.lower() for t in targets] if targets else None, where if path else "default")


def _frame_missing(frame: Frame, vocab: dict[str, int], form) -> list[str]:
    missing = [form(w) for w in frame.words if w != "{}" and form(w) not in vocab]
    if speaker_token(frame.speaker) not in vocab:
        missing.append(speaker_token(frame.speaker))
    return missing


def frame_pairs(n_env: int, n_lan: int, pairing: str = "cross") -> list[tuple[int, int]]:
    """``[(env frame, lan frame), ...]``: ``cross`` = all ``n_env x n_lan`` pairs (ENV-major);
    ``diagonal`` = ``(k % n_env, k % n_lan)`` for ``k < max(n_env, n_lan)``."""
    if pairing == "cross":
        return [(e, l_) for e in range(n_env) for l_ in range(n_lan)]
    if pairing == "diagonal":
        return [(k % n_env, k % n_lan) for k in range(max(n_env, n_lan))]
    raise InputError(f"unknown pairing {pairing!r} (known: cross, diagonal)")


class ChildesAdapter(Adapter):
    name = "childes"

    @dataclass
    class Options(Adapter.Options):
        runs: tuple = ()  #: run folders written by ``vlground train``
        templates: str | None = None  #: templates JSON (None: the bundled English frames)
        min_env: int = 3  #: a target needs at least this many ``w<ENV>`` in the corpus
        min_lan: int = 3  #: ... and this many ``w<LAN>``
        limit: int | None = None  #: at most this many targets (the most frequent)
        directions: tuple = ("env2lan", "lan2env")  #: probe directions
        pairing: str = "cross"  #: frame pairs: ``cross`` (every ENV frame x every LAN frame) or ``diagonal`` (ENV i with LAN i)

    def __init__(self, options=None):
        super().__init__(options)
        if not self.options.runs:
            raise InputError("adapter childes: give at least one --run folder")
        if self.options.pairing not in ("cross", "diagonal"):
            raise InputError(f"adapter childes: unknown pairing {self.options.pairing!r} (known: cross, diagonal)")
        self._templates = Templates.load(self.options.templates)
        self._notes: list[str] = []
        self._items: dict[str, tuple[list[ProbeItem], dict[str, list[int]], dict[str, int]]] = {}

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoints(self) -> list[Checkpoint]:
        from vlground.train.checkpoint import list_checkpoints

        from vlground.runid import run_names, unique_paths

        out = []
        runs = unique_paths(self.options.runs, "--run")
        for run, name in zip(runs, run_names(runs)):  # distinct names: vlground.runid
            info = self._run_info(run)
            ckpts = list_checkpoints(run)
            if not ckpts:
                raise InputError(f"{run}: no complete checkpoints under {run / 'checkpoints'}")
            group = run_group_of(info)
            out.extend(Checkpoint(run=name, path=str(p), seed=info.get("seed"), step=int(s), group=group) for s, p in ckpts)
        return out

    @staticmethod
    @lru_cache(maxsize=None)
    def _run_info_cached(run: str) -> dict:
        f = Path(run) / "run.json"
        if not f.is_file():
            raise InputError(f"{run}: not a vlground training run (no run.json)")
        try:
            info = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{f}: corrupt ({exc})") from None
        if not isinstance(info, dict):
            raise InputError(f"{f}: corrupt (a JSON {type(info).__name__}, not an object)")
        return info

    def _run_info(self, run: Path) -> dict:
        return self._run_info_cached(str(run))

    @staticmethod
    @lru_cache(maxsize=8)
    def _corpus(path: str) -> Corpus:
        return Corpus.load(path)

    def load(self, ckpt: Checkpoint) -> LoadedModel:
        from vlground import load_checkpoint

        run = Path(ckpt.path).parent.parent
        info = self._run_info(run)
        try:
            model, tok = load_checkpoint(ckpt.path)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure means a corrupt checkpoint
            raise InputError(f"{ckpt.path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None
        device = resolve_device(self.options.device)
        model.to(device).eval()
        corpus_path = info.get("corpus")
        corpus = self._corpus(str(corpus_path)) if corpus_path and Path(corpus_path).is_dir() else None
        order_f = run / "order.npy"
        order = np.load(order_f, mmap_mode="r") if order_f.is_file() else None
        return LoadedModel(
            checkpoint=ckpt, model=model, tokenizer=tok, device=device,
            extra={"corpus": corpus, "order": order, "batch_size": info.get("batch_size") or info.get("train", {}).get("batch_size"), "run_dir": str(run)},
        )

    # -- items ----------------------------------------------------------------------------------
    def items(self, loaded: LoadedModel) -> list[ProbeItem]:
        vocab = loaded.tokenizer.get_vocab()
        key = str(loaded.extra.get("run_dir"))
        if key not in self._items:
            self._items[key] = self._make_items(vocab, loaded.extra.get("corpus"))
        return self._items[key][0]

    def _make_items(self, vocab: dict[str, int], corpus: Corpus | None):
        t = self._templates
        env_frames, lan_frames, missing = [], [], []
        for frames, form, keep in ((t.env, env_token, env_frames), (t.lan, lan_token, lan_frames)):
            for f in frames:
                miss = _frame_missing(f, vocab, form)
                if miss:
                    missing.extend(miss)
                    self._notes.append(f"frame {f.speaker}: {' '.join(f.words)!r} left out: not in the vocabulary: {', '.join(miss)}")
                else:
                    keep.append(f)
        if missing and t.source != "default":
            raise InputError(f"{t.source}: words not in the vocabulary: {', '.join(sorted(set(missing)))}")
        if not env_frames or not lan_frames:
            raise InputError(f"{t.source}: no usable {'env' if not env_frames else 'lan'} frame for this vocabulary ({', '.join(sorted(set(missing)))} missing)")
        targets = self._targets(vocab, corpus)
        items: list[ProbeItem] = []
        seqs: dict[str, list[int]] = {}
        env_pos: dict[str, int] = {}
        n = len(targets)
        for k, (ei, li) in enumerate(frame_pairs(len(env_frames), len(lan_frames), self.options.pairing)):
            ef, lf = env_frames[ei], lan_frames[li]
            shift = 1 + k % (n - 1)
            for i, w in enumerate(targets):
                d = targets[(i + shift) % n]
                for direction in self.options.directions:
                    pid = f"{direction}/{k}/{w}"
                    for cond, ew in (("match", w), ("mismatch", d)):
                        iid = f"{pid}/{cond}"
                        ids, pos, span = self._sequence(vocab, ef, lf, ew, direction)
                        target = vocab[lan_token(w)] if direction == "env2lan" else vocab[env_token(w)]
                        seqs[iid] = ids + [target]
                        env_pos[iid] = pos
                        items.append(ProbeItem(iid, pid, w, cond, direction, env_word=ew, template=k,
                                               meta={"span": span, "env_frame": ei, "lan_frame": li}))
        return items, seqs, env_pos

    def _targets(self, vocab: dict[str, int], corpus: Corpus | None) -> list[str]:
        t = self._templates
        counts = corpus.token_counts if corpus is not None else None
        pairs = [w for w in {tok[: -len("<ENV>")] for tok in vocab if tok.endswith("<ENV>")} if lan_token(w) in vocab]
        if t.targets is not None:
            unknown = [w for w in t.targets if w not in pairs]
            if unknown:
                raise InputError(f"{t.source}: targets without both forms in the vocabulary: {', '.join(unknown)}")
            chosen = list(t.targets)
        else:
            frame_words = {w for f in t.env + t.lan for w in f.words}
            chosen = [w for w in pairs if w not in frame_words]
            if counts is not None:
                chosen = [w for w in chosen if counts[vocab[env_token(w)]] >= self.options.min_env and counts[vocab[lan_token(w)]] >= self.options.min_lan]
                chosen.sort(key=lambda w: (-int(counts[vocab[env_token(w)]]) - int(counts[vocab[lan_token(w)]]), w))
            if self.options.limit is not None:
                chosen = chosen[: self.options.limit]
        chosen = sorted(chosen)
        if len(chosen) < 2:
            raise InputError(f"need at least 2 targets seen >= {self.options.min_env} times as ENV and >= {self.options.min_lan} as LAN; found {len(chosen)}")
        return chosen

    @staticmethod
    def _sequence(vocab, ef: Frame, lf: Frame, word: str, direction: str) -> tuple[list[int], int, tuple[int, int]]:
        """Token ids of the context, the environment token's position and the environment span."""
        if direction == "env2lan":
            env = [vocab[speaker_token(ef.speaker)]] + [vocab[env_token(word if w == "{}" else w)] for w in ef.words]
            lan = [vocab[speaker_token(lf.speaker)]] + [vocab[lan_token(w)] for w in lf.words[:-1]]
            return env + lan, 1 + ef.slot, (0, len(env))
        lan = [vocab[speaker_token(lf.speaker)]] + [vocab[lan_token(word if w == "{}" else w)] for w in lf.words]
        env = [vocab[speaker_token(ef.speaker)]] + [vocab[env_token(w)] for w in ef.words[: ef.slot]]
        return lan + env, len(lan) - 1, (0, len(lan))

    def batch(self, loaded: LoadedModel, items: list[ProbeItem]) -> ProbeBatch:
        _, seqs, env_pos = self._items[str(loaded.extra.get("run_dir"))]
        pad = loaded.tokenizer.pad_token_id or 0
        S = max(len(seqs[it.item_id]) - 1 for it in items)
        ids = torch.full((len(items), S), pad, dtype=torch.long)
        mask = torch.zeros((len(items), S), dtype=torch.long)
        env = torch.zeros((len(items), S), dtype=torch.bool)
        span = torch.zeros((len(items), S), dtype=torch.bool)
        tgt = torch.empty((len(items), 1), dtype=torch.long)
        pos = torch.empty((len(items), 1), dtype=torch.long)
        for b, it in enumerate(items):
            seq = seqs[it.item_id]
            ids[b, : len(seq) - 1] = torch.tensor(seq[:-1])
            mask[b, : len(seq) - 1] = 1
            env[b, env_pos[it.item_id]] = True
            lo, hi = it.meta["span"]
            span[b, lo:hi] = True
            tgt[b, 0] = seq[-1]
            pos[b, 0] = len(seq) - 2
        return ProbeBatch(list(items), {"input_ids": ids, "attention_mask": mask}, tgt, pos, env, span)

    # -- capabilities -------------------------------------------------------------------------------
    def capabilities(self, loaded: LoadedModel) -> frozenset[Capability]:
        caps = {Capability.TRAJECTORY, Capability.HIDDEN_STATES}
        if loaded.extra.get("corpus") is not None and loaded.extra.get("order") is not None:
            caps.add(Capability.COOCCURRENCE)
        if self._has_attention(loaded):
            caps.add(Capability.ATTENTION)
        return frozenset(caps)

    def _has_attention(self, loaded: LoadedModel) -> bool:
        """Whether the model has attention sites. Only "no sites known for this model type" (an
        LSTM, a pure Mamba-2) means no; any other error is a real problem and propagates, instead
        of silently turning the attention probes off."""
        from vlground.mechanism.errors import MechanismError
        from vlground.mechanism.sites import has_attention_sites

        try:
            return bool(self.attention_site(loaded).layers)
        except MechanismError:
            if has_attention_sites(loaded.model):
                raise
            return False

    def unembed(self, loaded: LoadedModel):
        from vlground.mechanism.unembed import resolve_unembedding

        return resolve_unembedding(loaded.model)

    def cooccurrence(self, loaded: LoadedModel, words: list[str]) -> dict[str, int] | None:
        corpus, order, bs = loaded.extra.get("corpus"), loaded.extra.get("order"), loaded.extra.get("batch_size")
        if corpus is None or order is None or not bs:
            return None
        # the corpus's one definition (vlground.datasets.cooc): a word that does not count
        # (closed-class, or not in --cooc-words) has no co-occurrence, like a word with one form
        counts = corpus.cumulative_cooc(order, int(loaded.checkpoint.step) * int(bs))
        index = {p["word"]: i for i, p in enumerate(corpus.pairs)}
        return {w: int(counts[index[w]]) if w in index else 0 for w in words}

    def lens_batches(self, loaded: LoadedModel, n_tokens: int = 250_000, batch_size: int = 8):
        """Held-out chunks as ``{"input_ids", "attention_mask"}`` batches of ``batch_size`` whole chunks:
        the run's validation chunks in order until they hold ``n_tokens`` non-padding tokens, or all
        of them (fewer tokens; logged).  None without the corpus or without a validation split (a
        lens fit on training chunks would not be held out)."""
        corpus = loaded.extra.get("corpus")
        split_f = Path(loaded.extra["run_dir"]) / "split.json"
        held = json.loads(split_f.read_text()).get("val", []) if split_f.is_file() else []
        if corpus is None or not held:
            return None
        pad = loaded.tokenizer.pad_token_id or 0
        chunks = np.asarray(corpus.chunks[np.asarray(held, dtype=np.int64)], dtype=np.int64)
        counts = np.cumsum((chunks != pad).sum(1))
        take = int(np.searchsorted(counts, n_tokens) + 1) if counts[-1] >= n_tokens else len(held)
        if counts[-1] < n_tokens:
            log.info("lens: the held-out split has %d tokens (< lens_tokens %d); using all of it", counts[-1], n_tokens)
        ids = torch.from_numpy(chunks[:take])
        mask = (ids != pad).long()
        return [{"input_ids": ids[i : i + batch_size], "attention_mask": mask[i : i + batch_size]} for i in range(0, take, batch_size)]

    def skipped(self) -> list[str]:
        return list(dict.fromkeys(self._notes))

    def settings(self) -> dict:
        s = super().settings()
        s["runs"] = [str(Path(r).resolve()) for r in self.options.runs]
        s["templates"] = {"env": [" ".join(f.words) for f in self._templates.env], "lan": [" ".join(f.words) for f in self._templates.lan], "source": self._templates.source}
        return s
