"""A VLM adapter written outside the repository, as a new user writes one: a package with an entry
point in the ``vlground.adapters`` group, using only public hooks (no private method, no
monkeypatch). It passes the conformance kit and runs ``vlground probe`` end to end."""
from __future__ import annotations

import re
import sys
import textwrap

import pytest
from _vlm import ANNOTATIONS, BUNDLED_IMAGES, grey_box_mismatch

from vlground.cli import main
from vlground.engine.registry import get_adapter_class, known_adapters
from vlground.testing import check_adapter
from vlground.vision.tiny_qwen2vl import save_tiny_qwen2vl

PLUGIN = '''
"""A plugin adapter for Qwen2-VL-style models, with a fixed token budget of its own."""
from dataclasses import dataclass

from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vlground.adapters.hf_vlm import HFVisionLanguageAdapter, ImageTextProcessor
from vlground.vision.layout import ImageTokenLayout, TokenGrid, brightness


class MyQwenAdapter(HFVisionLanguageAdapter):
    name = "myqwen"
    model_types = ("qwen2_vl",)
    chat_format = "<|im_start|>user\\n<|vision_start|>{image}<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}"
    token_inputs = {"mm_token_type_ids": 0}

    @dataclass
    class Options(HFVisionLanguageAdapter.Options):
        token_budget: int = 30  #: most image tokens per image

    def load_processor(self, path):
        images = Qwen2VLImageProcessorPil.from_pretrained(path)
        factor = images.patch_size * images.merge_size
        images.size = {"shortest_edge": 4 * factor * factor, "longest_edge": self.options.token_budget * factor * factor}
        return ImageTextProcessor(images, AutoTokenizer.from_pretrained(path), "<|image_pad|>",
                                  lambda out, i: int(out["image_grid_thw"][i].prod()) // images.merge_size ** 2,
                                  token_types=True)

    def image_layout(self, loaded, enc, image_size):
        proc = loaded.extra["processor"].image_processor
        _, gh, gw = enc["image_grid_thw"][0].tolist()
        m, p = proc.merge_size, proc.patch_size
        w, h = image_size
        positions = tuple(self.image_positions(loaded, enc["input_ids"][0]).tolist())
        return ImageTokenLayout((w, h), (TokenGrid("image", gh // m, gw // m, p * m, (gw * p / w, gh * p / h, 0, 0), positions, m),))

    def view_pixels(self, loaded, enc, layout):
        proc = loaded.extra["processor"].image_processor
        _, gh, gw = enc["image_grid_thw"][0].tolist()
        m, p, t = proc.merge_size, proc.patch_size, proc.temporal_patch_size
        x = enc["pixel_values"].numpy().reshape(gh // m, gw // m, m, m, -1, t, p, p)[..., 0, :, :]
        return {"image": brightness(x.transpose(4, 0, 2, 5, 1, 3, 6).reshape(-1, gh * p, gw * p), proc)}

    def model_inputs(self, loaded, batch):
        inputs = super().model_inputs(loaded, batch)
        inputs["position_ids"], _ = loaded.model.model.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"])
        return inputs
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugin")
    pkg = root / "myvlplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "adapter.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "myvlplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myvlplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlground.adapters]\nmyqwen = myvlplugin.adapter:MyQwenAdapter\n")
    sys.path.insert(0, str(root))
    try:
        yield root, save_tiny_qwen2vl(root / "tiny-qwen2vl"), grey_box_mismatch(root / "mismatched")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("myvlplugin.adapter", None)
        sys.modules.pop("myvlplugin", None)


def test_plugin_uses_no_private_name_and_no_patch():
    assert not re.search(r"\._\w|\b_[a-z]\w*\(|monkeypatch|setattr\(", PLUGIN)


def test_plugin_is_found_through_its_entry_point_and_passes_the_kit(plugin):
    root, model, mm = plugin
    assert "myqwen" in known_adapters()
    cls = get_adapter_class("myqwen")
    adapter = cls.from_options({"model": str(model), "images": BUNDLED_IMAGES, "annotations": ANNOTATIONS,
                                "mismatch": mm, "device": "cpu", "batch_size": 4, "token_budget": 20})
    check_adapter(adapter, max_items=6)
    loaded = adapter.load(adapter.checkpoints()[0])
    assert all(it.meta["object"].layout["n_image_tokens"] <= 20 for it in adapter.items(loaded))


def test_plugin_runs_through_the_cli(plugin, tmp_path, capsys):
    root, model, mm = plugin
    rc = main(["check-adapter", "myqwen", "--model", str(model), "--images", str(BUNDLED_IMAGES), "--annotations",
               str(ANNOTATIONS), "--mismatch", str(mm), "--device", "cpu", "--token-budget", "20", "--limit", "3"])
    assert rc == 0, capsys.readouterr()
    assert "myqwen passes every check" in capsys.readouterr().out
    assert main(["check-adapter", "myqwen", "--model", str(model), "--token-budgt", "20"]) == 2
    assert "unrecognized arguments: --token-budgt" in capsys.readouterr().err
    out = tmp_path / "o"
    rc = main(["probe", "--adapter", "myqwen", "--model", str(model), "--images", str(BUNDLED_IMAGES), "--annotations",
               str(ANNOTATIONS), "--mismatch", str(mm), "--device", "cpu", "--limit", "3", "--probes",
               "behaviour,boxheads", "--token-budget", "12", "--out", str(out), "--no-report"])
    assert rc == 0, capsys.readouterr().err
    from vlground.results import load

    assert load(out).checkpoint_rows()[0]["n_pairs"] == 3


def test_probe_help_lists_the_adapters_own_flags(plugin, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--adapter", "myqwen", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "options of adapter myqwen" in out and "--token-budget" in out and "most image tokens per image" in out
    flat = " ".join(out.split())
    assert re.search(r"registered adapter name \([^)]*\bmyqwen\b", flat)  # listed among the known adapters
    with pytest.raises(SystemExit) as exc:
        main(["probe", "--adapter", "myqwen", "--out", "x", "--token-budgt", "3"])
    assert exc.value.code == 2 and "unrecognized arguments: --token-budgt" in capsys.readouterr().err
    assert main(["probe", "--adapter", "myqwen", "--out", "x", "--min-env", "3"]) == 2
    assert "adapter myqwen has no option --min-env" in capsys.readouterr().err
