"""DINOv2 patch features, computed once per image and cached compactly on disk.

* :class:`VisionSpec`: which vision model (hub id or folder), pretrained or randomly
  initialised (``init="random"`` with ``seed``: the control of the paper's realistic setting).
* :class:`Featurizer`: the model through transformers (``AutoModel`` restricted to
  ``dinov2`` / ``dinov2_with_registers``; timm is never imported) and its ``AutoImageProcessor``.
  Its :meth:`~Featurizer.record` identifies the features (model id, init, seed, a hash of the
  config, the weights file and the processor, the :class:`~vlground.vision.geometry.Preprocess`
  as a dict, patch grid, prefix tokens, width); it is computed *without* loading the weights,
  which load only when an image is actually featurised.
* :class:`FeatureCache`: a folder::

      vision.json     the record of the featurizer that made it (a cache never mixes two)
      features.npy    float16 [capacity, n_tokens, dim], memory-mapped; row r = keys.txt line r
      keys.txt        one image key per line, appended after its row is flushed: the image's
                      content hash (:func:`content_key`), never its name, so a cache cannot
                      return another image's features
      .fill.lock      held by the build filling the cache (a second one is refused, naming it)

  ``n_tokens = n_prefix + grid_h * grid_w``: DINOv2's ``last_hidden_state`` in order (CLS, the
  register tokens of ``*-reg`` variants, then the patches row-major). Resumable: a key already in
  ``keys.txt`` is never featurised again; a build killed mid-way keeps every flushed row.
* :class:`CorpusImages`: a corpus's image positions -> feature rows, what training and the
  probe adapter read (``corpus.json["vision"]``, ``image_pos.npy``, ``image_rows.npy``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from vlground.errors import InputError

log = logging.getLogger(__name__)

DINOV2_TYPES = ("dinov2", "dinov2_with_registers")
INITS = ("pretrained", "random")
#: record fields that must agree for two feature sets to be the same
IDENTITY = ("model_type", "init", "seed", "config_sha256", "weights_sha256", "processor_sha256", "preprocess", "dtype")


@dataclass(frozen=True)
class VisionSpec:
    """Which vision model makes the environment features."""

    model: str
    """Hub id (``facebook/dinov2-base``) or a local ``save_pretrained`` folder."""
    init: str = "pretrained"
    """``pretrained`` (the weights of ``model``) or ``random`` (its config, weights drawn from ``seed``)."""
    seed: int = 0
    """Seed of ``torch.manual_seed`` before a random initialisation (ignored when pretrained)."""

    def __post_init__(self):
        if self.init not in INITS:
            raise InputError(f"--vision-init {self.init!r}: expected {' or '.join(INITS)}")

    @classmethod
    def from_record(cls, record: dict) -> "VisionSpec":
        return cls(record["model"], record.get("init", "pretrained"), int(record.get("seed") or 0))


def _sha_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def content_key(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes: the features cache key of an image."""
    return "sha256:" + _sha_file(Path(path))


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _weights_file(model: str) -> Path | None:
    """The local weights file of a folder or an already-downloaded hub id (None when unknown)."""
    names = ("model.safetensors", "pytorch_model.bin")
    if Path(model).is_dir():
        return next((Path(model) / n for n in names if (Path(model) / n).is_file()), None)
    try:
        from transformers.utils import cached_file

        for n in names:
            f = cached_file(model, n, _raise_exceptions_for_missing_entries=False)
            if f:
                return Path(f)
    except (OSError, ValueError):
        return None
    return None


