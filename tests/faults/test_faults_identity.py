"""Run identity (issue 22, class 1) and inputs counted twice (class 5): checkpoint keys name a run
uniquely; two runs that collide anyway are an error; one run given twice is probed once, with a
warning."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from faults_helpers import one_error, run_cli

PROBE = ["probe", "--adapter", "childes", "--probes", "behaviour", "--checkpoints", "last", "--no-report"]


@pytest.fixture()
def sweep_layout(tiny_runs, tmp_path) -> Path:
    """The sweep's own layout: runs/<arch>/<corpus>/seed-0 for two architectures."""
    root = tmp_path / "runs"
    for arch in ("transformer", "lstm"):
        shutil.copytree(tiny_runs[arch], root / arch / "childes" / "seed-0")
    return root


def test_sweep_layout_runs_get_distinct_keys(sweep_layout, tmp_path, capsys):
    from vlground import results

    runs = [sweep_layout / a / "childes" / "seed-0" for a in ("transformer", "lstm")]
    code, err = run_cli([*PROBE, "--run", *runs, "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    res = results.load(tmp_path / "p")
    keys = [c["key"] for c in res.checkpoints]
    assert len(keys) == 2 and len(set(keys)) == 2, keys
    assert {c["run"] for c in res.checkpoints} == {"transformer/childes/seed-0", "lstm/childes/seed-0"}
    assert {r["key"] for r in res.rows("items")} == set(keys)  # both runs' rows survive
    assert len(list((tmp_path / "p" / "cache").glob("*@*.json"))) == 2


def test_run_names_are_short_when_distinct():
    from vlground.runid import run_names

    assert run_names(["a/tf-s0", "a/tf-s1"]) == ["tf-s0", "tf-s1"]
    assert run_names(["runs/lstm/seed-0", "runs/tf/seed-0"]) == ["lstm/seed-0", "tf/seed-0"]
    assert run_names(["x/a/c/seed-0", "y/a/c/seed-0", "x/b/c/seed-0"]) == ["x/a/c/seed-0", "y/a/c/seed-0", "b/c/seed-0"]


def test_colliding_keys_are_an_error(tmp_path):
    from vlground.engine.adapter import Checkpoint
    from vlground.errors import InputError
    from vlground.probes.runner import run_probes
    from vlground.testing import FakeAdapter

    class Clashing(FakeAdapter):  # an adapter whose own names collide
        def checkpoints(self):
            return [Checkpoint(run="r", path=f"fake://{s}/10", seed=s, step=10, group="fake") for s in (0, 1)]

    with pytest.raises(InputError, match="collides"):
        run_probes(Clashing(), ["behaviour"], out=tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()


def test_keys_that_map_to_one_file_name_collide():
    from vlground.engine.adapter import Checkpoint
    from vlground.errors import InputError
    from vlground.runid import check_unique_keys

    with pytest.raises(InputError, match="collides"):
        check_unique_keys([Checkpoint(run="a b", path="p1", step=1), Checkpoint(run="a_b", path="p2", step=1)])


def test_same_run_twice_is_probed_once_with_a_warning(tiny_runs, tmp_path, capsys, caplog):
    from vlground import results

    link = tmp_path / "link"
    link.symlink_to(tiny_runs["transformer"], target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="vlground"):
        code, err = run_cli([*PROBE, "--run", tiny_runs["transformer"], link, tiny_runs["transformer"],
                             "--out", tmp_path / "p"], capsys)
    assert code == 0, err
    assert len(results.load(tmp_path / "p").checkpoints) == 1
    assert sum("counted once" in r.getMessage() for r in caplog.records) == 2


def test_one_cha_given_twice_is_counted_once(tmp_path, capsys, caplog):
    from vlground.corpus.format import Corpus
    from vlground.datasets.chat_generator import generate_transcripts

    chat = tmp_path / "chat"
    generate_transcripts(chat, n_files=3, seed=0)
    files = sorted(chat.glob("*.cha"))
    link = tmp_path / "link"
    link.symlink_to(chat, target_is_directory=True)
    once = ["build-corpus", *files, "--out", tmp_path / "once", "--chunk-len", "32", "--no-progress"]
    assert run_cli(once, capsys)[0] == 0
    with caplog.at_level(logging.WARNING, logger="vlground"):
        twice = ["build-corpus", chat, link, files[0], "--out", tmp_path / "twice", "--chunk-len", "32", "--no-progress"]
        code, err = run_cli(twice, capsys)
    assert code == 0, err
    assert Corpus.load(tmp_path / "twice").n_chunks == Corpus.load(tmp_path / "once").n_chunks
    assert any("counted once" in r.getMessage() for r in caplog.records)
