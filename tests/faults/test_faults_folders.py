"""Output folders (issue 22, classes 2 and 3): every command's folder carries the marker of its
kind; writing into a folder of another kind, inside one that may not hold it, or inside an
input is refused in one line with nothing written; ``--overwrite`` replaces a probe folder whole
(old items and arrays never read as new)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faults_helpers import one_error, run_cli, snapshot

FAST = ["--steps", "2", "--batch-size", "2", "--checkpoint-every", "0", "--checkpoint-dense-until", "2",
        "--warmup-steps", "1", "--no-progress"]
PROBE = ["probe", "--adapter", "childes", "--checkpoints", "last", "--no-report"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from vlground.datasets.chat_generator import build_default_corpus

    return build_default_corpus(tmp_path_factory.mktemp("c") / "corpus", seed=0, n_files=6, chunk_len=32)


def test_train_inside_a_corpus_is_refused(corpus, tmp_path, capsys):
    before = snapshot(corpus)
    code, err = run_cli(["train", "--corpus", corpus, "--out", corpus / "runs" / "x", *FAST], capsys)
    assert code == 2 and "lies inside" in one_error(err) and "corpus" in one_error(err)
    assert snapshot(corpus) == before and not (corpus / "runs").exists()


def test_train_inside_another_corpus_folder_is_refused(corpus, tmp_path, capsys):
    other = tmp_path / "other-corpus"
    shutil.copytree(corpus, other)
    code, err = run_cli(["train", "--corpus", corpus, "--out", other / "runs" / "x", *FAST], capsys)
    assert code == 2 and "a vlground corpus folder" in one_error(err)


def test_overwrite_of_a_corpus_holding_a_run_is_refused(corpus, tmp_path, capsys):
    """A run put inside a corpus before this check existed is never deleted by --overwrite."""
    from vlground.datasets.chat_generator import generate_transcripts

    old = tmp_path / "corpus"
    shutil.copytree(corpus, old)
    run = old / "runs" / "x"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    chat = tmp_path / "chat"
    generate_transcripts(chat, n_files=2, seed=1)
    before = snapshot(old)
    code, err = run_cli(["build-corpus", chat, "--out", old, "--overwrite", "--chunk-len", "32", "--no-progress"], capsys)
    assert code == 2 and "--overwrite would delete it" in one_error(err)
    assert snapshot(old) == before


def test_every_command_marks_its_folder(tiny_runs, tmp_path, capsys):
    from vlground.folders import kind_of

    assert kind_of(tiny_runs["corpus"]) == "corpus"
    assert kind_of(tiny_runs["transformer"]) == "run"
    assert run_cli([*PROBE, "--run", tiny_runs["transformer"], "--out", tmp_path / "p"], capsys)[0] == 0
    assert kind_of(tmp_path / "p") == "probe" and (tmp_path / "p" / ".vlground-folder").read_text().strip() == "probe"
    assert kind_of(tmp_path) is None


@pytest.mark.parametrize("kind", ["run", "corpus"])
def test_probe_into_a_run_or_corpus_is_refused(tiny_runs, tmp_path, capsys, kind):
    target = tmp_path / kind
    shutil.copytree(tiny_runs["transformer" if kind == "run" else "corpus"], target)
    before = snapshot(target)
    for out in (target, target / "probe"):
        code, err = run_cli([*PROBE, "--run", tiny_runs["transformer"], "--out", out, "--overwrite"], capsys)
        assert code == 2 and f"vlground {kind} folder" in one_error(err), err
    assert snapshot(target) == before


def test_probe_into_its_own_run_is_refused(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["transformer"], run)
    before = snapshot(run)
    code, err = run_cli([*PROBE, "--run", run, "--out", run / "checkpoints" / "p"], capsys)
    assert code == 2 and one_error(err)
    assert snapshot(run) == before


def test_sweep_into_a_corpus_is_refused(corpus, tmp_path, capsys):
    from vlground.errors import InputError
    from vlground.sweep import driver, spec

    target = tmp_path / "corpus"
    shutil.copytree(corpus, target)
    before = snapshot(target)
    sw = spec.from_dict({"corpora": {"c": {"source": "path", "path": str(corpus)}},
                         "grid": [{"archs": ["transformer"], "seeds": [0]}], "probe": {"adapter": "childes"}}, out=target)
    with pytest.raises(InputError, match="vlground corpus folder"):
        driver.run_sweep(sw)
    assert snapshot(target) == before and not (target / ".sweep").exists()


def test_monitor_into_a_probe_or_run_folder_is_refused(tmp_path):
    from vlground.errors import InputError
    from vlground.folders import check_output, claim

    probe, run = tmp_path / "probe", tmp_path / "run"
    claim(probe, "probe")
    claim(run, "run")
    for out in (probe, run, run / "monitor"):
        with pytest.raises(InputError):
            check_output(out, "monitor")
    check_output(probe / "monitor-pope", "monitor")  # a probe folder holds its monitors (the documented layout)
    check_output(tmp_path / "sweep" / "runs" / "x", "run")
    claim(tmp_path / "sweep", "sweep")
    check_output(tmp_path / "sweep" / "runs" / "x", "run")  # a sweep holds every kind


def test_monitor_run_refuses_a_probe_folder(tmp_path):
    """run_monitor checks its --out before loading anything."""
    from vlground.errors import InputError
    from vlground.folders import claim
    from vlground.monitor.run import MonitorConfig, run_monitor
    from vlground.monitor.tasks import TaskConfig
    from vlground.testing import FakeAdapter

    probe = tmp_path / "probe"
    claim(probe, "probe")
    (probe / "report.html").write_text("precious")
    before = snapshot(probe)
    cfg = MonitorConfig(out=probe, heads=tmp_path / "heads.json", task=TaskConfig(task="pope"))
    with pytest.raises(InputError, match="vlground probe folder"):
        run_monitor(FakeAdapter(), cfg)
    assert snapshot(probe) == before


# -- 3. --overwrite replaces the folder whole -------------------------------------------------------------
def test_overwrite_leaves_no_old_rows(tiny_runs, tmp_path, capsys):
    from vlground import results

    out = tmp_path / "p"
    first = [*PROBE, "--run", tiny_runs["transformer"], "--probes", "behaviour,heads", "--mechanistic-checkpoints", "last"]
    assert run_cli([*first, "--out", out], capsys)[0] == 0
    old_arrays = sorted(p.name for p in (out / "arrays").iterdir())
    assert old_arrays
    code, err = run_cli([*PROBE, "--run", tiny_runs["lstm"], "--probes", "behaviour", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    res = results.load(out)
    assert {c["run"] for c in res.checkpoints} == {"lstm"}
    assert set(res.frame("items")["run"]) == {"lstm"}
    assert not (out / "arrays").exists() or not any((out / "arrays").iterdir())  # no head maps of the old run
    assert sorted(p.name for p in (out / "cache").glob("*.json") if p.name != "fingerprints.json") == ["lstm@12.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary sibling left


def test_failed_overwrite_keeps_the_old_folder_intact(tiny_runs, tmp_path, capsys, monkeypatch):
    import vlground.probes.runner as runner

    out = tmp_path / "p"
    assert run_cli([*PROBE, "--run", tiny_runs["transformer"], "--out", out], capsys)[0] == 0
    before = {k: v for k, v in snapshot(out).items() if not k.endswith(".probe.lock")}

    def boom(res, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(runner, "write", boom)
    code, err = run_cli([*PROBE, "--run", tiny_runs["lstm"], "--probes", "behaviour", "--out", out, "--overwrite"], capsys)
    assert code == 1 and one_error(err)
    assert {k: v for k, v in snapshot(out).items() if not k.endswith(".probe.lock")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_parquet_of_another_write_is_not_read_as_new(tiny_runs, tmp_path, capsys):
    """results.json and items.parquet carry one token per write: a mixed pair is an error."""
    from vlground import results
    from vlground.errors import InputError

    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli([*PROBE, "--run", tiny_runs["transformer"], "--out", a], capsys)[0] == 0
    assert run_cli([*PROBE, "--run", tiny_runs["lstm"], "--out", b], capsys)[0] == 0
    shutil.copy(a / "items.parquet", b / "items.parquet")
    with pytest.raises(InputError, match="not written with"):
        results.load(b).frame("items")
