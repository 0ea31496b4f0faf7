"""A unidirectional LSTM language model as a Hugging Face ``PreTrainedModel``.

It saves and loads with ``save_pretrained`` / ``from_pretrained`` (and through
``AutoModelForCausalLM`` once this module is imported), and its output matches the other
architectures' so probes need no special case:

* ``logits``: ``[batch, seq, vocab]``; ``loss`` when ``labels`` are given (shifted inside, ``-100``
  ignored, as Hugging Face causal LMs do);
* ``hidden_states`` (with ``output_hidden_states=True``): a tuple of ``num_hidden_layers + 1``
  tensors ``[batch, seq, hidden]``: the embeddings, then each LSTM layer's output. The last one
  is exactly what the output head reads (no final norm), so a lens at the last layer reproduces
  the model's logits.

Each layer is its own single-layer ``nn.LSTM`` (cuDNN on GPU), so per-layer outputs are
available without hooks. With ``tie_word_embeddings`` (the default) the output head shares the
embedding matrix, which requires ``embedding_size == hidden_size``; untied, the two may differ.

Initialisation (``init``): ``"pytorch"`` (default) keeps ``nn.LSTM``'s own initialisation, every
weight and bias ``U(-1/sqrt(hidden), 1/sqrt(hidden))`` (std ``0.072`` at width 64), and draws the
embedding / output head from ``N(0, initializer_range)``.  ``"gpt2"`` is vlground's earlier
scheme: LSTM weights ``U(+-sqrt(3) * initializer_range)`` (std 0.02, 3.6x smaller at width 64),
zero biases with forget-gate bias 1.  With ``"gpt2"`` a tiny LSTM barely learns to use tokens more
than a few positions back (issue 11: validation loss 2.28 vs the Transformer's 1.57, next-token
log-probs moved < 0.2 nats by replacing tokens 5+ positions back); ``tests/test_train.py``
checks that the default does.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class LstmConfig(PreTrainedConfig):
    """Configuration of :class:`LstmForCausalLM` (``model_type = "vlground_lstm"``)."""

    model_type = "vlground_lstm"

    def __init__(
        self,
        vocab_size: int = 1000,
        hidden_size: int = 512,
        embedding_size: int | None = None,
        num_hidden_layers: int = 2,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        init: str = "pytorch",
        tie_word_embeddings: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.embedding_size = hidden_size if embedding_size is None else embedding_size
        self.num_hidden_layers = num_hidden_layers
        self.dropout = dropout
        self.initializer_range = initializer_range
        if init not in ("pytorch", "gpt2"):
            raise ValueError(f"unknown LSTM init {init!r} (known: 'pytorch', 'gpt2')")
        self.init = init
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        if tie_word_embeddings and self.embedding_size != hidden_size:
            raise ValueError("tied embeddings need embedding_size == hidden_size")
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class LstmForCausalLM(PreTrainedModel):
    """Embedding -> ``num_hidden_layers`` LSTM layers (dropout between) -> linear output head."""

    config_class = LstmConfig
    config: LstmConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}

    def __init__(self, config: LstmConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        sizes = [config.embedding_size] + [config.hidden_size] * config.num_hidden_layers
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(config.num_hidden_layers))
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Embedding, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LSTM) and getattr(self.config, "init", "pytorch") == "pytorch":
            module.reset_parameters()  # U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias
        elif isinstance(module, nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("weight"):
                    nn.init.uniform_(p, -std * 3**0.5, std * 3**0.5)
                else:
                    nn.init.zeros_(p)
                    if name.startswith("bias_ih"):  # forget-gate bias 1 (gate order i, f, g, o)
                        n = p.shape[0] // 4
                        nn.init.ones_(p[n : 2 * n])

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def get_unembedding(self):
        """For the tuned lens: no final norm, the LM head reads the last layer's output."""
        from vlground.mechanism.unembed import Unembedding

        return Unembedding(head=self.lm_head, norm=None)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutput:
        """``input_ids`` ``[batch, seq]`` (or ``inputs_embeds`` ``[batch, seq, embedding_size]``).

        ``attention_mask`` is accepted for interface parity and ignored: padding is on the right
        and a unidirectional LSTM never reads positions after the current one.
        """
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        h = self.drop(inputs_embeds)
        hidden = [inputs_embeds] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            h, _ = layer(h)
            if hidden is not None:
                hidden.append(h)
            if i < len(self.layers) - 1:
                h = self.drop(h)
        logits = self.lm_head(self.drop(h))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=tuple(hidden) if hidden is not None else None)


AutoConfig.register(LstmConfig.model_type, LstmConfig, exist_ok=True)
AutoModelForCausalLM.register(LstmConfig, LstmForCausalLM, exist_ok=True)
