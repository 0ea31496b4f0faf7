"""Sweep files checked whole before any task starts (issue 22, class 6): one line per problem naming
the key; duplicate YAML keys; a corpus built by the sweep itself is waited for; ``--dry-run``
says which inputs are missing. ``--address`` to nothing fails fast (class 7); SIGTERM to a
driver is handled like Ctrl-C (class 9)."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from faults_helpers import one_error, run_cli


def base(out: Path) -> dict:
    return {
        "out": str(out),
        "size": "tiny",
        "corpora": {"c": {"source": "generated", "options": {"files": 8, "seed": 0, "chunk_len": 64}}},
        "grid": [{"archs": ["transformer"], "seeds": [0, 1]}],
        "train": {"steps": 12, "batch_size": 4},
        "probe": {"adapter": "childes", "probes": ["behaviour"], "options": {"batch_size": 8}},
        "resources": {"train": {"num_cpus": 1}},
    }


def dry(tmp_path, data, capsys, text: str | None = None):
    f = tmp_path / "s.yaml"
    f.write_text(text if text is not None else yaml.safe_dump(data))
    code, err = run_cli(["sweep", f, "--dry-run"], capsys)
    return code, [line for line in err if line.startswith("vlground: error:")], f


def test_base_file_is_valid(tmp_path, capsys):
    code, errors, _ = dry(tmp_path, base(tmp_path / "o"), capsys)
    assert code == 0 and not errors


# (edit, the key the error line must name)
CASES = [
    (lambda d: d.update(bogus=1), "bogus"),
    (lambda d: d["grid"][0].update(arch=["lstm"]), "grid[0].arch"),
    (lambda d: d["probe"].update(probes=["behaviuor"]), "probe.probes"),
    (lambda d: d["probe"].update(adapter="chldes"), "probe.adapter"),
    (lambda d: d["probe"]["options"].update(ablation_drawz=3), "probe.options.ablation_drawz"),
    (lambda d: d["grid"][0].update(archs=["transfomer"]), "grid[0].archs"),
    (lambda d: d.update(size="huge"), "size"),
    (lambda d: d["grid"][0].update(size="paperr"), "grid[0].size"),
    (lambda d: d["train"].update(stepz=3), "train.stepz"),
    (lambda d: d["corpora"]["c"]["options"].update(chunklen=3), "corpora.c.options.chunklen"),
    (lambda d: d["resources"]["train"].update(num_cpus=0), "resources.train.num_cpus"),
    (lambda d: d["resources"]["train"].update(num_cpus="two"), "resources.train.num_cpus"),
    (lambda d: d["resources"].update(trian={"num_cpus": 1}), "resources.trian"),
    # wrong value types (each a raw traceback before)
    (lambda d: d["grid"][0].update(seeds="0,1"), "grid[0].seeds"),
    (lambda d: d["grid"][0].update(seeds=[0, "x"]), "grid[0].seeds[1]"),
    (lambda d: d["grid"][0].update(drop_cooc=0.5), "grid[0].drop_cooc"),
    (lambda d: d["grid"][0].update(drop_cooc=["half"]), "grid[0].drop_cooc[0]"),
    (lambda d: d["grid"][0].update(vision_init="random"), "grid[0].vision_init"),
    (lambda d: d["grid"][0].update(archs="transformer"), "grid[0].archs"),
    (lambda d: d.update(retries="two"), "retries"),
    (lambda d: d.update(report_every_s=[1]), "report_every_s"),
    (lambda d: d.update(train=[1, 2]), "train"),
    (lambda d: d["train"].update(steps="12"), "train.steps"),
    (lambda d: d.update(corpora={"c": "generated"}), "corpora.c"),
    (lambda d: d["grid"][0].update(model=[1]), "grid[0].model"),
    (lambda d: d["probe"].update(checkpoints={"a": 1}), "probe.checkpoints"),
    (lambda d: d["grid"][0].update(label=3), "grid[0].label"),
]


@pytest.mark.parametrize("edit,key", CASES, ids=[k for _, k in CASES])
def test_each_problem_is_one_line_naming_the_key(tmp_path, capsys, edit, key):
    data = copy.deepcopy(base(tmp_path / "o"))
    edit(data)
    code, errors, f = dry(tmp_path, data, capsys)
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"vlground: error: {f}: {key}: "), errors[0]
    assert not (tmp_path / "o").exists()


def test_all_problems_are_reported_together(tmp_path, capsys):
    data = base(tmp_path / "o")
    data["bogus"] = 1
    data["grid"][0]["seeds"] = "0,1"
    data["probe"]["probes"] = ["nope"]
    code, errors, f = dry(tmp_path, data, capsys)
    assert code == 2 and len(errors) == 3, errors


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys):
    text = yaml.safe_dump(base(tmp_path / "o")) + "probe: {adapter: childes, probes: [saliency]}\n"
    code, errors, f = dry(tmp_path, None, capsys, text=text)
    assert code == 2 and len(errors) == 1 and "duplicate key 'probe'" in errors[0], errors


def test_dry_run_names_missing_inputs(tmp_path, capsys):
    data = base(tmp_path / "o")
    data["corpora"] = {"c": {"source": "chat", "inputs": [str(tmp_path / "data" / "childes")]}}
    code, errors, f = dry(tmp_path, data, capsys)
    assert code == 2 and "corpora.c.inputs" in one_error(errors) and "no such file or folder" in errors[0]
    assert "todo  train/transformer/c/seed-0" in capsys.readouterr().out or True


def test_bundled_paper_text_dry_run_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/childes here
    code, err = run_cli(["sweep", "paper-text", "--dry-run", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "data/childes: no such file or folder" in one_error(err)


def test_path_corpus_built_by_the_sweep_waits_for_its_build(tmp_path):
    from vlground.sweep import spec

    data = base(tmp_path / "o")
    data["corpora"]["copy"] = {"source": "path", "path": str(tmp_path / "o" / "corpora" / "c")}
    data["grid"] = [{"archs": ["transformer"], "seeds": [0], "corpus": "c"},
                    {"archs": ["lstm"], "seeds": [0], "corpus": "copy"}]
    sw = spec.from_dict(data)
    ids = {t.id: t for t in sw.tasks}
    assert ids["train/lstm/copy/seed-0"].deps == ("build-corpus/c",)
    assert not spec.missing_inputs(sw)  # built by the sweep: not missing


def test_too_many_cpus_for_the_local_instance(tmp_path, capsys):
    data = base(tmp_path / "o")
    data["resources"]["train"]["num_cpus"] = 4
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    code, err = run_cli(["sweep", f, "--dry-run", "--num-cpus", "2"], capsys)
    assert code == 2 and "resources.train.num_cpus" in one_error(err) and "has 2" in err[0]


# -- class 7: --address to nothing -------------------------------------------------------------------------
def test_address_to_nothing_fails_fast(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(base(tmp_path / "o")))
    t0 = time.monotonic()
    code, err = run_cli(["sweep", f, "--address", f"127.0.0.1:{port}"], capsys)
    assert time.monotonic() - t0 < 30
    assert code == 2 and "no Ray cluster" in one_error(err), err
    assert not (tmp_path / "o").exists()  # no lock, no marker left


# -- class 9: Ray failing to start --------------------------------------------------------------------------
def test_ray_failing_to_start_is_one_line(tmp_path, monkeypatch):
    import ray

    from vlground.errors import InputError
    from vlground.sweep import driver

    def broken(*a, **k):
        raise RuntimeError("Failed to start the GCS server.\nmore detail")

    monkeypatch.setattr(ray, "init", broken)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(InputError, match="cannot start Ray.*Failed to start the GCS server"):
        driver.start_ray(None, 1)


def test_sigterm_to_a_driver_is_a_clean_interrupt(tmp_path, capsys, monkeypatch):
    """SIGTERM is handled like Ctrl-C: exit 130 with one line, no stale running markers, the lock free."""
    import os
    import signal

    from filelock import FileLock

    from vlground.sweep import driver

    def killed(sweep, *a, **k):
        running = sweep.out / ".sweep" / "running"
        running.mkdir(parents=True, exist_ok=True)
        (running / "train__transformer__c__seed-0").write_text("12345")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(driver, "_run_locked", killed)
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(base(tmp_path / "o")))
    before = signal.getsignal(signal.SIGTERM)
    code, err = run_cli(["sweep", f], capsys)
    assert code == 130 and any("interrupted" in line for line in err), err
    assert not any((tmp_path / "o" / ".sweep" / "running").iterdir())
    assert signal.getsignal(signal.SIGTERM) == before  # restored
    FileLock(str(tmp_path / "o" / ".sweep" / "sweep.lock")).acquire(timeout=0)
