"""Synthetic scenes with known boxes and Visual-Dialog-style dialogs: the vision testbed's
bundled default (no COCO download, runs on a CPU).

:func:`generate_scenes` draws ``n`` images with PIL: a random background (one of
:data:`BACKGROUNDS`, a vertical gradient with speckle noise) and one or two objects of
:data:`SHAPES` (simple coloured icons) at random, non-overlapping boxes. It writes::

    OUT/images/scene-00000.png ...
    OUT/instances.json   COCO format: images, annotations (bbox + polygon), categories = SHAPES
    OUT/visdial.json     Visual Dialog v1.0 format: a caption and a few rounds per image

The dialogs name the objects only part of the time (``name_prob``): the caption names each
object with that probability (``a red ball on a grass field`` or ``a red thing on ...``), and
a round ``what is this`` / ``it is a <name>`` asks about the first object with that probability;
other rounds ask about colours and counts. So a word's linguistic form co-occurs with its
object in some dialogs and not in others, as in the paper's corpora. Everything is seeded.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("ball", "box", "kite", "tree", "star", "cup")
COLOURS = {"red": (210, 40, 40), "blue": (40, 70, 210), "yellow": (230, 200, 30), "green": (40, 160, 60),
           "purple": (140, 50, 170), "orange": (240, 130, 20)}
BACKGROUNDS = {"grass": ((90, 150, 70), (60, 110, 50)), "sky": ((150, 190, 240), (220, 230, 250)),
               "sand": ((225, 205, 150), (190, 165, 110)), "wall": ((200, 200, 200), (150, 150, 150)),
               "night": ((30, 30, 70), (10, 10, 30))}
NUMBERS = {1: "one", 2: "two"}
#: each shape's usual colour (used with probability ``SceneSpec.usual_colour``), so that a random
#: vision encoder's features, which keep colour better than shape, still tell the objects apart
USUAL = dict(zip(SHAPES, sorted(COLOURS)))


@dataclass
class SceneSpec:
    n: int = 300
    """Number of scenes."""
    width: int = 144
    height: int = 128
    seed: int = 0
    name_prob: float = 0.8
    """Probability that the caption / the ``what is this`` round names an object."""
    two_prob: float = 0.3
    """Probability of a second object."""
    usual_colour: float = 0.8
    """Probability that an object has its shape's usual colour (:data:`USUAL`), else a random one."""


