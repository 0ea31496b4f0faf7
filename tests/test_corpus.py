"""build-corpus: exact tokens and co-occurrence on a hand-written transcript, drop-cooc,
tokenizer round trips, vocabulary options, bad input, atomic output, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlground.cli import main
from vlground.corpus.format import Corpus
from vlground.datasets import childes_corpus
from vlground.datasets.chat_generator import generate_transcripts
from vlground.datasets.childes_corpus import BuildCorpusConfig, build_corpus
from vlground.datasets.childes_text import act_words, utterance_tokens
from vlground.errors import InputError

HEAD = (
    "@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child, MOT Mother\n"
    "@ID:\teng|test|CHI|2;00.||||Target_Child|||\n@ID:\teng|test|MOT|||||Mother|||\n"
)
# line 9 has an undeclared speaker: the reader skips that utterance (E308)
A_CHA = HEAD + (
    "*CHI:\tball .\n%act:\tpicks up ball\n*XYZ:\thello .\n*MOT:\tnice dog .\n"
    "*MOT:\t0 .\n%act:\tholds dog\n*CHI:\tcup cup .\n@End\n"
)
B_CHA = HEAD + "*MOT:\tlook at the cup .\n%act:\tgives CHI the cup\n@End\n"

# The stream, by hand (chunk_len 8):
#  a.cha  0 <bos>  1 <CHI> 2 picks<ENV> 3 up<ENV> 4 ball<ENV> 5 <CHI> 6 ball<LAN> 7 <MOT>
#         8 nice<LAN> 9 dog<LAN> 10 <MOT> 11 holds<ENV> 12 dog<ENV> 13 <CHI> 14 cup<LAN> 15 cup<LAN>
#        16 <eos>
#  b.cha 17 <bos> 18 <MOT> 19 gives<ENV> 20 chi<ENV> 21 the<ENV> 22 cup<ENV> 23 <MOT>
#        24 look<LAN> 25 at<LAN> 26 the<LAN> 27 cup<LAN> 28 <eos>  (29-31 <pad>)
EXPECTED_TOKENS = [
    "<bos> <CHI> picks<ENV> up<ENV> ball<ENV> <CHI> ball<LAN> <MOT>",
    "nice<LAN> dog<LAN> <MOT> holds<ENV> dog<ENV> <CHI> cup<LAN> cup<LAN>",
    "<eos> <bos> <MOT> gives<ENV> chi<ENV> the<ENV> cup<ENV> <MOT>",
    "look<LAN> at<LAN> the<LAN> cup<LAN> <eos> <pad> <pad> <pad>",
]
# pairs (both forms in the vocabulary), alphabetical: ball, cup, dog, the
EXPECTED_COOC = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


@pytest.fixture()
def small_chat(tmp_path: Path) -> Path:
    d = tmp_path / "chat"
    d.mkdir()
    (d / "a.cha").write_text(A_CHA, encoding="utf-8")
    (d / "b.cha").write_text(B_CHA, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    generate_transcripts(d, n_files=6, seed=3, utterances_per_file=80)
    return d


def _build(inputs, out, **kw) -> Corpus:
    build_corpus(BuildCorpusConfig(inputs=[str(i) for i in inputs], out=str(out), progress=False, **kw))
    return Corpus.load(out)


def test_act_words_drop_chat_codes():
    assert act_words("<bef> Picks up the BALL [% softly] &=laughs xxx teddy-bear@b 0 \x1512_34\x15 don't.") == [
        "picks", "up", "the", "ball", "teddy", "bear", "don't",
    ]
    assert act_words(None) == [] and act_words("0") == []
    assert utterance_tokens("CHI", ["my", "horse"], "painted a horse") == [
        "<CHI>", "painted<ENV>", "a<ENV>", "horse<ENV>", "<CHI>", "my<LAN>", "horse<LAN>",
    ]
    assert utterance_tokens("MOT", [], "holds dog") == ["<MOT>", "holds<ENV>", "dog<ENV>"]


def test_exact_chunks_and_cooccurrence(small_chat: Path, tmp_path: Path):
    c = _build([small_chat], tmp_path / "corpus", chunk_len=8)
    assert c.chunks.shape == (4, 8)
    assert [" ".join(c.id_to_token[i] for i in row) for row in c.chunks] == EXPECTED_TOKENS
    assert [p["word"] for p in c.pairs] == ["ball", "cup", "dog", "the"]
    for p in c.pairs:
        assert c.id_to_token[p["env_id"]] == p["word"] + "<ENV>" and c.id_to_token[p["lan_id"]] == p["word"] + "<LAN>"
    assert c.cooc.toarray().astype(int).tolist() == EXPECTED_COOC
    # chunk 2 starts with a.cha's <eos>: the file of the chunk's first token
    assert c.chunk_source.tolist() == [0, 0, 0, 1]
    assert [Path(s).name for s in c.sources] == ["a.cha", "b.cha"]
    st = c.stats
    assert (st["files"], st["utterances"], st["utterances_with_act"], st["utterances_skipped"]) == (2, 5, 3, 1)
    assert (st["env_tokens"], st["lan_tokens"], st["chunks"], st["cooc_chunks"]) == (9, 9, 4, 2)
    assert len(st["skipped_utterances"]) == 1 and st["skipped_utterances"][0].endswith("a.cha:9: E308 speaker XYZ is not in @Participants")
    assert c.token_counts.sum() == 32 and c.token_counts[c.vocab["cup<LAN>"]] == 3
    assert c.meta["kind"] == "childes" and c.meta["chunk_len"] == 8
    # id order: specials, speakers alphabetically, then words by count desc then alphabetically
    toks = c.id_to_token
    assert toks[:6] == ["<pad>", "<unk>", "<bos>", "<eos>", "<CHI>", "<MOT>"]
    counts = [(-int(c.token_counts[i]), t) for i, t in enumerate(toks) if i >= 6]
    assert counts == sorted(counts) and toks[6] == "cup<LAN>"


def test_tokenizer_round_trip(small_chat: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    c = _build([small_chat], tmp_path / "corpus", chunk_len=8)
    for tok in (c.tokenizer(), AutoTokenizer.from_pretrained(str(c.path))):
        ids = tok("<CHI> ball<LAN>")["input_ids"]
        assert ids == [c.vocab["<CHI>"], c.vocab["ball<LAN>"]]
        assert c.vocab["ball<ENV>"] != c.vocab["ball<LAN>"]
        assert tok("ball<ENV>")["input_ids"] == [c.vocab["ball<ENV>"]]
        assert tok("zebra<LAN>")["input_ids"] == [c.vocab["<unk>"]]
        assert tok.pad_token_id == 0 and tok.bos_token_id == 2 and tok.eos_token_id == 3
        for row in c.chunks:
            text = tok.decode(row.tolist())
            assert tok(text)["input_ids"] == row.tolist()
        assert tok.decode(tok("<MOT> look<LAN> at<LAN> the<LAN> cup<LAN>")["input_ids"]) == "<MOT> look<LAN> at<LAN> the<LAN> cup<LAN>"


def test_min_count_is_per_form(small_chat: Path, tmp_path: Path):
    c = _build([small_chat], tmp_path / "corpus", chunk_len=8, min_count=2)
    # cup<LAN> x3, cup<ENV> x1, dog<ENV> x1 ...: only forms seen twice survive
    words = [t for t in c.vocab if t.endswith("<ENV>") or t.endswith("<LAN>")]
    assert words == ["cup<LAN>"]
    assert c.pairs == [] and c.cooc.shape == (4, 0)
    assert c.stats["unk_tokens"] == 18 - 3


def test_drop_cooc_exact_and_seeded(generated: Path, tmp_path: Path):
    full = _build([generated], tmp_path / "full", chunk_len=32)
    counted = full.counted_pairs  # chunks with a co-occurring pair of counted words (datasets/cooc.py)
    cooc_idx = np.flatnonzero(np.asarray(full.cooc[:, np.flatnonzero(counted)].sum(axis=1)).ravel() > 0)
    n = len(cooc_idx)
    assert 10 < n < full.n_chunks  # some chunks have no co-occurring pair
    a = _build([generated], tmp_path / "a", chunk_len=32, drop_cooc=0.3, seed=1)
    b = _build([generated], tmp_path / "b", chunk_len=32, drop_cooc=0.3, seed=1)
    other = _build([generated], tmp_path / "c", chunk_len=32, drop_cooc=0.3, seed=2)
    dropped = np.load(a.path / "dropped_chunks.npy")
    assert len(dropped) == round(0.3 * n) == a.stats["chunks"] - a.n_chunks
    assert set(dropped) <= set(cooc_idx) and np.all(np.diff(dropped) > 0)
    expected = np.sort(cooc_idx[np.random.default_rng(1).permutation(n)[: round(0.3 * n)]])
    assert dropped.tolist() == expected.tolist() == a.stats["dropped_chunks"]
    assert np.array_equal(np.load(b.path / "dropped_chunks.npy"), dropped)
    assert not np.array_equal(np.load(other.path / "dropped_chunks.npy"), dropped)
    keep = np.setdiff1d(np.arange(full.n_chunks), dropped)
    assert np.array_equal(a.chunks, full.chunks[keep])  # boundaries computed before the drop
    assert np.array_equal(a.chunk_source, full.chunk_source[keep])
    assert (a.cooc != full.cooc[keep]).nnz == 0
    assert a.vocab == full.vocab and a.pairs == full.pairs
    assert a.stats["cooc_chunks_kept"] == n - len(dropped)
    assert np.array_equal(a.token_counts, np.bincount(a.chunks.ravel(), minlength=len(a.vocab)))
    everything = _build([generated], tmp_path / "all", chunk_len=32, drop_cooc=1.0, seed=0)
    assert everything.cooc[:, np.flatnonzero(counted)].nnz == 0 and everything.n_chunks == full.n_chunks - n


def test_bad_files_are_skipped_and_strict_stops(small_chat: Path, tmp_path: Path):
    (small_chat / "latin1.cha").write_bytes(HEAD.encode() + "*CHI:\tcaf\xe9 .\n@End\n".encode("latin-1"))
    c = _build([small_chat], tmp_path / "corpus", chunk_len=8)
    assert c.stats["files"] == 2 and c.stats["files_skipped"] == 1
    assert "latin1.cha:7: E001 not UTF-8" in c.stats["skipped_files"][0]
    with pytest.raises(InputError, match=r"a\.cha:9: E308 .*--strict"):
        _build([small_chat], tmp_path / "strict", chunk_len=8, strict=True)
    assert not (tmp_path / "strict").exists()
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.cha").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="no readable transcript.*not UTF-8"):
        _build([only_bad], tmp_path / "none")
    with pytest.raises(InputError, match="no such file"):
        _build([tmp_path / "missing"], tmp_path / "none")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .cha"):
        _build([empty], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_atomic_output(small_chat: Path, tmp_path: Path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("crash while writing")

    monkeypatch.setattr(childes_corpus, "save_tokenizer", boom)
    with pytest.raises(RuntimeError):
        _build([small_chat], tmp_path / "corpus", chunk_len=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat"]  # no folder, no temporary left
    monkeypatch.undo()
    _build([small_chat], tmp_path / "corpus", chunk_len=8)
    with pytest.raises(InputError, match="already exists"):
        _build([small_chat], tmp_path / "corpus", chunk_len=8)
    monkeypatch.setattr(childes_corpus, "save_tokenizer", boom)
    with pytest.raises(RuntimeError):
        _build([small_chat], tmp_path / "corpus", chunk_len=16, overwrite=True)
    assert Corpus.load(tmp_path / "corpus").chunk_len == 8  # the old corpus is untouched


def test_cli(small_chat: Path, tmp_path: Path, capsys):
    out = tmp_path / "corpus"
    assert main(["build-corpus", str(small_chat), "--out", str(out), "--chunk-len", "8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "2 files" in captured.out and "skipped: " in captured.err and "E308" in captured.err
    assert Corpus.load(out).n_chunks == 4
    assert main(["build-corpus", str(small_chat), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["build-corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    assert main(["build-corpus", str(small_chat), "--out", str(tmp_path / "x"), "--drop-cooc", "1.5"]) == 2
    assert main(["build-corpus", str(small_chat), "--out", str(tmp_path / "y"), "--strict", "--no-progress"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        main(["build-corpus", str(small_chat), "--out", str(tmp_path / "z"), "--bogus"])
    assert main(["build-corpus", str(small_chat), "--out", str(out), "--overwrite", "--no-progress",
                 "--drop-cooc", "0.5", "--seed", "3", "--chunk-len", "4"]) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert (meta["chunk_len"], meta["drop_cooc"], meta["seed"]) == (4, 0.5, 3)


def _fixture_tree() -> Path | None:
    here = Path(__file__).parent / "fixtures" / "chat"
    if here.is_dir():
        return here
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat"
    return shared if shared.is_dir() else None


def test_whole_fixture_tree(tmp_path: Path):
    tree = _fixture_tree()
    if tree is None:
        pytest.skip("no CHAT fixture tree (tests/fixtures/chat or ../shared/data/chat)")
    c = _build([tree], tmp_path / "corpus", chunk_len=64)
    st = c.stats
    assert st["files"] > 50 and st["utterances"] > 100
    assert st["files"] + st["files_skipped"] == len(list(tree.rglob("*.cha")))
    assert st["skipped_files"] or st["skipped_utterances"]
    for line in st["skipped_files"] + st["skipped_utterances"]:
        path, lineno, reason = line.split(":", 2)
        assert path.endswith(".cha") and lineno.isdigit() and reason.strip()
    assert st["env_tokens"] > 0 and c.n_chunks == st["chunks"]


def test_cooc_matrix_matches_brute_force():
    from vlground.datasets.cooc import chunk_sources, chunk_stream, cooc_matrix

    rng = np.random.default_rng(0)
    chunks = rng.integers(0, 50, (300, 20)).astype(np.int32)
    env, lan = np.arange(10, 20), np.arange(30, 40)
    brute = np.array([[e in set(row) and l in set(row) for e, l in zip(env, lan)] for row in chunks.tolist()])
    assert np.array_equal(cooc_matrix(chunks, env, lan, 50).toarray(), brute)
    assert np.array_equal(cooc_matrix(chunks, env, lan, 50, block=7).toarray(), brute)
    assert chunk_stream(np.arange(5, dtype=np.int32), 2, 0).tolist() == [[0, 1], [2, 3], [4, 0]]
    assert chunk_sources(np.array([0, 3, 4]), 3, 2).tolist() == [0, 0, 2]
