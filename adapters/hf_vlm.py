"""``HFVisionLanguageAdapter``: any Hugging Face image-text-to-text model, probed on COCO objects.

A concrete VLM is a short subclass that *declares* what differs (``adapters/llava15.py``,
``adapters/qwen2vl.py``, ``adapters/llava_next.py``; docs/adapters.md): the accepted
``config.model_type`` values, the model and processor classes (or a processor-loading hook), the
chat format, and, when the defaults do not fit, the image-token layout and extra model inputs.

Items (one pair per annotated object of ``--annotations``):

* match: the source image; mismatch: the image ``build-mismatch`` made from it (``--mismatch``
  folder, matched by annotation id and source file). Both share ``pair_id`` (``ann<id>``), the
  prompt and the target; only the pixels differ.
* prompt: ``options.prompt`` if given (it must hold the processor's image token once), else the
  class's ``chat_format`` (or the processor's chat template) filled with ``options.question`` and
  ``options.answer_prefix``: ``USER: <image>\\nWhat is in the picture? ASSISTANT: It is a``.
  The target is the category name, tokenised as ``prompt + " " + name``; a name of several
  sub-tokens is scored as the sum of their log-probabilities with the earlier sub-tokens fed in
  (teacher forcing), per :mod:`vlground.engine.adapter`.
* layout: :meth:`image_layout` computes each image's
  :class:`~vlground.vision.layout.ImageTokenLayout` from the real processor output for that image
  (default: one grid read from the image processor's settings, :func:`single_grid_layout`).
* ``env_mask``: the image-token positions inside the object's box
  (:func:`vlground.vision.layout.box_to_tokens`, every view that shows it); ``env_span``: every
  image-token position (grids, prefix and separator tokens).

Batching: ``input_ids`` and the per-token extras (``token_inputs``, e.g. Qwen2-VL's
``mm_token_type_ids``, and any integer ``[1, P]`` output of the processor) are right-padded and
extended with the target's earlier sub-tokens; per-image extras (``pixel_values``,
``image_grid_thw``, ``image_sizes``) are concatenated along dim 0, zero-padded where their other
dims differ (as the processor pads several images of one call).

Memory and speed: ``--dtype auto`` is float16 on a GPU and float32 on the CPU (bfloat16 with
``--dtype bfloat16``); attention is eager (saliency needs the maps); ``--device-map auto`` (or
``--device auto`` with several GPUs) shards the model with accelerate. Saliency keeps only the
predicted row (``[B, layers, heads, S]``).
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch

from vlground.engine.adapter import Adapter, Capability, Checkpoint, LoadedModel, ProbeBatch, ProbeItem, resolve_device
from vlground.errors import InputError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class AdapterHookError(InputError):
    """An adapter hook (``image_layout``, ``encode``, ``image_token_id`` ...) raised: one line naming the hook."""


#: processor outputs that are never model inputs (training targets); left out with a note
NOT_MODEL_INPUTS = ("labels",)


def model_input_tensors(enc: Mapping[str, Any], notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a processor output the model may get: ``labels`` (PaliGemma's processor returns
    training targets) are left out, with a note appended to ``notes`` the first time."""
    out = {}
    for k, v in enc.items():
        if not isinstance(v, torch.Tensor):
            continue
        if k in NOT_MODEL_INPUTS:
            note = f"processor output {k!r} is not given to the model (training targets)"
            if notes is not None and note not in notes:
                notes.append(note)
                log.info(note)
            continue
        out[k] = v
    return out


@dataclass(frozen=True)
class ObjectItem:
    """What :meth:`HFVisionLanguageAdapter.batch` needs of one object (kept in ``ProbeItem.meta``)."""

    annotation_id: int
    image: str  #: match image file
    mismatch_image: str  #: the inpainted image file
    image_size: tuple[int, int]  #: original ``(width, height)``
    bbox: tuple[float, float, float, float]  #: COCO ``(x, y, w, h)`` in original pixels
    patches: tuple[int, ...]  #: indices (into the image's token positions, ascending) of the tokens inside the box
    word_ids: tuple[int, ...]  #: the target's sub-token ids
    layout: Mapping[str, Any] = field(default_factory=dict)  #: ``ImageTokenLayout.summary()`` + ``n_inside``


