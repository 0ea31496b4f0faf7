"""Read a COCO-format ``instances.json`` into typed images and annotations.

:func:`load_coco` never stops at a bad item: it keeps the usable images and annotations and
returns one :class:`Problem` line per skipped item, e.g.
``instances.json: annotation 12: box [700, 10, 50, 50] outside image 3 (600x400)``.

Rules:

* an image is skipped when its entry lacks ``id`` / ``file_name``, when the file is missing or
  PIL cannot open it, or when the file's size differs from the declared ``width`` / ``height``
  (boxes are in the declared pixels). Missing ``width`` / ``height`` are read from the file. With
  ``check_images=False`` files are not opened and ``width`` / ``height`` are required.
* an image is also skipped when PIL refuses it as a decompression bomb (more pixels than
  ``PIL.Image.MAX_IMAGE_PIXELS`` allows).
* an annotation is skipped when its image was skipped or is unknown, its category id is
  unknown, its ``bbox`` is not four finite numbers (NaN and infinity included), is empty
  (``w <= 0`` or ``h <= 0``: degenerate) or lies fully outside the image, its segmentation is
  malformed (:func:`segmentation_problem`), or its id repeats an earlier one.
* a box partly outside the image is clipped to the image; :attr:`CocoAnnotation.clipped_from`
  keeps the original box.

The file is read with :mod:`json` (pycocotools' ``COCO`` prints on load); segmentations are
decoded with ``pycocotools.mask`` only when asked for.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlground.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A skipped item and why: ``str()`` is the one-line message."""

    source: str
    """The file the item came from (its name, as shown to the user)."""
    item: str
    """``image 3``, ``annotation 12``, ``category 7``."""
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.item}: {self.reason}"


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    """As written in the annotations file (relative to the image folder)."""
    path: Path
    """``image_dir / file_name``."""
    width: int
    height: int


@dataclass(frozen=True)
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    category: str
    """The category's name."""
    bbox: tuple[float, float, float, float]
    """``(x, y, w, h)`` in image pixels, clipped to the image."""
    segmentation: Any = None
    """COCO polygons (list of ``[x0, y0, x1, y1, ...]``) or an RLE dict, as in the file; None if absent."""
    iscrowd: bool = False
    area: float | None = None
    clipped_from: tuple[float, float, float, float] | None = None
    """The box as written when it was partly outside the image and clipped, else None."""

    def segmentation_mask(self, width: int, height: int) -> np.ndarray | None:
        """``[height, width]`` bool mask of the segmentation, or None when there is none."""
        if not self.segmentation:
            return None
        from pycocotools import mask as mask_utils

        seg = self.segmentation
        if isinstance(seg, list):
            rles = mask_utils.frPyObjects(seg, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy-keyword warning
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)


@dataclass
class CocoData:
    """The usable content of an annotations file."""

    path: Path
    images: dict[int, CocoImage]
    """image id -> image, in file order."""
    annotations: list[CocoAnnotation]
    """In file order."""
    categories: dict[int, str]
    """category id -> name, in file order."""
    skipped: list[Problem] = field(default_factory=list)
    raw_categories: list[dict] = field(default_factory=list)
    """The ``categories`` entries as written (for writing a derived COCO file)."""


def load_coco(path: str | Path, image_dir: str | Path | None = None, *, check_images: bool = True) -> CocoData:
    """Read ``path`` (COCO instances format); images are looked up in ``image_dir``.

    ``image_dir`` defaults to the annotations file's folder. Raises
    :class:`~vlground.errors.InputError` only when the file itself is unusable (missing, not
    JSON, no ``images`` / ``annotations`` / ``categories`` lists); item problems go to
    :attr:`CocoData.skipped`.
    """
    path = Path(path)
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    name = path.name
    if not path.is_file():
        raise InputError(f"{path}: annotations file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: no '{key}' list (not a COCO instances file)")
    if image_dir is not None and check_images and not image_dir.is_dir():
        raise InputError(f"{image_dir}: image folder not found")

    skipped: list[Problem] = []
    categories, raw_categories = _categories(data["categories"], name, skipped)
    images = _images(data["images"], image_dir, name, check_images, skipped)
    annotations = _annotations(data["annotations"], images, categories, name, skipped)
    for problem in skipped:
        log.warning("skipped %s", problem)
    return CocoData(path, images, annotations, categories, skipped, raw_categories)


def _categories(entries: list, name: str, skipped: list[Problem]) -> tuple[dict[int, str], list[dict]]:
    categories: dict[int, str] = {}
    raw = []
    for i, entry in enumerate(entries):
        cid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(cid, int) or not isinstance(entry.get("name"), str):
            skipped.append(Problem(name, f"category #{i}", "needs an integer 'id' and a 'name'"))
        elif cid in categories:
            skipped.append(Problem(name, f"category {cid}", f"id repeated (first is {categories[cid]!r})"))
        else:
            categories[cid] = entry["name"]
            raw.append(entry)
    return categories, raw


