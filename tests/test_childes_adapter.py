"""The childes adapter on tiny trained models: conformance, items and counterbalancing, template
errors, co-occurrence, and the probe CLI end to end with the mechanistic probes."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from vlground.adapters.childes import ChildesAdapter
from vlground.results import load
from vlground.cli import main
from vlground.corpus.format import Corpus
from vlground.errors import InputError
from vlground.testing import check_adapter


def test_conformance_transformer_and_lstm(tiny_runs):
    check_adapter(ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "device": "cpu"}))
    check_adapter(ChildesAdapter.from_options({"runs": [str(tiny_runs["lstm"])], "device": "cpu"}))


def test_checkpoints_cover_the_trajectory(tiny_runs):
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])]})
    assert [c.step for c in a.checkpoints()] == [0, 4, 8, 12]
    assert {c.seed for c in a.checkpoints()} == {0}


def test_items_are_counterbalanced(tiny_runs):
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])]})
    loaded = a.load(a.checkpoints()[-1])
    items = a.items(loaded)
    mism = [it for it in items if it.condition == "mismatch" and it.direction == "env2lan"]
    targets = sorted({it.word for it in items})
    n_frames = len({it.template for it in items})
    # every target is a distractor exactly once per frame pair, and never its own
    assert Counter(it.env_word for it in mism) == Counter({w: n_frames for w in targets})
    assert all(it.env_word != it.word for it in mism)
    # the match and mismatch inputs differ in exactly one token: the ENV word
    batch = a.batch(loaded, [it for it in items if it.pair_id == mism[0].pair_id])
    ids = batch.model_inputs["input_ids"]
    assert int((ids[0] != ids[1]).sum()) == 1
    tok = loaded.tokenizer
    env_tok = tok.convert_ids_to_tokens(int(ids[0][batch.env_mask[0]]))
    assert env_tok.endswith("<ENV>")
    assert tok.convert_ids_to_tokens(int(batch.target_ids[0, 0])) == f"{mism[0].word}<LAN>"


def test_templates_file_and_unknown_words(tiny_runs, tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"env": ["CHI: picks up the {}"], "lan": ["MOT: look at the {}"], "targets": ["ball", "cup"]}))
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "templates": str(good)})
    loaded = a.load(a.checkpoints()[0])
    assert {it.word for it in a.items(loaded)} == {"ball", "cup"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"env": ["CHI: juggles the {}"], "lan": ["MOT: behold the {}"]}))
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "templates": str(bad)})
    with pytest.raises(InputError, match="juggles<ENV>.*|behold<LAN>"):
        a.items(a.load(a.checkpoints()[0]))
    with pytest.raises(InputError, match="exactly one"):
        (tmp_path / "slot.json").write_text(json.dumps({"env": ["CHI: picks up"], "lan": ["MOT: look at the {}"]}))
        ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "templates": str(tmp_path / "slot.json")})


def test_cooccurrence_counts_follow_training_order(tiny_runs):
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])]})
    corpus = Corpus.load(tiny_runs["corpus"])
    import numpy as np

    order = np.load(tiny_runs["transformer"] / "order.npy")
    for ckpt in a.checkpoints():
        loaded = a.load(ckpt)
        words = [p["word"] for p in corpus.pairs][:5]
        got = a.cooccurrence(loaded, words)
        seen = order[: ckpt.step * 4]
        for i, w in enumerate(words):  # a word that does not count (function word) has none (datasets/cooc.py)
            assert got[w] == (int(sum(corpus.cooc[c, i] for c in seen)) if corpus.counted_pairs[i] else 0)
    assert all(v == 0 for v in a.cooccurrence(a.load(a.checkpoints()[0]), words).values())


def test_missing_run_and_empty_run(tmp_path, tiny_runs):
    with pytest.raises(InputError, match="no run.json"):
        ChildesAdapter.from_options({"runs": [str(tmp_path)]}).checkpoints()
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "run.json").write_text((tiny_runs["transformer"] / "run.json").read_text())
    with pytest.raises(InputError, match="no complete checkpoints"):
        ChildesAdapter.from_options({"runs": [str(empty)]}).checkpoints()


def test_probe_cli_end_to_end_with_mechanistic_probes(tiny_runs, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(["probe", "--adapter", "childes", "--run", str(tiny_runs["transformer"]), str(tiny_runs["lstm"]),
               "--probes", "behaviour,saliency,heads,ablation,lens", "--mechanistic-checkpoints", "last", "--out", str(out)])
    assert rc == 0
    res = load(out)
    assert len(res.checkpoints) == 8
    for table in ("flow", "heads", "ablation", "lens"):
        assert res.rows(table), table
    assert {r["run"] for r in res.rows("flow")} == {"transformer"}  # the LSTM has no attention ...
    assert any("lstm" in n and "saliency: skipped" in n for n in res.all_notes())  # ... and says so
    assert {r["run"] for r in res.rows("lens")} == {"transformer", "lstm"}
    assert [r["head_type"] for r in res.rows("ablation")] == ["gather", "aggregate", "gather-only"]
    assert all(r["n_items_total"] > 0 for r in res.rows("ablation"))
    # heads are identified in the final checkpoint (step 12) and tracked: every heads record names it
    assert {r["identified_at"] for r in res.records("heads")} == {"transformer@12"}
    assert min(r["layer"] for r in res.rows("flow")) == 1  # layers are 1-based
    html = (out / "report.html").read_text()
    assert "Tuned lens" in html and "Head ablation" in html
    # a re-run reuses every finished checkpoint
    rc = main(["probe", "--adapter", "childes", "--run", str(tiny_runs["transformer"]), str(tiny_runs["lstm"]),
               "--probes", "behaviour,saliency,heads,ablation,lens", "--mechanistic-checkpoints", "last", "--out", str(out)])
    assert rc == 0 and load(out).checkpoints == res.checkpoints


def test_corrupt_checkpoint_is_skipped(tiny_runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["transformer"], run)
    (run / "checkpoints" / "step-4" / "model.safetensors").write_bytes(b"garbage")
    out = tmp_path / "rep"
    rc = main(["probe", "--adapter", "childes", "--run", str(run), "--out", str(out), "--no-report"])
    res = load(out)
    assert rc == 0 and [r["step"] for r in res.checkpoints] == [0, 8, 12]
    assert any("step-4" in n for n in res.all_notes())


def test_hybrid_uses_its_attention_layers_and_mamba2_is_skipped(tiny_runs, tmp_path):
    from vlground.train import TrainConfig, train

    runs = {}
    for arch in ("mamba2", "hybrid-mid"):
        runs[arch] = train(TrainConfig(corpus=str(tiny_runs["corpus"]), out=str(tmp_path / arch), arch=arch, size="tiny",
                                       seed=0, progress=False, overrides={"steps": 4, "batch_size": 2, "checkpoint_every": 4}))
    out = tmp_path / "rep"
    rc = main(["probe", "--adapter", "childes", "--run", str(runs["mamba2"]), str(runs["hybrid-mid"]), "--checkpoints", "last",
               "--probes", "behaviour,saliency,heads,lens", "--out", str(out), "--no-report"])
    assert rc == 0
    res = load(out)
    from vlground import load_checkpoint
    from vlground.mechanism.sites import resolve_sites

    model, _ = load_checkpoint(runs["hybrid-mid"] / "checkpoints" / "step-4")
    att_layers = set(resolve_sites(model).layers)
    assert att_layers and att_layers != set(range(model.config.num_hidden_layers))
    flow = res.rows("flow")
    assert {r["layer"] for r in flow} == {k + 1 for k in att_layers} and {r["run"] for r in flow} == {"hybrid-mid"}
    assert any("mamba2" in n and "saliency: skipped" in n for n in res.all_notes())
    assert {r["run"] for r in res.rows("lens")} == {"mamba2", "hybrid-mid"}
