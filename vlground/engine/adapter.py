"""The adapter interface: everything model-specific the probing engine needs, and nothing more.

An adapter describes one model family (the text testbed, an LM fed DINOv2 patches, a pretrained
VLM). The engine never looks inside a model; it asks the adapter, in this order::

    adapter = Adapter.from_options(options)     # CLI flags / a dict; unknown needs -> InputError
    for ckpt in adapter.checkpoints():          # what can be probed (one per step of each run,
        loaded = adapter.load(ckpt)             #  or a single one for a pretrained VLM)
        items = adapter.items(loaded)           # probe items, match and mismatch, paired
        batch = adapter.batch(loaded, items)    # model inputs + the positions that matter
        lp = adapter.target_logprobs(loaded, batch)   # [batch] log p(target | context), nats

Exact semantics (every adapter must keep them; ``vlground.testing.check_adapter`` checks):

* **Surprisal** of an item is ``-target_logprobs``: the sum over the target's sub-tokens ``k`` of
  ``-log p(target_ids[b, k] | tokens up to target_positions[b, k])``, read from the logits *at*
  ``target_positions[b, k]`` (the position just before that sub-token). Word-level vocabularies
  have one sub-token; LLaVA scores a word of several sub-tokens as the sum (teacher forcing:
  the earlier sub-tokens are in the input).
* ``predict_positions[b] == target_positions[b, 0]``: the position just before the target word.
  Saliency is read *into* this position.
* ``env_mask[b, j]`` is True for the environment positions of item ``b``: the ``w<ENV>`` token
  (text testbed, env2lan direction; the ``w<LAN>`` token for lan2env), or the image patch tokens
  whose patch lies inside the object's box (vision). ``env_span`` marks all environment
  positions (the whole ENV frame, or every image patch).
* Match and mismatch items of one pair share ``pair_id``; they differ only in the environment
  (the ENV word, or the image), never in the linguistic context or the target.
* Boxes map to patches through :mod:`vlground.vision` (one shared implementation).

Capabilities an adapter lacks are declared by :meth:`Adapter.capabilities`; the engine skips the
probes that need them and writes a note (an LSTM has no attention heads).
"""
from __future__ import annotations

import abc
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping

from vlground.errors import InputError
from vlground.mechanism.sites import AttentionSites  # where heads live: one description for all probes

if TYPE_CHECKING:  # torch is imported where it runs, so `vlground probe --help` and `vlground list` stay light
    import torch


class Capability(str, enum.Enum):
    """What a loaded model offers beyond next-token log-probabilities."""

    ATTENTION = "attention"  #: eager attention maps with gradients, and zeroable heads
    HIDDEN_STATES = "hidden_states"  #: per-layer residual stream + an unembedding (tuned lens)
    TRAJECTORY = "trajectory"  #: several checkpoints over training (steps)
    COOCCURRENCE = "cooccurrence"  #: cumulative co-occurrence counts per target at each step


@dataclass(frozen=True)
class Checkpoint:
    """One probeable model state."""

    run: str  #: run name (a run folder's name, or the model id)
    path: str  #: checkpoint folder or hub id
    seed: int | None = None
    step: int | None = None  #: training step; None for a pretrained model
    group: str | None = None  #: what the report pools seeds over (an architecture, a corpus variant); default: the run
    revision: str | None = None  #: hub revision asked for (branch, tag or commit); None: the default branch

    @property
    def key(self) -> str:
        from vlground.runid import checkpoint_key

        return checkpoint_key(self.run, self.step)


