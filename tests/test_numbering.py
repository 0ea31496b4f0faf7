"""One numbering of layers and heads (vlground/numbering.py, docs/probes.md): 1-based layer and head
in everything a user reads (``L4.H3`` = block 4, head 3), 0-based ``layer_index``/``head_index``
columns that address the same module as a hook; heads files in the documented, index and earlier forms."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from vlground.cli import main
from vlground.errors import InputError
from vlground.monitor.heads import HeadSet, load_heads, read_boxheads
from vlground.numbering import head_index, head_label, head_number, layer_index, layer_number


def test_label_and_inverses():
    assert head_label(3, 2) == "L4.H3" and (layer_number(3), head_number(2)) == (4, 3)
    assert (layer_index(4), head_index(3)) == (3, 2)
    for bad in (lambda: layer_index(0), lambda: head_index(0), lambda: head_number(-1)):
        with pytest.raises(ValueError):
            bad()


def _write(tmp_path, obj, name="h.json"):
    f = tmp_path / name
    f.write_text(json.dumps(obj))
    return f


def test_heads_file_forms(tmp_path, caplog):
    documented = _write(tmp_path, {"numbering": "1-based", "heads": [{"layer": 4, "head": 3}, {"layer": 1, "head": 1}]})
    assert load_heads(documented).heads == ((3, 2), (0, 0))
    indices = _write(tmp_path, {"heads": [{"layer_index": 3, "head_index": 2}]}, "i.json")
    assert load_heads(indices).heads == ((3, 2),)
    with caplog.at_level(logging.WARNING):
        legacy = _write(tmp_path, {"heads": [{"layer": 4, "head": 2}], "layers": "1-based"}, "old.json")
        assert load_heads(legacy).heads == ((3, 2),)  # the earlier form: heads 0-based
    assert "earlier form" in caplog.text
    written = _write(tmp_path, HeadSet(((3, 2),), "x").to_json(), "w.json")
    assert load_heads(written).heads == ((3, 2),)
    assert json.loads(written.read_text())["heads"][0]["label"] == "L4.H3"


@pytest.mark.parametrize("heads, msg", [
    ([{"layer": 1.9, "head": "1"}], "not an integer"),
    ([{"layer": 2, "head": True}], "not an integer"),
    ([{"layer": 2, "head": 0}], "1-based"),
    ([{"layer_index": -1, "head_index": 0}], "0-based"),
    ([{"layer": 2, "head": 1, "layer_index": 0, "head_index": 0}], "disagree"),
    ([{"layer": 2}], "needs"),
    (["L2.H1"], "must be an object"),
    ([], "no heads"),
])
def test_bad_heads_files_fail_in_one_line(tmp_path, heads, msg):
    f = _write(tmp_path, {"numbering": "1-based", "heads": heads})
    with pytest.raises(InputError, match=msg) as e:
        load_heads(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_monitor_cli_refuses_a_non_integer_head_in_one_line(tmp_path, capsys):
    f = _write(tmp_path, {"heads": [{"layer": 1.9, "head": "1"}]})
    rc = main(["monitor", "--adapter", "llava15", "--model", str(tmp_path / "none"), "--heads", str(f),
               "--images", str(tmp_path), "--annotations", str(tmp_path / "a.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("vlground: error: ") and len(err) == 1
    assert not (tmp_path / "o").exists()


def test_boxheads_rows_read_by_their_indices_and_earlier_rows_by_their_numbers(tmp_path):
    def results(rows):
        data = {"version": 2, "settings": {}, "checkpoints": [],
                "probes": {"boxheads": {"records": [], "tables": {"heads": rows}, "notes": []}}, "notes": []}
        (tmp_path / "results.json").write_text(json.dumps(data))
        return tmp_path

    row = {"key": "r@1", "run": "r", "group": "g", "seed": 0, "step": 1, "kind": "aggregate@0.7", "inside_share": 0.9,
           "saliency_share": 0.5, "aggregate_frac": {"0.7": 1.0}}
    assert read_boxheads(results([{**row, "layer": 2, "head": 3, "layer_index": 1, "head_index": 2}])).heads == ((1, 2),)
    assert read_boxheads(results([{**row, "layer": 2, "head": 3}])).heads == ((1, 3),)  # before: head 0-based


def test_heads_table_indices_address_the_hooked_module(tiny_runs, tmp_path):
    """The heads table's layer/head are the indices + 1, and layer_index/head_index address the head a hook
    zeroes: zeroing (layer_index, head_index) changes exactly what the head's row describes."""
    from vlground.adapters.childes import ChildesAdapter
    from vlground.probes.runner import run_probes

    adapter = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu"})
    res = run_probes(adapter, ["heads", "saliency"], {"mech_items": 4}, checkpoints="last", out=tmp_path / "o", progress=False)
    rows = res.rows("heads")
    loaded = adapter.load(adapter.checkpoints()[-1])
    site = adapter.attention_site(loaded)
    assert sorted((r["layer_index"], r["head_index"]) for r in rows) == [(l, h) for l in site.layers for h in range(site.n_heads)]
    for r in rows:
        assert (r["layer"], r["head"]) == (r["layer_index"] + 1, r["head_index"] + 1)
    assert min(r["head"] for r in rows) == 1 and max(r["head"] for r in rows) == site.n_heads
    flow = res.rows("flow")
    assert all(f["layer"] == f["layer_index"] + 1 for f in flow)
    # layer_index/head_index address the saliency tensor's own indices (output_attentions[layer_index][:, head_index])
    from vlground.probes.base import ProbeContext
    from vlground.probes.common import saliency_parts

    ctx = ProbeContext(adapter, loaded, adapter.items(loaded))
    sal = torch.cat([adapter.saliency(loaded, p.batch, predict_row_only=False, kernel="eager") for p in saliency_parts(ctx, 4)])  # [B, L_att, H, S, S]
    per_head = sal.abs().sum((-1, -2))
    share = (per_head / per_head.sum((-1, -2), keepdim=True)).mean(0)
    for r in rows:
        k = site.layers.index(r["layer_index"])
        assert r["saliency_share"] == pytest.approx(float(share[k, r["head_index"]]), rel=1e-5, abs=1e-7)
