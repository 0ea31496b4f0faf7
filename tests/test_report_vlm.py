"""The report of a tiny LLaVA probed with behaviour, saliency and boxheads renders (the VLM
saliency report once crashed in matplotlib: ``ufunc 'isfinite' not supported``) and passes the
HTML checks."""
from __future__ import annotations

from test_llava import ANNOTATIONS, BUNDLED_IMAGES, mismatch_dir, tiny_llava_dir  # noqa: F401  (fixtures)

from vlground.cli import main
from vlground.report.check import check_report


def test_llava_behaviour_saliency_boxheads_report(tiny_llava_dir, mismatch_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "llava"
    rc = main(["probe", "--adapter", "llava15", "--model", str(tiny_llava_dir), "--images", str(BUNDLED_IMAGES),
               "--annotations", str(ANNOTATIONS), "--mismatch", str(mismatch_dir), "--probes", "behaviour,saliency,boxheads",
               "--device", "cpu", "--batch-size", "4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    info = check_report(out / "report.html")
    text = (out / "report.html").read_text()
    for anchor in ("behaviour-match-vs-mismatch", "information-flow", "box-aggregate-heads", "provenance-and-settings"):
        assert anchor in info["sections"], (anchor, info["sections"])
    assert "Key findings" in text and "the final model" in text and "vlground probe --adapter llava15" in text
    assert (out / "verdicts.csv").is_file()
    assert "box-overlay-" in text  # the photo with its box and the strongest heads' per-patch saliency
    from vlground.results import load

    res = load(out)
    (rec,) = res.records("boxheads")
    arr = res.arrays(rec["key"])
    g = arr["boxheads.overlay_match"].shape[0]
    assert arr["boxheads.overlay_match"].shape == (g, g) == arr["boxheads.overlay_match_mask"].shape
    assert arr["boxheads.overlay_match_mask"].any() and arr["boxheads.overlay_match_image"].dtype.name == "uint8"
    assert "boxheads.overlay_mismatch" in arr
