"""Tiny seeded models for the mechanism tests (no weights, no network)."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    BambaConfig,
    BambaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 50


def _perturb_norms(model):
    """Random norm weights, so an applied-twice final norm would show."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model


def make_gpt2(seed=0, n_layer=2, n_head=4, n_embd=32):
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=VOCAB, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return _perturb_norms(GPT2LMHeadModel(cfg).eval())


@pytest.fixture
def tiny_gpt2():
    return make_gpt2()


@pytest.fixture
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                      intermediate_size=64, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    return _perturb_norms(LlamaForCausalLM(cfg).eval())


@pytest.fixture
def tiny_bamba():
    torch.manual_seed(0)
    cfg = BambaConfig(num_hidden_layers=3, attn_layer_indices=[1], num_attention_heads=4, num_key_value_heads=2,
                      hidden_size=32, intermediate_size=64, vocab_size=VOCAB, mamba_n_heads=4, mamba_d_head=16,
                      mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=8, bos_token_id=0, eos_token_id=0,
                      pad_token_id=0)
    return _perturb_norms(BambaForCausalLM(cfg).eval())


@pytest.fixture
def tiny_llava():
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=8, patch_size=4)
    text = LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
                       intermediate_size=64, vocab_size=60, bos_token_id=0, eos_token_id=0)
    return _perturb_norms(LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text,
                                                                    image_token_index=55)).eval())
