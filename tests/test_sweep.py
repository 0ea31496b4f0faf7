"""vlground sweep: the task graph, locks and done markers, and tiny sweeps on a local Ray (2 CPUs).

The Ray tests share one local instance per module (starting one takes seconds on a busy box)
and one uninterrupted tiny sweep that the others compare against.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from vlground.cli import main as cli
from vlground.errors import InputError
from vlground.sweep import driver, spec, tasks

TRAIN = {"steps": 12, "batch_size": 4, "checkpoint_every": 6, "checkpoint_dense_until": 0, "warmup_steps": 2, "log_every": 6}


def tiny(out: Path, corpus: dict | None = None, grid: list | None = None) -> dict:
    """2 archs x 2 seeds x 2 drop-cooc levels on a generated corpus, 12 steps, behaviour probe."""
    return {
        "out": str(out),
        "size": "tiny",
        "corpora": corpus or {"c": {"source": "generated", "options": {"files": 8, "seed": 0, "chunk_len": 64}}},
        "grid": grid or [{"archs": ["transformer", "lstm"], "seeds": [0, 1], "drop_cooc": [0.0, 0.5]}],
        "train": TRAIN,
        "probe": {"adapter": "childes", "probes": ["behaviour"]},
        "resources": {"train": {"num_cpus": 1}, "probe": {"num_cpus": 1}},
        "report_every_s": 3600,  # the combined report once, at the end (plots take seconds)
    }


# --- the task graph (no Ray) ---------------------------------------------------------------

def test_tiny_grid_expands_to_corpus_train_probe_tasks(tmp_path):
    sw = spec.from_dict(tiny(tmp_path))
    kinds = [t.kind for t in sw.tasks]
    assert kinds.count("build-corpus") == 2 and kinds.count("train") == 8 and kinds.count("probe") == 8
    ids = {t.id: t for t in sw.tasks}
    assert len(ids) == len(sw.tasks)
    order = {t.id: i for i, t in enumerate(sw.tasks)}
    for t in sw.tasks:  # dependency order, and each dependency is a task of the sweep
        assert all(order[d] < order[t.id] for d in t.deps)
    train = ids["train/lstm/c-drop50/seed-1"]
    assert train.deps == ("build-corpus/c-drop50",)
    argv = train.args[0]
    assert argv[argv.index("--corpus") + 1] == str(tmp_path / "corpora" / "c-drop50")
    assert argv[argv.index("--seed") + 1] == "1" and "--resume" in argv and argv[argv.index("--steps") + 1] == "12"
    assert ids["probe/lstm/c-drop50/seed-1"].deps == (train.id,)
    assert ids["build-corpus/c-drop50"].kwargs["drop_cooc"] == 0.5


@pytest.mark.parametrize("bad, message", [
    ({"grid": [{"archs": ["gpt5"]}]}, "grid[0].archs: unknown gpt5"),  # the key named (vlground.sweep.schema)
    ({"grid": [{"archs": ["lstm"], "drop_cooc": [1.5]}]}, "grid[0].drop_cooc[0]: want a number in [0, 1]"),
    ({"grid": [{"archs": ["lstm"], "corpus": "nope"}]}, "grid[0].corpus: unknown nope"),
    ({"trian": {}}, "trian: unknown key"),
    ({"probe": {}}, "probe.adapter: needed"),
])
def test_bad_sweep_file_is_one_line_error(tmp_path, bad, message):
    with pytest.raises(InputError, match=None) as e:
        spec.from_dict({**tiny(tmp_path), **bad}, "s.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name, runs", [("paper-text", 45), ("paper-vision", 10), ("demo", 4)])
def test_bundled_sweep_files(name, runs):
    from vlground.cli.sweep import spec_path

    sw = spec.load(spec_path(name))
    assert sum(t.kind == "train" for t in sw.tasks) == runs
    if name == "paper-text":  # one corpus; each ablation run drops its own subset (train --drop-cooc)
        assert [t.id for t in sw.tasks if t.kind == "build-corpus"] == ["build-corpus/childes"]
        assert all("--size" in t.args[0] and "paper" in t.args[0] for t in sw.tasks if t.kind == "train")
        ablation = {t.run: t.args[0] for t in sw.tasks if t.kind == "train" and "-drop" in t.run}
        assert len(ablation) == 20 and all(a[a.index("--drop-cooc") + 1] in ("0.25", "0.5", "0.75", "1.0") for a in ablation.values())


def test_drop_in_train_shares_one_corpus(tmp_path):
    data = tiny(tmp_path, grid=[{"archs": ["transformer"], "seeds": [0, 1], "drop_cooc": [0.0, 0.5], "drop_in": "train"}])
    sw = spec.from_dict(data)
    assert [t.id for t in sw.tasks if t.kind == "build-corpus"] == ["build-corpus/c"]
    train = {t.run: t.args[0] for t in sw.tasks if t.kind == "train"}
    assert set(train) == {"transformer/c/seed-0", "transformer/c/seed-1", "transformer/c-drop50/seed-0", "transformer/c-drop50/seed-1"}
    assert all(a[a.index("--corpus") + 1] == str(tmp_path / "corpora" / "c") for a in train.values())
    assert "--drop-cooc" not in train["transformer/c/seed-0"]
    argv = train["transformer/c-drop50/seed-1"]
    assert argv[argv.index("--drop-cooc") + 1] == "0.5"
    from vlground.cli import build_parser

    args = build_parser("train").parse_args(argv)  # the train command accepts what the sweep gives it
    assert args.h_drop_cooc == 0.5 and args.seed == 1


def test_dry_run_lists_tasks_and_states(tmp_path, capsys):
    import yaml

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(tiny(tmp_path / "out")))
    assert cli(["sweep", str(f), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "todo  train/transformer/c/seed-0" in text and "18 tasks: 0 done, 18 left" in text
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_task_done_marker_and_failure_reason(tmp_path):
    ok = spec.Task("t/ok", "train", "json:dumps", args=([1],), output=str(tmp_path))
    assert tasks.execute(ok, str(tmp_path))["skipped"] is False
    assert tasks.is_done(tmp_path, ok) and tasks.execute(ok, str(tmp_path))["skipped"] is True
    changed = spec.Task("t/ok", "train", "json:dumps", args=([2],), output=str(tmp_path))
    assert not tasks.is_done(tmp_path, changed)  # another fingerprint: not done
    bad = spec.Task("t/bad", "train", "vlground.cli:main",
                    args=(["train", "--corpus", str(tmp_path / "missing"), "--out", str(tmp_path / "run")],), output=str(tmp_path / "run"))
    with pytest.raises(tasks.TaskFailed) as e:
        tasks.execute(bad, str(tmp_path))
    assert "vlground: error:" in e.value.reason and "missing" in e.value.reason
    assert Path(e.value.log_file).is_file() and not tasks.is_done(tmp_path, bad)


def test_second_sweep_over_the_same_folder_is_refused(tmp_path):
    from filelock import FileLock

    sw = spec.from_dict(tiny(tmp_path))
    (tmp_path / ".sweep").mkdir()
    with FileLock(str(tmp_path / ".sweep" / "sweep.lock")):
        with pytest.raises(InputError, match="another sweep is running"):
            driver.run_sweep(sw)


# --- tiny sweeps on local Ray ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; the sweeps reuse it."""
    pytest.importorskip("ray")
    import ray

    assert driver.start_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def full_sweep(ray_local, tmp_path_factory):
    """The uninterrupted tiny sweep: (output folder, outcome, seconds)."""
    out = tmp_path_factory.mktemp("sweep-full")
    t0 = time.perf_counter()
    outcome = driver.run_sweep(spec.from_dict(tiny(out)))
    return out, outcome, time.perf_counter() - t0