class Featurizer:
    """A DINOv2 model and its processor: images -> ``last_hidden_state`` as float16.

    ``calls`` counts forward passes (tests check that a cached build makes none).
    """

    def __init__(self, spec: VisionSpec, device: str = "cpu", batch_size: int = 16):
        from transformers import AutoConfig, AutoImageProcessor

        from vlground.vision.geometry import Preprocess

        self.spec, self.device, self.batch_size = spec, device, batch_size
        self.calls = 0
        self._model = None
        where = spec.model
        try:
            self.config = AutoConfig.from_pretrained(spec.model)
            self.processor = AutoImageProcessor.from_pretrained(spec.model)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{where}: cannot load the vision model's config or image processor ({first})") from None
        if self.config.model_type not in DINOV2_TYPES:
            raise InputError(f"{where}: model_type {self.config.model_type!r} is not DINOv2 (expected {' or '.join(DINOV2_TYPES)})")
        self.preprocess = Preprocess.from_processor(self.processor, config=self.config)
        if self.preprocess.crop_size is None and self.preprocess.mode != "resize":
            raise InputError(f"{where}: the image processor gives images of varying size (no centre crop); "
                             "a fixed patch grid is needed to cache features")
        self.grid = self.preprocess.grid(1000, 1000)  # fixed: crop or resize
        self.n_prefix = 1 + int(getattr(self.config, "num_register_tokens", 0) or 0)
        self.n_tokens = self.n_prefix + self.grid[0] * self.grid[1]
        self.dim = int(self.config.hidden_size)

    def record(self) -> dict:
        """What identifies these features (JSON-ready). Cheap: the weights are hashed as a file, not loaded."""
        proc = self.processor.to_dict()
        proc.pop("processor_class", None)
        proc.pop("image_processor_type", None)
        weights = None
        if self.spec.init == "pretrained":
            f = _weights_file(self.spec.model)
            weights = _sha_file(f) if f is not None else None
        return json.loads(json.dumps({  # JSON types (tuples -> lists), as read back from vision.json
            "model": self.spec.model,
            "model_type": self.config.model_type,
            "init": self.spec.init,
            "seed": self.spec.seed if self.spec.init == "random" else None,
            "config_sha256": _sha_json(self.config.to_diff_dict()),
            "weights_sha256": weights,
            "processor_sha256": _sha_json(proc),
            "preprocess": asdict(self.preprocess),
            "grid": list(self.grid),
            "n_prefix": self.n_prefix,
            "n_tokens": self.n_tokens,
            "dim": self.dim,
            "dtype": "float16",
        }))

    @property
    def model(self):
        """The vision model in eval mode (loaded on first use)."""
        if self._model is None:
            import torch
            from transformers import AutoModel

            if self.spec.init == "random":
                torch.manual_seed(self.spec.seed)
                model = AutoModel.from_config(self.config)
            else:
                try:
                    model = AutoModel.from_pretrained(self.spec.model)
                except (OSError, ValueError) as exc:
                    raise InputError(f"{self.spec.model}: cannot load the vision model ({str(exc).splitlines()[0]})") from None
            self._model = model.to(self.device).eval().requires_grad_(False)
        return self._model

    def __call__(self, images: Sequence) -> np.ndarray:
        """float16 ``[len(images), n_tokens, dim]`` for PIL images (any size; the processor crops)."""
        import torch

        from vlground.vision.pixels import to_rgb

        pixels = self.processor(images=[to_rgb(im) for im in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model(pixel_values=pixels.to(self.device)).last_hidden_state
        self.calls += 1
        if out.shape[1] != self.n_tokens:
            raise InputError(f"{self.spec.model}: {out.shape[1]} tokens per image, expected {self.n_tokens}")
        return out.float().cpu().numpy().astype(np.float16)


def identity(record: dict) -> dict:
    return {k: record.get(k) for k in IDENTITY}


def identity_hash(record: dict) -> str:
    return _sha_json(identity(record))[:12]


def describe_difference(old: dict, new: dict) -> str:
    keys = [k for k in IDENTITY if old.get(k) != new.get(k)]
    show = {"preprocess", "init", "seed", "model_type", "dtype"}
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" if k in show else f"{k} differs" for k in keys[:3])


def default_cache_dir(parent: Path, record: dict) -> Path:
    """``parent/features-<model name>[-random-s<seed>]-<identity hash>``: corpora that share a parent
    folder and a vision model share one cache."""
    name = Path(str(record["model"]).rstrip("/")).name or "vision"
    tag = f"-random-s{record['seed']}" if record.get("init") == "random" else ""
    return Path(parent) / f"features-{name}{tag}-{identity_hash(record)}"


class FeatureCache:
    """A features folder (see the module docstring). ``open`` refuses one made by another featurizer."""

    def __init__(self, folder: Path, record: dict, keys: list[str]):
        self.folder, self.record, self.keys = folder, record, keys
        self.index = {k: i for i, k in enumerate(keys)}

    @classmethod
    def open(cls, folder: str | os.PathLike, record: dict | None = None, create: bool = True) -> "FeatureCache":
        """Open ``folder``; with ``record``, check it was made by that featurizer (or create it)."""
        folder = Path(folder)
        meta = folder / "vision.json"
        if meta.is_file():
            try:
                old = json.loads(meta.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{meta}: corrupt ({exc})") from None
            if record is not None and identity(old) != identity(record):
                raise InputError(f"{folder}: features cache made with another vision model or preprocessing "
                                 f"({describe_difference(old, record)}); use another --features-cache or delete it")
            keys_f = folder / "keys.txt"
            keys = keys_f.read_text(encoding="utf-8").splitlines() if keys_f.is_file() else []
            cache = cls(folder, old, keys)
            n = cache.capacity
            if len(keys) > n:  # keys appended after a row that never reached the file: drop them
                cache.keys = keys[:n]
                cache.index = {k: i for i, k in enumerate(cache.keys)}
            return cache
        if record is None or not create:
            raise InputError(f"{folder}: not a features cache (no vision.json)")
        folder.mkdir(parents=True, exist_ok=True)
        from vlground.corpus.format import write_json

        write_json(meta, record)
        return cls(folder, record, [])

    # -- arrays -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return int(self.record["n_tokens"]), int(self.record["dim"])

    @property
    def capacity(self) -> int:
        f = self.folder / "features.npy"
        if not f.is_file():
            return 0
        try:
            return int(np.load(f, mmap_mode="r").shape[0])
        except (ValueError, OSError) as exc:
            raise InputError(f"{f}: corrupt ({exc})") from None

    def array(self) -> np.ndarray:
        """float16 ``[capacity, n_tokens, dim]`` memory-mapped read-only (rows ``>= len(keys)`` unused)."""
        f = self.folder / "features.npy"
        if not f.is_file():
            return np.zeros((0, *self.shape), dtype=np.float16)
        arr = np.load(f, mmap_mode="r")
        if tuple(arr.shape[1:]) != self.shape or arr.dtype != np.float16:
            raise InputError(f"{f}: shape {arr.shape} {arr.dtype} does not match vision.json ({self.shape}, float16)")
        return arr

    def _writable(self, need: int) -> np.ndarray:
        f = self.folder / "features.npy"
        cap = self.capacity
        if cap >= need:
            return np.load(f, mmap_mode="r+")
        new_cap = max(need, 2 * cap)
        from vlground.corpus.format import clean_stale_temps

        clean_stale_temps(self.folder / "features")  # a killed build's half-grown copy
        tmp = self.folder / f".features.tmp-{os.getpid()}.npy"
        grown = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(new_cap, *self.shape))
        if cap:
            grown[:cap] = np.load(f, mmap_mode="r")
        grown.flush()
        del grown
        os.replace(tmp, f)
        return np.load(f, mmap_mode="r+")

    # -- filling ----------------------------------------------------------------------------------
    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """int64 row of each key (InputError naming the first key not cached)."""
        try:
            return np.array([self.index[k] for k in keys], dtype=np.int64)
        except KeyError as exc:
            raise InputError(f"{self.folder}: image {exc.args[0]!r} has no features") from None

    def fill(self, todo: dict[str, Callable], featurizer: "Featurizer", progress: bool = True,
             on_error: Callable[[str, str], None] | None = None) -> None:
        """Featurise ``todo`` (key -> function returning a PIL image), skipping cached keys.

        A key whose image cannot be read is reported through ``on_error(key, reason)`` and skipped.
        """
        from tqdm.auto import tqdm

        keys = self.missing(todo)
        if not keys:
            return
        arr = self._writable(len(self.keys) + len(keys))
        bs = max(1, featurizer.batch_size)
        with tqdm(total=len(keys), desc="features", unit="img", disable=not progress) as bar, \
                open(self.folder / "keys.txt", "a", encoding="utf-8") as keys_f:
            for i in range(0, len(keys), bs):
                chunk, images = [], []
                for k in keys[i:i + bs]:
                    try:
                        images.append(todo[k]())
                        chunk.append(k)
                    except (OSError, InputError) as exc:
                        if on_error is None:
                            raise
                        on_error(k, str(exc) if isinstance(exc, InputError) else f"cannot read image ({type(exc).__name__})")
                if chunk:
                    start = len(self.keys)
                    arr[start:start + len(chunk)] = featurizer(images)
                    arr.flush()
                    keys_f.write("".join(k + "\n" for k in chunk))
                    keys_f.flush()
                    for k in chunk:
                        self.index[k] = len(self.keys)
                        self.keys.append(k)
                bar.update(len(keys[i:i + bs]))
        del arr


@dataclass
class CorpusImages:
    """A corpus's image inputs: which positions are image tokens and where their features are.

    ``positions``: int32 ``[n_chunks, chunk_len]``: ``image * n_tokens + token`` at an image
    position, -1 at a text position; ``rows``: int64 ``[n_images]`` row of each corpus image in
    ``features`` (float16 ``[capacity, n_tokens, dim]``, memory-mapped).
    """

    positions: np.ndarray
    rows: np.ndarray
    features: np.ndarray
    record: dict

    @property
    def n_tokens(self) -> int:
        return int(self.record["n_tokens"])

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    def gather(self, flat: np.ndarray) -> np.ndarray:
        """float32 ``[n, dim]`` features of flat position codes (``image * n_tokens + token``)."""
        flat = np.asarray(flat, dtype=np.int64)
        img, tok = np.divmod(flat, self.n_tokens)
        rows = self.rows[img]
        order = np.argsort(rows, kind="stable")  # memory-mapped reads in file order
        out = np.empty((flat.shape[0], self.dim), dtype=np.float32)
        out[order] = self.features[rows[order], tok[order]]
        return out


def corpus_images(corpus) -> CorpusImages | None:
    """The image inputs of a :class:`~vlground.corpus.format.Corpus`, or None for a text corpus.

    Checks that the features cache the corpus names still holds the same vision model's features.
    """
    vision = corpus.meta.get("vision")
    if not vision:
        return None
    folder = Path(vision["cache"])
    if not folder.is_absolute():
        folder = (corpus.path / folder).resolve()
    if not folder.is_dir():
        raise InputError(f"{corpus.path}: its features cache {folder} is missing (rebuild the corpus)")
    cache = FeatureCache.open(folder, vision["record"], create=False)
    positions = corpus._npy("image_pos.npy")
    rows = corpus._npy("image_rows.npy", mmap=False).astype(np.int64)
    arr = cache.array()
    if rows.size and int(rows.max()) >= min(arr.shape[0], len(cache.keys)):
        raise InputError(f"{folder}: holds {len(cache.keys)} images; the corpus needs row {int(rows.max())}")
    return CorpusImages(positions, rows, arr, cache.record)


__all__ = ["VisionSpec", "Featurizer", "FeatureCache", "CorpusImages", "corpus_images", "default_cache_dir",
           "identity", "identity_hash", "DINOV2_TYPES", "content_key"]
