"""Discoverable: ``vlground list`` names what the other commands take; ``sweep export`` prints a
bundled sweep that loads as it is; a mistyped sweep name lists the bundled ones (no internal path)."""
from __future__ import annotations

import yaml

from vlground.cli import main


def test_list_names_adapters_probes_archs_sweeps_templates(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    from vlground.engine.registry import known_adapters
    from vlground.probes import known_probes
    from vlground.train.models import ARCHS

    for name in [*known_adapters(), *known_probes(), *ARCHS, "paper-text", "demo", "childes_en.json"]:
        assert f"  {name} " in out, name
    assert "model types llava" in out and "tiny (4 layers x 64)" in out


def test_sweep_export_round_trips(tmp_path, capsys):
    from vlground.cli.sweep import bundled_sweeps, bundled_text
    from vlground.sweep import spec

    assert {"demo", "paper-text", "paper-vision"} <= set(bundled_sweeps())
    assert main(["sweep", "export", "paper-text"]) == 0
    text = capsys.readouterr().out
    assert text == bundled_text("paper-text") and yaml.safe_load(text)["grid"]
    f = tmp_path / "my.yaml"
    f.write_text(text)
    assert len(spec.load(f).tasks) > 10  # the exported file is a sweep as it is


def test_unknown_sweep_lists_the_bundled_ones(capsys):
    assert main(["sweep", "paper-txt", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean paper-text?" in err and "bundled: demo, emergence, emergence-cpu, paper-text, paper-vision" in err
    assert "site-packages" not in err and "configs/sweeps" not in err
    assert main(["sweep", "export", "nope"]) == 2
    assert "bundled: demo" in capsys.readouterr().err