def _images(entries: list, image_dir: Path, name: str, check: bool, skipped: list[Problem]) -> dict[int, CocoImage]:
    from PIL import Image, UnidentifiedImageError

    images: dict[int, CocoImage] = {}
    for i, entry in enumerate(entries):
        iid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(iid, int) or not isinstance(entry.get("file_name"), str):
            skipped.append(Problem(name, f"image #{i}", "needs an integer 'id' and a 'file_name'"))
            continue
        item = f"image {iid}"
        if iid in images:
            skipped.append(Problem(name, item, "id repeated"))
            continue
        file = image_dir / entry["file_name"]
        width, height = entry.get("width"), entry.get("height")
        if check:
            if not file.is_file():
                skipped.append(Problem(name, item, f"file {entry['file_name']} not found in {image_dir}"))
                continue
            try:
                with Image.open(file) as im:
                    real = im.size
            except (UnidentifiedImageError, OSError) as exc:
                skipped.append(Problem(name, item, f"PIL cannot read {entry['file_name']} ({type(exc).__name__})"))
                continue
            except Image.DecompressionBombError as exc:
                skipped.append(Problem(name, item, f"{entry['file_name']}: decompression bomb refused ({exc})"))
                continue
            if width is None and height is None:
                width, height = real
            elif (width, height) != real:
                skipped.append(Problem(name, item, f"declared {width}x{height} but {entry['file_name']} is "
                                                   f"{real[0]}x{real[1]}"))
                continue
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            skipped.append(Problem(name, item, f"needs positive integer width and height, got {width}x{height}"))
            continue
        images[iid] = CocoImage(iid, entry["file_name"], file, width, height)
    return images


def _annotations(entries: list, images: dict[int, CocoImage], categories: dict[int, str], name: str,
                 skipped: list[Problem]) -> list[CocoAnnotation]:
    out: list[CocoAnnotation] = []
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        aid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(aid, int):
            skipped.append(Problem(name, f"annotation #{i}", "needs an integer 'id'"))
            continue
        item = f"annotation {aid}"
        if aid in seen:
            skipped.append(Problem(name, item, "id repeated"))
            continue
        seen.add(aid)
        image = images.get(entry.get("image_id"))
        if image is None:
            skipped.append(Problem(name, item, f"image {entry.get('image_id')} unknown or skipped"))
            continue
        cid = entry.get("category_id")
        if cid not in categories:
            skipped.append(Problem(name, item, f"unknown category id {cid}"))
            continue
        bbox = entry.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            skipped.append(Problem(name, item, f"bbox {bbox!r} is not [x, y, w, h]"))
            continue
        x, y, w, h = (float(v) for v in bbox)
        shown = f"box {_fmt(bbox)}"
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            skipped.append(Problem(name, item, f"{shown} is not finite"))
            continue
        if w <= 0 or h <= 0:
            skipped.append(Problem(name, item, f"{shown} is empty"))
            continue
        seg_problem = segmentation_problem(entry.get("segmentation"), image.width, image.height)
        if seg_problem:
            skipped.append(Problem(name, item, f"segmentation {seg_problem}"))
            continue
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(image.width)), min(y + h, float(image.height))
        if x1 <= x0 or y1 <= y0:
            skipped.append(Problem(name, item, f"{shown} outside image {image.id} ({image.width}x{image.height})"))
            continue
        clipped = (x0, y0, x1 - x0, y1 - y0)
        clipped_from = None
        if clipped != (x, y, w, h):
            clipped_from = (x, y, w, h)
            log.info("%s: %s: %s partly outside image %d (%dx%d), clipped to %s", name, item, shown, image.id,
                     image.width, image.height, _fmt(clipped))
        out.append(CocoAnnotation(
            id=aid, image_id=image.id, category_id=cid, category=categories[cid], bbox=clipped,
            segmentation=entry.get("segmentation") or None, iscrowd=bool(entry.get("iscrowd", 0)),
            area=entry.get("area"), clipped_from=clipped_from,
        ))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def segmentation_problem(seg, width: int, height: int) -> str | None:
    """Why a COCO segmentation is malformed, or None when it is absent or well formed.

    Well formed: polygons, a list of ``[x0, y0, x1, y1, ...]`` lists of at least three points
    of finite numbers; or an RLE ``{"size": [height, width], "counts": str | list of ints}``
    whose size is the image's and (uncompressed) whose counts add up to ``height * width``.
    """
    if seg is None or seg == [] or seg == {}:
        return None
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2 or not all(_number(v) for v in poly):
                return "is malformed (polygons are lists of at least 3 finite x, y pairs)"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
            return "is malformed (an RLE needs 'size': [height, width])"
        if list(size) != [height, width]:
            return f"RLE size {size} is not the image's [{height}, {width}]"
        if isinstance(counts, str):
            return None if counts else "is malformed (empty RLE counts)"
        if isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            return None if sum(counts) == height * width else f"RLE counts cover {sum(counts)} pixels, not {height * width}"
        return "is malformed (RLE 'counts' must be a string or a list of non-negative integers)"
    return f"is malformed (a {type(seg).__name__}, not polygons or an RLE)"


def _fmt(box) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"
