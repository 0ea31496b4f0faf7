"""Testbed architectures, built from a plain dict of model kwargs (the ``"model"`` section of a
``vlground/configs/<arch>-<size>.json`` file).

=============  ==================================================================================
arch           implementation
=============  ==================================================================================
transformer    ``transformers.GPT2LMHeadModel`` (GPT-2 blocks; learned positions; tied embeddings)
lstm           :class:`vlground.train.lstm.LstmForCausalLM` (``torch.nn.LSTM`` layers)
mamba2         ``transformers.Mamba2ForCausalLM`` (mamba-ssm kernels on GPU when installed, a
               PyTorch path otherwise)
hybrid-mid     ``transformers.BambaForCausalLM``; Mamba-2 mixers in the paper's layers 4-7 of 12
               (1-based; scaled to other depths by :func:`mamba_layers`), attention elsewhere
hybrid-even    ``transformers.BambaForCausalLM``; Mamba-2 mixers in the even-numbered layers
               (1-based 2, 4, ..., 12), attention in the odd-numbered ones (1, 3, ..., 11)
=============  ==================================================================================

Layer numbers in this docstring and in ``run.json``'s ``"layers"`` are 1-based, as in the paper
(:func:`vlground.mechanism.sites.layer_number`); code indices (``attn_layer_indices``) are 0-based.

:func:`build_model` is the one place models are made, so later input kinds (image features as
input embeddings) extend it rather than a copy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch only when a model is built: `vlground train --help` stays fast
    from torch import nn

from vlground.errors import InputError

#: arch name -> builder ``(model_cfg, vocab_size, special ids, max_len, attn_implementation)``
ARCHS: dict[str, Callable[..., nn.Module]] = {}
#: the model kwarg that sets each arch's embedding width (set to the feature width for image corpora)
WIDTH_KEYS = {"transformer": "n_embd", "lstm": "embedding_size", "mamba2": "hidden_size",
              "hybrid-mid": "hidden_size", "hybrid-even": "hidden_size"}
#: archs with attention layers (loaded with eager attention so weights can be read)
ATTENTION_ARCHS = frozenset({"transformer", "hybrid-mid", "hybrid-even"})


def _register(name: str):
    def deco(fn):
        if name in ARCHS:
            raise ValueError(f"arch {name!r} registered twice")
        ARCHS[name] = fn
        return fn

    return deco


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"unknown arch {arch!r} (known: {', '.join(ARCHS)})")


def mamba_layers(pattern: str, n_layers: int) -> list[int]:
    """0-based block indices of the Mamba-2 layers of a hybrid with ``n_layers`` layers.

    ``mid``: the paper replaces layers 4-7 (1-based) of 12, i.e. blocks ``[3, 7)``: ``n // 3``
    Mamba-2 layers starting after the first ``ceil(n / 4)`` attention layers, so 12 layers give
    exactly the paper's 4-7, 6 layers (``tiny``) give 1-based 3-4 and 24 layers give 7-14.
    ``even``: the even-numbered layers, 1-based 2, 4, ..., i.e. blocks 1, 3, 5, ...
    """
    if n_layers < 1:
        raise ValueError(f"a hybrid needs at least one layer, got {n_layers}")
    if pattern == "mid":
        start = -(-n_layers // 4)
        return list(range(start, start + n_layers // 3))
    if pattern == "even":
        return list(range(1, n_layers, 2))
    raise ValueError(pattern)


def layer_kinds(arch: str, model_cfg: dict) -> dict[str, list[int]]:
    """1-based layer numbers of each layer kind, as written to ``run.json`` (``"layers"``), e.g.
    ``{"attention": [1, 2, 3, 8, ...], "mamba2": [4, 5, 6, 7]}`` for ``hybrid-mid`` at 12 layers."""
    check_arch(arch)
    key = {"transformer": "n_layer"}.get(arch, "num_hidden_layers")
    default = {"transformer": 12, "lstm": 2, "mamba2": 64}.get(arch, 12)
    n = int(model_cfg.get(key, default))
    numbers = list(range(1, n + 1))
    if arch == "transformer":
        return {"attention": numbers}
    if arch == "lstm":
        return {"lstm": numbers}
    if arch == "mamba2":
        return {"mamba2": numbers}
    attn = _attn_indices(arch.removeprefix("hybrid-"), n, model_cfg)
    return {"attention": [i + 1 for i in attn], "mamba2": [i + 1 for i in range(n) if i not in attn]}


def _attn_indices(pattern: str, n: int, cfg: dict) -> list[int]:
    if "attn_layer_indices" in cfg:
        return sorted(int(i) for i in cfg["attn_layer_indices"])
    mamba = set(mamba_layers(pattern, n))
    return [i for i in range(n) if i not in mamba]


def build_model(
    arch: str,
    model_cfg: dict,
    vocab_size: int,
    *,
    pad_id: int = 0,
    bos_id: int | None = None,
    eos_id: int | None = None,
    max_len: int = 512,
    attn_implementation: str | None = None,
) -> nn.Module:
    """A freshly initialised causal LM (float32, train mode) from the current torch RNG state.

    ``model_cfg``: the architecture's config kwargs (e.g. ``n_layer``, ``n_embd`` for
    ``transformer``); ``vocab_size``, token ids and context length come from the corpus.
    ``attn_implementation``: ``"eager"`` (attention weights readable), ``"sdpa"`` or ``None``
    (library default); ignored by attention-free archs. Raises :class:`InputError` on an unknown
    arch or bad kwargs.
    """
    check_arch(arch)
    specials = dict(pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id)
    try:
        model = ARCHS[arch](dict(model_cfg), vocab_size, specials, max_len, attn_implementation)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, AssertionError) as exc:
        raise InputError(f"{arch}: bad model config ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    if "loss_type" in vars(model) and model.loss_type is None:
        model.loss_type = "ForCausalLM"  # say it, instead of transformers guessing with a warning
    return model


def _attn(impl: str | None) -> dict:
    return {} if impl is None else {"attn_implementation": impl}


@_register("transformer")
def _transformer(cfg, vocab_size, specials, max_len, impl):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg.setdefault("n_positions", max_len)
    check_model_keys(GPT2Config, cfg, "transformer")
    config = GPT2Config(vocab_size=vocab_size, **specials, **cfg)
    return GPT2LMHeadModel._from_config(config, **_attn(impl))


@_register("lstm")
def _lstm(cfg, vocab_size, specials, max_len, impl):
    from vlground.train.lstm import LstmConfig, LstmForCausalLM

    check_model_keys(LstmConfig, cfg, "lstm")
    return LstmForCausalLM(LstmConfig(vocab_size=vocab_size, **specials, **cfg))


@_register("mamba2")
def _mamba2(cfg, vocab_size, specials, max_len, impl):
    from transformers import Mamba2Config, Mamba2ForCausalLM

    check_model_keys(Mamba2Config, cfg, "mamba2")
    config = Mamba2Config(vocab_size=vocab_size, **specials, **cfg)
    _check_mamba(config.expand * config.hidden_size, config.num_heads, config.head_dim, config.n_groups)
    return Mamba2ForCausalLM._from_config(config)


def _hybrid(pattern):
    def build(cfg, vocab_size, specials, max_len, impl):
        from transformers import BambaConfig, BambaForCausalLM

        n = cfg.get("num_hidden_layers", 12)
        cfg["attn_layer_indices"] = _attn_indices(pattern, n, cfg)
        cfg.setdefault("max_position_embeddings", max_len)
        check_model_keys(BambaConfig, cfg, f"hybrid-{pattern}")
        config = BambaConfig(vocab_size=vocab_size, **specials, **cfg)
        _check_mamba(config.mamba_expand * config.hidden_size, config.mamba_n_heads, config.mamba_d_head, config.mamba_n_groups)
        return BambaForCausalLM._from_config(config, **_attn(impl))

    return build


_register("hybrid-mid")(_hybrid("mid"))
_register("hybrid-even")(_hybrid("even"))


def check_model_keys(config_cls, cfg: dict, arch: str) -> None:
    """ValueError naming the model keywords ``config_cls`` does not have (a Hugging Face config
    stores an unknown keyword silently and the model ignores it)."""
    import inspect

    known = set(config_cls().to_dict()) | set(getattr(config_cls, "attribute_map", {}) or {})
    known |= {n for n in inspect.signature(config_cls.__init__).parameters if n not in ("self", "kwargs")}
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        from difflib import get_close_matches

        hints = [m for k in unknown for m in get_close_matches(k, sorted(known), n=1)]
        raise ValueError(f"unknown model keyword(s) {', '.join(unknown)} for {arch}"
                         + (f" (did you mean {', '.join(hints)}?)" if hints else ""))


def _check_mamba(inner: int, n_heads: int, head_dim: int, n_groups: int) -> None:
    if n_heads * head_dim != inner:
        raise ValueError(f"Mamba-2 needs heads x head_dim == expand x hidden ({n_heads} x {head_dim} != {inner})")
    if n_heads % n_groups:
        raise ValueError(f"Mamba-2 needs n_groups ({n_groups}) to divide the number of heads ({n_heads})")