def _draw(draw, shape: str, box: tuple[int, int, int, int], colour) -> list[float]:
    """Draw ``shape`` inside ``box`` (x0, y0, x1, y1); returns a polygon of its outline."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dark = tuple(int(c * 0.5) for c in colour)
    if shape == "ball":
        draw.ellipse(box, fill=colour, outline=dark, width=2)
        return [x0, cy, cx, y0, x1, cy, cx, y1]
    if shape == "box":
        draw.rectangle(box, fill=colour, outline=dark, width=2)
        draw.line([x0, y0 + h * 0.3, x1, y0 + h * 0.3], fill=dark, width=2)
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    if shape == "kite":
        pts = [(cx, y0), (x1, cy - h * 0.1), (cx, y1), (x0, cy - h * 0.1)]
        draw.polygon(pts, fill=colour, outline=dark)
        draw.line([pts[0], pts[2]], fill=dark, width=1)
        return [v for p in pts for v in p]
    if shape == "tree":
        draw.rectangle([cx - w * 0.1, cy + h * 0.2, cx + w * 0.1, y1], fill=(110, 70, 30))
        pts = [(cx, y0), (x1, cy + h * 0.25), (x0, cy + h * 0.25)]
        draw.polygon(pts, fill=colour, outline=dark)
        return [cx, y0, x1, cy + h * 0.25, cx + w * 0.1, y1, cx - w * 0.1, y1, x0, cy + h * 0.25]
    if shape == "star":
        import math

        pts = []
        for k in range(10):
            r = (w / 2) if k % 2 == 0 else (w / 5)
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a) * h / w))
        draw.polygon(pts, fill=colour, outline=dark)
        return [v for p in pts for v in p]
    if shape == "cup":
        draw.rectangle([x0, y0 + h * 0.15, x0 + w * 0.75, y1], fill=colour, outline=dark, width=2)
        draw.ellipse([x0 + w * 0.6, y0 + h * 0.35, x1, y0 + h * 0.75], outline=colour, width=max(2, w // 10))
        return [x0, y0 + h * 0.15, x0 + w * 0.75, y0 + h * 0.15, x1, cy, x0 + w * 0.75, y1, x0, y1]
    raise ValueError(shape)


def _scene(rng: random.Random, spec: SceneSpec):
    from PIL import Image, ImageDraw

    bg = rng.choice(sorted(BACKGROUNDS))
    top, bottom = BACKGROUNDS[bg]
    t = np.linspace(0.0, 1.0, spec.height)[:, None, None]
    grad = np.asarray(top, float) + (np.asarray(bottom, float) - np.asarray(top, float)) * t  # [H, 1, 3]
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-12, 13, (spec.height, spec.width, 1))
    img = Image.fromarray(np.clip(grad + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    objects = []
    n_obj = 2 if rng.random() < spec.two_prob else 1
    for _ in range(n_obj):
        for _try in range(20):
            s = rng.randint(min(spec.width, spec.height) * 2 // 5, min(spec.width, spec.height) * 3 // 5)
            x0, y0 = rng.randint(0, spec.width - s), rng.randint(0, spec.height - s)
            box = (x0, y0, x0 + s, y0 + s)
            if all(box[2] <= o["box"][0] or o["box"][2] <= box[0] or box[3] <= o["box"][1] or o["box"][3] <= box[1]
                   for o in objects):
                break
        else:
            continue
        shape = rng.choice(SHAPES)
        colour = USUAL[shape] if rng.random() < spec.usual_colour else rng.choice(sorted(COLOURS))
        poly = _draw(draw, shape, box, COLOURS[colour])
        objects.append({"shape": shape, "colour": colour, "box": box, "poly": poly})
    return img, bg, objects


def _dialog(rng: random.Random, spec: SceneSpec, bg: str, objects: list[dict]) -> tuple[str, list[tuple[str, str]]]:
    def name(o):
        return o["shape"] if rng.random() < spec.name_prob else "thing"

    parts = [f"a {o['colour']} {name(o)}" for o in objects]
    caption = " and ".join(parts) + f" on a {bg} background"
    first = objects[0]
    rounds = []
    if rng.random() < spec.name_prob:
        rounds.append(("what is this", f"it is a {first['shape']}"))
    rounds.append(("what color is it", f"it is {first['colour']}"))
    rounds.append(("how many things are there", NUMBERS.get(len(objects), str(len(objects)))))
    rounds.append(("what is the background", f"it is {bg}"))
    rng.shuffle(rounds)
    return caption, rounds


def generate_scenes(out: str | Path, spec: SceneSpec | None = None, *, split: str = "train", start_id: int = 1) -> Path:
    """Write ``spec.n`` scenes into ``out`` (see the module docstring); returns ``out``.

    Image ids (and annotation ids) start at ``start_id`` so two splits can share one category list.
    """
    spec = spec or SceneSpec()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    images, annotations, dialogs, questions, answers = [], [], [], [], []
    q_index, a_index = {}, {}
    ann_id = start_id
    for k in range(spec.n):
        img, bg, objects = _scene(rng, spec)
        image_id = start_id + k
        file_name = f"scene-{image_id:05d}.png"
        img.save(out / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": spec.width, "height": spec.height})
        for o in objects:
            x0, y0, x1, y1 = o["box"]
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_id[o["shape"]],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
                                "segmentation": [[round(float(v), 1) for v in o["poly"]]], "iscrowd": 0})
            ann_id += 1
        caption, rounds = _dialog(rng, spec, bg, objects)
        turns = []
        for q, a in rounds:
            qi = q_index.setdefault(q, len(questions))
            if qi == len(questions):
                questions.append(q)
            ai = a_index.setdefault(a, len(answers))
            if ai == len(answers):
                answers.append(a)
            turns.append({"question": qi, "answer": ai})
        dialogs.append({"image_id": image_id, "caption": caption, "dialog": turns})
    coco = {"info": {"description": "vlground synthetic scenes", "seed": spec.seed}, "images": images,
            "annotations": annotations, "categories": categories}
    (out / "instances.json").write_text(json.dumps(coco), encoding="utf-8")
    visdial = {"version": "1.0", "split": split, "data": {"questions": questions, "answers": answers, "dialogs": dialogs}}
    (out / "visdial.json").write_text(json.dumps(visdial), encoding="utf-8")
    return out
