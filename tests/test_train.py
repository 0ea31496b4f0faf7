"""``vlground train``: every architecture at tiny size on a synthetic corpus, checkpoints,
exact resume, bad inputs. Runs on 2 CPU cores in well under two minutes."""
from __future__ import annotations

import json
import pathlib
import logging
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vlground
from vlground.cli import main
from vlground.corpus.format import Corpus
from vlground.errors import InputError
from vlground.train import ARCHS, TrainConfig, list_checkpoints, train
from vlground.train.checkpoint import checkpoint_info, checkpoint_steps
from vlground.train.config import resolve

from _corpus import write_tiny_corpus

#: few steps, a high learning rate and short warm-up so the loss visibly falls
FAST = {"steps": 12, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "log_every": 3,
        "checkpoint_every": 0, "checkpoint_dense_until": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "tiny")


def _cfg(corpus, out, arch="transformer", **overrides):
    return TrainConfig(corpus=str(corpus), out=str(out), arch=arch, size="tiny", progress=False,
                       overrides={**FAST, **overrides})


def _log(run):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _weights(ckpt_dir):
    return load_file(str(ckpt_dir / "model.safetensors"))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_arch_trains_and_loads_back(arch, corpus, tmp_path):
    run = train(_cfg(corpus, tmp_path / arch, arch))
    losses = [r["loss"] for r in _log(run) if "loss" in r]
    assert losses[-1] < losses[0], losses
    assert all("tokens_per_s" in r and "lr" in r for r in _log(run) if "loss" in r)
    assert [r["step"] for r in _log(run) if "val_loss" in r] == [0, 1, 2, 4, 12]
    ckpts = list_checkpoints(run)
    assert [s for s, _ in ckpts] == [0, 1, 2, 4, 12]
    assert checkpoint_info(ckpts[-1][1])["arch"] == arch

    model, tok = vlground.load_checkpoint(ckpts[-1][1])
    assert not model.training
    ids = torch.tensor([tok.encode("<CHI> ball<ENV> dog<ENV> look the ball<LAN> dog<LAN>")])
    n_layers = model.config.num_hidden_layers
    has_attn = arch in ("transformer", "hybrid-mid", "hybrid-even")
    out = model(ids, output_hidden_states=True, output_attentions=has_attn)
    assert len(out.hidden_states) == n_layers + 1  # embeddings + each layer
    assert all(h.shape == (1, ids.shape[1], model.config.hidden_size) for h in out.hidden_states)
    # the last hidden state is what the output head reads (after any final norm): a lens at the
    # last layer reproduces the model's own logits
    assert torch.allclose(model.get_output_embeddings()(out.hidden_states[-1]), out.logits, atol=1e-5)
    layers = json.loads((run / "run.json").read_text())["layers"]  # 1-based layer numbers per kind
    assert sorted(n for ns in layers.values() for n in ns) == list(range(1, n_layers + 1))
    if arch.startswith("hybrid"):
        assert layers["attention"] == [i + 1 for i in model.config.attn_layer_indices]
        assert layers["mamba2"] == [i + 1 for i, k in enumerate(model.config.layers_block_type) if k != "full_attention"]
    if has_attn:
        assert model.config._attn_implementation == "eager"
        n_attn = n_layers if arch == "transformer" else len(model.config.attn_layer_indices)
        maps = [a for a in out.attentions if a is not None]
        assert len(maps) == n_attn
        heads = model.config.num_attention_heads
        assert all(a.shape == (1, heads, ids.shape[1], ids.shape[1]) for a in maps)
        for a in maps:  # [batch, heads, seq, seq], rows are distributions
            assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)
        maps[0].retain_grad()
        out.logits[0, -1].logsumexp(-1).backward()
        assert maps[0].grad is not None and maps[0].grad.abs().sum() > 0


def test_hybrid_layer_patterns(corpus):
    """The paper (12 layers): Mamba-2 in 1-based layers 4-7 (hybrid-mid) or in every
    even-numbered layer (hybrid-even); the tiny configs (6 layers) scale that down."""
    from vlground.train.models import build_model, layer_kinds, mamba_layers

    for arch, mamba in (("hybrid-mid", [2, 3]), ("hybrid-even", [1, 3, 5])):  # 0-based blocks at 6 layers
        _, _, model_cfg, _, _ = resolve(TrainConfig(corpus=str(corpus), out="x", arch=arch))
        m = build_model(arch, model_cfg, 40)
        kinds = m.config.layers_block_type
        assert [i for i, k in enumerate(kinds) if k != "full_attention"] == mamba
        assert layer_kinds(arch, model_cfg)["mamba2"] == [i + 1 for i in mamba]
    paper = {"num_hidden_layers": 12}
    assert layer_kinds("hybrid-mid", paper) == {"attention": [1, 2, 3, 8, 9, 10, 11, 12], "mamba2": [4, 5, 6, 7]}
    assert layer_kinds("hybrid-even", paper) == {"attention": [1, 3, 5, 7, 9, 11], "mamba2": [2, 4, 6, 8, 10, 12]}
    assert mamba_layers("mid", 12) == [3, 4, 5, 6] and mamba_layers("even", 12) == [1, 3, 5, 7, 9, 11]
    for name in ("hybrid-mid-paper", "hybrid-even-paper"):  # the paper configs build the paper's layers
        cfg = json.loads((pathlib.Path(vlground.__file__).parent / "configs" / f"{name}.json").read_text())
        want = layer_kinds(cfg["arch"], cfg["model"])["mamba2"]
        assert want == ([4, 5, 6, 7] if "mid" in name else [2, 4, 6, 8, 10, 12])
    assert layer_kinds("transformer", {"n_layer": 2}) == {"attention": [1, 2]}
    assert layer_kinds("hybrid-mid", {"num_hidden_layers": 4, "attn_layer_indices": [0]}) == {"attention": [1], "mamba2": [2, 3, 4]}