@dataclass(frozen=True)
class ProbeItem:
    """One probe: an environment, a linguistic context and a target word."""

    item_id: str
    pair_id: str  #: shared by the match item and its mismatch item
    word: str  #: the target word (its referent is in the environment in the match condition)
    condition: Literal["match", "mismatch"]
    direction: Literal["env2lan", "lan2env"] = "env2lan"
    env_word: str | None = None  #: the word whose referent the environment holds
    template: int = 0  #: index of the (environment, linguistic) frame pair
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProbeBatch:
    """Model inputs for a list of items, right-padded, with the positions that matter.

    Shapes: ``B`` items, ``S`` sequence length, ``T`` target sub-tokens (1 for word-level).
    """

    items: list[ProbeItem]
    model_inputs: dict[str, torch.Tensor]  #: kwargs for ``model(**model_inputs)``
    target_ids: torch.Tensor  #: long [B, T], padded with -100
    target_positions: torch.Tensor  #: long [B, T]: logits position scoring each sub-token
    env_mask: torch.Tensor  #: bool [B, S]: the referent's environment positions
    env_span: torch.Tensor | None = None  #: bool [B, S]: all environment positions
    env_views: dict[str, torch.Tensor] = field(default_factory=dict)
    """view name -> bool [B, S]: the environment positions of each view of an image (``base``,
    ``tiles``, ``prefix``, ``separator``; see :mod:`vlground.vision.layout`); empty when not an image."""

    @property
    def predict_positions(self) -> torch.Tensor:
        """long [B]: the position just before the target word."""
        return self.target_positions[:, 0]

    def __len__(self) -> int:
        return len(self.items)

    def to(self, device) -> "ProbeBatch":
        return dataclasses.replace(
            self,
            model_inputs={k: v.to(device) for k, v in self.model_inputs.items()},
            target_ids=self.target_ids.to(device),
            target_positions=self.target_positions.to(device),
            env_mask=self.env_mask.to(device),
            env_span=None if self.env_span is None else self.env_span.to(device),
            env_views={k: v.to(device) for k, v in self.env_views.items()},
        )


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass
class LoadedModel:
    """A checkpoint in memory. ``extra`` holds what the adapter needs later (corpus, processor)."""

    checkpoint: Checkpoint
    model: torch.nn.Module
    tokenizer: Any = None
    device: torch.device = field(default_factory=_cpu)
    extra: dict[str, Any] = field(default_factory=dict)


