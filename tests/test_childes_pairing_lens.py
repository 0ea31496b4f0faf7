"""childes adapter: frame pairing (cross by default) keeps the counterbalancing; the lens gets
its token budget from the held-out split only."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlground.adapters.childes import ChildesAdapter, frame_pairs
from vlground.errors import InputError


def test_frame_pairs_by_hand():
    assert frame_pairs(2, 3) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert frame_pairs(2, 3, "diagonal") == [(0, 0), (1, 1), (0, 2)]
    with pytest.raises(InputError, match="unknown pairing"):
        frame_pairs(2, 2, "zip")


@pytest.mark.parametrize("pairing", ["cross", "diagonal"])
def test_pairing_and_counterbalancing(tiny_runs, tmp_path, pairing):
    templates = tmp_path / "t.json"
    env = ["CHI: picks up the {}", "MOT: gives CHI the {}", "CHI: plays with the {}"]
    lan = ["MOT: look at the {}", "MOT: where is the {}"]
    templates.write_text(json.dumps({"env": env, "lan": lan}))
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "templates": str(templates), "pairing": pairing})
    loaded = a.load(a.checkpoints()[-1])
    items = [it for it in a.items(loaded) if it.direction == "env2lan"]
    pairs = {(it.meta["env_frame"], it.meta["lan_frame"]) for it in items}
    assert pairs == ({(e, l) for e in range(3) for l in range(2)} if pairing == "cross" else {(0, 0), (1, 1), (2, 0)})
    n_pairs = len({it.template for it in items})
    assert n_pairs == len(pairs)
    mism = [it for it in items if it.condition == "mismatch"]
    targets = sorted({it.word for it in items})
    # every target is a distractor exactly once per frame pair, and never its own
    assert Counter(it.env_word for it in mism) == Counter({w: n_pairs for w in targets})
    for k in range(n_pairs):
        assert sorted(it.env_word for it in mism if it.template == k) == targets
    assert all(it.env_word != it.word for it in mism)


def test_default_pairing_is_cross_and_bad_pairing_fails(tiny_runs):
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])]})
    assert a.options.pairing == "cross"
    with pytest.raises(InputError, match="pairing"):
        ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])], "pairing": "zip"})


def test_lens_batches_take_the_token_budget_from_held_out_chunks(tiny_runs):
    a = ChildesAdapter.from_options({"runs": [str(tiny_runs["transformer"])]})
    loaded = a.load(a.checkpoints()[-1])
    corpus = loaded.extra["corpus"]
    held = json.loads((Path(loaded.extra["run_dir"]) / "split.json").read_text())["val"]
    pad = loaded.tokenizer.pad_token_id
    per_chunk = (np.asarray(corpus.chunks[held]) != pad).sum(1)
    assert len(held) >= 2
    # a budget of the first chunk's tokens plus one needs exactly two chunks
    batches = a.lens_batches(loaded, n_tokens=int(per_chunk[0]) + 1, batch_size=1)
    assert len(batches) == 2
    for b, i in zip(batches, held):
        assert (b["input_ids"][0].numpy() == np.asarray(corpus.chunks[i])).all()  # held-out chunks, whole, in order
        assert int(b["attention_mask"].sum()) == int((b["input_ids"] != pad).sum())
    everything = a.lens_batches(loaded)  # default 250k tokens: more than the split holds -> all of it
    assert sum(int(b["attention_mask"].sum()) for b in everything) == int(per_chunk.sum())
    assert sum(len(b["input_ids"]) for b in everything) == len(held)
