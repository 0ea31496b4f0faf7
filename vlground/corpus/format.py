"""The on-disk corpus format: the contract between ``build-corpus``, ``train`` and ``probe``.

A corpus is a folder::

    corpus.json          metadata: format, kind, chunk_len, n_chunks, options used (drop_cooc, seed, inputs)
    chunks.npy           int32 [n_chunks, chunk_len], memory-mapped on load; the tail chunk is
                         right-padded with the ``<pad>`` id (trainers mask pad labels)
    chunk_source.npy     int32 [n_chunks]: index into sources.json of the file the chunk starts in
    sources.json         list of input file names (``archive.zip!Eng-NA/x.cha`` inside zips)
    vocab.json           token -> id; words spelled ``word<ENV>`` / ``word<LAN>``, speakers ``<CHI>``
    tokenizer.json (+ tokenizer_config.json, special_tokens_map.json)
                         the same vocabulary as a Hugging Face ``PreTrainedTokenizerFast``
    pairs.json           list of words that have both forms: {"word", "env_id", "lan_id", "counted"};
                         the position in this list is the *pair index*; ``counted``: the word's
                         co-occurrence counts (``vlground.datasets.cooc``; absent in older corpora)
    cooc_words.json      (CHAT corpora) how the counted words were chosen, the list, and why each
                         other pair does not count
    cooc.npz             scipy.sparse CSR bool [n_chunks, n_pairs]: pair p co-occurs in chunk c
                         (both ``w<ENV>`` and ``w<LAN>`` are in the chunk), every pair
    token_counts.npy     int64 [vocab_size]: occurrences of each id in the kept chunks
    stats.json           counts and skipped files/utterances with reasons
    dropped_chunks.npy   (only with --drop-cooc) int64: indices, in the numbering before the drop,
                         of the chunks removed

Writers build the folder under a temporary sibling name and rename it into place
(:func:`atomic_dir`), so a crash never leaves a half-written corpus under the final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vlground.errors import InputError

FORMAT = "vlground-corpus/1"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
ENV, LAN = "<ENV>", "<LAN>"


def env_token(word: str) -> str:
    return f"{word}{ENV}"


def lan_token(word: str) -> str:
    return f"{word}{LAN}"


def speaker_token(code: str) -> str:
    return f"<{code}>"


def check_build_options(chunk_len: int, min_count: int, drop_cooc: float, seed: int = 0) -> None:
    """One-line errors for the options every corpus builder shares."""
    if seed < 0:
        raise InputError(f"--seed {seed}: must be 0 or more")
    if chunk_len < 2:
        raise InputError(f"--chunk-len {chunk_len}: must be at least 2")
    if min_count < 1:
        raise InputError(f"--min-count {min_count}: must be at least 1")
    if not 0.0 <= drop_cooc <= 1.0:
        raise InputError(f"--drop-cooc {drop_cooc}: must be between 0 and 1")


def is_corpus_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` carries the corpus marker: a ``corpus.json`` of this :data:`FORMAT`."""
    try:
        meta = json.loads((Path(path) / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or lies inside it (both resolved)."""
    return a == b or b in a.parents


def check_out(out: str | os.PathLike, inputs, *, overwrite: bool, marker=is_corpus_folder,
              kind: str = "corpus", option: str = "--out") -> None:
    """One-line errors, before anything is read or written, for an ``out`` folder that

    * is or contains one of ``inputs`` (files or folders), or lies inside an input folder: no
      command writes into one of its input folders, and ``--overwrite`` can never delete an input;
    * exists without ``overwrite``, or exists without vlground's marker of this output kind
      (``marker(out)``; :func:`is_corpus_folder` for a corpus) with ``overwrite``: ``--overwrite``
      replaces only what vlground wrote.
    """
    from vlground.folders import check_output

    inputs = list(inputs)
    check_output(out, "corpus", inputs, overwrite=overwrite, option=option)  # kinds, nesting, inputs
    out_r = Path(out).resolve()
    for raw in inputs:
        if raw is None:
            continue
        inp = Path(raw).resolve()
        if _within(inp, out_r) or (inp.is_dir() and _within(out_r, inp)):
            raise InputError(f"{out}: {option} is or holds the input {raw} (no command writes into its input "
                             f"folders); choose another {option}")
    final = Path(out)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise InputError(f"{final}: already exists (choose another {option} or pass --overwrite)")
        if final.is_symlink() or not final.is_dir() or not marker(final):
            raise InputError(f"{final}: not a vlground {kind} folder, so --overwrite will not delete it; "
                             f"choose another {option}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(final: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>[-.]*`` / ``.<name>.old-<pid>`` folders and files beside ``final``
    left by a killed process (its pid no longer runs); returns the ones removed."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for p in final.parent.glob(f".{glob_escape(final.name)}.*-*"):
        rest = p.name[len(final.name) + 2:]
        kind, _, tail = rest.partition("-")
        m = re.match(r"(\d+)(?:[-.]|$)", tail)
        pid = int(m.group(1)) if m else None
        if kind in ("tmp", "old") and pid is not None and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, marker=None, kind: str = "corpus") -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success rename it to ``final``.

    On an exception (Ctrl-C included) the temporary folder is removed and ``final`` is left as
    it was. With ``overwrite`` an existing ``final`` is replaced only after the new one is
    complete, and only when ``marker(final)`` says vlground wrote it (no check when ``marker`` is
    None: internal folders such as a checkpoint). Temporary folders of killed earlier runs are
    removed first (:func:`clean_stale_temps`).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise InputError(f"{final}: already exists (choose another --out or pass --overwrite)")
    if final.exists() and marker is not None and not marker(final):
        raise InputError(f"{final}: not a vlground {kind} folder, so --overwrite will not delete it; choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{os.getpid()}-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if final.exists():
            if not overwrite or (marker is not None and not marker(final)):  # appeared meanwhile
                raise InputError(f"{final}: appeared while this was being built (another build?); "
                                 "nothing replaced, choose another --out or run again")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename; the temporary file is removed on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Corpus:
    """A corpus folder opened for reading (arrays are memory-mapped)."""

    path: Path
    meta: dict = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Corpus":
        path = Path(path)
        meta_file = path / "corpus.json"
        if not path.is_dir():
            raise InputError(f"{path}: no such corpus folder")
        if not meta_file.is_file():
            raise InputError(f"{path}: not a vlground corpus (no corpus.json)")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{meta_file}: corrupt ({exc})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{meta_file}: corrupt (a JSON {type(meta).__name__}, not an object)")
        if meta.get("format") != FORMAT:
            raise InputError(f"{meta_file}: unknown format {meta.get('format')!r} (expected {FORMAT})")
        corpus = cls(path=path, meta=meta)
        chunks = corpus.chunks  # validates shape
        if chunks.shape != (meta["n_chunks"], meta["chunk_len"]):
            raise InputError(
                f"{path / 'chunks.npy'}: shape {chunks.shape} does not match corpus.json "
                f"({meta['n_chunks']} x {meta['chunk_len']})"
            )
        return corpus

    # -- arrays -----------------------------------------------------------------------------
    def _npy(self, name: str, mmap: bool = True) -> np.ndarray:
        f = self.path / name
        try:
            return np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"{f}: missing") from None
        except (ValueError, OSError) as exc:
            raise InputError(f"{f}: corrupt ({exc})") from None

    @cached_property
    def chunks(self) -> np.ndarray:
        """int32 [n_chunks, chunk_len], memory-mapped."""
        return self._npy("chunks.npy")

    @cached_property
    def chunk_source(self) -> np.ndarray:
        return self._npy("chunk_source.npy", mmap=False)

    @cached_property
    def token_counts(self) -> np.ndarray:
        return self._npy("token_counts.npy", mmap=False)

    @cached_property
    def cooc(self):
        """scipy.sparse CSR bool [n_chunks, n_pairs]."""
        import scipy.sparse

        f = self.path / "cooc.npz"
        try:
            return scipy.sparse.load_npz(f).tocsr()
        except FileNotFoundError:
            raise InputError(f"{f}: missing") from None
        except (ValueError, OSError) as exc:
            raise InputError(f"{f}: corrupt ({exc})") from None

    # -- json -------------------------------------------------------------------------------
    def _json(self, name: str):
        f = self.path / name
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{f}: missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{f}: corrupt ({exc})") from None

    @cached_property
    def vocab(self) -> dict[str, int]:
        return self._json("vocab.json")

    @cached_property
    def id_to_token(self) -> list[str]:
        out = [""] * len(self.vocab)
        for tok, i in self.vocab.items():
            out[i] = tok
        return out

    @cached_property
    def pairs(self) -> list[dict]:
        return self._json("pairs.json")

    @cached_property
    def stats(self) -> dict:
        return self._json("stats.json")

    @cached_property
    def sources(self) -> list[str]:
        return self._json("sources.json")

    @property
    def chunk_len(self) -> int:
        return int(self.meta["chunk_len"])

    @property
    def n_chunks(self) -> int:
        return int(self.meta["n_chunks"])

    @property
    def pad_id(self) -> int:
        return self.vocab["<pad>"]

    def tokenizer(self):
        """The vocabulary as a ``transformers.PreTrainedTokenizerFast``."""
        from transformers import PreTrainedTokenizerFast

        if not (self.path / "tokenizer.json").is_file():
            raise InputError(f"{self.path / 'tokenizer.json'}: missing")
        return PreTrainedTokenizerFast.from_pretrained(str(self.path))

    @cached_property
    def counted_pairs(self) -> np.ndarray:
        """bool [n_pairs]: the pairs whose co-occurrence counts (``vlground.datasets.cooc``).

        From ``pairs.json``'s ``counted``; a corpus written before it existed gets the default
        rule (the function-word list) for CHAT corpora, every pair for the others (their pairs
        are object categories)."""
        if all("counted" in p for p in self.pairs):
            return np.array([bool(p["counted"]) for p in self.pairs], dtype=bool)
        if self.meta.get("kind", "childes") != "childes":
            return np.ones(len(self.pairs), dtype=bool)
        from vlground.datasets.cooc import counted_words

        rule = counted_words(p["word"] for p in self.pairs)
        return rule.mask(p["word"] for p in self.pairs)

    def cooc_chunk_mask(self, all_words: bool = False) -> np.ndarray:
        """bool [n_chunks]: chunk ``c`` holds a co-occurring pair of counted words (of any pair
        with ``all_words``); the definition of ``vlground.datasets.cooc.cooc_chunk_mask``."""
        from vlground.datasets.cooc import cooc_chunk_mask

        return cooc_chunk_mask(self.cooc, None if all_words else self.counted_pairs)

    def check_complete(self) -> None:
        """InputError naming the first file a trainer or a probe needs that is missing or
        unreadable (vocab, pairs, co-occurrence, tokenizer), so ``train`` fails before it starts,
        not at probing."""
        _ = self.vocab, self.pairs, self.cooc
        try:
            tok = self.tokenizer()
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own exception types
            raise InputError(f"{self.path / 'tokenizer.json'}: corrupt ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
        if len(tok) != len(self.vocab):
            raise InputError(f"{self.path / 'tokenizer.json'}: {len(tok)} tokens, but vocab.json has {len(self.vocab)}")

    def cumulative_cooc(self, order: np.ndarray, n_seen: int) -> np.ndarray:
        """int64 [n_pairs]: chunks holding each counted pair among the first ``n_seen`` of ``order``
        (0 for a pair that does not count: a closed-class word has no co-occurrence).

        ``order`` is the sequence of chunk indices a training run showed (``RUN/order.npy``); a
        run at step ``s`` with batch size ``B`` has seen ``n_seen = s * B`` chunks.
        """
        seen = np.asarray(order[: int(n_seen)], dtype=np.int64)
        if seen.size == 0:
            return np.zeros(len(self.pairs), dtype=np.int64)
        counts = np.bincount(seen, minlength=self.n_chunks)  # a chunk seen twice counts twice
        out = np.asarray(self.cooc.T.astype(np.int64) @ counts, dtype=np.int64).ravel()
        out[~self.counted_pairs] = 0
        return out