def test_lstm_last_hidden_state_is_what_the_head_reads(corpus, tmp_path):
    run = train(_cfg(corpus, tmp_path / "lstm", "lstm", steps=2))
    model, _ = vlground.load_checkpoint(list_checkpoints(run)[-1][1])
    ids = torch.arange(10)[None]
    out = model(ids, output_hidden_states=True)
    assert torch.allclose(model.lm_head(out.hidden_states[-1]), out.logits)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied by default


def test_run_folder_layout_and_order(corpus, tmp_path):
    run = train(_cfg(corpus, tmp_path / "run", steps=6))
    spec = json.loads((run / "run.json").read_text())
    assert spec["arch"] == "transformer" and spec["seed"] == 0 and spec["batch_size"] == 4
    assert spec["chunk_len"] == 32 and spec["train"]["lr"] == 3e-3 and spec["vlground_version"]
    split = json.loads((run / "split.json").read_text())
    order = np.load(run / "order.npy")
    assert order.dtype == np.int64 and order.shape == (6 * 4,)
    assert not set(order.tolist()) & set(split["val"])
    c = Corpus.load(corpus)
    assert c.cumulative_cooc(order, 3 * 4).shape == (len(c.pairs),)
    ck = list_checkpoints(run)[-1][1]
    assert {"model.safetensors", "config.json", "tokenizer.json", "trainer_state.pt", "checkpoint.json"} <= {p.name for p in ck.iterdir()}
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())  # no temporaries left


def test_checkpoint_schedule():
    assert checkpoint_steps(100, 25, 16) == [0, 1, 2, 4, 8, 16, 25, 50, 75, 100]
    assert checkpoint_steps(5, 0, 512) == [0, 1, 2, 4, 5]


