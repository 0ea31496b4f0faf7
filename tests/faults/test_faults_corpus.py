"""build-corpus (CHAT): --overwrite, outputs inside inputs, OS errors, zip input, stale temps,
unreadable folders and bad links, option values."""
from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import pytest

from faults_helpers import one_error, run_cli, snapshot
from vlground.datasets.chat_generator import transcript_text


@pytest.fixture()
def chat(tmp_path) -> Path:
    d = tmp_path / "chat"
    d.mkdir()
    for i in range(3):
        (d / f"t{i}.cha").write_text(transcript_text(seed=0, index=i), encoding="utf-8")
    return d


def build(args, capsys):
    return run_cli(["build-corpus", *args, "--chunk-len", "32", "--no-progress"], capsys)


# -- 4. --overwrite deletes only a corpus folder; never an input ----------------------------------------
def test_overwrite_refuses_the_input_folder(chat, capsys):
    before = snapshot(chat)
    code, err = build([chat, "--out", chat, "--overwrite"], capsys)
    line = one_error(err)
    assert code == 2 and "input" in line and str(chat) in line
    assert snapshot(chat) == before


def test_overwrite_refuses_an_unrelated_folder(chat, tmp_path, capsys):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    before = snapshot(other)
    code, err = build([chat, "--out", other, "--overwrite"], capsys)
    assert code == 2 and "not a vlground corpus folder" in one_error(err)
    assert snapshot(other) == before


def test_out_inside_an_input_folder_is_refused(chat, capsys):
    before = snapshot(chat)
    code, err = build([chat, "--out", chat / "corpus"], capsys)
    assert code == 2 and "input" in one_error(err)
    assert snapshot(chat) == before and not (chat / "corpus").exists()


def test_overwrite_replaces_a_corpus(chat, tmp_path, capsys):
    out = tmp_path / "corpus"
    assert build([chat, "--out", out], capsys)[0] == 0
    assert build([chat, "--out", out, "--overwrite", "--seed", "1"], capsys)[0] == 0


