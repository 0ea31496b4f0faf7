"""The grounding monitor's definitions, with answers known by hand: POPE sampling, CHAIR words,
AUROC / AUPRC, the grounding score on planted attention rows, heads from files and v2 results."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vlground.errors import InputError
from vlground.monitor import labels as L
from vlground.monitor.evaluate import auprc, auroc, bootstrap, evaluation_rows, roc_curve
from vlground.monitor.heads import HeadSet, load_heads, random_head_sets, read_boxheads
from vlground.monitor.score import grounding, head_components


# -- POPE --------------------------------------------------------------------------------------------
OBJECTS = {1: ["cat", "dog"], 2: ["cat", "car"], 3: ["bus"]}


def test_pope_present_questions_and_no_absent_repeats():
    qs = L.pope_questions(OBJECTS, "random", n_per_image=3, seed=0)
    for image_id, cats in OBJECTS.items():
        mine = [q for q in qs if q.image_id == image_id]
        assert [q.category for q in mine if q.present] == cats  # annotation order, all of them (< 3 here)
        absent = [q.category for q in mine if not q.present]
        assert len(absent) == len(set(absent)) and not set(absent) & set(cats)
    assert L.pope_questions(OBJECTS, "random", seed=0) == qs  # seeded


def test_pope_popular_takes_the_most_frequent_absent_category():
    qs = L.pope_questions(OBJECTS, "popular")
    # frequencies: cat 2, others 1 (ties by name: bus, car, dog); image 3 holds bus -> cat
    assert [q.category for q in qs if q.image_id == 3 and not q.present] == ["cat"]
    # image 1 (cat, dog): the first negative is the most frequent absent one: bus (tie broken by name)
    assert [q.category for q in qs if q.image_id == 1 and not q.present] == ["bus", "car"]


def test_pope_adversarial_takes_the_top_co_occurring_category():
    qs = L.pope_questions(OBJECTS, "adversarial", seed=0)
    neg = [q.category for q in qs if q.image_id == 1 and not q.present]
    # cat co-occurs with dog (present) and car -> car; dog co-occurs only with cat (present) -> random: bus
    assert neg == ["car", "bus"]


def test_pope_question_text_uses_an_before_a_vowel():
    assert L.PopeQuestion(1, "apple", True, "").text() == "Is there an apple in the image?"
    assert L.PopeQuestion(1, "dog", True, "").text() == "Is there a dog in the image?"


# -- CHAIR -------------------------------------------------------------------------------------------
def test_chair_words_synonyms_plurals_double_words_and_rules():
    v = L.ChairVocabulary(["person", "dog", "dining table", "toilet", "chair", "hot dog"])
    text = "A man and two dogs at a table with a hot dog; a baby dog. The toilet seat is up."
    found = v.find(text)
    assert [(w.word, w.category) for w in found] == [
        ("man", "person"), ("dog", "dog"), ("table", "dining table"), ("hot dog", "hot dog"), ("dog", "dog"),
        ("toilet", "toilet")]  # "seat" is not a chair next to a toilet; "baby dog" is a dog
    assert text[found[3].start:found[3].end] == "hot dog"
    assert L.chair_labels(found, {"person", "dining table"}) == [False, True, False, True, True, True]


def test_chair_category_name_of_the_file_wins_and_unknown_categories_are_ignored():
    v = L.ChairVocabulary(["ball", "kite"])
    assert [w.category for w in v.find("a red ball and a kite and a cat")] == ["ball", "kite"]  # no "cat" category


def test_chair_rates():
    r = L.chair_rates([[False, True], [False], []])
    assert r["chair_i"] == pytest.approx(1 / 3) and r["chair_s"] == pytest.approx(1 / 3)


# -- metrics ---------------------------------------------------------------------------------------
def test_auroc_and_auprc_by_hand():
    assert auroc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts a half
    assert auroc([1, 1], [0.1, 0.2]) != auroc([1, 1], [0.1, 0.2])  # nan with one class
    assert auprc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert auprc([1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)  # one threshold: precision = base rate
    fpr, tpr = roc_curve(np.array([1, 0]), np.array([0.9, 0.1]))
    assert fpr.tolist() == [0.0, 0.0, 1.0] and tpr.tolist() == [0.0, 1.0, 1.0]


def test_bootstrap_is_seeded_groups_resampled_and_paired():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    good = y + rng.normal(0, 0.8, 200)
    noise = rng.normal(0, 1, 200)
    groups = np.arange(200) // 4
    a = bootstrap(y, {"good": good, "noise": noise}, groups, n_boot=200, seed=1, reference="good")
    b = bootstrap(y, {"good": good, "noise": noise}, groups, n_boot=200, seed=1, reference="good")
    assert a["good"]["value"] == b["good"]["value"]
    g = a["good"]["value"]
    assert g.low <= g.value <= g.high and g.value > 0.7
    assert a["noise"]["diff"].low > 0  # the good detector beats noise, paired
    rows = evaluation_rows(y, {"good": good, "random": np.stack([noise, -noise], 1)}, groups, n_boot=100)
    assert rows[1]["auroc"] == pytest.approx((auroc(y, noise) + auroc(y, -noise)) / 2)
    assert rows[0]["n_groups"] == 50 and rows[0]["auprc_chance"] == pytest.approx(y.mean())


# -- the score ---------------------------------------------------------------------------------------
def test_grounding_score_on_planted_attention_rows():
    image = torch.tensor([False, True, True, True, True, False])  # 4 image tokens
    rows = torch.tensor([
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],    # all on one image token: share 1, concentration 1
        [0.0, 0.25, 0.25, 0.25, 0.25, 0.0],  # uniform over the image: share 1, concentration 0
        [0.5, 0.5, 0.0, 0.0, 0.0, 0.0],    # half on text, half on one image token: share 0.5, conc 1
        [0.2, 0.0, 0.0, 0.0, 0.0, 0.8],    # none on the image
    ])[None, None]  # [1 word, 1 layer, 4 heads, 6 keys]
    share, conc, topk = head_components(rows, image, k=1)
    assert share[0, 0].tolist() == pytest.approx([1, 1, 0.5, 0])
    assert conc[0, 0, :3].tolist() == pytest.approx([1, 0, 1])
    assert topk[0, 0, :3].tolist() == pytest.approx([1, 0.25, 1])
    heads = torch.tensor([[True, False, True, False]])
    c = grounding(rows, image, heads)
    assert float(c.score[0]) == pytest.approx((1 * 1 + 0.5 * 1) / 2) and float(c.share[0]) == pytest.approx(0.75)
    # keys beyond the prompt (generated tokens) are text
    longer = torch.cat([rows, torch.zeros(1, 1, 4, 2)], -1)
    assert torch.allclose(grounding(longer, image, heads).score, c.score)
    all_heads = grounding(rows, image, torch.ones(1, 4, dtype=torch.bool))
    assert 0 <= float(all_heads.score[0]) <= 1


# -- heads -----------------------------------------------------------------------------------------
def _v2_results(tmp_path, runs=("r0",)):
    rows = []
    for run in runs:
        for step in (10, 20):
            for layer in (1, 2):
                for head in range(2):
                    frac = 0.8 if (step == 20 and layer == 2 and head == 1) else 0.2
                    rows.append({"key": f"{run}@{step}", "run": run, "group": "g", "seed": 0, "step": step, "layer": layer,
                                 "head": head, "kind": "none", "inside_share": 0.5, "saliency_share": 0.25,
                                 "aggregate_frac": {"0.7": frac, "0.9": 0.0}})
    data = {"version": 2, "settings": {}, "checkpoints": [], "probes": {"boxheads": {"records": [], "tables": {"heads": rows}, "notes": []}},
            "notes": []}
    (tmp_path / "results.json").write_text(json.dumps(data))
    return tmp_path


def test_boxheads_final_checkpoint_at_level_1_based_layers(tmp_path):
    hs = read_boxheads(_v2_results(tmp_path), level=0.7)
    assert hs.heads == ((1, 1),) and hs.step == 20  # layer 2 (1-based) -> block index 1
    with pytest.raises(InputError, match="no head is aggregate@0.9"):
        read_boxheads(tmp_path, level=0.9)
    with pytest.raises(InputError, match="levels there"):
        read_boxheads(tmp_path, level=0.5)


def test_boxheads_of_several_runs_need_a_choice(tmp_path):
    _v2_results(tmp_path, runs=("a", "b"))
    with pytest.raises(InputError, match="--heads-run"):
        load_heads(tmp_path)
    assert load_heads(tmp_path, run="b").run == "b"


def test_heads_file_round_trip_and_mask(tmp_path):
    hs = HeadSet(((0, 1), (2, 0)), "x")
    f = tmp_path / "heads.json"
    f.write_text(json.dumps(hs.to_json()))
    back = load_heads(f)
    assert back.heads == hs.heads and json.loads(f.read_text())["heads"][0] == {  # 1-based, and 0-based indices
        "layer": 1, "head": 2, "label": "L1.H2", "layer_index": 0, "head_index": 1}
    m = back.mask((0, 1, 2), 2)
    assert m.tolist() == [[False, True], [False, False], [True, False]]
    with pytest.raises(InputError, match="not in this model"):
        back.mask((0, 1), 2)
    bad = tmp_path / "bad.json"
    bad.write_text('{"numbering": "1-based", "heads": [{"layer": 0, "head": 1}]}')
    with pytest.raises(InputError, match="1-based"):
        load_heads(bad)


def test_random_head_sets_same_size_outside_the_chosen_seeded():
    chosen = torch.zeros(3, 4, dtype=torch.bool)
    chosen[1, 2] = chosen[2, 0] = True
    sets = random_head_sets(chosen, 50, seed=3)
    assert sets.shape == (50, 3, 4) and (sets.flatten(1).sum(1) == 2).all() and not (sets & chosen).any()
    assert torch.equal(sets, random_head_sets(chosen, 50, seed=3))
    assert len({tuple(s.flatten().tolist()) for s in sets}) > 10


def test_objects_by_image_keeps_annotation_order_once():
    anns = [SimpleNamespace(image_id=1, category=c) for c in ("dog", "cat", "dog")]
    assert L.objects_by_image(anns) == {1: ["dog", "cat"]}


def test_monitor_section_renders_and_probe_reports_pick_it_up(tmp_path):
    from vlground.report.monitor_section import render_monitor_section, sections_for

    result = {"task": "chair", "n_words": 2, "n_hallucinated": 1, "heads": {"heads": [{"layer": 3, "head": 1}], "level": 0.7},
              "evaluation": evaluation_rows(np.array([True, False]), {"grounding score (identified heads)": np.array([1.0, 0.0])},
                                            n_boot=10),
              "roc": {"x": {"fpr": [0, 0, 1], "tpr": [0, 1, 1]}}, "scores": {"grounded": [0.4], "hallucinated": [0.1]},
              "outcome": {"chair_i": 0.5}, "examples": [{"image": str(tmp_path / "none.png"), "text": "a <cat>",
                                                           "words": [{"word": "cat", "category": "cat", "label": True, "score": 0.1}]}],
              "notes": ["n<1>"]}
    html = render_monitor_section(result)
    assert "L3.H1" in html and "&lt;cat&gt;" in html and "n&lt;1&gt;" in html and "data:image/png" in html
    (tmp_path / "monitor-chair").mkdir()
    (tmp_path / "monitor-chair" / "monitor.json").write_text(json.dumps(result))
    (sec,) = sections_for(tmp_path)
    assert "chair" in sec.title and "L3.H1" in sec.body
