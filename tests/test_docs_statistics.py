"""docs/statistics.md's notebook example runs as written on a planted results folder and
recovers the planted effect (1.0 nats at the last step of the first group)."""
import re
from pathlib import Path

import pytest

from test_report import _planted

DOC = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_mixed_model_example_runs_and_recovers_the_planted_effect(tmp_path, capsys):
    _planted(tmp_path, groups={"transformer": 1.0, "lstm": 1e-3})
    blocks = _blocks()
    assert len(blocks) == 2
    ns = {"OUT": tmp_path}
    exec(compile(blocks[0], str(DOC), "exec"), ns)
    assert ns["group"] == "transformer"
    assert ns["effect"] == pytest.approx(1.0, abs=0.1) and ns["low"] < 1.0 < ns["high"]
    exec(compile(blocks[1], str(DOC), "exec"), ns)
    out = capsys.readouterr().out
    assert "information gain" in out and "lstm 100" in out and "no meaningful effect" in out
