"""CHAT written from the CHAT manual (tests/fixtures/chat-spec), one rule family per test.

Valid files exercise one convention each; each invalid file breaks one rule and carries its
planted answer: the code in its name (``<code>-<desc>.cha``) and the line in expected.tsv.
"""
from __future__ import annotations

import builtins
import csv
from pathlib import Path

import pytest

from vlground.chat import ChatSource, read_chat, read_chat_text
from vlground.cli import main

SPEC = Path(__file__).parent / "fixtures" / "chat-spec"
VALID = sorted((SPEC / "valid").glob("*.cha"))
EXPECTED = {row["file"]: (row["code"], int(row["line"]))
            for row in csv.DictReader((SPEC / "expected.tsv").read_text(encoding="utf-8").splitlines(), delimiter="\t")}

HEAD = ("@UTF8\n@Begin\n@Languages:\teng\n@Participants:\tCHI Target_Child, MOT Mother\n"
        "@ID:\teng|spec|CHI|||||Target_Child|||\n@ID:\teng|spec|MOT|||||Mother|||\n")


def read(path: Path):
    return read_chat(ChatSource(str(path), path.read_bytes()))


def chat(*lines: str, ca: bool = False) -> str:
    return HEAD + ("@Options:\tCA\n" if ca else "") + "".join(f"{x}\n" for x in lines) + "@End\n"


def errors(*lines: str, ca: bool = False) -> set[tuple[int, str]]:
    """(line, code) of each error; the first main tier is line 7 (8 with @Options)."""
    return {(p.line, p.code) for p in read_chat_text(chat(*lines, ca=ca), "t.cha").errors}


def test_spec_set_size():
    assert len(VALID) >= 30 and len(EXPECTED) >= 40
    assert sorted(p.name for p in (SPEC / "invalid").glob("*.cha")) == sorted(
        Path(f).name for f in EXPECTED)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_spec_file_accepted(path):
    f = read(path)
    assert f.ok, [str(p) for p in f.errors]
    assert f.skipped_utterances == 0 and f.utterances


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda n: Path(n).stem)
def test_invalid_spec_file_flagged_with_code_and_line(name):
    code, line = EXPECTED[name]
    f = read(SPEC / name)
    assert (line, code) in {(p.line, p.code) for p in f.errors}, [str(p) for p in f.errors]


# --- one test per rule family, planted answers inline -----------------------------------------
def test_ca_contours_end_or_separate():
    assert errors("*CHI:\tyes ⇗", "*MOT:\tso → we went ↗ and ⇘ home ↘") == set()
    assert errors("*MOT:\tso → we went home") == {(7, "E304")}          # no CA option
    assert errors("*MOT:\t→", ca=True) == {(8, "E306")}                  # a contour alone


def test_ca_mode_terminator_optional_and_omissions():
    assert errors("*CHI:\tI (don't) know", ca=True) == set()
    assert errors("*CHI:\tI (don't) know .") == {(7, "E212")}
    assert errors("*CHI:\tI know") == {(7, "E304")}


def test_ca_latching_and_linkers():
    assert errors("*MOT:\tshe said ≈", "*CHI:\t+≈ that's it .", "*MOT:\t++ +< yes .") == set()
    assert errors("*CHI:\tyes +< no .") == {(7, "E766")}


def test_overlap_points_matched_across_utterances():
    ok = ("*MOT:\tthe ⌈cat⌉ and ⌈2 dog ⌉2 .", "*MOT:\tyes .", "*CHI:\t⌊cat⌋ .", "*MOT:\t⌊2 dog ⌋2 .")
    assert errors(*ok, ca=True) == {(11, "E704")}  # ⌊2 by the speaker of ⌈2
    assert errors(*ok[:3], "*CHI:\t⌊2 dog ⌋2 .", ca=True) == set()
    assert errors("*MOT:\tthe ⌈cat⌉ .", "*CHI:\tyes .", ca=True) == {(8, "E347")}
    assert errors("*MOT:\tthe cat .", "*CHI:\t⌊2 yes ⌋2 .", ca=True) == {(9, "E347")}
    assert errors("*MOT:\tthe ⌈ cat .", "*CHI:\t⌊ cat ⌋ .", ca=True) == {(8, "E348")}


