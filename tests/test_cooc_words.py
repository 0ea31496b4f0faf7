"""The counted words of co-occurrence (vlground.datasets.cooc): corpora built from CHAT text in
which no acted-on object is named have no co-occurring chunk although function words appear in
both forms; ``--drop-cooc`` halves the counted share; ``%mor`` tags and ``--cooc-words`` choose
the words; the R² regression's cumulative counts and ``train --drop-cooc`` read the same mask."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlground.cli import main
from vlground.corpus.format import Corpus
from vlground.datasets.childes_corpus import BuildCorpusConfig, build_corpus
from vlground.datasets.cooc import (FUNCTION_WORDS, RULE_FILE, RULE_LIST, RULE_MOR, cooc_chunk_mask, counted_words,
                                    mor_pos, mor_tags, read_cooc_words)
from vlground.errors import InputError

HEAD = (
    "@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child, MOT Mother\n"
    "@ID:\teng|test|CHI|2;00.||||Target_Child|||\n@ID:\teng|test|MOT|||||Mother|||\n"
)
OBJECTS = ["ball", "cup", "dog", "book", "shoe", "duck"]
ACTS = ["picks up the {o}", "gives the {o} to MOT", "puts the {o} in the box", "looks at the {o}", "hands the {o} to CHI"]
SPEECH = ["look at the sky", "do you want to go up", "it's time to eat", "the end", "put it up there"]


def _transcript(i: int, named: bool, n_utt: int = 40) -> str:
    """``%act`` on objects in every other utterance; speech with ``the``, ``up``, ``to``, ``at``; the
    acted-on object is named in speech only when ``named`` (then in every fourth utterance)."""
    lines = [HEAD]
    for u in range(n_utt):
        o = OBJECTS[(i + u) % len(OBJECTS)]
        spk = "CHI" if u % 3 else "MOT"
        if named and u % 4 == 0:
            lines.append(f"*{spk}:\tlook at the {o} .\n%act:\t{ACTS[(u // 2) % len(ACTS)].format(o=o)}\n")
        elif u % 2 == 0:
            lines.append(f"*{spk}:\t{SPEECH[u % len(SPEECH)]} .\n%act:\t{ACTS[(u // 2) % len(ACTS)].format(o=o)}\n")
        else:
            lines.append(f"*{spk}:\t{SPEECH[(u + i) % len(SPEECH)]} .\n")
    lines.append("@End\n")
    return "".join(lines)


def _chat(d: Path, n_files: int, named) -> Path:
    d.mkdir()
    for i in range(n_files):
        (d / f"t{i:02d}.cha").write_text(_transcript(i, named(i)), encoding="utf-8")
    return d


def _build(inp, out, **kw) -> Corpus:
    build_corpus(BuildCorpusConfig(inputs=[str(inp)], out=str(out), progress=False, **kw))
    return Corpus.load(out)


def test_no_object_named_no_cooccurrence(tmp_path: Path):
    c = _build(_chat(tmp_path / "chat", 12, lambda i: False), tmp_path / "c", chunk_len=32)
    words = {p["word"] for p in c.pairs}
    assert {"the", "up", "to", "at"} <= words  # function words have both forms in the same chunks ...
    st = c.stats
    assert st["cooc_chunks_all_words"] > 0.8 * st["chunks"]  # ... and the all-words figure says "everywhere"
    assert st["cooc_chunks"] == 0 and st["cooc_chunks_kept"] == 0  # no counted word co-occurs
    assert not c.cooc_chunk_mask().any() and c.cooc_chunk_mask(all_words=True).sum() == st["cooc_chunks_all_words"]
    saved = json.loads((c.path / "cooc_words.json").read_text())
    assert saved["rule"] == RULE_LIST and not set(saved["words"]) & FUNCTION_WORDS
    assert {saved["not_counted"][w] for w in ("the", "up", "to", "at")} == {"function word"}
    assert {p["word"]: p["counted"] for p in c.pairs}["up"] is False
    # the R² regression's counts: a function word has none, whatever the chunks hold
    order = np.arange(c.n_chunks)
    assert c.cumulative_cooc(order, c.n_chunks).sum() == 0
    # nothing to drop
    d = _build(tmp_path / "chat", tmp_path / "d", chunk_len=32, drop_cooc=0.5)
    assert d.stats["dropped_chunks"] == [] and d.n_chunks == c.n_chunks


def test_drop_cooc_half_halves_the_counted_share(tmp_path: Path):
    chat = _chat(tmp_path / "chat", 24, lambda i: i % 2 == 0)  # half the files name their objects
    full = _build(chat, tmp_path / "full", chunk_len=32)
    n, k = full.stats["chunks"], full.stats["cooc_chunks"]
    assert 0 < k < n and full.stats["cooc_chunks_all_words"] > k
    half = _build(chat, tmp_path / "half", chunk_len=32, drop_cooc=0.5, seed=1)
    dropped = half.stats["dropped_chunks"]
    assert len(dropped) == round(0.5 * k)
    assert full.cooc_chunk_mask()[dropped].all()  # only chunks with a counted pair are dropped
    assert half.stats["cooc_chunks_kept"] == k - len(dropped) == half.cooc_chunk_mask().sum()
    # the counted co-occurring chunks halve (within rounding): a function-word drop would not
    assert abs(half.stats["cooc_chunks_kept"] - k / 2) <= 0.5
    # cumulative per-word counts over all kept chunks = per-word counts of the kept rows
    per_word = half.cumulative_cooc(np.arange(half.n_chunks), half.n_chunks)
    expect = np.asarray(half.cooc.sum(0)).ravel() * half.counted_pairs
    assert per_word.tolist() == expect.tolist() and per_word.sum() > 0


def test_mor_tags_choose_the_counted_words(tmp_path: Path):
    # "zork" is no function word; %mor tags it a preposition, "blick" a noun
    body = ""
    for _ in range(6):
        body += "*MOT:\tzork the blick .\n%mor:\tprep|zork det:art|the n|blick .\n%act:\tputs zork blick the box\n"
    d = tmp_path / "chat"
    d.mkdir()
    (d / "a.cha").write_text(HEAD + body + "@End\n", encoding="utf-8")
    c = _build(d, tmp_path / "c", chunk_len=16)
    saved = json.loads((c.path / "cooc_words.json").read_text())
    assert saved["rule"] == RULE_MOR and saved["words"] == ["blick"]
    assert saved["not_counted"] == {"the": "function word", "zork": "%mor prep"}
    # without the tags "zork" counts (the list does not know it)
    assert counted_words(["blick", "the", "zork"]).words == ("blick", "zork")


def test_cooc_words_file_replaces_the_rule(tmp_path: Path):
    chat = _chat(tmp_path / "chat", 6, lambda i: True)
    f = tmp_path / "targets.txt"
    f.write_text("# targets\nBall\n\ncup  # a comment\nnotaword\n", encoding="utf-8")
    c = _build(chat, tmp_path / "c", chunk_len=32, cooc_words=str(f))
    saved = json.loads((c.path / "cooc_words.json").read_text())
    assert saved["rule"] == RULE_FILE and saved["words"] == ["ball", "cup"] and saved["source"] == str(f)
    by_word = dict(zip((p["word"] for p in c.pairs), c.counted_pairs))
    assert by_word["ball"] and by_word["cup"] and not by_word["dog"]
    cols = [i for i, p in enumerate(c.pairs) if p["word"] in ("ball", "cup")]
    assert c.stats["cooc_chunks"] == int((np.asarray(c.cooc[:, cols].sum(1)).ravel() > 0).sum())
    assert read_cooc_words(_write(tmp_path / "j.json", '["Ball", "cup"]')) == ["ball", "cup"]


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("text, msg", [("", "no word"), ("two words\n", "not one word"), ('["a", 1]', "only strings"),
                                       ("[oops", "not a JSON list")])
def test_bad_cooc_words_file_one_line_before_anything_is_written(tmp_path: Path, capsys, text, msg):
    chat = _chat(tmp_path / "chat", 2, lambda i: True)
    f = _write(tmp_path / "w.txt", text)
    assert main(["build-corpus", str(chat), "--out", str(tmp_path / "c"), "--cooc-words", str(f), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlground: error: ") and msg in err[0] and str(f) in err[0]
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="no such file"):
        read_cooc_words(tmp_path / "missing.txt")


def test_mor_parsing():
    assert [mor_pos(x) for x in ("det:art|the", "pro:sub|it~cop|be&3S", "un#adj|happy", "n|+n|teddy+n|bear", "$n|x")] == [
        "det", "pro", "adj", "n", "n"]
    assert mor_tags(["it's", "a", "ball"], "pro|it~cop|be&3S det:art|a n|ball .") == [
        ("it's", "pro"), ("a", "det"), ("ball", "n")]
    assert mor_tags(["a", "ball"], "n|ball .") == []  # misaligned: no tag rather than a shifted one
    assert mor_tags(["ball", "cup"], "n|ball cm|cm n|cup ?") == [("ball", "n"), ("cup", "n")]


def test_mask_none_is_all_words_and_shape_checked():
    import scipy.sparse

    m = scipy.sparse.csr_matrix(np.array([[1, 0], [0, 1], [0, 0]], dtype=bool))
    assert cooc_chunk_mask(m).tolist() == [True, True, False]
    assert cooc_chunk_mask(m, np.array([False, True])).tolist() == [False, True, False]
    with pytest.raises(ValueError):
        cooc_chunk_mask(m, np.array([True]))


def test_train_drop_cooc_uses_the_counted_words(tmp_path: Path):
    """``train --drop-cooc`` draws from the chunks with a co-occurring counted word, never from chunks
    whose only co-occurring pairs are function words."""
    from vlground.train import TrainConfig, train

    c = _build(_chat(tmp_path / "chat", 24, lambda i: i % 2 == 0), tmp_path / "c", chunk_len=32)
    counted, all_words = c.cooc_chunk_mask(), c.cooc_chunk_mask(all_words=True)
    assert (all_words & ~counted).sum() > 10  # many chunks co-occur only through function words
    run = train(TrainConfig(corpus=str(c.path), out=str(tmp_path / "run"), size="tiny", seed=0, progress=False,
                            overrides={"steps": 1, "batch_size": 2, "checkpoint_every": 0, "checkpoint_dense_until": 0,
                                       "drop_cooc": 0.5}))
    split = json.loads((run / "split.json").read_text())
    val = set(split["val"])
    train_counted = [i for i in range(c.n_chunks) if counted[i] and i not in val]
    assert split["dropped"] and counted[split["dropped"]].all()
    assert len(split["dropped"]) == round(0.5 * len(train_counted))
