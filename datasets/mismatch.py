"""Mismatched images: inpaint each annotated object with another category's object (or background).

For every annotation of a COCO ``instances.json``, :func:`build_mismatch` repaints the object's
box (or segmentation) with Stable Diffusion inpainting, prompted with another category
(``prompt_template.format(replacement)``) or, with ``remove``, with ``remove_prompt``; then the
source is pasted back outside the mask, so a matched/mismatched pair differs only where the
object was (:func:`vlground.vision.masks.paste_outside`).

Output folder::

    <source-stem>__ann<annotation id>.png   one per annotation, RGB, the source's size
    annotations.json                       COCO format, rewritten atomically after each image

In ``annotations.json`` each image's ``id`` is the source annotation id and carries
``source_image_id``, ``source_file``, ``annotation_id``, ``original_category``,
``replacement_category`` (None with ``remove``), ``prompt``, ``seed`` and ``mask``; its one
annotation (same id) is the object's box with the *original* ``category_id`` (the word the
matched image grounds) plus ``replacement_category`` / ``replacement_category_id``.
``info`` holds the settings and the skipped items.

Reproducible: the replacement (``random``) and the diffusion noise are seeded from
``(seed, annotation id)``, so one object's result does not depend on which others run.
Resumable: each PNG carries its own record (a ``vlground-mismatch`` text chunk); a finished
image is kept and not regenerated only once it decodes completely (a truncated one is made again),
and ``annotations.json`` is rebuilt from the PNGs on disk. A folder made with other settings
(seed, prompt, model, ...) is refused rather than mixed.

Safety: ``out`` may not be the source image folder or the annotations file's folder, nor hold
either (so the source annotations can never be overwritten); one build at a time writes an
``out`` (``out/.build-mismatch.lock``; a second is refused, naming the holder); temporary files
of a killed build are removed by the next.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal

from PIL import Image, PngImagePlugin

from vlground.errors import InputError
from vlground.vision.coco import CocoAnnotation, CocoData, CocoImage, Problem, load_coco
from vlground.vision.inpaint import DEFAULT_MODEL, Inpainter
from vlground.vision.pixels import to_rgb
from vlground.vision.masks import array_mask, box_mask, paste_outside

log = logging.getLogger(__name__)

#: the bundled photographs and their instances.json (demo input; copied from the project's shared data)
BUNDLED_IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"
ANNOTATIONS_FILE = "annotations.json"
PNG_KEY = "vlground-mismatch"
#: the lock file inside ``out`` held by the build writing it
LOCK = ".build-mismatch.lock"

__all__ = ["BUNDLED_IMAGES", "MismatchConfig", "build_mismatch", "paste_outside", "choose_replacement", "item_seed",
           "output_name"]


@dataclass
class MismatchConfig:
    """Settings of :func:`build_mismatch` (``vlground build-mismatch --inpaint``)."""

    annotations: Path
    """COCO instances file (images, annotations, categories)."""
    out: Path
    """Output folder (created; finished images in it are kept)."""
    images: Path | None = None
    """Folder of the source images; default: the annotations file's folder."""
    model: str = DEFAULT_MODEL
    """Inpainting pipeline: hub id or local ``save_pretrained`` folder (UNet with 9 input channels)."""
    mask: Literal["box", "segmentation"] = "box"
    """Repaint the box, or the segmentation where the annotation has one (else its box)."""
    remove: bool = False
    """Fill with background (``remove_prompt``) instead of another category's object."""
    prompt_template: str = "a photo of a {}"
    """Prompt for a replacement object; ``{}`` becomes the replacement category's name."""
    remove_prompt: str = "empty background"
    """Prompt with ``remove``."""
    negative_prompt: str | None = None
    """Negative prompt (None: none)."""
    replacement: Literal["random", "next"] = "random"
    """Replacement category: seeded random choice among the other categories, or the next one by id."""
    seed: int = 0
    """Seeds replacements and diffusion noise, per object from ``(seed, annotation id)``."""
    steps: int = 50
    """Diffusion steps (``num_inference_steps``)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale."""
    resolution: int | None = None
    """Longer side the pipeline works at (multiple of 8); default: the pipeline's native size."""
    dilate: int = 0
    """Grow the mask by this many pixels (covers object edges the annotation misses)."""
    limit: int | None = None
    """Only the first N annotations (by id)."""
    device: str = "auto"
    """``auto`` (cuda when present), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    dtype: str = "auto"
    """``auto`` (float16 on GPU, float32 on CPU), ``float16``, ``bfloat16``, ``float32``."""
    progress: bool = True
    """Show a progress bar."""

    #: fields that change the pixels; an out folder holds images made with one setting of these
    SETTINGS = ("model", "mask", "remove", "prompt_template", "remove_prompt", "negative_prompt", "replacement",
                "seed", "steps", "guidance_scale", "resolution", "dilate")

    def __post_init__(self) -> None:
        self.annotations = Path(self.annotations)
        self.out = Path(self.out)
        self.images = Path(self.images) if self.images is not None else None
        if self.mask not in ("box", "segmentation"):
            raise InputError(f"mask {self.mask!r}: expected box or segmentation")
        if self.replacement not in ("random", "next"):
            raise InputError(f"replacement {self.replacement!r}: expected random or next")
        if not self.remove and "{}" not in self.prompt_template:
            raise InputError(f"prompt template {self.prompt_template!r}: needs {{}} for the replacement's name")
        if self.steps < 1:
            raise InputError(f"steps {self.steps}: must be at least 1")
        if self.limit is not None and self.limit < 0:
            raise InputError(f"limit {self.limit}: must be 0 or more")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise InputError(f"resolution {self.resolution}: must be a positive multiple of 8")
        if self.dilate < 0:
            raise InputError(f"dilate {self.dilate}: must be 0 or more")

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MismatchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"mismatch config: unknown keys {', '.join(unknown)}")
        return cls(**data)


def item_seed(seed: int, annotation_id: int) -> int:
    """The per-object seed: 63 bits of ``sha256("seed:annotation_id")``."""
    digest = hashlib.sha256(f"{seed}:{annotation_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def choose_replacement(ann: CocoAnnotation, categories: dict[int, str], how: str, seed: int) -> tuple[int, str] | None:
    """``(category id, name)`` replacing ``ann``'s object, or None when no other category exists.

    Candidates are the categories with another name, in id order. ``random``: a choice seeded by
    :func:`item_seed`; ``next``: the first candidate with a larger id, wrapping around.
    """
    others = sorted((cid, name) for cid, name in categories.items() if name != ann.category)
    if not others:
        return None
    if how == "next":
        return next(((cid, n) for cid, n in others if cid > ann.category_id), others[0])
    return random.Random(item_seed(seed, ann.id)).choice(others)


def output_name(image: CocoImage, ann: CocoAnnotation) -> str:
    """``<source-stem>__ann<id>.png``."""
    return f"{Path(image.file_name).stem}__ann{ann.id}.png"


def build_mismatch(config: MismatchConfig, inpainter: Inpainter | None = None) -> Path:
    """Make the mismatched images of ``config``; returns the path of ``annotations.json``.

    ``inpainter`` (``(image, mask, prompt, seed) -> image``) defaults to a
    :class:`~vlground.vision.inpaint.DiffusersInpainter` of ``config.model``, loaded only when
    some image is still to be made. Bad items are skipped and listed in ``info.skipped``.
    """
    out = config.out
    check_out_folder(config)
    data = load_coco(config.annotations, config.images)
    skipped: list[Problem] = list(data.skipped)
    from vlground import folders
    from vlground.locks import exclusive

    folders.claim(out, "mismatch")

    with exclusive(out / LOCK, str(out)):
        for stale in out.glob("*.png.tmp"):  # a killed build's half-written image (we hold the lock)
            stale.unlink(missing_ok=True)
        return _build_locked(config, data, skipped, out, inpainter)


def check_out_folder(config: MismatchConfig) -> None:
    """One-line error when ``out`` is the source image folder or the annotations' folder, or holds
    one of the inputs (it would overwrite the source annotations and mix outputs with sources)."""
    from vlground import folders

    folders.check_output(config.out, "mismatch", [config.annotations, config.images])
    out = config.out.resolve()
    images = (config.images if config.images is not None else config.annotations.parent).resolve()
    ann = config.annotations.resolve()
    for what, inp, folder in (("image folder", images, images), ("annotations file", ann, ann.parent)):
        if out == folder or inp == out or out in inp.parents:
            raise InputError(f"{config.out}: --out is the {what}'s folder or holds it ({inp}); build-mismatch "
                             "never writes into its inputs; choose another --out")


def _build_locked(config: MismatchConfig, data: CocoData, skipped: list[Problem], out: Path,
                  inpainter: Inpainter | None) -> Path:
    existing = _existing_records(out, config)

    selected = sorted(data.annotations, key=lambda a: a.id)
    if config.limit is not None:
        selected = selected[: config.limit]
    todo: list[tuple[CocoAnnotation, Path]] = []
    for ann in selected:
        file = out / output_name(data.images[ann.image_id], ann)
        if file.name not in existing:
            todo.append((ann, file))
    log.info("%d objects: %d done, %d to make", len(selected), len(selected) - len(todo), len(todo))

    if todo and inpainter is None:
        from vlground.vision.inpaint import DiffusersInpainter

        inpainter = DiffusersInpainter.load(
            config.model, device=config.device, dtype=config.dtype, steps=config.steps,
            guidance_scale=config.guidance_scale, negative_prompt=config.negative_prompt,
            resolution=config.resolution,
        )
    from tqdm import tqdm

    with tqdm(total=len(selected), initial=len(selected) - len(todo), desc="mismatch", unit="img",
              disable=not config.progress) as bar:
        for ann, file in todo:
            made = _make_one(config, data, ann, file, inpainter)
            if isinstance(made, Problem):
                skipped.append(made)
                log.warning("skipped %s", made)
            else:
                existing[file.name] = made
                _write_annotations(out, existing, data, config, skipped)
            bar.update(1)
    return _write_annotations(out, existing, data, config, skipped)


def _make_one(config: MismatchConfig, data: CocoData, ann: CocoAnnotation, file: Path,
              inpainter: Callable) -> dict | Problem:
    """Make and save one mismatched image: its record, or a Problem when it cannot be made."""
    image = data.images[ann.image_id]
    source_name = data.path.name
    if config.remove:
        replacement, prompt = None, config.remove_prompt
    else:
        replacement = choose_replacement(ann, data.categories, config.replacement, config.seed)
        if replacement is None:
            return Problem(source_name, f"annotation {ann.id}", "no other category to replace it with")
        prompt = config.prompt_template.format(replacement[1])
    try:
        with Image.open(image.path) as im:
            source = to_rgb(im)  # 16-bit greyscale rescaled, not clipped white
    except (OSError, Image.DecompressionBombError) as exc:
        return Problem(source_name, f"image {image.id}", f"PIL cannot read {image.file_name} ({exc})")
    mask_kind = "box"
    if config.mask == "segmentation" and ann.segmentation:
        try:
            seg = ann.segmentation_mask(image.width, image.height)
        except (ValueError, TypeError, KeyError) as exc:  # malformed polygons / RLE
            return Problem(source_name, f"annotation {ann.id}", f"bad segmentation ({exc})")
        if seg is not None and seg.any():
            mask, mask_kind = array_mask(seg, config.dilate), "segmentation"
    if mask_kind == "box":
        mask = box_mask(source.size, ann.bbox, config.dilate)
    seed = item_seed(config.seed, ann.id)
    generated = inpainter(source, mask, prompt, seed)
    result = paste_outside(source, generated, mask)
    record = _record(config, image, ann, replacement, prompt, seed, mask_kind, file.name)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(record))
    tmp = file.with_name(file.name + ".tmp")
    try:
        result.save(tmp, format="PNG", pnginfo=info)
        os.replace(tmp, file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(file)) from None
    return record


def _record(config, image: CocoImage, ann: CocoAnnotation, replacement, prompt: str, seed: int, mask_kind: str,
            file_name: str) -> dict:
    rep_id, rep_name = replacement if replacement is not None else (None, None)
    x, y, w, h = ann.bbox
    segmentation = ann.segmentation if mask_kind == "segmentation" else [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "settings": config.settings(),
        "image": {
            "id": ann.id, "file_name": file_name, "width": image.width, "height": image.height,
            "source_image_id": image.id, "source_file": image.file_name, "annotation_id": ann.id,
            "original_category": ann.category, "original_category_id": ann.category_id,
            "replacement_category": rep_name, "replacement_category_id": rep_id,
            "prompt": prompt, "seed": seed, "mask": mask_kind,
        },
        "annotation": {
            "id": ann.id, "image_id": ann.id, "category_id": ann.category_id, "bbox": list(ann.bbox),
            "area": ann.area if ann.area is not None else w * h, "iscrowd": int(ann.iscrowd),
            "segmentation": segmentation, "original_category": ann.category,
            "replacement_category": rep_name, "replacement_category_id": rep_id,
        },
    }


def _read_record(file: Path) -> dict | None:
    try:
        with Image.open(file) as im:
            text = im.info.get(PNG_KEY)  # text chunks precede the image data
            im.load()  # a finished image decodes to its end (a truncated or damaged one does not)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _existing_records(out: Path, config: MismatchConfig) -> dict[str, dict]:
    """file name -> record of the finished images in ``out``; refuses images made with other settings."""
    records: dict[str, dict] = {}
    want = json.loads(json.dumps(config.settings()))
    for file in sorted(out.glob("*.png")):
        record = _read_record(file)
        if record is None:
            log.warning("%s: unreadable or not made by build-mismatch; it will be remade", file)
            continue
        have = record.get("settings", {})
        if have != want:
            diff = ", ".join(f"{k} {have.get(k)!r} vs {want[k]!r}" for k in want if have.get(k) != want[k])
            raise InputError(f"{file}: made with other settings ({diff}); use another --out or delete it")
        records[file.name] = record
    return records


def _write_annotations(out: Path, records: dict[str, dict], data: CocoData, config: MismatchConfig,
                       skipped: list[Problem]) -> Path:
    """Rewrite ``annotations.json`` atomically from the records of the PNGs in ``out``."""
    records = sorted(records.values(), key=lambda r: r["image"]["id"])
    doc = {
        "info": {
            "description": f"mismatched images made by vlground build-mismatch from {data.path.name}",
            "source_annotations": str(data.path),
            "settings": config.settings(),
            "skipped": [str(p) for p in skipped],
        },
        "images": [r["image"] for r in records],
        "annotations": [r["annotation"] for r in records],
        "categories": data.raw_categories,
    }
    path = out / ANNOTATIONS_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    return path