def test_ca_delimiters_paired():
    assert errors("*MOT:\t°quiet now° and ∆fast∆ .") == set()
    assert errors("*MOT:\t°quiet now .") == {(7, "E230")}


def test_other_spoken_events():
    assert errors("*MOT:\twe went &*CHI:mhm home .") == set()
    assert errors("*MOT:\twe went &*SIS:mhm home .") == {(7, "E308")}
    assert errors("*MOT:\twe went &*CHI: home .") == {(7, "E316")}


def test_groups_with_and_without_codes():
    assert errors("*CHI:\t<I want> .", "*CHI:\t<I <want> [/] want it> [//] I need it .") == set()
    assert errors("*CHI:\t<I <want> that> [/] I need it .") == {(7, "E345")}
    assert errors("*CHI:\t<I want .") == {(7, "E345")}


def test_headers_known_and_options():
    text = chat("*CHI:\thi .").replace("@Begin\n", "@Begin\n@Weather:\tsun\n@Options:\tColour\n")
    assert {(p.line, p.code) for p in read_chat_text(text, "t.cha").errors} == {(3, "E525"), (4, "E534")}


def test_consecutive_commas():
    assert errors("*MOT:\tone , two .") == set()
    assert errors("*MOT:\tone , , two .") == {(7, "E258")}


# --- words from CA markup (docs/chat-policy.md) -----------------------------------------------
@pytest.mark.parametrize("main_tier,expected", [
    ("so → we went ↗ and then ⇘", ["so", "we", "went", "and", "then"]),
    ("there's ⌈the cat⌉ and ⌈2 the dog ⌉2 .", ["there's", "the", "cat", "and", "the", "dog"]),
    ("co⌈2lours⌉2 .", ["colours"]),
    ("°quiet° ◉loud◉ ⁎creaky⁎ ↫b-b↫ball .", ["quiet", "loud", "creaky", "ball"]),
    ("funἩny ⁑stop ⤆in⤇ ↑up ≡ ok ∞ .", ["funny", "stop", "in", "up", "ok"]),
    ("we went &*CHI:mhm home ≈", ["we", "went", "home"]),
    ("I (don't) know", ["i", "don't", "know"]),
])
def test_words_of_ca_markup(main_tier, expected):
    answer = " ".join(f"\u230a{i} yes \u230b{i}" for i in ("", "2") if f"\u2308{i}" in main_tier)
    answer = [f"*CHI:\t{answer} ."] if answer else []  # bottom overlaps answering the tops
    f = read_chat_text(chat(f"*MOT:\t{main_tier}", *answer, ca=True), "t.cha")
    assert f.ok, [str(p) for p in f.errors]
    assert f.utterances[0].words == expected


def test_brown_eve_mor_quirk_read():
    """CHILDES Brown/Eve writes old compound %mor items (n|+n|graham+n|cracker) that TalkBank's
    strict parser rejects; vlground reads the speech and %act."""
    f = read(SPEC / "valid" / "brown-eve-mor-quirk.cha")
    assert f.ok and f.skipped_utterances == 0
    assert f.utterances[1].words == ["how_about", "another", "graham+cracker"]
    assert f.utterances[1].act == "holds out a cracker"
    assert f.utterances[4].words == ["man"] and f.utterances[4].act == "points at the picture"
    assert f.utterances[5].words[-3:] == ["of", "your", "crackers"]