class HFVisionLanguageAdapter(Adapter):
    """Base adapter for Hugging Face VLMs. Subclasses set the class attributes below."""

    name = "hf_vlm"

    #: accepted ``config.model_type`` values (empty: any)
    model_types: ClassVar[tuple[str, ...]] = ()
    #: ``transformers`` class (name or class) loading the model
    model_class: ClassVar[str | type] = "AutoModelForImageTextToText"
    #: the processor: a ``transformers`` class name, a class with ``from_pretrained``, or a callable
    #: ``path -> processor`` (e.g. built from an image processor and a tokenizer); see :meth:`load_processor`
    processor_class: ClassVar[str | type | Callable[[str], Any]] = "AutoProcessor"
    #: prompt with ``{image}``, ``{question}``, ``{answer}``; None: the processor's chat template
    chat_format: ClassVar[str | None] = None
    #: pad the image to a square before resizing (None: as the processor says)
    pad_to_square: ClassVar[bool | None] = None
    #: per-token model inputs besides ``input_ids`` -> the value for padding and the target's sub-tokens
    token_inputs: ClassVar[Mapping[str, int]] = {}
    #: what the model family is called in error messages
    description: ClassVar[str] = "Hugging Face image-text-to-text model"

    @dataclass
    class Options(Adapter.Options):
        batch_size: int = 2  #: items per forward pass (VLM items are long: hundreds of image tokens)
        model: str | None = None  #: hub id or local ``save_pretrained`` folder
        images: Path | None = None  #: folder of the annotated images
        annotations: Path | None = None  #: COCO ``instances.json`` (boxes and category names)
        mismatch: Path | None = None  #: folder written by ``vlground build-mismatch``
        prompt: str | None = None  #: full prompt holding the image token once (overrides the next two)
        question: str = "What is in the picture?"  #: user turn of the chat format
        answer_prefix: str = "It is a"  #: start of the answer; the object's name is the next word
        dtype: str = "auto"  #: ``auto`` (float16 on GPU, float32 on CPU), float32, float16, bfloat16
        device_map: str | None = None  #: accelerate device map (``auto``: shard over the visible GPUs)
        limit: int | None = None  #: probe at most this many objects (file order)
        min_overlap: float = 0.5  #: a token is inside the box when this share of its cell is covered
        revision: str | None = None  #: hub revision of --model (branch, tag or commit; the resolved commit goes into the fingerprint)
        trust_remote_code: bool = False  #: run code shipped with the checkpoint (off by default; only for checkpoints you trust)

    def __init__(self, options=None):
        super().__init__(options)
        o = self.options
        missing = [flag for flag, v in (("--model", o.model), ("--images", o.images), ("--annotations", o.annotations),
                                        ("--mismatch", o.mismatch)) if v is None]
        if missing:
            raise InputError(f"adapter {self.name}: give {', '.join(missing)}")
        if o.dtype != "auto" and o.dtype not in _DTYPES:
            raise InputError(f"adapter {self.name}: --dtype {o.dtype!r}: expected auto, {', '.join(_DTYPES)}")
        if o.batch_size < 1:
            raise InputError(f"adapter {self.name}: --batch-size must be at least 1")
        self._skipped: list[str] = []
        self._notes: list[str] = []
        self._items: dict[str, list[ProbeItem]] = {}

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoints(self) -> list[Checkpoint]:
        path = str(self.options.model)
        local = Path(path)
        if local.exists():
            self._check_config(local)
        elif path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path:
            raise InputError(f"{path}: model folder not found")
        if local.exists() and self.options.revision:
            raise InputError(f"--revision {self.options.revision}: {path} is a local folder, not a hub id")
        return [Checkpoint(run=local.name if local.exists() else path, path=path, revision=self.options.revision)]

    def _check_config(self, folder: Path) -> None:
        f = folder / "config.json"
        if not f.is_file():
            raise InputError(f"{folder}: no config.json (not a Hugging Face model folder)")
        try:
            model_type = json.loads(f.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise InputError(f"{f}: not a model config (unreadable JSON)") from None
        if self.model_types and model_type not in self.model_types:
            raise InputError(f"{folder}: model_type {model_type!r} is not a {self.description} "
                             f"(expected {' or '.join(self.model_types)})")

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained`` for the model: dtype, eager attention, device map."""
        device = resolve_device(self.options.device)
        dtype = _DTYPES.get(self.options.dtype) or (torch.float16 if device.type == "cuda" else torch.float32)
        kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "eager", **self.hub_kwargs()}
        if self.options.device_map:
            kwargs["device_map"] = self.options.device_map
        elif self.options.device == "auto" and device.type == "cuda" and torch.cuda.device_count() > 1:
            kwargs["device_map"] = "auto"  # accelerate splits the layers over the visible GPUs
        return kwargs

    def hub_kwargs(self) -> dict[str, Any]:
        """``revision`` and ``trust_remote_code`` for every ``from_pretrained`` of the checkpoint (model,
        processor, tokenizer); empty when neither is set."""
        out: dict[str, Any] = {}
        if self.options.revision:
            out["revision"] = self.options.revision
        if self.options.trust_remote_code:
            out["trust_remote_code"] = True
        return out

    def load_processor(self, path: str):
        """The processor of a checkpoint, from :attr:`processor_class` (a ``transformers`` name, a class
        with ``from_pretrained``, or a callable ``path -> processor``). Override to build it another way."""
        import transformers

        spec = self.processor_class
        if isinstance(spec, str):
            spec = getattr(transformers, spec)
        return spec.from_pretrained(path, **self.hub_kwargs()) if hasattr(spec, "from_pretrained") else spec(path)

    def load(self, ckpt: Checkpoint) -> LoadedModel:
        import transformers
        from safetensors import SafetensorError

        kwargs = self.load_kwargs()
        cls = getattr(transformers, self.model_class) if isinstance(self.model_class, str) else self.model_class
        try:
            model = cls.from_pretrained(ckpt.path, **kwargs)
            processor = self.load_processor(ckpt.path)
        except AdapterHookError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{ckpt.path}: cannot load as a {self.description} ({first})") from None
        model_type = getattr(model.config, "model_type", None)
        if self.model_types and model_type not in self.model_types:
            raise InputError(f"{ckpt.path}: model_type {model_type!r} is not a {self.description}")
        if "device_map" not in kwargs:
            model = model.to(resolve_device(self.options.device))
        model.eval().requires_grad_(False)
        loaded = LoadedModel(checkpoint=ckpt, model=model, tokenizer=getattr(processor, "tokenizer", processor),
                             device=model.get_input_embeddings().weight.device, extra={"processor": processor})
        loaded.extra["image_token_id"] = self.call_hook("image_token_id", loaded)
        commit = getattr(model.config, "_commit_hash", None)
        if commit and not Path(ckpt.path).exists():
            loaded.extra["commit"] = commit  # the hub snapshot actually loaded
        return loaded

    def call_hook(self, name: str, *args):
        """``getattr(self, name)(*args)``, with any error other than :class:`InputError` turned into one line
        naming the hook (:class:`AdapterHookError`): a bug in an adapter's override points at that override."""
        try:
            return getattr(self, name)(*args)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any bug of an override becomes one line naming it
            where = type(self).__qualname__
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = self._token_hint(args[0]) if args and isinstance(args[0], LoadedModel) and name != "image_token_id" else ""
            raise AdapterHookError(f"adapter {self.name}: {where}.{name}() raised {type(exc).__name__}: {first} "
                                   f"(fix or override {name}{hint})") from exc

    @staticmethod
    def _token_hint(loaded: LoadedModel) -> str:
        """``; ... override image_token_id`` when the adapter's image token is not the one the model replaces."""
        from vlground.kit.inputs import config_image_token_id

        used, model_id = loaded.extra.get("image_token_id"), config_image_token_id(loaded.model)
        if used is None or model_id is None or int(used) == model_id:
            return ""
        return (f"; or rather image_token_id: it gives {used} but the model replaces token {model_id} "
                "(config.image_token_id) by image features")

    def capabilities(self, loaded: LoadedModel) -> frozenset[Capability]:
        return frozenset({Capability.ATTENTION})

    def attention_site(self, loaded: LoadedModel):
        """The language model's heads: the registered resolver of ``config.model_type``, else the
        first ``...layers.{i}.self_attn.o_proj`` path (Llama/Qwen-style decoders; the vision tower's
        blocks are not named ``layers``)."""
        from vlground.mechanism.errors import MechanismError
        from vlground.mechanism.sites import AttentionSites, _find_template, resolve_sites

        try:
            return resolve_sites(loaded.model)
        except MechanismError:
            cfg = loaded.model.config.get_text_config()
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            return AttentionSites(_find_template(loaded.model, "self_attn.o_proj"), cfg.num_attention_heads, head_dim,
                                  tuple(range(cfg.num_hidden_layers)))

    def skipped(self) -> list[str]:
        return list(dict.fromkeys(self._skipped + self._notes))

    # -- declarative hooks (override in a subclass when the defaults do not fit) ------------------
    def preprocess(self, loaded: LoadedModel):
        """The :class:`~vlground.vision.geometry.Preprocess` of the model's image processor (used by
        the default :meth:`image_layout`; models that resize each image differently override that)."""
        from vlground.vision.geometry import Preprocess

        if "preprocess" not in loaded.extra:
            loaded.extra["preprocess"] = Preprocess.from_processor(
                loaded.extra["processor"], config=loaded.model.config, pad_to_square=self.pad_to_square)
        return loaded.extra["preprocess"]

    def image_layout(self, loaded: LoadedModel, enc: Mapping[str, torch.Tensor], image_size: tuple[int, int]):
        """The :class:`~vlground.vision.layout.ImageTokenLayout` of one image, from the processor's output
        ``enc`` for (prompt, that image) and the original ``(width, height)``. Default: one grid of
        :meth:`preprocess` over the image tokens (those beyond the grid, first, are prefix tokens)."""
        from vlground.vision.layout import single_grid_layout

        positions = self.image_positions(loaded, enc["input_ids"][0])
        try:
            return single_grid_layout(self.preprocess(loaded), image_size, positions.tolist())
        except ValueError as exc:
            raise InputError(f"{loaded.checkpoint.path}: {exc} (the preprocessing description does not fit this "
                             "processor; override image_layout)") from None

    def view_pixels(self, loaded: LoadedModel, enc: Mapping[str, torch.Tensor], layout) -> dict[str, np.ndarray]:
        """Per view of ``layout``, the model-input image as brightness ``[H, W]`` in [0, 1], in that grid's
        pixels (for the conformance kit's painted-box check). Default: ``pixel_values[0]``."""
        from vlground.vision.layout import brightness

        proc = getattr(loaded.extra["processor"], "image_processor", None)
        return {layout.grids[0].name: brightness(enc["pixel_values"][0].float().numpy(), proc)}

    def image_token_id(self, loaded: LoadedModel) -> int:
        """Id of the token the processor repeats once per image feature."""
        proc = loaded.extra["processor"]
        tid = getattr(proc, "image_token_id", None)
        if tid is None:
            tid = getattr(loaded.model.config, "image_token_id", None) or getattr(loaded.model.config, "image_token_index", None)
        if tid is None:
            raise InputError(f"{loaded.checkpoint.path}: the processor names no image token")
        return int(tid)

    def image_token(self, loaded: LoadedModel) -> str:
        proc = loaded.extra["processor"]
        return getattr(proc, "image_token", None) or loaded.tokenizer.convert_ids_to_tokens(loaded.extra["image_token_id"])

    def format_prompt(self, loaded: LoadedModel) -> str:
        """The prompt text (image token unexpanded) whose next word is the object's name."""
        o = self.options
        token = self.image_token(loaded)
        if o.prompt is not None:
            prompt = o.prompt
        elif self.chat_format is not None:
            prompt = self.chat_format.format(image=token, question=o.question, answer=o.answer_prefix)
        else:
            proc = loaded.extra["processor"]
            if not getattr(proc, "chat_template", None):
                raise InputError(f"{loaded.checkpoint.path}: no chat template; give --prompt")
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": o.question}]}]
            prompt = proc.apply_chat_template(turn, add_generation_prompt=True) + " " + o.answer_prefix
        if prompt.count(token) != 1:
            raise InputError(f"prompt {prompt!r}: must hold the image token {token!r} exactly once")
        return prompt.rstrip()

    def image_positions(self, loaded: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
        """long [n]: positions of the image tokens in one row of ``input_ids`` (ascending)."""
        return (input_ids == loaded.extra["image_token_id"]).nonzero()[:, 0]

    # -- items ------------------------------------------------------------------------------------
    def items(self, loaded: LoadedModel) -> list[ProbeItem]:
        key = loaded.checkpoint.key
        if key not in self._items:
            self._items[key] = self._make_items(loaded)
        return self._items[key]

    def _make_items(self, loaded: LoadedModel) -> list[ProbeItem]:
        from vlground.vision.coco import load_coco
        from vlground.vision.layout import box_to_tokens

        o = self.options
        coco = load_coco(o.annotations, o.images)
        self._skipped.extend(str(p) for p in coco.skipped)
        mismatched = _read_mismatch(Path(o.mismatch))
        prompt = self._prompt(loaded)
        out: list[ProbeItem] = []
        layouts: dict[str, Any] = {}
        annotations = coco.annotations[: o.limit] if o.limit is not None else coco.annotations
        for ann in annotations:
            image = coco.images[ann.image_id]
            where = f"{coco.path.name}: annotation {ann.id}"
            try:
                word_ids = self.call_hook("word_ids", loaded, prompt, ann.category)
                mm_file, replacement = _match_mismatch(mismatched, Path(o.mismatch), ann, image)
                size = (image.width, image.height)
                if str(image.path) not in layouts:  # one processor run per image, not per object
                    enc = self.call_hook("encode", loaded, str(image.path))
                    layouts[str(image.path)] = self.call_hook("image_layout", loaded, enc, size)
                layout = layouts[str(image.path)]
            except AdapterHookError:
                raise
            except InputError as exc:
                self._skipped.append(f"{where}: {exc}")
                log.warning("skipped %s: %s", where, exc)
                continue
            inside = box_to_tokens(layout, ann.bbox, min_overlap=o.min_overlap)
            if inside.problem:
                self._skipped.append(f"{where}: {inside.problem}")
                continue
            index = np.searchsorted(layout.positions, inside.positions)
            record = {**layout.summary(), "n_inside": int(inside.positions.size)}
            meta = ObjectItem(ann.id, str(image.path), str(mm_file), size, tuple(ann.bbox),
                              tuple(int(i) for i in index), tuple(word_ids), record)
            pid = f"ann{ann.id}"
            out.append(ProbeItem(f"{pid}-m", pid, ann.category, "match", env_word=ann.category, meta={"object": meta}))
            out.append(ProbeItem(f"{pid}-x", pid, ann.category, "mismatch", env_word=replacement, meta={"object": meta}))
        if not out:
            first = f" (first: {self._skipped[0]})" if self._skipped else ""
            raise InputError(f"{o.annotations}: no probe items; all {len(annotations)} objects were skipped{first}")
        log.info("%d objects probed, %d skipped", len(out) // 2, len(self._skipped))
        return out

    # -- batches ------------------------------------------------------------------------------------
    def _prompt(self, loaded: LoadedModel) -> str:
        if "prompt" not in loaded.extra:
            loaded.extra["prompt"] = self.format_prompt(loaded)
        return loaded.extra["prompt"]

    def word_ids(self, loaded: LoadedModel, prompt: str, word: str) -> list[int]:
        """Sub-token ids of the target ``word`` as it follows the prompt (default: ``prompt + " " + word``
        tokenised together, the prompt's ids stripped)."""
        tok = loaded.tokenizer
        return _word_ids(tok, prompt, tok(prompt).input_ids, word)

    def process(self, loaded: LoadedModel, image, prompt: str) -> Mapping[str, Any]:
        """The processor's whole output for (``prompt``, one PIL ``image``), unfiltered (the kit runs the
        model on it to check the scoring pass). Override for processor arguments (PaliGemma's ``suffix``)."""
        return loaded.extra["processor"](images=[image], text=[prompt], return_tensors="pt")

    def encode(self, loaded: LoadedModel, image_file: str) -> dict[str, torch.Tensor]:
        """The processor's output for (prompt, image): ``input_ids [1, P]``, ``pixel_values`` ... (LRU-cached);
        outputs that are not model inputs (``labels``) are left out with a note."""
        from PIL import Image

        from vlground.vision.pixels import to_rgb

        cache: OrderedDict = loaded.extra.setdefault("_encoded", OrderedDict())
        if image_file in cache:
            cache.move_to_end(image_file)
            return cache[image_file]
        try:
            with Image.open(image_file) as im:
                image = to_rgb(im)
        except OSError as exc:
            raise InputError(f"{image_file}: cannot read image ({type(exc).__name__})") from None
        enc = model_input_tensors(self.call_hook("process", loaded, image, self._prompt(loaded)),
                                  self._notes)
        cache[image_file] = enc
        while len(cache) > 16:
            cache.popitem(last=False)
        return enc

    def batch(self, loaded: LoadedModel, items: list[ProbeItem]) -> ProbeBatch:
        from vlground.vision.layout import box_to_tokens

        rows, extras, targets, positions, inside, spans, views = [], [], [], [], [], [], []
        for it in items:
            obj: ObjectItem = it.meta["object"]
            enc = self.call_hook("encode", loaded, obj.image if it.condition == "match" else obj.mismatch_image)
            ids = enc["input_ids"][0]
            n_prompt = ids.shape[0]
            words = torch.tensor(obj.word_ids, dtype=torch.long)
            rows.append(torch.cat([ids, words[:-1]]))
            extras.append({k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")})
            targets.append(words)
            positions.append(torch.arange(len(words)) + n_prompt - 1)
            layout = self.call_hook("image_layout", loaded, enc, obj.image_size)
            inside.append(torch.as_tensor(box_to_tokens(layout, obj.bbox, min_overlap=self.options.min_overlap).positions))
            spans.append(torch.as_tensor(layout.positions))
            views.append(layout.grid_of())
        B, S, T = len(items), max(len(r) for r in rows), max(len(t) for t in targets)
        pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((B, S), pad, dtype=torch.long)
        attention = torch.zeros((B, S), dtype=torch.long)
        target_ids = torch.full((B, T), -100, dtype=torch.long)
        target_pos = torch.zeros((B, T), dtype=torch.long)
        env_mask = torch.zeros((B, S), dtype=torch.bool)
        env_span = torch.zeros((B, S), dtype=torch.bool)
        for b in range(B):
            input_ids[b, : len(rows[b])] = rows[b]
            attention[b, : len(rows[b])] = 1
            target_ids[b, : len(targets[b])] = targets[b]
            target_pos[b, : len(targets[b])] = positions[b]
            target_pos[b, len(targets[b]):] = positions[b][0]
            env_mask[b, inside[b]] = True
            env_span[b, spans[b]] = True
        names = sorted({v for d in views for v in d.values()})
        env_views = {n: torch.zeros((B, S), dtype=torch.bool) for n in names if len(names) > 1}
        for b, d in enumerate(views):
            for pos, n in d.items():
                if n in env_views:
                    env_views[n][b, pos] = True
        model_inputs = {"input_ids": input_ids, "attention_mask": attention}
        model_inputs.update(self._batch_extras(extras, [int(p[0]) + 1 for p in positions], S))
        return ProbeBatch(list(items), model_inputs, target_ids, target_pos, env_mask, env_span, env_views)

    def _batch_extras(self, extras: list[dict[str, torch.Tensor]], n_prompt: list[int], S: int) -> dict[str, torch.Tensor]:
        """Per-token extras (declared in ``token_inputs``, or integer ``[1, P]`` with ``P`` the prompt's
        length) padded to ``[B, S]`` with the declared fill value (0) for the target's sub-tokens and
        padding; per-image extras concatenated along dim 0, zero-padded where other dims differ."""
        out: dict[str, torch.Tensor] = {}
        for k in extras[0]:
            parts = [e[k] for e in extras]
            per_token = k in self.token_inputs or all(
                p.dim() == 2 and p.shape == (1, n) and not p.is_floating_point() for p, n in zip(parts, n_prompt))
            if per_token:
                t = torch.full((len(parts), S), int(self.token_inputs.get(k, 0)), dtype=parts[0].dtype)
                for b, p in enumerate(parts):
                    t[b, : p.shape[-1]] = p.reshape(-1)
                out[k] = t
                continue
            shape = [max(p.shape[d] for p in parts) for d in range(1, parts[0].dim())]
            padded = []
            for p in parts:
                if list(p.shape[1:]) != shape:  # e.g. LLaVA-NeXT images with fewer crops
                    q = p.new_zeros((p.shape[0], *shape))
                    q[tuple(slice(0, n) for n in p.shape)] = p
                    p = q
                padded.append(p)
            out[k] = torch.cat(padded)
        return out

    def model_inputs(self, loaded: LoadedModel, batch: ProbeBatch) -> dict[str, torch.Tensor]:
        """The batch's inputs on the model's device; floating image inputs in the model's dtype."""
        inputs = super().model_inputs(loaded, batch)
        for k, v in inputs.items():
            if v.is_floating_point() and k != "inputs_embeds":
                inputs[k] = v.to(loaded.model.dtype)
        return inputs


class ImageTextProcessor:
    """A processor built from an image processor and a tokenizer, for models whose own processor class
    cannot be built here (Qwen2-VL's wants torchvision for its video part).

    ``__call__(images, text)`` runs the image processor, replaces the ``i``-th ``image_token`` of the
    text by ``count(image_outputs, i)`` copies (as the model's processor does), tokenises, and with
    ``token_types`` adds ``mm_token_type_ids`` (1 at image tokens, 0 elsewhere).
    """

    def __init__(self, image_processor, tokenizer, image_token: str, count: Callable[[Mapping, int], int],
                 token_types: bool = False, chat_template: str | None = None):
        self.image_processor, self.tokenizer, self.image_token = image_processor, tokenizer, image_token
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.count, self.token_types, self.chat_template = count, token_types, chat_template

    def __call__(self, images=None, text=None, return_tensors: str = "pt", **kwargs):
        img = dict(self.image_processor(images=images, return_tensors=return_tensors)) if images is not None else {}
        k = 0
        expanded = []
        for t in text:
            pieces = t.split(self.image_token)
            out = pieces[0]
            for piece in pieces[1:]:
                out += self.image_token * int(self.count(img, k)) + piece
                k += 1
            expanded.append(out)
        enc = dict(self.tokenizer(expanded, return_tensors=return_tensors, padding=True))
        if self.token_types:
            enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).to(torch.int32)
        return {**enc, **img}


def _read_mismatch(folder: Path) -> dict[int, dict]:
    """annotation id -> image record of a build-mismatch folder's ``annotations.json``."""
    f = folder / "annotations.json"
    if not folder.is_dir():
        raise InputError(f"{folder}: mismatch folder not found")
    if not f.is_file():
        raise InputError(f"{folder}: no annotations.json (not a folder written by build-mismatch)")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        return {int(r["annotation_id"]): r for r in data["images"]}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{f}: not a build-mismatch annotations file ({type(exc).__name__}: {exc})") from None


def _match_mismatch(records: dict[int, dict], folder: Path, ann, image) -> tuple[Path, str | None]:
    """The mismatched image of ``ann`` and its replacement category; InputError when none fits."""
    r = records.get(ann.id)
    if r is None:
        raise InputError(f"no mismatched image in {folder}")
    if r.get("source_file") != image.file_name or r.get("original_category") != ann.category:
        raise InputError(f"{folder.name}/{r.get('file_name')} was made from {r.get('source_file')} "
                         f"({r.get('original_category')}), not {image.file_name} ({ann.category}): another annotations file?")
    file = folder / str(r.get("file_name"))
    if not file.is_file():
        raise InputError(f"mismatched image {file} not found")
    from PIL import Image

    try:
        with Image.open(file) as im:
            size = im.size
    except OSError as exc:
        raise InputError(f"cannot read mismatched image {file} ({type(exc).__name__})") from None
    if size != (image.width, image.height):
        raise InputError(f"mismatched image {file.name} is {size[0]}x{size[1]}, its source {image.width}x{image.height}")
    return file, r.get("replacement_category")


def _word_ids(tokenizer, prompt: str, prompt_ids: list[int], word: str) -> list[int]:
    """Sub-token ids of ``word`` after ``prompt`` (tokenised together, so merges match the model's view)."""
    full = tokenizer(prompt + " " + word).input_ids
    if full[: len(prompt_ids)] != prompt_ids:
        raise InputError(f"the tokenizer merges {word!r} into the prompt's last token; change the prompt")
    ids = full[len(prompt_ids):]
    specials = set(getattr(tokenizer, "all_special_ids", []))
    ids = [i for i in ids if i not in specials or i == tokenizer.unk_token_id]
    if not ids:
        raise InputError(f"the tokenizer gives no tokens for {word!r}")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise InputError(f"the tokenizer cannot spell {word!r} (unknown token)")
    return ids