# -- 6. OS errors are one line, exit 1 ---------------------------------------------------------------
def test_unwritable_out_is_one_line(chat, tmp_path, capsys, monkeypatch):
    import tempfile

    def denied(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    code, err = build([chat, "--out", tmp_path / "ro" / "corpus"], capsys)
    line = one_error(err)
    assert code == 1 and line == f"vlground: error: {tmp_path / 'ro'}: Permission denied"


def test_full_disk_keeps_the_old_corpus(chat, tmp_path, capsys, monkeypatch):
    import numpy as np

    out = tmp_path / "corpus"
    assert build([chat, "--out", out], capsys)[0] == 0
    before = snapshot(tmp_path)

    def full(file, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(np, "save", full)
    code, err = build([chat, "--out", out, "--overwrite", "--seed", "2"], capsys)
    assert code == 1 and one_error(err).endswith("chunks.npy: No space left on device")
    assert snapshot(tmp_path) == before  # the old corpus intact, no temporary folder left


# -- 8. zip input: corrupt members, bombs ----------------------------------------------------------------
def test_corrupt_zip_member_is_one_line(chat, tmp_path, capsys):
    z = tmp_path / "corpus.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/t0.cha", transcript_text(seed=0, index=0) * 5)
    data = bytearray(z.read_bytes())
    start = data.index(b"a/t0.cha") + len("a/t0.cha")
    for i in range(start + 20, start + 60):  # damage the compressed bytes of the member
        data[i] ^= 0xFF
    z.write_bytes(bytes(data))
    code, err = build([z, "--out", tmp_path / "out"], capsys)
    line = one_error(err)
    assert code == 2 and f"{z}!a/t0.cha" in line and "corrupt" in line
    assert not (tmp_path / "out").exists()


def test_zip_bomb_is_refused_before_reading(tmp_path, capsys):
    z = tmp_path / "bomb.zip"
    text = ("@UTF8\n@Begin\n" + "*CHI:\tgo .\n" * 2_000_000 + "@End\n").encode()  # ~24 MB, ratio ~1000
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.cha", text)
    code, err = build([z, "--out", tmp_path / "out"], capsys)
    line = one_error(err)
    assert code == 2 and f"{z}!big.cha" in line and "ratio" in line


def test_zip_member_size_cap(tmp_path, capsys, monkeypatch):
    import vlground.chat.sources as sources

    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 1000)
    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("x.cha", transcript_text(seed=0, index=0))
    code, err = build([z, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "larger than" in one_error(err)


# -- 14. stale temporary folders, unreadable folders, bad links, option values ---------------------------
def test_stale_temp_folders_are_cleaned(chat, tmp_path, capsys):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".corpus.tmp-{pid}-abc123"
    stale.mkdir()
    (stale / "chunks.npy").write_bytes(b"half")
    live = tmp_path / f".corpus.tmp-{os.getpid() + 0}-mine"  # this process: never removed
    live.mkdir()
    assert build([chat, "--out", tmp_path / "corpus"], capsys)[0] == 0
    assert not stale.exists() and live.exists()


def test_dangling_symlink_is_an_error(chat, capsys, tmp_path):
    (chat / "gone.cha").symlink_to(tmp_path / "nowhere.cha")
    code, err = build([chat, "--out", tmp_path / "out"], capsys)
    line = one_error(err)
    assert code == 2 and "gone.cha" in line and "dangling" in line


def test_symlink_loop_is_an_error(chat, capsys, tmp_path):
    (chat / "loop").symlink_to(chat, target_is_directory=True)
    code, err = build([chat, "--out", tmp_path / "out"], capsys)
    line = one_error(err)
    assert code == 2 and "loop" in line


def test_unreadable_subfolder_is_an_error(chat, capsys, tmp_path, monkeypatch):
    sub = chat / "private"
    sub.mkdir()
    (sub / "x.cha").write_text(transcript_text(seed=0, index=5))
    real_scandir = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and Path(path) == sub:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, err = build([chat, "--out", tmp_path / "out"], capsys)
    assert code == 1 and one_error(err) == f"vlground: error: {sub}: Permission denied"
    assert not (tmp_path / "out").exists()


def test_negative_seed_is_refused_before_the_build(chat, tmp_path, capsys):
    code, err = build([chat, "--out", tmp_path / "out", "--drop-cooc", "0.5", "--seed", "-3"], capsys)
    assert code == 2 and "--seed -3" in one_error(err)
    assert not (tmp_path / "out").exists()


def test_stale_features_copy_is_cleaned(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from vlground.vision.features import FeatureCache

    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)
    record = {"model": "m", "n_tokens": 2, "dim": 3}
    cache = FeatureCache.open(tmp_path / "cache", record)
    stale = tmp_path / "cache" / f".features.tmp-{pid}.npy"
    stale.write_bytes(b"half-grown")
    cache._writable(4)
    assert not stale.exists() and np.load(tmp_path / "cache" / "features.npy").shape == (4, 2, 3)


def test_out_appearing_during_the_build_is_not_clobbered(chat, tmp_path, capsys, monkeypatch):
    """Two builds into one --out: the one finishing second does not replace the first one's corpus."""
    import vlground.datasets.childes_corpus as cc

    out = tmp_path / "corpus"
    real = cc.save_tokenizer

    def racing(vocab, folder, **k):  # the other build finishes while this one writes
        if not out.exists():
            out.mkdir()
            (out / "corpus.json").write_text('{"format": "vlground-corpus/1", "other": true}')
        return real(vocab, folder, **k)

    monkeypatch.setattr(cc, "save_tokenizer", racing)
    code, err = build([chat, "--out", out], capsys)
    assert code == 2 and "appeared while" in one_error(err)
    assert '"other": true' in (out / "corpus.json").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
