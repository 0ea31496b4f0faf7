"""adapters/childes.py capabilities() (defect 14): an error finding attention sites is no longer
swallowed (it silently turned the attention probes off); "no sites for this model type" still means
no attention capability."""
from __future__ import annotations

import pytest


def test_capabilities_do_not_hide_errors(tiny_runs, monkeypatch):
    from vlground.adapters.childes import ChildesAdapter
    from vlground.engine.adapter import Capability
    from vlground.mechanism.errors import MechanismError

    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu"})
    loaded = a.load(a.checkpoints()[-1])
    assert Capability.ATTENTION in a.capabilities(loaded)

    def broken(self, loaded):
        raise MechanismError("GPT2LMHeadModel has no module 'transformer.h.0.attn.c_proj'")

    monkeypatch.setattr(ChildesAdapter, "attention_site", broken)
    with pytest.raises(MechanismError, match="no module"):
        a.capabilities(loaded)

    def bug(self, loaded):
        raise AttributeError("a bug in a resolver")

    monkeypatch.setattr(ChildesAdapter, "attention_site", bug)
    with pytest.raises(AttributeError):
        a.capabilities(loaded)


def test_lstm_has_no_attention_capability(tiny_runs):
    from vlground.adapters.childes import ChildesAdapter
    from vlground.engine.adapter import Capability

    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["lstm"])], "device": "cpu"})
    assert Capability.ATTENTION not in a.capabilities(a.load(a.checkpoints()[-1]))
