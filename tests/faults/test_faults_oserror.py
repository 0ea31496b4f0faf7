"""Defect 6 across commands: an unwritable --out is one line naming the folder, exit 1."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from PIL import Image

from faults_helpers import one_error, run_cli


@pytest.fixture()
def denied_dir(tmp_path, monkeypatch):
    """``tmp_path/ro`` behaves as a folder this user may not write in (the tests run as root)."""
    ro = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self == ro or ro in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return ro


def test_train_unwritable_out(tmp_path, denied_dir, capsys):
    from vlground.datasets.chat_generator import build_default_corpus

    corpus = build_default_corpus(tmp_path / "corpus", seed=0, n_files=4, chunk_len=32)
    code, err = run_cli(["train", "--corpus", corpus, "--out", denied_dir / "run", "--steps", "2", "--batch-size", "2",
                         "--no-progress"], capsys)
    assert code == 1 and one_error(err) == f"vlground: error: {denied_dir / 'run'}: Permission denied"


def test_build_mismatch_unwritable_out(tmp_path, denied_dir, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (20, 20)).save(src / "a.png")
    (src / "i.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
        "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "cat"}]}))
    code, err = run_cli(["build-mismatch", "--annotations", src / "i.json", "--out", denied_dir / "mm",
                         "--device", "cpu", "--no-progress"], capsys)
    assert code == 1 and one_error(err) == f"vlground: error: {denied_dir / 'mm'}: Permission denied"
