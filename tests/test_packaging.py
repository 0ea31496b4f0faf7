"""The folder -> namespace mapping (adapters/ -> vlground.adapters, datasets/ -> vlground.datasets)
holds in the editable install and in a built wheel, and no top-level name collides with PyPI."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_mapping_in_this_install(tmp_path):
    import vlground.adapters
    import vlground.datasets

    assert [Path(p) for p in vlground.adapters.__path__] == [ROOT / "adapters"]
    assert [Path(p) for p in vlground.datasets.__path__] == [ROOT / "datasets"]
    # outside the source tree, our folders are not importable under their bare names (those
    # belong to PyPI packages): only the vlground.* names exist
    code = (
        "import importlib.util, pathlib, sys\n"
        "for n in ('adapters', 'datasets'):\n"
        "    s = importlib.util.find_spec(n)\n"
        f"    assert s is None or pathlib.Path(s.origin or '').parent != pathlib.Path({str(ROOT)!r}) / n, n\n"
        "import vlground.adapters.childes, vlground.datasets.chat_generator\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_builtin_adapters_are_entry_points():
    eps = {ep.name: ep.value for ep in entry_points(group="vlground.adapters")}
    assert eps["childes"] == "vlground.adapters.childes:ChildesAdapter"
    assert {"childes", "llava15", "visdial_dinov2"} <= set(eps)


@pytest.mark.slow
def test_wheel_maps_folders_into_the_namespace(tmp_path):
    pytest.importorskip("setuptools")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("vlground-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vlground/adapters/childes.py" in names
    assert "vlground/datasets/chat_generator.py" in names
    assert any(n.startswith("vlground/datasets/fixtures/images/") for n in names)
    assert "vlground/templates/childes_en.json" in names
    assert any(n.startswith("vlground/configs/") and n.endswith(".json") for n in names)
    assert not any(n.startswith(("adapters/", "datasets/", "tests/")) for n in names), "top-level folders leaked into the wheel"
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "[vlground.adapters]" in text and "vlground.adapters.childes:ChildesAdapter" in text
    assert "vlground = vlground.cli:main" in text


def test_installed_metadata_is_light_and_composable():
    """torch is a lower bound (the exact pin lives in constraints.txt only) and test tools are an extra,
    so vlground can share an environment with another torch and does not install pytest."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in requires("vlground")]
    core = [r for r in reqs if r.marker is None]
    torch = [r for r in core if r.name == "torch"]
    assert torch, "torch is a dependency"
    assert not any(s.operator in ("==", "===", "~=") for r in torch for s in r.specifier), f"exact torch pin: {torch}"
    assert not any(r.name in ("pytest", "tensorboard", "diffusers") for r in core), [str(r) for r in core]
    test_extra = {r.name for r in reqs if r.marker is not None and r.marker.evaluate({"extra": "test"})}
    assert "pytest" in test_extra
    assert "torch==" in (ROOT / "constraints.txt").read_text()


#: imported by no command's --help (each costs seconds; the help text needs none of them)
HEAVY = ("torch", "transformers", "pandas", "ray", "statsmodels", "matplotlib", "diffusers", "pyarrow")


def test_every_help_imports_nothing_heavy():
    """``vlground <command> --help``, for every command (and with the text adapter named: its own
    flags), answers without importing torch, transformers, pandas and the like
    (scripts/bench/bench_help.py measures the time against ``import numpy``; here the cause, which
    does not depend on the machine's load). One fresh
    interpreter runs every command's help in turn and records what each one newly imported; a
    second shows the check can fail: the probes' torch is imported once a probe computes."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from vlground.cli import COMMANDS, main
        found = {{}}
        for cmd in [[], *([c] for c in COMMANDS), ["probe", "--adapter", "childes"], ["check-adapter", "childes"]]:
            before = set(sys.modules)
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    main([*cmd, "--help"])
                except SystemExit:
                    pass
            assert "usage:" in out.getvalue(), cmd
            found[" ".join(cmd) or "vlground"] = sorted(m for m in {HEAVY!r} if m in sys.modules and m not in before)
        print(json.dumps(found))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from vlground.cli import COMMANDS

    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(found) == {"vlground", *COMMANDS, "probe --adapter childes", "check-adapter childes"}
    assert {cmd: mods for cmd, mods in found.items() if mods} == {}
    control = textwrap.dedent("""
        import sys
        from vlground.probes import get_probe_class
        get_probe_class("heads")
        print("torch" in sys.modules)
        from vlground.probes.common import torch
        torch.zeros(1)
        print("torch" in sys.modules)
        """)
    proc = subprocess.run([sys.executable, "-c", control], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]
