"""Raw tracebacks that became one line (issue 22, class 9): templates with non-strings, run.json
holding ``[]``, a truncated probe-cache ``.npz`` (recomputed with a note), damaged results read
through ``vlground.results.load`` (InputError, never TypeError/ArrowInvalid/BadZipFile)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from faults_helpers import one_error, run_cli

PROBE = ["probe", "--adapter", "childes", "--checkpoints", "last", "--no-report"]


@pytest.mark.parametrize("templates", [
    {"env": ["CHI: look {}", 3], "lan": ["MOT: a {}"]},
    {"env": ["CHI: look {}"], "lan": [None]},
    {"env": ["CHI: look {}"], "lan": ["MOT: a {}"], "targets": ["ball", 7]},
    {"env": "CHI: look {}", "lan": ["MOT: a {}"]},
])
def test_templates_with_non_strings_are_one_line(tiny_runs, tmp_path, capsys, templates):
    f = tmp_path / "t.json"
    f.write_text(json.dumps(templates))
    code, err = run_cli([*PROBE, "--run", tiny_runs["transformer"], "--templates", f, "--out", tmp_path / "p"], capsys)
    assert code == 2 and str(f) in one_error(err)
    assert not (tmp_path / "p").exists()


def test_run_json_holding_a_list_is_one_line(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["transformer"], run)
    (run / "run.json").write_text("[]")
    code, err = run_cli(["train", "--corpus", tiny_runs["corpus"], "--out", run, "--resume", "--steps", "12",
                         "--batch-size", "4", "--checkpoint-every", "4", "--checkpoint-dense-until", "0",
                         "--warmup-steps", "2", "--no-progress"], capsys)
    assert code == 2 and "run.json: corrupt" in one_error(err)
    code, err = run_cli([*PROBE, "--run", run, "--out", tmp_path / "p"], capsys)
    assert code == 2 and "run.json: corrupt" in one_error(err)


def test_truncated_cache_npz_is_recomputed_with_a_note(tiny_runs, tmp_path, capsys):
    from vlground import results

    args = [*PROBE, "--run", tiny_runs["transformer"], "--probes", "behaviour,heads", "--mechanistic-checkpoints", "last",
            "--out", tmp_path / "p"]
    assert run_cli(args, capsys)[0] == 0
    (npz,) = [f for f in (tmp_path / "p" / "cache").glob("*.npz") if not f.name.startswith("reference-")]
    whole = npz.read_bytes()
    npz.write_bytes(whole[: len(whole) // 3])
    code, err = run_cli(args, capsys)
    assert code == 0, err
    res = results.load(tmp_path / "p")
    assert any("damaged" in n for n in res.notes)
    assert res.arrays(res.checkpoints[0]["key"])  # the arrays are whole again
    assert len(npz.read_bytes()) > len(whole) // 3


@pytest.fixture()
def probed(tiny_runs, tmp_path_factory, capsys) -> Path:
    out = tmp_path_factory.mktemp("probed") / "p"
    args = [*PROBE, "--run", tiny_runs["transformer"], "--probes", "behaviour,heads", "--mechanistic-checkpoints", "last",
            "--out", out]
    assert run_cli(args, capsys)[0] == 0
    return out


@pytest.mark.parametrize("damage", [
    lambda d: d.update(checkpoints="oops"),
    lambda d: d.update(checkpoints=[1, 2]),
    lambda d: d.update(probes={"behaviour": []}),
    lambda d: d["probes"]["behaviour"].update(records="x"),
    lambda d: d.update(notes={"a": 1}),
])
def test_damaged_results_json_is_an_input_error(probed, damage):
    from vlground import results
    from vlground.errors import InputError

    f = probed / "results.json"
    data = json.loads(f.read_text())
    damage(data)
    f.write_text(json.dumps(data))
    with pytest.raises(InputError, match="damaged results"):
        results.load(probed)


def test_truncated_parquet_and_npz_are_input_errors(probed):
    from vlground import results
    from vlground.errors import InputError

    res = results.load(probed)
    key = res.checkpoints[0]["key"]
    assert len(res.frame("items")) and res.arrays(key)
    items = probed / "items.parquet"
    items.write_bytes(items.read_bytes()[:200])
    with pytest.raises(InputError, match="items.parquet: damaged"):
        results.load(probed).frame("items")
    (arr,) = (probed / "arrays").glob("*.npz")
    arr.write_bytes(arr.read_bytes()[:100])
    with pytest.raises(InputError, match="damaged"):
        results.load(probed).arrays(key)
