"""Tuned lens files (defect 9): written atomically; a truncated one is retrained with a note."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from faults_helpers import run_cli, snapshot


def _lens():
    from vlground.mechanism.lens import TunedLens
    from vlground.mechanism.unembed import Unembedding

    torch.manual_seed(0)
    unembed = Unembedding(head=torch.nn.Linear(8, 11, bias=False), norm=torch.nn.LayerNorm(8))
    return TunedLens.for_unembedding(2, 8, unembed), unembed


def test_lens_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    lens, unembed = _lens()
    lens.save(tmp_path / "tuned-lens")
    before = snapshot(tmp_path)
    with torch.no_grad():
        for p in lens.parameters():
            p.add_(1.0)

    def full(tensors, filename, *a, **k):
        Path(filename).write_bytes(b"\0" * 10)
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError):
        lens.save(tmp_path / "tuned-lens")
    assert snapshot(tmp_path) == before  # the old lens intact, no temporary folder left


def test_truncated_lens_file_is_a_retrain_note(tmp_path):
    from vlground.mechanism.errors import MechanismError
    from vlground.mechanism.lens import TunedLens

    lens, unembed = _lens()
    lens.save(tmp_path / "tuned-lens")
    f = tmp_path / "tuned-lens" / "translators.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(MechanismError, match="truncated or corrupt"):
        TunedLens.load(tmp_path / "tuned-lens", unembed)
    (tmp_path / "tuned-lens" / "config.json").write_text('{"n_layers": 2,')
    with pytest.raises(MechanismError, match="truncated or corrupt"):
        TunedLens.load(tmp_path / "tuned-lens", unembed)


def test_lens_probe_retrains_a_truncated_lens(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["transformer"], run)
    args = ["probe", "--adapter", "childes", "--run", run, "--probes", "lens", "--checkpoints", "last",
            "--mechanistic-checkpoints", "last", "--no-report"]
    assert run_cli([*args, "--out", tmp_path / "p1"], capsys)[0] == 0
    (lens_file,) = run.glob("checkpoints/*/tuned-lens/translators.safetensors")
    lens_file.write_bytes(lens_file.read_bytes()[:64])
    code, err = run_cli([*args, "--out", tmp_path / "p2"], capsys)
    assert code == 0, err
    assert "retrained" in (tmp_path / "p2" / "results.json").read_text()
