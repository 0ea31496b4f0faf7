"""Layout: the top-level ``datasets/`` and ``adapters/`` folders never shadow the PyPI packages of
those names when Python starts in the project root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["datasets", "adapters"])
def test_real_package_wins_from_the_project_root(tmp_path, name):
    site = tmp_path / "site"
    pkg = site / name
    (pkg / "arrow_dataset.py").parent.mkdir(parents=True)
    (pkg / "__init__.py").write_text("REAL = True\n")
    (pkg / "arrow_dataset.py").write_text("X = 1\n")
    # '' (the project root) comes first on sys.path, the fake distribution's site folder after it
    code = (f"import {name}, {name}.arrow_dataset; assert {name}.REAL, {name}; print({name}.__file__)\n"
            f"import vlground.{name}; assert vlground.{name}.__path__[0].endswith({name!r})\n")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert Path(proc.stdout.strip()) == pkg / "__init__.py"
