"""The word-level ENV/LAN vocabulary and its Hugging Face tokenizer.

Id order is deterministic:

1. the specials of :data:`vlground.corpus.format.SPECIALS` (``<pad>=0 <unk>=1 <bos>=2 <eos>=3``);
2. speaker tokens (``<CHI>``, ``<MOT>``, ...) sorted alphabetically, all kept whatever their count;
3. word tokens (``ball<ENV>``, ``ball<LAN>``, ...) with at least ``min_count`` occurrences *of
   that form*, sorted by count (descending), then by token string (ascending). A rarer form
   is written as ``<unk>``; its other form may still be kept.

The tokenizer is a ``tokenizers`` ``WordLevel`` model with a ``WhitespaceSplit``
pre-tokenizer and no post-processor (``tok("<CHI> ball<LAN>")`` gives exactly those two ids,
no ``<bos>`` is added), wrapped in a ``transformers.PreTrainedTokenizerFast`` and saved with
``save_pretrained`` so ``AutoTokenizer.from_pretrained(corpus_dir)`` loads it. Decoding joins
tokens with single spaces, so ``decode(encode(text)) == text`` for normalised text.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping

from vlground.corpus.format import ENV, LAN, SPECIALS


def is_word_token(token: str) -> bool:
    return token.endswith(ENV) or token.endswith(LAN)


def build_vocab(counts: Mapping[str, int], speakers: Iterable[str], min_count: int = 1) -> dict[str, int]:
    """token -> id in the documented order.

    ``counts`` holds word tokens (``w<ENV>``/``w<LAN>``) and their counts; ``speakers`` the
    speaker tokens (``<CHI>``). Specials come from ``SPECIALS``.
    """
    vocab: dict[str, int] = {}
    for tok in SPECIALS:
        vocab[tok] = len(vocab)
    for tok in sorted(set(speakers) - set(SPECIALS)):
        vocab[tok] = len(vocab)
    words = [(c, t) for t, c in counts.items() if c >= max(1, min_count) and t not in vocab]
    words.sort(key=lambda ct: (-ct[0], ct[1]))
    for _, tok in words:
        vocab[tok] = len(vocab)
    return vocab


def pairs_from_vocab(vocab: Mapping[str, int]) -> list[dict]:
    """Words with both forms in ``vocab``, sorted alphabetically: ``{"word", "env_id", "lan_id"}``."""
    out = []
    n = len(ENV)
    for tok, env_id in vocab.items():
        if tok.endswith(ENV):
            word = tok[:-n]
            lan_id = vocab.get(word + LAN)
            if lan_id is not None:
                out.append({"word": word, "env_id": int(env_id), "lan_id": int(lan_id)})
    out.sort(key=lambda p: p["word"])
    return out


def make_tokenizer(vocab: Mapping[str, int], model_max_length: int | None = None):
    """A ``PreTrainedTokenizerFast`` over ``vocab`` (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pad, unk, bos, eos = SPECIALS
    core = Tokenizer(models.WordLevel(vocab=dict(vocab), unk_token=unk))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="\x00", cleanup=False)  # joins tokens with " "
    kwargs = {}
    if model_max_length:
        kwargs["model_max_length"] = int(model_max_length)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=pad,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


def save_tokenizer(vocab: Mapping[str, int], out_dir: str | os.PathLike, model_max_length: int | None = None) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` into ``out_dir``."""
    make_tokenizer(vocab, model_max_length).save_pretrained(str(out_dir))