class Adapter(abc.ABC):
    """Base class of all adapters. Subclasses set ``name`` and implement the abstract methods.

    Options: a subclass declares a dataclass ``Options`` (one docstring per field); the CLI passes
    every ``vlground probe`` flag it has as a dict to :meth:`from_options`, which keeps the
    fields ``Options`` declares.
    """

    name: ClassVar[str] = ""

    @dataclass
    class Options:
        batch_size: int = 32  #: items per forward pass
        device: str = "auto"  #: ``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``...

    def __init__(self, options: "Adapter.Options | None" = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "Adapter":
        names = {f.name for f in dataclasses.fields(cls.Options)}
        kwargs = {k: v for k, v in (options or {}).items() if k in names and v is not None}
        try:
            opts = cls.Options(**kwargs)
        except TypeError as exc:
            raise InputError(f"adapter {cls.name}: {exc}") from None
        check_common_options(opts)
        return cls(opts)

    # -- required -----------------------------------------------------------------------------
    @abc.abstractmethod
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint this adapter can probe, sorted by (run, step). Never empty: raise
        :class:`InputError` naming the folder when there is nothing to probe."""

    @abc.abstractmethod
    def load(self, checkpoint: Checkpoint) -> LoadedModel:
        """Load one checkpoint in eval mode. A corrupt checkpoint raises :class:`InputError`
        naming its path (the engine skips it and goes on)."""

    @abc.abstractmethod
    def items(self, loaded: LoadedModel) -> list[ProbeItem]:
        """The probe items for this model: for each pair a match and a mismatch item. Items
        that cannot be made are left out and reported through :meth:`skipped`."""

    @abc.abstractmethod
    def batch(self, loaded: LoadedModel, items: list[ProbeItem]) -> ProbeBatch:
        """Inputs for ``items`` (any length; the engine chunks by ``options.batch_size``)."""

    # -- optional, with defaults --------------------------------------------------------------
    def capabilities(self, loaded: LoadedModel) -> frozenset[Capability]:
        """What this model offers; the default is none beyond log-probabilities."""
        return frozenset()

    def attention_site(self, loaded: LoadedModel) -> AttentionSites | None:
        """Where the heads are (needed for ``Capability.ATTENTION``); the default resolves
        Hugging Face models by ``config.model_type`` (:func:`vlground.mechanism.sites.resolve_sites`)."""
        from vlground.mechanism.sites import resolve_sites

        return resolve_sites(loaded.model)

    def unembed(self, loaded: LoadedModel):
        """``h [..., d] -> logits [..., vocab]`` for a residual-stream state (final norm + head);
        needed for ``Capability.HIDDEN_STATES``."""
        return None

    def cooccurrence(self, loaded: LoadedModel, words: list[str]) -> dict[str, int] | None:
        """Cumulative co-occurrence count of each word's environment and linguistic forms up to
        this checkpoint's step, in training order (``Capability.COOCCURRENCE``)."""
        return None

    def lens_batches(self, loaded: LoadedModel) -> list[dict[str, torch.Tensor]] | None:
        """Held-out model inputs to fit a tuned lens on (``Capability.HIDDEN_STATES``)."""
        return None

    def skipped(self) -> list[str]:
        """One-line reasons for items or checkpoints left out (shown in the report)."""
        return []

    def settings(self) -> dict[str, Any]:
        """What determines the results (shown in the report; hashed for caching)."""
        return {"adapter": self.name, **{k: _jsonable(v) for k, v in dataclasses.asdict(self.options).items()}}

    # -- the one forward path ------------------------------------------------------------------
    def model_inputs(self, loaded: LoadedModel, batch: ProbeBatch) -> dict[str, torch.Tensor]:
        """Every keyword argument of ``loaded.model(...)`` for ``batch``, on the model's device.

        The one forward path: scoring (:meth:`forward`), saliency (:meth:`saliency`) and head
        ablation all call the model with exactly these, so an input the model needs (position
        ids, token-type ids, image sizes) reaches every probe. Override to add or cast inputs
        (``vlground.testing.check_adapter`` checks that saliency and scoring give the same logits).
        """
        return {k: v.to(loaded.device) for k, v in batch.model_inputs.items()}

    def forward(self, loaded: LoadedModel, batch: ProbeBatch, **kwargs):
        """Run the model on a batch; returns the model output (``.logits`` [B, S, V])."""
        return loaded.model(**self.model_inputs(loaded, batch), **kwargs)

    def saliency(self, loaded: LoadedModel, batch: ProbeBatch, *, predict_row_only: bool = True,
                 layers=None, dtype: torch.dtype | None = None, kernel: str = "sdpa") -> torch.Tensor:
        """Attention saliency ``dL/dA * A`` of every head for ``batch`` (the loss: each item's first
        target sub-token), through :meth:`model_inputs` (``input_ids`` become ``inputs_embeds`` so
        the maps get gradients). ``[B, L_att, H, S]`` rows into ``predict_positions`` (default), or
        ``[B, L_att, H, S, S]`` with ``predict_row_only=False``; float32 on the CPU. ``dtype``: run
        the pass under autocast in this dtype (e.g. ``torch.bfloat16``; None: the model's own).
        ``kernel="sdpa"`` (default): the fused kernel runs in every layer and each map is recomputed
        per layer in the backward pass, so the autograd graph holds none (models outside transformers'
        AttentionInterface run eager); ``"eager"``: every map in the graph.
        See :func:`vlground.mechanism.saliency.attention_saliency`."""
        from vlground.mechanism.saliency import attention_saliency

        args, kwargs = self._saliency_args(loaded, batch)
        return attention_saliency(*args, **kwargs, layers=layers, predict_row_only=predict_row_only, dtype=dtype, kernel=kernel)

    def saliency_summary(self, loaded: LoadedModel, batch: ProbeBatch, *, dtype: torch.dtype | None = None,
                         map_items=None, map_length: int | None = None, kernel: str = "sdpa"):
        """The per-layer reductions of :meth:`saliency`'s maps that the head and flow probes read
        (rows into ``predict_positions``, strip and dot masses, per-layer flows; ``O(S)`` per head),
        computed inside the same pass through :meth:`model_inputs`; ``map_items`` / ``map_length``:
        also the mean map of those items cropped to that many tokens; ``kernel`` as in :meth:`saliency`.
        See :func:`vlground.mechanism.saliency_summary.saliency_summary`."""
        from vlground.mechanism.saliency_summary import saliency_summary

        args, kwargs = self._saliency_args(loaded, batch)
        return saliency_summary(*args, **kwargs, dtype=dtype, map_items=map_items, map_length=map_length, kernel=kernel)

    def _saliency_args(self, loaded: LoadedModel, batch: ProbeBatch) -> tuple[tuple, dict]:
        """Positional and keyword arguments of one saliency pass over ``batch`` (model, ids, predicted
        rows, first target sub-tokens, mask; embeddings, attention sites and the model's other inputs)."""
        inputs = self.model_inputs(loaded, batch)
        ids, embeds = inputs.pop("input_ids", None), inputs.pop("inputs_embeds", None)
        mask = inputs.pop("attention_mask", None)
        dev = ids.device if ids is not None else embeds.device
        args = (loaded.model, ids, batch.predict_positions.to(dev).contiguous(), batch.target_ids[:, 0].to(dev).contiguous(), mask)
        return args, {"inputs_embeds": embeds, "sites": self._sites_or_none(loaded), **inputs}

    def _sites_or_none(self, loaded: LoadedModel):
        """:meth:`attention_site`, or None where it cannot say (the saliency pass then resolves or runs eager)."""
        from vlground.mechanism.errors import MechanismError

        try:
            return self.attention_site(loaded)
        except MechanismError:
            return None

    def target_logprobs(self, loaded: LoadedModel, batch: ProbeBatch) -> torch.Tensor:
        """float [B]: ``log p(target | context)`` in nats, summed over sub-tokens (no gradients).

        Only the logits it reads are computed: a model whose ``forward`` takes ``logits_to_keep``
        (Hugging Face causal LMs and VLMs) gets the distinct target positions of the batch, so
        its head runs on ``K <= B * T`` positions instead of ``S``."""
        import torch

        with torch.no_grad():
            keep = logits_positions(loaded.model, batch.target_positions, batch.target_ids)
            if keep is None:
                out = self.forward(loaded, batch)
                return gather_target_logprobs(out.logits, batch.target_ids, batch.target_positions)
            positions, remapped = keep
            out = self.forward(loaded, batch, logits_to_keep=positions.to(loaded.device))
            return gather_target_logprobs(out.logits, batch.target_ids, remapped)


def logits_positions(model: torch.nn.Module, target_positions: torch.Tensor, target_ids: torch.Tensor):
    """``(positions [K], remapped [B, T])`` for ``logits_to_keep``: the distinct positions the
    scores read, and ``target_positions`` as indices into them; None when the model's ``forward``
    takes no ``logits_to_keep`` or keeping them saves nothing."""
    import inspect

    import torch

    try:
        if "logits_to_keep" not in inspect.signature(model.forward).parameters:
            return None
    except (TypeError, ValueError):
        return None
    pos = target_positions.clamp(min=0)
    pos = torch.where(target_ids.to(pos.device) >= 0, pos, pos[:, :1])  # padded sub-tokens read an already-kept position
    positions, remapped = torch.unique(pos, sorted=True, return_inverse=True)
    if positions.numel() == 0:
        return None
    return positions, remapped


def gather_target_logprobs(logits: torch.Tensor, target_ids: torch.Tensor, target_positions: torch.Tensor) -> torch.Tensor:
    """Sum of ``log_softmax(logits[b, target_positions[b, k]])[target_ids[b, k]]`` over valid k.

    logits [B, S, V]; target_ids, target_positions long [B, T] (target_ids -100 = padding) -> [B].
    """
    import torch

    target_ids = target_ids.to(logits.device)
    target_positions = target_positions.to(logits.device)
    valid = target_ids >= 0
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(target_positions)
    picked = logits[rows, target_positions.clamp(min=0)].float()  # [B, T, V]
    logp = torch.log_softmax(picked, dim=-1).gather(-1, target_ids.clamp(min=0)[..., None])[..., 0]
    return (logp * valid).sum(-1)


def check_common_options(opts) -> None:
    """One-line errors for option values no adapter can use: ``--batch-size`` below 1, a
    ``--limit`` below 1, a device this machine does not have."""
    bs = getattr(opts, "batch_size", None)
    if bs is not None and (not isinstance(bs, int) or bs < 1):
        raise InputError(f"--batch-size: must be a whole number >= 1, got {bs!r}")
    limit = getattr(opts, "limit", None)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InputError(f"--limit: must be a whole number >= 1 (leave it out for no limit), got {limit!r}")
    device = getattr(opts, "device", None)
    if device is not None:
        resolve_device(str(device))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a device this machine lacks raises :class:`InputError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: {name!r} is not a device (use auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {name}: no such CUDA device on this machine (use --device cpu or auto)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"--device {name}: MPS is not available on this machine (use --device cpu or auto)")
    return dev


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


# ------------------------------------------------------------------------------------------------
# Adapter options -> command-line flags
# ------------------------------------------------------------------------------------------------
def adapter_cli_flags(adapter_cls, skip=frozenset()) -> list[tuple[list[str], dict]]:
    """``[(flags, argparse kwargs)]``, one per field of ``adapter_cls.Options`` not in ``skip``:
    ``--field-name`` with the type, ``#:`` help and default of the field (:func:`vlground.options.argument_spec`;
    ``Path`` fields parse as paths). Use: ``for flags, kw in adapter_cli_flags(cls): parser.add_argument(*flags, **kw)``."""
    import typing
    from pathlib import Path

    from vlground.options import _default, _show, argument_spec, field_help

    hints = typing.get_type_hints(adapter_cls.Options)
    helps: dict[str, str] = {}
    for klass in reversed(adapter_cls.Options.__mro__):  # comments of inherited fields live in the base classes
        if dataclasses.is_dataclass(klass):
            helps.update(field_help(klass))
    out = []
    for f in dataclasses.fields(adapter_cls.Options):
        if f.name in skip:
            continue
        flags, kw = argument_spec(adapter_cls.Options, f)
        if Path in (hints[f.name], *typing.get_args(hints[f.name])):
            kw["type"] = Path
        default = _default(f)
        shown = f" (default: {_show(default)})" if default is not None else ""
        kw["help"] = f"{adapter_cls.name}: {helps.get(f.name, '')}{shown}"
        out.append((flags, kw))
    return out