# --- check-chat --talkbank ---------------------------------------------------------------------
def test_talkbank_option_without_batchalign_is_one_line(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_batchalign(name, *args, **kwargs):
        if name.startswith("batchalign"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_batchalign)
    assert main(["check-chat", "--talkbank", str(SPEC / "valid")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("vlground: error: --talkbank needs")
    assert "pip install 'vlground[talkbank]'" in err


def test_talkbank_problems_parsed_to_lines():
    from vlground.chat.talkbank import talkbank_problems

    text = chat("*CHI:\thi .", "*CHI:\tno")

    def fake_parse(t: str) -> None:
        start = t.encode().index(b"*CHI:\tno")
        raise ValueError(f"error[E305]: Expected terminator not found (bytes {start}..{start + 8})")

    (p,) = talkbank_problems(fake_parse, text, "t.cha")
    assert (p.line, p.code) == (8, "E305")
    assert talkbank_problems(lambda t: None, text, "t.cha") == []


def test_talkbank_cross_check_reports_disagreement(capsys):
    pytest.importorskip("batchalign._core")
    eve = SPEC / "valid" / "brown-eve-mor-quirk.cha"
    assert main(["check-chat", "--talkbank", str(eve)]) == 0
    out, err = capsys.readouterr()
    assert f"{eve}:" in out and "only TalkBank rejects the file" in out
    assert "disagree on 1 of 1 files (0 rejected only by vlground, 1 only by TalkBank)" in err


def test_spacing_rules():
    assert errors("*MOT:\twell (.) then , now [/] now .") == set()
    assert errors("*MOT:\twell (.)then .") == {(7, "E751")}
    assert errors("*MOT:\tfirst,, second .") == {(7, "E258")}
    assert errors("*CHI:\tI want[/] I want it .") == {(7, "E375")}


def test_other_spoken_event_glued_terminator_ends_utterance():
    f = read_chat_text(chat("*MOT:\twe left &*CHI:mhm.", "*MOT:\tlate &*CHI:yeah?"), "t.cha")
    assert f.ok, [str(p) for p in f.errors]
    assert [u.words for u in f.utterances] == [["we", "left"], ["late"]]


def test_file_structure_and_id_consistency():
    text = chat("*CHI:\thi .").replace("@End\n", "@End\n*CHI:\tafter .\n")
    assert {(p.line, p.code) for p in read_chat_text(text, "t.cha").errors} == {(9, "E501")}
    text = chat("*CHI:\thi .").replace("MOT Mother", "MOT Mother, CHI Target_Child")
    assert {p.code for p in read_chat_text(text, "t.cha").errors} == {"E549"}
    text = chat("*CHI:\thi .").replace("|Mother|", "|Father|").replace("@ID:\teng|spec|CHI", "@ID:\tfra|spec|CHI")
    assert {(p.line, p.code) for p in read_chat_text(text, "t.cha").errors} == {(5, "E519"), (6, "E532")}


def test_mor_terminator_matches_main_tier():
    assert errors("*CHI:\thello ? [+ bch]", "%mor:\tco|hello ?") == set()
    assert errors("*CHI:\thello ?", "%mor:\tco|hello .") == {(8, "E716")}


@pytest.mark.parametrize("main_tier", ["XXX want .", "I want Yyy [!] .", "xx ."])
def test_untranscribed_is_lower_case(main_tier):
    assert errors(f"*CHI:\t{main_tier}") == {(7, "E241")}


def test_word_edges_codes_terminators_ages():
    assert errors("*CHI:\tba^na^na .") == set()
    assert errors("*CHI:\t^blocking here .") == {(7, "E252")}
    assert errors("*CHI:\they [% waves] .") == set()
    assert errors("*CHI:\they [%act: waves] .") == {(7, "E207")}
    assert (7, "E316") in errors("*CHI:\thello +=.")
    text = chat("*CHI:\thi .").replace("CHI|||||Target", "CHI|2;6.||||Target")
    assert {(p.line, p.code) for p in read_chat_text(text, "t.cha").errors} == {(5, "E517")}


def test_digits_in_words_by_language():
    assert errors("*CHI:\tI have 3 cats .") == {(7, "E220")}
    assert errors("*CHI:\the 0is here (1.5) ⌈2 ok ⌉2 .", "*MOT:\t⌊2 yes ⌋2 .") == set()
    assert errors("*CHI:\tsay hao3@s:zho .") == set()  # the word's language writes digits
    text = chat("*CHI:\tni3 hao3 .").replace("eng", "zho")
    assert read_chat_text(text, "t.cha").ok


@pytest.mark.parametrize("text", ["he 0is here", "a0b", "0", "x 10", "(0.5)", "abc", "\n0x", " 0", "w9"])
def test_has_digit_is_digit_search(text):
    from vlground.chat.maintier import DIGIT, has_digit

    assert has_digit(text) == bool(DIGIT.search(text))
