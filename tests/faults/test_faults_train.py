"""train: unreadable checkpoints, a second trainer on one run, a truncated final checkpoint, a
full disk, options that fail after writing, a plain-pickle trainer state."""
from __future__ import annotations

import builtins
import errno
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faults_helpers import one_error, run_cli, snapshot

FAST = ["--steps", "4", "--batch-size", "2", "--checkpoint-every", "0", "--checkpoint-dense-until", "4",
        "--warmup-steps", "1", "--log-every", "1", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from vlground.datasets.chat_generator import build_default_corpus

    return build_default_corpus(tmp_path_factory.mktemp("c") / "corpus", seed=0, n_files=6, chunk_len=32)


def train(corpus, out, capsys, *extra):
    return run_cli(["train", "--corpus", corpus, "--out", out, *FAST, *extra], capsys)


def ckpts(run: Path) -> dict[str, str]:
    return snapshot(run / "checkpoints")


# -- 3. resume never discards checkpoints it could not read for reasons other than corruption ------------
def test_unreadable_checkpoint_stops_resume_and_is_kept(corpus, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert train(corpus, run, capsys, "--stop-after", "2")[0] == 0
    before = ckpts(run)
    denied = run / "checkpoints" / "step-2" / "trainer_state.pt"
    real_open = builtins.open

    def fake_open(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    code, err = train(corpus, run, capsys, "--resume")
    assert code == 1 and one_error(err) == f"vlground: error: {denied}: Permission denied"
    assert ckpts(run) == before  # nothing renamed *.corrupt-PID, nothing retrained
    assert not list((run / "checkpoints").glob("*.corrupt-*"))


def test_plain_pickle_trainer_state_is_set_aside_not_a_traceback(corpus, tmp_path, capsys):
    import argparse

    run = tmp_path / "run"
    assert train(corpus, run, capsys, "--stop-after", "2")[0] == 0
    earlier = snapshot(run / "checkpoints" / "step-1")
    (run / "checkpoints" / "step-2" / "trainer_state.pt").write_bytes(pickle.dumps(argparse.Namespace(step=2)))
    code, err = train(corpus, run, capsys, "--resume")
    assert code == 0, err
    assert list((run / "checkpoints").glob("step-2.corrupt-*"))  # damaged: set aside, resumed from step 1
    assert snapshot(run / "checkpoints" / "step-1") == earlier
    assert (run / "checkpoints" / "step-4" / "model.safetensors").is_file()


# -- 11 (train part). "already complete" only when the final checkpoint reads back ------------------------
def test_truncated_final_checkpoint_is_not_complete(corpus, tmp_path, capsys):
    from vlground.train.checkpoint import load_model

    run = tmp_path / "run"
    assert train(corpus, run, capsys)[0] == 0
    earlier = snapshot(run / "checkpoints" / "step-2")
    weights = run / "checkpoints" / "step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = train(corpus, run, capsys, "--resume")
    assert code == 0, err
    load_model(run / "checkpoints" / "step-4")  # retrained: reads back
    assert list((run / "checkpoints").glob("step-4.corrupt-*"))
    assert snapshot(run / "checkpoints" / "step-2") == earlier


# -- 13. two trainers of one run: the second is refused, naming the holder -------------------------------
def test_second_trainer_is_refused(corpus, tmp_path, capsys):
    from vlground.train.loop import LOCK

    run = tmp_path / "run"
    assert train(corpus, run, capsys, "--stop-after", "2")[0] == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom vlground.locks import exclusive\n"
         f"with exclusive({str(run / LOCK)!r}, 'run'):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        code, err = train(corpus, run, capsys, "--resume")
        line = one_error(err)
        assert code == 2 and f"in use by process {holder.pid}" in line and str(run) in line
        assert snapshot(run) == before  # no log line, no checkpoint touched
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert train(corpus, run, capsys, "--resume")[0] == 0  # the lock dies with its holder


# -- 6. a full disk while training is one line, exit 1; earlier checkpoints intact ------------------------
def test_full_disk_in_training(corpus, tmp_path, capsys, monkeypatch):
    import torch

    run = tmp_path / "run"
    assert train(corpus, run, capsys, "--stop-after", "2")[0] == 0
    before = ckpts(run)

    def full_disk_save(obj, f, *a, **k):  # what torch.save does on a full disk (seen on /dev/full)
        if isinstance(f, (str, os.PathLike)):  # its own C++ writer
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        raise OSError(errno.ENOSPC, "No space left on device")  # through a Python file object

    monkeypatch.setattr(torch, "save", full_disk_save)  # vlground.train.checkpoint imports torch where it saves
    code, err = train(corpus, run, capsys, "--resume")
    line = one_error(err)
    assert code == 1 and line.endswith("trainer_state.pt: No space left on device"), line
    assert ckpts(run) == before
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


# -- 7 (train part). nothing is written before the options are checked -----------------------------------
@pytest.mark.parametrize("bad", [["--lr", "nan"], ["--model-arg", "n_head=5"], ["--model-arg", "n_layer=-1"]])
def test_bad_options_write_nothing(corpus, tmp_path, capsys, bad):
    run = tmp_path / "run"
    code, err = train(corpus, run, capsys, *bad)
    assert code == 2 and one_error(err)
    assert not (run / "run.json").exists()
    assert train(corpus, run, capsys, "--stop-after", "1")[0] == 0  # the retry is not blocked


# -- 14. option values: blame the option, not a config file -----------------------------------------------
@pytest.mark.parametrize("flag,value", [("--steps", "0"), ("--batch-size", "0"), ("--seed", "-3")])
def test_bad_values_blame_the_option(corpus, tmp_path, capsys, flag, value):
    code, err = run_cli(["train", "--corpus", corpus, "--out", tmp_path / "r", flag, value, "--no-progress"], capsys)
    line = one_error(err)
    assert code == 2 and flag in line and ".json" not in line, line
    assert not (tmp_path / "r").exists()


# -- 4-like: an unrelated --out folder is refused before anything (not even a lock file) is written --------
def test_unrelated_out_folder_gets_nothing(corpus, tmp_path, capsys):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    before = snapshot(other)
    code, err = train(corpus, other, capsys)
    assert code == 2 and "not a vlground run folder" in one_error(err)
    assert snapshot(other) == before and sorted(p.name for p in other.iterdir()) == ["chapter1.tex"]


# -- 14. a killed trainer's temporary checkpoint folder is removed by the next run -------------------------
def test_stale_checkpoint_temp_is_cleaned(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run, capsys, "--stop-after", "2")[0] == 0
    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                             text=True).stdout)
    stale = run / "checkpoints" / f".step-3.tmp-{pid}-x1y2"  # a step the resumed run never writes
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert train(corpus, run, capsys, "--resume")[0] == 0
    assert not stale.exists()


# -- issue 22, class 4: failure is never reported as success -----------------------------------------------
def test_diverging_training_stops_and_keeps_finite_checkpoints(corpus, tmp_path, capsys):
    import torch
    from safetensors.torch import load_file

    run = tmp_path / "run"
    code, err = train(corpus, run, capsys, "--lr", "1e6", "--steps", "30", "--checkpoint-dense-until", "30")
    line = one_error(err)
    assert code != 0 and "diverged" in line and "kept" in line, line
    for f in (run / "checkpoints").glob("step-*/model.safetensors"):
        assert all(bool(torch.isfinite(t).all()) for t in load_file(f).values()), f


def test_nan_weights_are_never_checkpointed(corpus, tmp_path, capsys, monkeypatch):
    """Weights that turn NaN while the loss was still finite stop training before they are saved."""
    import torch

    import vlground.train.loop as loop

    real = loop._val_loss

    def poisoned(accelerator, model, *a, **k):
        val = real(accelerator, model, *a, **k)
        if getattr(poisoned, "calls", 0) >= 1:  # after the step-0 checkpoint
            with torch.no_grad():
                next(accelerator.unwrap_model(model).parameters()).fill_(float("nan"))
        poisoned.calls = getattr(poisoned, "calls", 0) + 1
        return val

    monkeypatch.setattr(loop, "_val_loss", poisoned)
    run = tmp_path / "run"
    code, err = train(corpus, run, capsys)
    assert code != 0 and "diverged by step 1" in one_error(err)
    assert [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-0"]


def test_corpus_without_tokenizer_is_refused_before_training(corpus, tmp_path, capsys):
    broken = tmp_path / "corpus"
    shutil.copytree(corpus, broken)
    (broken / "tokenizer.json").unlink()
    code, err = train(broken, tmp_path / "run", capsys)
    assert code == 2 and "tokenizer.json: missing" in one_error(err)
    assert not (tmp_path / "run").exists()
