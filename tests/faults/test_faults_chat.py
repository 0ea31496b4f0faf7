"""CHAT rules from the manual (issue 22, class 10): @ID SES values, @Media kind/status and bullets,
header order; a one-line file of tens of megabytes read in bounded memory. Each rule is planted
into one otherwise valid transcript written here (never read from a shared test set)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

VALID = textwrap.dedent("""\
    @UTF8
    @Begin
    @Languages:\teng
    @Participants:\tCHI Target_Child, MOT Mother
    @ID:\teng|test|CHI|2;06.|female|||Target_Child|||
    @ID:\teng|test|MOT|||||Mother|||
    {media}*CHI:\tmore juice .{bullet}
    *MOT:\there you go .
    @End
    """)


def chat(media: str = "", bullet: str = "", **replace) -> str:
    text = VALID.format(media=media, bullet=bullet)
    for old, new in replace.items():
        text = text.replace(old.replace("_", " ") if old.startswith("_") else old, new)
    return text


def errors(text: str, name: str = "t") -> list[str]:
    from vlground.chat.reader import read_chat_text

    return [f"{p.code} {p.message}" for p in read_chat_text(text, f"{name}.cha").problems if p.severity == "error"]


def test_the_template_is_valid():
    assert errors(chat()) == []
    assert errors(chat(media="@Media:\tt, audio\n", bullet=" \x151000_2000\x15")) == []


@pytest.mark.parametrize("ses,ok", [("White,MC", True), ("UC", True), ("Latino", True), ("Rich", False),
                                    ("MC,WC", False), ("White,Black", False), ("white", False)])
def test_id_ses_values(ses, ok):
    text = chat().replace("|CHI|2;06.|female|||", f"|CHI|2;06.|female||{ses}|")
    assert (errors(text) == []) is ok, errors(text)


@pytest.mark.parametrize("media,ok", [("t, audio", True), ("t, video, unlinked", True), ("t, video, notrans", True),
                                      ("t", False), ("t, film", False), ("t, audio, gone", False)])
def test_media_kind_and_status(media, ok):
    assert (errors(chat(media=f"@Media:\t{media}\n")) == []) is ok


def test_bullets_need_a_media_header():
    assert any("no @Media" in e for e in errors(chat(bullet=" \x151000_2000\x15")))


def test_header_order():
    early = chat().replace("@Begin\n@Languages:\teng\n", "@Languages:\teng\n@Begin\n")
    assert any("before @Begin" in e for e in errors(early))
    pre = chat().replace("@UTF8\n", "@UTF8\n@Font:\tWin95:Courier:-13:0\n")
    assert errors(pre) == []  # a pre-begin header
    assert any("@UTF8" in e for e in errors(chat().replace("@UTF8\n", "")))
    swapped = chat().replace("@Participants:\tCHI Target_Child, MOT Mother\n", "")
    swapped = swapped.replace("@ID:\teng|test|MOT|||||Mother|||\n",
                              "@ID:\teng|test|MOT|||||Mother|||\n@Participants:\tCHI Target_Child, MOT Mother\n")
    assert any("@ID before @Participants" in e for e in errors(swapped))


@pytest.mark.slow
def test_one_line_file_of_42_mb_is_read_in_bounded_memory(tmp_path):
    f = tmp_path / "huge.cha"
    body = "more juice " * (42 * 2**20 // 11)
    f.write_text(chat().replace("*CHI:\tmore juice .", "*CHI:\t" + body + "."))
    code = ("import resource, sys\n"
            "from vlground.cli import main\n"
            f"rc = main(['check-chat', {str(f)!r}])\n"
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    peak_mb = int(proc.stdout.split("peak_kb")[-1]) / 1024
    assert "E004" in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert peak_mb < 1500, peak_mb  # was 6.7 GB; the file alone is 42 MB
