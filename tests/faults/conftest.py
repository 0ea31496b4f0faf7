"""Every test under tests/faults/ carries the ``faults`` marker (``pytest -m faults`` runs them
alone). Helpers shared by the suite are in ``faults_helpers.py``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
