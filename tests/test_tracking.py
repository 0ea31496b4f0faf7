"""``--log-with``: TensorBoard event files that TensorBoard itself reads back (offline)."""
import json

import pytest

from _corpus import write_tiny_corpus
from vlground.errors import InputError
from vlground.train import TrainConfig, train
from vlground.train.tracking import flat_config, parse_log_with

FAST = {"steps": 12, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "checkpoint_every": 6, "checkpoint_dense_until": 2,
        "log_every": 3, "val_max_chunks": 4}


def test_parse_log_with():
    assert parse_log_with(None) == [] and parse_log_with("") == []
    assert parse_log_with("tensorboard, tensorboard") == ["tensorboard"]
    assert "tensorboard" in parse_log_with("all")
    with pytest.raises(InputError, match="known: tensorboard, wandb, mlflow"):
        parse_log_with("tensorbored")
    assert flat_config({"a": {"b": 1, "c": None}, "d": [1, 2]}) == {"a/b": 1, "a/c": "None", "d": "[1, 2]"}


def test_train_log_with_tensorboard_writes_readable_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    corpus = write_tiny_corpus(tmp_path / "corpus")
    from vlground.cli import main

    rc = main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--arch", "transformer", "--size", "tiny",
               "--no-progress", "--log-with", "tensorboard", *[x for k, v in FAST.items() for x in (f"--{k.replace('_', '-')}", str(v))]])
    assert rc == 0
    event_dirs = {p.parent for p in (tmp_path / "run" / "tracking").rglob("events.out.tfevents.*")}
    assert event_dirs, "no TensorBoard event file"
    tags: dict = {}
    for d in event_dirs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        tags.update({t: acc.Scalars(t) for t in acc.Tags()["scalars"]})
    for tag in ("train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm", "val/loss"):
        assert tag in tags, sorted(tags)
    assert [e.step for e in tags["train/loss"]] == [3, 6, 9, 12]
    assert [e.step for e in tags["val/loss"]] == [0, 1, 2, 6, 12]
    logged = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    loss12 = next(r["loss"] for r in logged if r.get("step") == 12 and "loss" in r)
    assert tags["train/loss"][-1].value == pytest.approx(loss12, rel=1e-4)
    assert all(r["grad_norm"] > 0 for r in logged if "loss" in r)


def test_train_without_log_with_writes_no_tracking(tmp_path):
    corpus = write_tiny_corpus(tmp_path / "corpus")
    train(TrainConfig(corpus=str(corpus), out=str(tmp_path / "run"), arch="lstm", size="tiny", progress=False,
                      overrides={**FAST, "steps": 3}))
    assert not (tmp_path / "run" / "tracking").exists()


def test_probe_log_with_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vlground.train.tracking import log_probe_results

    rows = [{"run": "tf/seed-0", "step": s, "info_gain": 0.1 * s, "match_surprisal": 3.0, "word_p_value": None} for s in (0, 10, 20)]
    assert log_probe_results(tmp_path, "tensorboard", rows) == ["tensorboard"]
    (d,) = {p.parent for p in (tmp_path / "tracking").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(d))
    acc.Reload()
    gain = acc.Scalars("tf/seed-0/info_gain")
    assert [e.step for e in gain] == [0, 10, 20] and gain[-1].value == pytest.approx(2.0)
    assert "tf/seed-0/word_p_value" not in acc.Tags()["scalars"]
    with pytest.raises(InputError):
        log_probe_results(tmp_path, "nope", rows)


def test_probe_unknown_tracker_fails_before_probing(tmp_path, capsys):
    from vlground.cli import main

    rc = main(["probe", "--adapter", "childes", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--log-with", "nope"])
    assert rc == 2 and "--log-with: unknown tracker nope" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