def _comparable(out: Path) -> dict:
    """Combined results without what differs between two folders or runs of the same work."""
    from vlground.results import load, seed_summary

    res = load(out / "report")
    recs = [{k: v for k, v in r.items() if k not in ("path", "seconds")} for r in res.checkpoint_rows()]
    return {"checkpoints": sorted(recs, key=lambda r: (r["run"], r["step"])), "seeds": seed_summary(res)}


@pytest.mark.slow
def test_tiny_sweep_end_to_end_then_nothing_to_do(full_sweep):
    out, outcome, _ = full_sweep
    assert outcome.ok and len(outcome.ran) == 18 and not outcome.done_before
    assert outcome.report == out / "report" / "report.html" and outcome.report.is_file()
    from vlground.results import load, seed_summary

    res = load(out / "report")
    seeds = seed_summary(res)
    assert {s["group"] for s in seeds} == {"transformer/c", "transformer/c-drop50", "lstm/c", "lstm/c-drop50"}
    assert {s["n_seeds"] for s in seeds} == {2}
    rows = res.checkpoint_rows()
    assert len(rows) == 8 * 3 and len({r["key"] for r in rows}) == 24  # 8 runs x checkpoints at 0, 6, 12
    assert all(r.get("match_surprisal") is not None for r in rows)
    assert {r["run"] for r in res.rows("items")} == {r["run"] for r in rows}
    assert len(list((out / "logs").glob("*.log"))) == 18
    mtime = outcome.report.stat().st_mtime
    again = driver.run_sweep(spec.from_dict(tiny(out)))
    assert again.ran == [] and len(again.done_before) == 18 and again.ok
    assert outcome.report.stat().st_mtime == mtime


