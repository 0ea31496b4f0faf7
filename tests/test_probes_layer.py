"""The probe layer: registry, options -> flags, results schema v2 and its loader, the content-keyed
cache, heads identified at each run's reference checkpoint."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from vlground import options as opt
from vlground.cli import main
from vlground.errors import InputError
from vlground.probes import get_probe_class, known_probes, register_probe, unregister_probe
from vlground.probes.base import Probe, ProbeContext, ProbeResult, RunReference
from vlground.probes.runner import run_probes
from vlground.results import load
from vlground.testing import FakeAdapter


# ---------------------------------------------------------------- registry

def test_builtin_probes_are_known_and_a_typo_lists_them():
    assert known_probes()[:7] == ["behaviour", "saliency", "heads", "ablation", "lens", "boxheads", "boxablation"]
    with pytest.raises(InputError, match="known probes: behaviour, saliency"):
        get_probe_class("behavior")


@dataclass
class _Row:
    n: int


class _CountProbe(Probe):
    name = "count-items"
    doc = "counts items"

    @dataclass
    class Options:
        scale: float = 1.0  #: multiply the count by this

    def run(self, ctx: ProbeContext) -> ProbeResult:
        return ProbeResult(record={"n_scaled": len(ctx.items) * self.options.scale}, tables={"counts": [_Row(len(ctx.items))]},
                           arrays={"ones": np.ones(3)})


def test_a_new_probe_is_one_class_and_runs_through_the_runner(tmp_path):
    register_probe()(_CountProbe)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_probe()(_CountProbe)
        res = run_probes(FakeAdapter.from_options({"steps": (0, 10), "seeds": (0,)}), ["count-items"], {"scale": 2.0},
                         out=str(tmp_path / "o"), progress=False)  # a str path is accepted
        assert [r["n_scaled"] for r in res.records("count-items")] == [2.0 * r["n"] for r in res.rows("counts")]
        back = load(tmp_path / "o")
        assert back.records("count-items") == res.records("count-items")
        assert np.array_equal(back.arrays(back.checkpoints[0]["key"])["count-items.ones"], np.ones(3))
    finally:
        unregister_probe("count-items")


def test_a_probe_whose_module_cannot_import_is_named(monkeypatch):
    register_probe("broken")("no_such_module_xyz:Probe")
    try:
        with pytest.raises(InputError, match="cannot import no_such_module_xyz"):
            get_probe_class("broken")
    finally:
        unregister_probe("broken")


def test_third_party_probe_through_the_entry_point_group(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "myprobe").mkdir(parents=True)
    (pkg / "myprobe" / "__init__.py").write_text(
        "from dataclasses import dataclass\n"
        "from vlground.probes.base import Probe, ProbeResult\n"
        "class Words(Probe):\n"
        "    name = 'words'\n"
        "    @dataclass\n"
        "    class Options:\n"
        "        min_len: int = 1  #: shortest word counted\n"
        "    def run(self, ctx):\n"
        "        return ProbeResult(record={'n_words': len({i.word for i in ctx.items if len(i.word) >= self.options.min_len})})\n")
    dist = pkg / "myprobe-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myprobe\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vlground.probes]\nwords = myprobe:Words\n")
    monkeypatch.syspath_prepend(str(pkg))
    assert "words" in known_probes()
    out = tmp_path / "o"
    rc = main(["probe", "--adapter", "vlground.testing:FakeAdapter", "--probes", "behaviour,words", "--min-len", "2",
               "--out", str(out), "--no-report"])
    assert rc == 0
    res = load(out)
    assert res.settings["probe_options"]["words"] == {"min_len": 2}
    assert all(r["n_words"] > 0 for r in res.records("words"))


# ---------------------------------------------------------------- options -> flags

@dataclass
class _A:
    draws: int = 10  #: random draws
    levels: tuple[float, ...] = (0.7, 0.9)  #: thresholds
    rule: Literal["strip", "strip-minus-dot"] = "strip"  #: gather rule
    fast: bool = False  #: go fast


@dataclass
class _B:
    draws: int = 10  #: the same flag


@dataclass
class _C:
    draws: int = 5  #: another default


def test_options_become_flags_with_help_and_defaults():
    p = argparse.ArgumentParser()
    seen: dict = {}
    opt.add_arguments(p, _A, seen)
    opt.add_arguments(p, _B, seen)  # same name, same default: one flag
    with pytest.raises(ValueError, match="another default"):
        opt.add_arguments(p, _C, seen)
    text = p.format_help()
    assert "--draws" in text and "random draws (default: 10)" in text and "{strip,strip-minus-dot}" in text
    a = opt.build(_A, p.parse_args(["--levels", "0.5,0.8", "--fast"]))
    assert a == _A(draws=10, levels=(0.5, 0.8), rule="strip", fast=True)
    assert opt.build(_A, {}) == _A()
    with pytest.raises(SystemExit):
        p.parse_args(["--rule", "dot"])


def test_probe_help_lists_every_probe_option(capsys):
    with pytest.raises(SystemExit):
        main(["probe", "--help"])
    text = capsys.readouterr().out
    for flag in ("--gather-threshold", "--aggregate-threshold", "--identify-at", "--ablation-draws", "--box-thresholds",
                 "--mech-items", "--lens-steps", "boxablation", "examples:"):
        assert flag in text, flag


def test_bad_option_values_are_one_line_errors(tmp_path, capsys):
    rc = main(["probe", "--adapter", "vlground.testing:FakeAdapter", "--probes", "heads", "--identify-at", "middle",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--identify-at" in err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are checked


# ---------------------------------------------------------------- results v2

def test_results_v2_layout_and_loader_without_torch(tmp_path):
    run_probes(FakeAdapter.from_options({"steps": (0, 10), "seeds": (0, 1)}), out=tmp_path, progress=False)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["version"] == 2 and set(data) >= {"settings", "checkpoints", "probes"}
    assert set(data["checkpoints"][0]) >= {"key", "run", "group", "seed", "step", "fingerprint"}
    assert "items" not in data["probes"]["behaviour"]["tables"]  # per-item rows live in items.parquet
    code = ("import sys; from vlground.results import load; r = load(sys.argv[1]); "
            "df = r.frame('items'); assert len(df) > 0 and {'surprisal', 'condition', 'word', 'seed', 'step'} <= set(df.columns); "
            "assert len(r.frame('checkpoints')) == 4; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_in_process_run_writes_nothing_without_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_probes(FakeAdapter.from_options({"steps": (0,), "seeds": (0,)}), progress=False)
    assert res.path is None and len(res.frame("items")) > 0 and list(tmp_path.iterdir()) == []


def test_version_1_results_give_a_one_line_error(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"version": 1, "checkpoints": []}))
    with pytest.raises(InputError, match="version 1.*re-run the probe with --out") as e:
        load(tmp_path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- cache by content

def test_cache_is_keyed_by_the_checkpoint_content(tmp_path, monkeypatch):
    """Probe a folder checkpoint, change its weights at the same path: it is probed again."""
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"weights-A")
    from vlground.engine.adapter import Checkpoint

    class FolderFake(FakeAdapter):
        def checkpoints(self):
            return [Checkpoint(run="fake-s0", path=str(ck), seed=0, step=0, group="fake")]

        def load(self, c):
            return super().load(Checkpoint(run=c.run, path="fake://0/0", seed=0, step=0))

    loads = []
    orig = FolderFake.load
    monkeypatch.setattr(FolderFake, "load", lambda self, c: loads.append(c.key) or orig(self, c))
    a = FolderFake.from_options({})
    first = run_probes(a, out=tmp_path / "o", progress=False)
    run_probes(a, out=tmp_path / "o", progress=False)
    assert len(loads) == 1  # unchanged: reused
    (ck / "model.safetensors").write_bytes(b"weights-B")
    second = run_probes(a, out=tmp_path / "o", progress=False)
    assert len(loads) == 2 and second.checkpoints[0]["fingerprint"] != first.checkpoints[0]["fingerprint"]


def test_a_second_writer_is_refused(tmp_path):
    from filelock import FileLock

    (tmp_path / "o").mkdir()
    run_probes(FakeAdapter.from_options({"steps": (0,), "seeds": (0,)}), out=tmp_path / "o", progress=False)
    with FileLock(str(tmp_path / "o" / ".probe.lock")):
        with pytest.raises(InputError, match="another vlground probe is writing here"):
            run_probes(FakeAdapter.from_options({"steps": (0,), "seeds": (0,)}), out=tmp_path / "o", progress=False)


def test_nothing_probed_is_an_error(tmp_path):
    adapter = FakeAdapter.from_options({"steps": (0, 10), "seeds": (0,), "broken_steps": (0, 10)})
    with pytest.raises(InputError, match="no checkpoint could be probed"):
        run_probes(adapter, out=tmp_path / "o", progress=False)


# ---------------------------------------------------------------- run references

class _RefProbe(Probe):
    """Reports the step of the reference checkpoint it was given."""

    name = "ref-step"
    calls: list = []
    reference = ("ref-step", lambda ctx, options: _RefProbe._ref(ctx))

    @dataclass
    class Options:
        identify_at: str = "final"  #: where heads are identified: final (each run's last step), a step number, or each (per checkpoint)

    @staticmethod
    def _ref(ctx):
        _RefProbe.calls.append(ctx.key)
        return RunReference(ctx.key, [it.item_id for it in ctx.items], {"step": np.array([ctx.loaded.checkpoint.step])})

    def reference_at(self):
        return "last" if self.options.identify_at == "final" else self.options.identify_at

    def run(self, ctx):
        return ProbeResult(record={"ref_step": int(ctx.references["ref-step"].arrays["step"][0])})


def test_reference_is_computed_once_per_run_at_its_last_step_and_reused_on_resume(tmp_path):
    register_probe()(_RefProbe)
    try:
        _RefProbe.calls.clear()
        adapter = FakeAdapter.from_options({"steps": (0, 10, 20), "seeds": (0, 1)})
        res = run_probes(adapter, ["ref-step"], out=tmp_path / "o", progress=False)
        assert {r["ref_step"] for r in res.records("ref-step")} == {20}
        assert sorted(_RefProbe.calls) == ["fake-s0@20", "fake-s1@20"]
        # only the first steps selected: the reference is still the run's last checkpoint
        _RefProbe.calls.clear()
        res = run_probes(adapter, ["ref-step"], out=tmp_path / "p", progress=False, checkpoints="0")
        assert {r["ref_step"] for r in res.records("ref-step")} == {20}
        # a resumed run (one checkpoint's cache gone) reuses the saved reference
        (tmp_path / "o" / "cache" / "fake-s0@10.json").unlink()
        _RefProbe.calls.clear()
        run_probes(adapter, ["ref-step"], out=tmp_path / "o", progress=False)
        assert _RefProbe.calls == []
        res = run_probes(adapter, ["ref-step"], {"identify_at": "10"}, out=tmp_path / "q", progress=False)
        assert {r["ref_step"] for r in res.records("ref-step")} == {10}
        with pytest.raises(InputError, match="no checkpoint at step 7"):
            run_probes(adapter, ["ref-step"], {"identify_at": "7"}, progress=False)
    finally:
        unregister_probe("ref-step")


def test_nothing_is_written_when_the_inputs_fail(tmp_path):
    """An adapter whose items cannot be made (bad templates, a wrong --mismatch folder) fails
    before the output folder is claimed: a retry with fixed inputs is not blocked."""

    class BadItems(FakeAdapter):
        def items(self, loaded):
            raise InputError("templates.json: word 'zebra' is not in the corpus")

    with pytest.raises(InputError, match="zebra"):
        run_probes(BadItems.from_options({"steps": (0,), "seeds": (0,)}), out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    run_probes(FakeAdapter.from_options({"steps": (0,), "seeds": (0,)}), out=tmp_path / "o", progress=False)
    assert (tmp_path / "o" / "results.json").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size: must be a whole number >= 1"),
    (["--device", "cuda:7"], "no such CUDA device"),
    (["--device", "nonsense"], "is not a device"),
])
def test_probe_option_values_are_checked_before_anything_runs(tmp_path, capsys, flags, message):
    rc = main(["probe", "--adapter", "vlground.testing:FakeAdapter", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "o").exists()


def test_limit_zero_is_an_error_not_no_limit():
    from vlground.engine.adapter import check_common_options

    @dataclass
    class O:
        limit: int | None = 0

    with pytest.raises(InputError, match="--limit"):
        check_common_options(O())
    check_common_options(O(limit=None))