def _kill_and_resume(corpus, tmp_path, damage=None):
    kw = dict(steps=8, checkpoint_dense_until=4)
    model_kw = {"resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}  # dropout: RNG must resume too
    full = _cfg(corpus, tmp_path / "full", **kw)
    full.model_overrides = model_kw
    train(full)
    killed = _cfg(corpus, tmp_path / "killed", **kw)
    killed.model_overrides = model_kw
    killed.stop_after = 6  # dies after step 6; last checkpoint is step 4
    train(killed)
    assert [s for s, _ in list_checkpoints(tmp_path / "killed")] == [0, 1, 2, 4]
    if damage:
        damage(tmp_path / "killed" / "checkpoints")
    killed.stop_after, killed.resume = None, True
    train(killed)
    a = _weights(tmp_path / "full" / "checkpoints" / "step-8")
    b = _weights(tmp_path / "killed" / "checkpoints" / "step-8")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise
    return tmp_path / "killed"


def test_killed_and_resumed_run_matches_uninterrupted(corpus, tmp_path):
    run = _kill_and_resume(corpus, tmp_path)
    steps = [r["step"] for r in _log(run) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicate log lines


def test_resume_skips_a_corrupt_checkpoint(corpus, tmp_path, caplog):
    def damage(ckpts):
        f = ckpts / "step-4" / "model.safetensors"
        f.write_bytes(f.read_bytes()[:100])

    with caplog.at_level(logging.WARNING):
        run = _kill_and_resume(corpus, tmp_path, damage)
    assert any("step-4" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    assert [s for s, _ in list_checkpoints(run)] == [0, 1, 2, 4, 8]
    (moved,) = (run / "checkpoints").glob("step-4.corrupt-*")
    with pytest.raises(InputError, match="corrupt"):
        vlground.load_checkpoint(moved)


def test_seed_sweep_via_cli(corpus, tmp_path, capsys):
    out = tmp_path / "sweep"
    rc = main(["train", "--corpus", str(corpus), "--out", str(out), "--seeds", "0,1", "--steps", "2",
               "--batch-size", "2", "--no-progress"])
    assert rc == 0
    w0, w1 = (_weights(out / f"seed-{s}" / "checkpoints" / "step-0") for s in (0, 1))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # the seed sets the initialisation ...
    o0, o1 = (np.load(out / f"seed-{s}" / "order.npy") for s in (0, 1))
    assert not np.array_equal(o0, o1)  # ... and the order
    s0, s1 = (json.loads((out / f"seed-{s}" / "split.json").read_text()) for s in (0, 1))
    assert s0["val"] == s1["val"]  # the validation split is shared


def test_user_config_file(corpus, tmp_path):
    from importlib import resources

    data = json.loads((resources.files("vlground") / "configs" / "lstm-tiny.json").read_text())
    data["model"]["hidden_size"] = 32
    data["train"].update(FAST, steps=2)
    f = tmp_path / "my.json"
    f.write_text(json.dumps(data))
    run = train(TrainConfig(corpus=str(corpus), out=str(tmp_path / "run"), config=str(f), progress=False))
    model, _ = vlground.load_checkpoint(list_checkpoints(run)[-1][1])
    assert model.config.hidden_size == 32 and json.loads((run / "run.json").read_text())["arch"] == "lstm"


# -- bad input ------------------------------------------------------------------------------
def _one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlground: error: ") and "\n" not in err
    return err


def test_bad_inputs_are_one_line_errors(corpus, tmp_path, capsys):
    base = ["train", "--out", str(tmp_path / "r"), "--steps", "2", "--no-progress"]
    assert "no such corpus" in _one_line_error(capsys, base + ["--corpus", str(tmp_path / "nope")])
    bad = tmp_path / "bad"
    shutil.copytree(corpus, bad)
    (bad / "chunks.npy").write_bytes(b"garbage")
    assert "chunks.npy" in _one_line_error(capsys, base + ["--corpus", str(bad)])
    err = _one_line_error(capsys, base + ["--corpus", str(corpus), "--arch", "gpt5"])
    assert "transformer" in err and "hybrid-even" in err
    assert "tiny" in _one_line_error(capsys, base + ["--corpus", str(corpus), "--size", "huge"])
    assert not (tmp_path / "r").exists()
    cfg = tmp_path / "broken.json"
    cfg.write_text("{not json")
    assert "broken.json" in _one_line_error(capsys, base + ["--corpus", str(corpus), "--config", str(cfg)])
    cfg.write_text(json.dumps({"arch": "lstm", "model": {}, "train": {"stepz": 3}}))
    assert "stepz" in _one_line_error(capsys, base + ["--corpus", str(corpus), "--config", str(cfg)])


def test_run_folder_with_a_different_config_is_left_alone(corpus, tmp_path, capsys):
    run = train(_cfg(corpus, tmp_path / "r", steps=2))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    argv = ["train", "--corpus", str(corpus), "--out", str(run), "--steps", "2", "--no-progress", "--resume"]
    assert "different config" in _one_line_error(capsys, argv + ["--lr", "0.5"])
    with pytest.raises(InputError, match="--resume"):
        train(_cfg(corpus, run, steps=2))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    with pytest.raises(InputError, match="no such checkpoint"):
        vlground.load_checkpoint(tmp_path / "missing")


def test_bundled_transformer_activation_is_gpt2s_gelu():
    """The configs' fused ``gelu_pytorch_tanh`` is GPT-2's ``gelu_new`` (same weights, same logits)."""
    from importlib import resources

    from vlground.train.models import build_model

    for size in ("tiny", "small", "paper"):
        cfg = json.loads((resources.files("vlground") / "configs" / f"transformer-{size}.json").read_text())["model"]
        assert cfg["activation_function"] == "gelu_pytorch_tanh"
    cfg = json.loads((resources.files("vlground") / "configs" / "transformer-tiny.json").read_text())["model"]
    torch.manual_seed(0)
    fused = build_model("transformer", cfg, 50, max_len=64).eval()
    with torch.no_grad():  # pre-activations of a trained size (at init they are ~0, where every GELU agrees)
        for block in fused.transformer.h:
            block.mlp.c_fc.weight.normal_(0, 0.5)
    gpt2 = build_model("transformer", {**cfg, "activation_function": "gelu_new"}, 50, max_len=64).eval()
    exact = build_model("transformer", {**cfg, "activation_function": "gelu"}, 50, max_len=64).eval()
    for m in (gpt2, exact):
        m.load_state_dict(fused.state_dict())
    x = torch.randint(0, 50, (2, 64))
    with torch.no_grad():
        a, b = (m(input_ids=x).logits for m in (fused, gpt2))
        z = torch.linspace(-6, 6, 1201)
        acts = [m.transformer.h[0].mlp.act(z) for m in (fused, gpt2, exact)]
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(acts[0], acts[1], atol=1e-6)
    assert (acts[0] - acts[2]).abs().max() > 1e-4  # the check tells the exact (erf) GELU apart


def test_threads_option_sets_torch_threads_and_rejects_nonsense(corpus, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "r"), "--steps", "2", "--threads", "1",
                     "--no-progress", "--checkpoint-every", "0"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "s"), "--threads", "0"])
    assert "--threads: want a whole number >= 1" in capsys.readouterr().err