@pytest.mark.slow
def test_killed_halfway_then_rerun_matches_uninterrupted(full_sweep, tmp_path):
    """The Transformer half of the grid (10 tasks), killed after its first run is trained, then
    rerun: the same results as those runs in the uninterrupted sweep."""
    import yaml

    out = tmp_path / "out"
    half = tiny(out, grid=[{"archs": ["transformer"], "seeds": [0, 1], "drop_cooc": [0.0, 0.5]}])
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(half))
    proc = subprocess.Popen([sys.executable, "-m", "vlground", "sweep", str(f), "--num-cpus", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done_dir = out / ".sweep" / "done"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if done_dir.is_dir() and any(p.name.startswith("train__") for p in done_dir.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    n_done = len(list(done_dir.glob("[!.]*.json")))  # not a temporary file left by the kill
    assert 0 < n_done < 10
    outcome = driver.run_sweep(spec.from_dict(half))
    assert outcome.ok and len(outcome.done_before) == n_done and len(outcome.ran) == 10 - n_done
    full = _comparable(full_sweep[0])
    expected = {"checkpoints": [r for r in full["checkpoints"] if r["run"].startswith("transformer/")],
                "seeds": [s for s in full["seeds"] if s["group"].startswith("transformer/")]}
    assert _comparable(out) == expected


@pytest.mark.slow
def test_failing_task_is_reported_while_the_rest_finish(full_sweep, tmp_path, capsys):
    import shutil

    import yaml

    good = full_sweep[0] / "corpora" / "c"
    bad = tmp_path / "bad-corpus"
    shutil.copytree(good, bad)
    data = (bad / "chunks.npy").read_bytes()
    (bad / "chunks.npy").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(tiny(out, corpus={"good": {"source": "path", "path": str(good)}, "bad": {"source": "path", "path": str(bad)}},
                                     grid=[{"archs": ["transformer"], "corpus": "good"}, {"archs": ["transformer"], "corpus": "bad"}])))
    assert cli(["sweep", str(f)]) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "train/transformer/bad/seed-0" in failed[0] and "chunks.npy: corrupt" in failed[0]
    assert str(out / "logs" / "train__transformer__bad__seed-0.log") in failed[0]
    assert any(line.startswith("BLOCKED probe/transformer/bad/seed-0") for line in err.splitlines())
    from vlground.results import load

    assert {r["run"] for r in load(out / "report").checkpoints} == {"transformer/good/seed-0"}


def _tagged_processes(tag: str) -> list[int]:
    """pids of live processes whose environment holds ``VLGROUND_TEST_TAG=<tag>``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"VLGROUND_TEST_TAG={tag}".encode() in env.split(b"\0") and state != "Z":
            pids.append(int(d.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_demo_leaves_no_process(tmp_path, sig):
    tag = uuid.uuid4().hex
    out = tmp_path / "demo"
    env = {**os.environ, "VLGROUND_TEST_TAG": tag}
    proc = subprocess.Popen([sys.executable, "-m", "vlground", "demo", "--quick", "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    running = out / ".sweep" / "running"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if running.is_dir() and any(p.name.startswith("train__") for p in running.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the demo ended before it could be killed"
    assert len(_tagged_processes(tag)) > 2  # the demo, Ray's processes and its task workers
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the terminal's whole process group
    else:
        proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _tagged_processes(tag) == []


def test_report_links_arrays_again_without_error(tmp_path):
    """The combined report is rewritten as probes finish: linking an array that is already linked
    (same file) must neither fail nor leave a temporary file behind."""
    from vlground.sweep.report import _link

    src = tmp_path / "probe" / "a.npz"
    src.parent.mkdir()
    src.write_bytes(b"x")
    dst = tmp_path / "report" / "arrays" / "a.npz"
    for _ in range(3):
        _link(src, dst)
    assert dst.read_bytes() == b"x" and os.path.samefile(src, dst)
    assert [p.name for p in dst.parent.iterdir()] == ["a.npz"]


@pytest.mark.slow
def test_claims_on_the_combined_sweep_report_read_the_key_findings(full_sweep):
    """On the real combined report of a tiny sweep (groups ``transformer/c``, ...): the R² claims are
    evaluated (an architecture is found in the sweep's group names), and each group's
    match < mismatch row quotes the key findings' verdict line for the same step."""
    from vlground.claims import NOT_TESTABLE, claims_table
    from vlground.report.verdicts import final_rows, verdict_table
    from vlground.results import load

    out, outcome, _ = full_sweep
    res = load(out / "report")
    rows = claims_table(res)
    r2 = {r.group: r for r in rows if "R²" in r.claim and r.group}
    assert set(r2) == {"transformer/c", "transformer/c-drop50", "lstm/c", "lstm/c-drop50"}
    for r in r2.values():  # evaluated: a verdict, or not testable because the gain is noise
        assert r.verdict != NOT_TESTABLE or "noise" in r.why or "undefined" in r.this_run, r  # never "no architecture"
        if "undefined" not in r.this_run:  # an R² that exists comes with its interval and permutation p
            assert "permutation p" in r.this_run and "[95% CI" in r.this_run
    findings = {v["group"]: v for v in final_rows(verdict_table(res))}
    match = {r.group: r for r in rows if r.claim == "match < mismatch"}
    assert set(match) == set(findings)
    for g, v in findings.items():
        assert v["line"] in match[g].this_run and match[g].this_run.startswith(f"step {v['step']} ")
    html = outcome.report.read_text()
    for v in findings.values():
        assert html.count(f"p = {v['p_corrected']:.2g}") >= 2  # key findings and the claims table
