"""The CHAT reader: fixtures, cleaning policy, sources (folders, zips), check-chat CLI."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from vlground.chat import ChatSource, iter_chat_sources, read_chat, read_chat_text
from vlground.cli import main
from vlground.errors import InputError

FIXTURES = Path(__file__).parent / "fixtures" / "chat"
VALID = sorted((FIXTURES / "valid").rglob("*.cha"))
INVALID = sorted((FIXTURES / "invalid").rglob("*.cha"))

HEAD = (
    "@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child, MOT Mother\n"
    "@ID:\teng|corpus|CHI|2;06.|female|||Target_Child|||\n@ID:\teng|corpus|MOT|||||Mother|||\n"
)


def chat(*lines: str) -> str:
    media = "@Media:\tt, audio\n" if any("\x15" in line for line in lines) else ""  # bullets need @Media
    return HEAD + media + "".join(line + "\n" for line in lines) + "@End\n"


def words(main_tier: str) -> list[str]:
    f = read_chat_text(chat(f"*CHI:\t{main_tier}"), "t.cha")
    assert f.ok, [str(p) for p in f.problems]
    return f.utterances[0].words


def codes(*lines: str) -> set[str]:
    return {p.code for p in read_chat_text(chat(*lines), "t.cha").errors}


# --- fixtures --------------------------------------------------------------------------------
def test_fixture_tree_copied():
    assert (FIXTURES / "LICENSE.talkbank").is_file()
    assert len(VALID) == 79 and len(INVALID) == 159


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture_has_no_error(path):
    f = read_chat(ChatSource(str(path), path.read_bytes()))
    assert f.ok, [str(p) for p in f.errors]
    assert f.skipped_utterances == 0


def test_invalid_fixtures_flagged_at_95_percent():
    flagged = [p for p in INVALID if not read_chat(ChatSource(str(p), p.read_bytes())).ok]
    assert len(flagged) / len(INVALID) >= 0.95, len(flagged)


@pytest.mark.parametrize("name,code", [
    ("E308_speaker_not_in_participants", "E308"), ("E304_missing_terminator", "E304"),
    ("E705_mor_count_too_few", "E705"), ("E706_mor_count_too_many", "E706"),
    ("E504_missing_begin", "E504"), ("E522_missing_id_for_participant", "E522"),
    ("E387_replacement_on_fragment", "E387"), ("E389_replacement_on_filler", "E389"),
    ("E391_replacement_contains_untranscribed", "E391"), ("E724_gra_circular_dependency", "E724"),
    ("E528_gem_label_mismatch", "E528"), ("E517_invalid_age_format", "E517"),
])
def test_talkbank_codes(name, code):
    path = next(p for p in INVALID if p.stem == name)
    assert code in {p.code for p in read_chat(ChatSource(str(path), path.read_bytes())).errors}


def test_shared_fixtures_match_copy():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat"
    if not shared.is_dir():
        pytest.skip("no ../shared checkout")
    assert len(list(shared.rglob("*.cha"))) == len(VALID) + len(INVALID)


# --- reading -----------------------------------------------------------------------------------
def test_utterance_fields_and_tiers():
    f = read_chat_text(chat("*CHI:\tHello there .", "%act:\tgives ball", "\tto MOT",
                            "%sit:\tkitchen", "%com:\tloud", "*MOT:\tthanks .", "%gpx:\tlooks"),
                       "t.cha")
    assert f.ok and f.participants == {"CHI": "Target_Child", "MOT": "Mother"}
    assert f.languages == ["eng"]
    a, b = f.utterances
    assert (a.speaker, a.words, a.line) == ("CHI", ["hello", "there"], 7)
    assert a.act == "gives ball to MOT" and a.tiers["sit"] == "kitchen" and a.tiers["com"] == "loud"
    assert b.act is None and b.tiers == {"gpx": "looks"}


def test_bad_utterance_skipped_rest_kept():
    f = read_chat_text(chat("*CHI:\tfine .", "*CHI:\tno terminator", "*XYZ:\tstranger .",
                            "*MOT:\tok ."), "t.cha")
    assert [u.words for u in f.utterances] == [["fine"], ["ok"]]
    assert f.skipped_utterances == 2
    assert {(p.line, p.code) for p in f.errors} == {(8, "E304"), (9, "E308")}
    assert str(f.errors[0]).startswith("t.cha:8: E304 ")


def test_non_utf8_is_a_problem_not_a_crash():
    f = read_chat(ChatSource("x.cha", chat("*CHI:\tcaf\u00e9 .").encode("latin-1")))
    assert f.utterances == [] and [p.code for p in f.errors] == ["E001"]


def test_read_chat_text_never_raises_on_garbage():
    for text in ["", "garbage\n", "*CHI\n", "@Begin\n*:\t[ < ((( .\n%mor\n", "\x00\x15\x02"]:
        read_chat_text(text, "g.cha")


# --- cleaning policy (docs/chat-policy.md) -----------------------------------------------------
@pytest.mark.parametrize("main_tier,expected", [
    ("<I want> [/] I want cookie .", ["i", "want", "cookie"]),          # retraced dropped
    ("I [//] you go .", ["you", "go"]),
    ("goed [: went] [*] home .", ["went", "home"]),                     # replacement kept
    ("&-uh I &+fr &=laughs xxx yyy www go .", ["i", "go"]),             # fillers etc. dropped
    ("he 0is happy .", ["he", "happy"]),                                # omitted dropped
    ("I (.) go (..) there (1.5) .", ["i", "go", "there"]),              # pauses dropped
    ("doggy@b mama@f hao3@s:zho .", ["doggy", "mama", "hao3"]),         # form markers stripped
    ("ice+cream hot_dog .", ["ice+cream", "hot_dog"]),                  # compounds one token
    ("(be)cause goin(g) .", ["because", "going"]),                      # shortenings expanded
    ("I want ⌊more⌋ [<] .", ["i", "want", "more"]),                    # overlap marks
    ("no:: ˈyes .", ["no", "yes"]),                                    # prosody stripped
    ("Hello , Mommy ? [+ bch]", ["hello", "mommy"]),                    # postcode, punctuation
    ("hello . \x151000_2000\x15", ["hello"]),                           # bullet
    ("+< yes +/.", ["yes"]),                                            # linker, terminator
])
def test_cleaning_policy(main_tier, expected):
    assert words(main_tier) == expected


# --- checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lines,code", [
    (["*CHI:\thello"], "E304"),
    (["*CHI:\t."], "E306"),
    (["*CHI:\thello [: world ."], "E312"),
    (["*CHI:\t<hello world ."], "E345"),
    (["*CHI:\t&-uh [: and] ."], "E389"),
    (["*CHI:\thello [: 0word] ."], "E390"),
    (["*CHI:\thello@ ."], "E202"),
    (["*CHI:\txx ."], "E241"),
    (["*CHI:\tI want cookie .", "%mor:\tpro|I v|want ."], "E705"),
    (["*CHI:\tI want .", "%mor:\tpro|I v|want .", "%gra:\t1|2|SUBJ 2|0|ROOT"], "E720"),
    (["*CHI:\tI want .", "%gra:\t1|2|SUBJ 2|0|ROOT 3|2|PUNCT"], "E604"),
    (["*CHI:\thi .", "%foo:\tx"], "E605"),
    (["*CHI:\thi . \x152000_1000\x15"], "E362"),
])
def test_checks(lines, code):
    assert code in codes(*lines)


# --- sources -----------------------------------------------------------------------------------
def test_folder_and_zip_sources(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.cha").write_text(chat("*CHI:\thi ."))
    (tmp_path / "a" / "notes.txt").write_text("not chat")
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Corpus/y.cha", chat("*MOT:\tyes ."))
        zf.writestr("Corpus/readme.txt", "x")
    names = [s.display_path for s in iter_chat_sources([tmp_path / "a", archive])]
    assert names == [str(tmp_path / "a" / "b" / "x.cha"), f"{archive}!Corpus/y.cha"]
    inner = list(iter_chat_sources([archive]))[0]
    assert read_chat(inner).utterances[0].words == ["yes"]


@pytest.mark.parametrize("make", ["missing", "empty_dir", "empty_zip"])
def test_bad_inputs_raise_input_error(tmp_path, make):
    path = tmp_path / make
    if make == "empty_dir":
        path.mkdir()
    elif make == "empty_zip":
        path = tmp_path / "e.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.txt", "x")
    with pytest.raises(InputError):
        list(iter_chat_sources([path]))


# --- CLI ---------------------------------------------------------------------------------------
def test_cli_valid_folder_exits_0(capsys):
    assert main(["check-chat", str(FIXTURES / "valid")]) == 0
    out, err = capsys.readouterr()
    assert "0 with errors" in err
    assert all(" W" in line for line in out.splitlines())  # warnings only


def test_cli_invalid_exits_1_with_line_format(capsys, tmp_path):
    path = tmp_path / "bad.cha"
    path.write_text(chat("*CHI:\thello"))
    assert main(["check-chat", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}:7: E304 missing terminator"
    assert "1 with errors" in err


def test_cli_zip_display_path(capsys, tmp_path):
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("C/bad.cha", chat("*XYZ:\thi ."))
    assert main(["check-chat", str(archive)]) == 1
    assert f"{archive}!C/bad.cha:7: E308 " in capsys.readouterr().out


def test_cli_user_errors_exit_2(capsys, tmp_path):
    assert main(["check-chat", str(tmp_path / "nope")]) == 2
    assert main(["check-chat", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "no .cha files" in err


# --- retracing and groups (CHAT manual: a scoped code follows its word or <group> directly) ---
@pytest.mark.parametrize("main_tier", [
    "<I want> [/] I want cookie .", "I [//] you go .", "<ingroup [/]> [<] after .",
    "<I [//] I love this key> [>] .", "<(.) be careful> [<] ?", "&-uh (.) <I want> [/] I want .",
])
def test_retracing_and_groups_accepted(main_tier):
    assert codes(f"*CHI:\t{main_tier}") == set()


@pytest.mark.parametrize("main_tier,code", [
    ("let's (.) [/] let's play .", "E316"),          # [/] after a pause: a pause takes no code
    ("<where did> (.) [/] where did it go ?", "E316"),  # a pause takes no code
    ("<do <you> mama@b> [//] do you want to play .", "E345"),  # a nested group needs its code
    ("<I want> [/] .", "E370"),
])
def test_retracing_and_groups_rejected(main_tier, code):
    assert code in codes(f"*CHI:\t{main_tier}")


def test_untranscribed_not_aligned_to_mor():
    for main_tier in ["I want xxx .", "I want xxx [!] ."]:
        assert codes(f"*CHI:\t{main_tier}", "%mor:\tpro|I v|want .") == set()


def test_crlf_read_like_lf():
    text = chat("*CHI:\thello there .", "%act:\tgives ball", "\tto MOT")
    a, b = read_chat_text(text, "t.cha"), read_chat_text(text.replace("\n", "\r\n"), "t.cha")
    assert a.utterances == b.utterances and a.problems == b.problems


# --- fast path (vlground/chat/fast.py) == token-by-token checks + pylangacq words ---------------
FAST_CASES = [
    "I want ice+cream@b .", "&-uh (.) <I want> [/] I want xxx (1.5) more &=laughs !",
    "goed [: went] [* m] [//] went home ?", "<gonna [: going to] go> [<] .", "+< yes , no +/.",
    "he 0is happy .", "xxx@b XXX yyy www 0 .", "<a b> [>] [?] c [!] [= points] . [+ bch]",
    "<I [/] I> [//] you go +...", "it's [//] it's my_turn ice+cream .",
]


def _fast_cases():
    from vlground.datasets.chat_generator import GeneratorOptions, transcript_text

    texts = [p.read_text(encoding="utf-8") for p in VALID]
    texts += [transcript_text(s, i, GeneratorOptions(code_prob=cp, utterances_per_file=150))
              for s, cp in ((0, 0.15), (1, 1.0)) for i in range(4)]
    mains = [line.split("\t", 1)[1] for t in texts for line in t.splitlines()
             if line.startswith("*") and "\t" in line]
    return mains + FAST_CASES


def test_fast_path_agrees_with_slow_path():
    from vlground.chat import fast, maintier, reader, validate

    checked = 0
    for text in _fast_cases():
        s = text.strip()
        if "\x15" in s or ", ," in s or not fast.COMMON.fullmatch(s):
            continue
        checked += 1
        u = reader.RawUtterance(1, "CHI", text)
        checker = validate.Checker("t.cha", [])
        counts = maintier.MainTier(checker, u, 0, False, []).run()[:2]
        assert not checker.problems, (text, [str(p) for p in checker.problems])
        assert maintier.common_tier_counts(s) == counts, text
        assert fast.common_words([text]) == reader._slow_words([u], "t.cha", []), text
    assert checked > 500


def test_words_contract_on_fixtures_and_generated(tmp_path):
    """Utterance.words are what the corpus builder uses as they are: lower-case, non-empty, no
    whitespace, no untranscribed markers."""
    from vlground.chat import iter_chat_sources, read_chat
    from vlground.datasets.chat_generator import generate_transcripts

    generate_transcripts(tmp_path / "gen", n_files=6, seed=3)
    fixtures = Path(__file__).parent / "fixtures" / "chat"
    n = 0
    for src in iter_chat_sources([fixtures, tmp_path / "gen"]):
        for utt in read_chat(src).utterances:
            for w in utt.words:
                n += 1
                assert w and not any(c.isspace() for c in w) and w not in ("xxx", "yyy", "www"), (src.display_path, utt.line, w)
                assert w == w.lower(), (src.display_path, utt.line, w)
    assert n > 1000
