"""Issue 22, class 8: a missing requested step, a heads file with non-integers, an unknown model
keyword, a 16-bit greyscale PNG."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faults_helpers import one_error, run_cli


def test_missing_requested_step_is_an_error(tiny_runs, tmp_path, capsys):
    code, err = run_cli(["probe", "--adapter", "childes", "--run", tiny_runs["transformer"], "--checkpoints", "last,7",
                         "--no-report", "--out", tmp_path / "p"], capsys)
    line = one_error(err)
    assert code == 2 and "no checkpoint at step 7" in line and "0, 4, 8, 12" in line, line
    assert not (tmp_path / "p").exists()


def test_select_checkpoints_names_the_run_missing_a_step():
    from vlground.errors import InputError
    from vlground.probes.runner import select_checkpoints
    from vlground.testing import FakeAdapter

    cks = FakeAdapter.from_options({"steps": (0, 10, 20), "seeds": (0, 1)}).checkpoints()
    cks = [c for c in cks if not (c.seed == 1 and c.step == 10)]
    assert len(select_checkpoints(cks, "0,last")) == 4
    with pytest.raises(InputError, match="run fake-s1 has no checkpoint at step 10"):
        select_checkpoints(cks, "10")


@pytest.mark.parametrize("head", [{"layer": 1.9, "head": 1}, {"layer": 1, "head": "1"}, {"layer": True, "head": 0}])
def test_heads_file_with_non_integers_is_refused(tmp_path, head):
    from vlground.errors import InputError
    from vlground.monitor.heads import read_heads_file

    f = tmp_path / "heads.json"
    f.write_text(json.dumps({"heads": [head]}))
    with pytest.raises(InputError, match="not an integer"):
        read_heads_file(f)
    f.write_text(json.dumps({"heads": [{"layer": 2, "head": 1}]}))
    assert read_heads_file(f).heads == ((1, 1),)


def test_unknown_model_keyword_in_config_is_an_error(tiny_runs, tmp_path, capsys):
    from importlib import resources

    cfg = json.loads(resources.files("vlground").joinpath("configs/transformer-tiny.json").read_text())
    cfg["model"]["n_layers"] = 3  # a typo of n_layer: stored and ignored before
    f = tmp_path / "my.json"
    f.write_text(json.dumps(cfg))
    code, err = run_cli(["train", "--corpus", tiny_runs["corpus"], "--out", tmp_path / "run", "--config", f,
                         "--steps", "2", "--no-progress"], capsys)
    line = one_error(err)
    assert code == 2 and "unknown model keyword(s) n_layers" in line and "n_layer" in line, line
    assert not (tmp_path / "run").exists()
    code, err = run_cli(["train", "--corpus", tiny_runs["corpus"], "--out", tmp_path / "run", "--model-arg", "n_embed=16",
                         "--steps", "2", "--no-progress"], capsys)
    assert code == 2 and "n_embed" in one_error(err)


def test_every_bundled_config_has_only_known_keywords():
    from importlib import resources

    from vlground.train.models import build_model

    for f in sorted(resources.files("vlground").joinpath("configs").iterdir()):
        if f.name.endswith("-tiny.json"):
            data = json.loads(f.read_text())
            build_model(data["arch"], data["model"], 20, max_len=16)


def test_16_bit_greyscale_png_keeps_its_range(tmp_path, capsys, monkeypatch):
    from vlground.vision.inpaint import DiffusersInpainter
    from vlground.vision.pixels import to_rgb

    grey = np.full((40, 60), 30000, dtype=np.uint16)
    grey[:, :10] = 65535
    im = Image.fromarray(grey)
    src = tmp_path / "src"
    src.mkdir()
    im.save(src / "a.png")
    with Image.open(src / "a.png") as back:
        assert back.mode in ("I;16", "I")  # a 16-bit greyscale PNG
        rgb = np.asarray(to_rgb(back))
    assert rgb.shape == (40, 60, 3) and rgb[0, 30, 0] == round(30000 / 257) and rgb[0, 0, 0] == 255

    class Fake:
        def __call__(self, image, mask, prompt, seed):
            return image.copy()

    monkeypatch.setattr(DiffusersInpainter, "load", classmethod(lambda cls, *a, **k: Fake()))
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 5, 20, 20]}],
           "categories": [{"id": 1, "name": "cup"}, {"id": 2, "name": "cat"}]}
    (src / "annotations.json").write_text(json.dumps(doc))
    code, err = run_cli(["build-mismatch", "--annotations", src / "annotations.json", "--out", tmp_path / "mm",
                         "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    (made,) = (tmp_path / "mm").glob("*.png")
    out = np.asarray(Image.open(made).convert("RGB"))
    assert abs(int(out[35, 50, 0]) - round(30000 / 257)) <= 2  # outside the box: the source, not clipped white
    assert (out == 255).mean() < 0.5
