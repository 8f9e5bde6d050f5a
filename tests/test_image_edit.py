"""Generative editing for image pairs: procedural edits stay inside their region on real
images (easy-VQA, scikit-image samples), are deterministic, the SSIM / global-change filter
tells local edits from global ones and no-ops, the pixel oracle proves the answer changed,
easy-VQA mining yields verified pairs end to end, charts change exactly one bar or digit,
configs fail naming the field, the diffusers adapter works with any callable pipeline and
its import guard says how to install diffusers, and the HTML report shows the pairs."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFilter

from contextrl.errors import ConfigError, MiningError
from contextrl.miner.image import charts
from contextrl.miner.image.edit import DiffusersEditor, EditInstruction, ImageEditor, ProceduralEditor, changed_region
from contextrl.miner.image.edit_miner import (EditMinerConfig, chart_items, easy_vqa_sample, edit_pairs_per_minute, make_item,
                                              mine_edits, skimage_region_items)
from contextrl.miner.image.oracle import answer_from_pixels, parse_question, region_question
from contextrl.miner.image.shapes import segment_shape
from contextrl.miner.image.ssim import EditFilterConfig, check_edit
from contextrl.miner.pair import read_pairs, write_pairs
from contextrl.miner.report import write_report

QUIET = EditMinerConfig(progress=False)


def evqa(image_id: int) -> Image.Image:
    import easy_vqa

    return Image.open(easy_vqa.get_train_image_paths()[image_id]).convert("RGB")


def astronaut() -> Image.Image:
    return Image.fromarray(skimage.data.astronaut())


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def outside(region: tuple, shape: tuple) -> np.ndarray:
    m = np.ones(shape[:2], dtype=bool)
    x0, y0, x1, y1 = region
    m[y0:y1, x0:x1] = False
    return m


def assert_local(before: Image.Image, result) -> None:
    """Pixels outside every box of the result are byte-identical; something changed inside."""
    a, b = np.asarray(before), np.asarray(result.image)
    assert a.shape == b.shape and before.mode == result.image.mode
    keep = np.ones(a.shape[:2], dtype=bool)
    for box in result.boxes:
        keep &= outside(box, a.shape)
    assert np.array_equal(a[keep], b[keep]), f"{result.instruction.to_text()}: pixels changed outside {result.boxes}"
    assert not np.array_equal(a, b), f"{result.instruction.to_text()}: nothing changed"
    cx0, cy0, cx1, cy1 = changed_region(before, result.image)
    x0, y0, x1, y1 = result.region
    assert x0 <= cx0 and y0 <= cy0 and cx1 <= x1 and cy1 <= y1


# --------------------------------------------------------------------------- instructions


def test_instruction_text_round_trip_and_field_errors():
    texts = ["recolour the shape to blue", "remove region (10, 20, 30, 40)", "move the shape by (12, -5)", "duplicate the shape",
             "turn the shape into a circle", "shift the hue of region (0, 0, 8, 8) by 90 degrees", "set the digit to 7", "set bar 3 to 5"]
    for t in texts:
        ins = EditInstruction.parse(t)
        assert EditInstruction.parse(ins.to_text()) == ins
    assert EditInstruction.parse("Recolor the shape to TEAL.") == EditInstruction("recolour", colour="teal")
    assert EditInstruction.parse("move region (1, 2, 3, 4) by (5, 6)") == EditInstruction("move", region=(1, 2, 3, 4), offset=(5, 6))
    with pytest.raises(ConfigError, match=r"EditInstruction\.colour='mauve'"):
        EditInstruction("recolour", colour="mauve")
    with pytest.raises(ConfigError, match=r"EditInstruction\.region"):
        EditInstruction("remove", region=(10, 10, 5, 20))
    with pytest.raises(ConfigError, match=r"EditInstruction\.op"):
        EditInstruction("blur")
    with pytest.raises(ConfigError, match=r"EditInstruction\.digit"):
        EditInstruction("set_digit", digit=12)
    with pytest.raises(ConfigError, match="cannot read 'paint it black and white'"):
        EditInstruction.parse("paint it black and white")


# --------------------------------------------------------------------------- procedural edits on real images


@pytest.mark.parametrize("text", ["recolour the shape to red", "remove the shape", "move the shape", "move the shape by (-20, -30)",
                                  "duplicate the shape", "turn the shape into a circle", "turn the shape into a triangle",
                                  "shift the hue of the shape by 120 degrees"])
def test_shape_ops_change_only_inside_the_region(text):
    before = evqa(0)  # a blue rectangle on a tinted background
    result = ProceduralEditor(seed=1).edit(before, EditInstruction.parse(text))
    assert isinstance(result.image, Image.Image)
    assert_local(before, result)


@pytest.mark.parametrize("text", ["recolour region (180, 60, 300, 180) to green", "remove region (180, 60, 300, 180)",
                                  "move region (180, 60, 300, 180) by (150, 200)", "move region (180, 60, 300, 180)",
                                  "duplicate region (180, 60, 300, 180)", "shift the hue of region (180, 60, 300, 180) by 180 degrees"])
def test_region_ops_on_a_photo_change_only_inside_the_region(text):
    before = astronaut()
    assert_local(before, ProceduralEditor(seed=3).edit(before, EditInstruction.parse(text)))


def test_region_ops_on_grayscale_and_biharmonic_inpainting():
    cam = Image.fromarray(skimage.data.camera())
    for text in ("remove region (200, 100, 260, 160)", "duplicate region (200, 100, 260, 160) by (-150, 200)"):
        result = ProceduralEditor(inpaint="biharmonic").edit(cam, EditInstruction.parse(text))
        assert result.image.mode == "L"
        assert_local(cam, result)
    with pytest.raises(MiningError, match=r"grayscale.*convert\('RGB'\)"):
        ProceduralEditor().edit(cam, EditInstruction.parse("recolour region (0, 0, 10, 10) to red"))
    with pytest.raises(MiningError, match="outside the 512x512 image"):
        ProceduralEditor().edit(cam, EditInstruction.parse("remove region (500, 500, 520, 520)"))


def test_shape_edits_read_back_from_pixels():
    ed, before = ProceduralEditor(), evqa(0)
    assert (segment_shape(before).colour, segment_shape(before).kind) == ("blue", "rectangle")
    assert segment_shape(ed.edit(before, EditInstruction("recolour", colour="yellow")).image).colour == "yellow"
    reshaped = segment_shape(ed.edit(before, EditInstruction("reshape", shape="triangle")).image)
    assert (reshaped.kind, reshaped.colour) == ("triangle", "blue")
    assert segment_shape(ed.edit(before, EditInstruction("remove")).image) is None
    from scipy.ndimage import label

    dup = ed.edit(before, EditInstruction("duplicate"))
    assert label(np.asarray(dup.image) != np.asarray(dup.image)[0, 0])[1] >= 2  # two separate blobs
    with pytest.raises(MiningError, match="off the 64x64 canvas"):
        ed.edit(before, EditInstruction("move", offset=(40, 0)))
    with pytest.raises(MiningError, match="no shape"):
        ed.edit(ed.edit(before, EditInstruction("remove")).image, EditInstruction("recolour", colour="red"))
    with pytest.raises(MiningError, match="not one flat colour"):
        ed.edit(astronaut(), EditInstruction("remove"))


def test_edits_are_deterministic_per_seed():
    before, ins = evqa(7), EditInstruction("move")
    a, b = ProceduralEditor(seed=5).edit(before, ins), ProceduralEditor(seed=5).edit(before, ins)
    assert png(a.image) == png(b.image) and a.region == b.region
    offsets = {tuple(ProceduralEditor(seed=s).edit(before, ins).details["offset"]) for s in range(6)}
    assert len(offsets) > 1  # the seed does drive the draw
    photo = astronaut()
    one = ProceduralEditor(seed=2).edit(photo, EditInstruction.parse("duplicate region (50, 50, 120, 120)"))
    two = ProceduralEditor(seed=2).edit(photo, EditInstruction.parse("duplicate region (50, 50, 120, 120)"))
    assert png(one.image) == png(two.image)


# --------------------------------------------------------------------------- filter


def test_ssim_filter_accepts_local_edits_and_rejects_global_changes_and_no_ops():
    photo = astronaut()
    local = ProceduralEditor().edit(photo, EditInstruction.parse("recolour region (180, 60, 300, 180) to green"))
    v = check_edit(photo, local.image, local.region)
    assert v.ok and v.ssim_outside == pytest.approx(1.0) and v.outside_mean_abs_diff == 0.0

    brighter = Image.fromarray(np.clip(np.asarray(photo, dtype=np.int16) + 20, 0, 255).astype(np.uint8))
    v = check_edit(photo, brighter, local.region)
    assert not v.ok and {c.name for c in v.failed} >= {"outside_unchanged"}
    assert "(0, 0, 512, 512)" in dict((c.name, c.detail) for c in v.reasons)["outside_unchanged"]

    blurred = photo.filter(ImageFilter.GaussianBlur(1.5))
    v = check_edit(photo, blurred, local.region)
    assert not v.ok and "ssim_outside" in {c.name for c in v.failed} and v.ssim_outside < 0.98

    v = check_edit(photo, photo.copy(), local.region)
    assert not v.ok and [c.name for c in v.failed] == ["changed_inside"]

    v = check_edit(photo, local.image, (0, 0, 512, 400))
    assert not v.ok and "region_size" in {c.name for c in v.failed}
    v = check_edit(photo, photo.convert("L"), local.region)
    assert not v.ok and v.failed[0].name == "same_format"
    # a small uniform shift slips past SSIM alone; the difference check catches it
    shifted = Image.fromarray(np.clip(np.asarray(Image.fromarray(skimage.data.chelsea()), dtype=np.int16) + 10, 0, 255).astype(np.uint8))
    v = check_edit(Image.fromarray(skimage.data.chelsea()), shifted, (10, 10, 60, 60))
    assert v.ssim_outside > 0.98 and [c.name for c in v.failed] == ["outside_unchanged"]


# --------------------------------------------------------------------------- oracle and mining


def test_oracle_matches_easy_vqa_labels_and_sees_changes():
    items = easy_vqa_sample(400, seed=11)
    for item in items:
        q = parse_question(item.question)
        assert q is not None, item.question
        assert answer_from_pixels(Image.open(item.image_path), q) == item.answer, (item.image_path, item.question)
    q = parse_question("What color is the shape?")
    after = ProceduralEditor().edit(evqa(0), EditInstruction("recolour", colour="teal")).image
    assert answer_from_pixels(after, q) == "teal"
    assert answer_from_pixels(after, parse_question("is there not a teal shape?")) == "no"
    assert parse_question("how many shapes are there?") is None


def test_mining_easy_vqa_end_to_end(tmp_path):
    items = easy_vqa_sample(60, seed=4)
    pairs, funnel = mine_edits(items, tmp_path, QUIET)
    counts = list(funnel.to_dict().values())
    assert list(funnel) == ["candidates", "editable", "edited", "passes_ssim_filter", "answer_changes", "verified"]
    assert counts[0] == 60 and counts == sorted(counts, reverse=True) and funnel["verified"] == len(pairs) >= 50
    kinds = set()
    for p in pairs:
        assert p.kind == "image" and p.verdict.ok and p.provenance.miner == "edit"
        assert Path(p.positive.image_path).is_file() and Path(p.negative.image_path).is_file()
        assert Path(p.negative.image_path).parent == tmp_path.resolve() / "images"
        assert p.negative.supported_answer != p.answer == p.positive.supported_answer
        q = parse_question(p.query)
        assert answer_from_pixels(Image.open(p.negative.image_path), q) == p.negative.supported_answer
        assert answer_from_pixels(Image.open(p.positive.image_path), q) == p.answer
        assert check_edit(Image.open(p.positive.image_path), Image.open(p.negative.image_path), p.difference.negative).ok
        kinds.add(p.provenance.params["question_kind"])
        checks = {c.name for c in p.verdict.reasons}
        assert {"identical", "formatting", "answer_support", "ssim_outside", "outside_unchanged", "answer_oracle"} <= checks
    assert kinds >= {"colour", "shape", "has_colour", "has_shape"}
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    assert [p.id for p in read_pairs(tmp_path / "pairs.jsonl")] == [p.id for p in pairs]
    again, _ = mine_edits(items, tmp_path / "again", QUIET)  # deterministic: the same edited bytes
    assert [Path(p.negative.image_path).name for p in again] == [Path(p.negative.image_path).name for p in pairs]


def test_mining_gates_reject_wrong_labels_no_ops_and_unchanged_answers(tmp_path):
    good = easy_vqa_sample(1, seed=0)[0]
    wrong = make_item("wrong", good.image_path, good.question, "banana")
    sk = skimage_region_items(tmp_path, 1, samples=("astronaut",))[0]
    black = make_item("black", sk.image_path, region_question((440, 290, 488, 338)), "black")  # V = 0: a no-op
    dim = make_item("dim", sk.image_path, region_question((160, 176, 208, 224)), "black")  # stays too dark to be named
    pairs, funnel = mine_edits([good, wrong, black, dim, make_item("x", good.image_path, "why?", "no")], tmp_path, QUIET)
    rejects = funnel.notes["rejects"]
    assert len(pairs) == 1 and funnel["verified"] == 1 and funnel["candidates"] == 5
    assert rejects == {"label_disagrees_with_pixels": 1, "filter:changed_inside": 1, "answer_unchanged": 1, "unsupported_question": 1}


def test_presence_edit_replace_keeps_one_shape(tmp_path):
    items = [i for i in easy_vqa_sample(300, seed=5) if parse_question(i.question).kind in ("has_colour", "has_shape")
             and (i.answer == "yes") != parse_question(i.question).negated][:8]
    assert len(items) == 8
    removed, _ = mine_edits(items, tmp_path / "remove", QUIET)
    replaced, _ = mine_edits(items, tmp_path / "replace", EditMinerConfig(progress=False, presence_edit="replace"))
    assert {p.provenance.params["op"] for p in removed} == {"remove"} and len(removed) == 8
    assert {p.provenance.params["op"] for p in replaced} <= {"recolour", "reshape"} and len(replaced) == 8
    assert all(segment_shape(Image.open(p.negative.image_path)) is not None for p in replaced)


def test_mining_scikit_image_regions(tmp_path):
    items = skimage_region_items(tmp_path, 8, seed=2)
    pairs, funnel = mine_edits(items, tmp_path, QUIET)
    assert funnel["candidates"] == 8 and len(pairs) >= 6
    for p in pairs:
        (x0, y0, x1, y1), = p.difference.positive
        assert p.query == region_question((x0, y0, x1, y1)) and p.verdict.ok
        assert p.provenance.params["filter"]["outside_mean_abs_diff"] == 0.0


def test_charts_change_exactly_one_bar_or_digit(tmp_path):
    layout = charts.BarChartLayout()
    chart = charts.render_bar_chart([3, 7, 2, 9, 5], layout)
    assert charts.read_bar_chart(chart, layout) == [3, 7, 2, 9, 5]
    result = ProceduralEditor().edit(chart, EditInstruction.parse("set bar 2 to 4"))
    assert charts.read_bar_chart(result.image, layout) == [3, 4, 2, 9, 5]
    assert_local(chart, result)
    q = parse_question("What is the value of bar 2 (from the left)?")
    assert (answer_from_pixels(chart, q), answer_from_pixels(result.image, q)) == ("7", "4")
    digit = charts.render_digit(4)
    result = ProceduralEditor().edit(digit, EditInstruction("set_digit", digit=9))
    assert charts.read_digit(result.image) == 9 and answer_from_pixels(result.image, parse_question("What digit is shown?")) == "9"
    assert_local(digit, result)
    with pytest.raises(MiningError, match="not a bar chart"):
        ProceduralEditor().edit(evqa(0), EditInstruction("set_bar", bar=1, value=2))
    with pytest.raises(MiningError, match="bars 1..5"):
        ProceduralEditor().edit(chart, EditInstruction("set_bar", bar=6, value=2))
    pairs, funnel = mine_edits(chart_items(tmp_path, 10, seed=1), tmp_path, QUIET)
    assert pairs and all(p.verdict.ok and p.negative.supported_answer != p.answer for p in pairs)
    assert {p.provenance.params["op"] for p in pairs} == {"set_bar", "set_digit"}


def test_configs_fail_naming_the_field():
    with pytest.raises(ConfigError, match=r"EditMinerConfig\.seed=-1"):
        EditMinerConfig(seed=-1)
    with pytest.raises(ConfigError, match=r"EditMinerConfig\.presence_edit='delete'.*'remove'"):
        EditMinerConfig(presence_edit="delete")
    with pytest.raises(ConfigError, match=r"EditMinerConfig\.max_pairs=0"):
        EditMinerConfig(max_pairs=0)
    with pytest.raises(ConfigError, match=r"EditFilterConfig\.min_ssim_outside=1\.5"):
        EditMinerConfig.from_dict({"filter": {"min_ssim_outside": 1.5}})
    with pytest.raises(ConfigError, match="unknown field 'ssim'"):
        EditMinerConfig.from_dict({"ssim": 0.9})
    with pytest.raises(ConfigError, match=r"VerifyConfig\.disabled_checks"):
        EditMinerConfig.from_dict({"verify": {"disabled_checks": ["identicall"]}})
    with pytest.raises(ConfigError, match=r"EditFilterConfig\.margin=-1"):
        EditFilterConfig(margin=-1)
    with pytest.raises(ConfigError, match=r"ProceduralEditor\.inpaint='telea'"):
        ProceduralEditor(inpaint="telea")
    assert EditMinerConfig.from_dict({"filter": {"margin": 6}}).filter.margin == 6


# --------------------------------------------------------------------------- diffusers adapter


class InstructionPipeline:
    """A real (tiny) instruction-editing pipeline with the diffusers calling convention: it
    reads the prompt, edits procedurally, then perturbs every pixel by up to `noise` levels
    (like a VAE round trip) and optionally brightens the whole picture (a global restyle)."""

    def __init__(self, noise: int = 1, brighten: int = 0):
        self.noise, self.brighten, self.calls = noise, brighten, []

    def __call__(self, prompt, image, num_inference_steps=20, guidance_scale=7.5, image_guidance_scale=1.5):
        self.calls.append((prompt, num_inference_steps))
        edited = np.asarray(ProceduralEditor().edit(image, EditInstruction.parse(prompt)).image, dtype=np.int16)
        jitter = np.random.default_rng(0).integers(-self.noise, self.noise + 1, size=edited.shape)
        out = np.clip(edited + jitter + self.brighten, 0, 255).astype(np.uint8)

        class Output:
            images = [Image.fromarray(out).resize((512, 512))]  # pipelines work at their own resolution

        return Output()


def test_diffusers_adapter_measures_the_region_and_the_filter_judges_it():
    before = evqa(0)
    truth = ProceduralEditor().edit(before, EditInstruction("recolour", colour="red"))
    pipe = InstructionPipeline(noise=1)
    editor = DiffusersEditor(pipe, num_inference_steps=7)
    assert isinstance(editor, ImageEditor)
    result = editor.edit(before, EditInstruction("recolour", colour="red"))
    assert pipe.calls == [("recolour the shape to red", 7)]  # kwargs it does not accept are left out
    assert result.image.size == before.size and result.image.mode == "RGB"
    tx0, ty0, tx1, ty1 = truth.region
    x0, y0, x1, y1 = result.region
    assert abs(x0 - tx0) <= 2 and abs(y0 - ty0) <= 2 and abs(x1 - tx1) <= 2 and abs(y1 - ty1) <= 2
    assert check_edit(before, result.image, result.region).ok
    assert answer_from_pixels(result.image, parse_question("what color is the shape?")) == "red"

    restyled = DiffusersEditor(InstructionPipeline(noise=1, brighten=30)).edit(before, EditInstruction("recolour", colour="red"))
    assert restyled.region == (0, 0, 64, 64)
    assert "region_size" in {c.name for c in check_edit(before, restyled.image, restyled.region).failed}
    with pytest.raises(ConfigError, match="DiffusersEditor.pipeline"):
        DiffusersEditor("timbrooks/instruct-pix2pix")


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is not None, reason="diffusers is installed")
def test_diffusers_import_guard_names_the_install():
    with pytest.raises(MiningError, match=re.escape("pip install diffusers")):
        DiffusersEditor.from_pretrained("timbrooks/instruct-pix2pix", device="cpu")


# --------------------------------------------------------------------------- report and benchmark


def test_report_shows_edit_pairs_side_by_side_with_heat_maps(tmp_path):
    pairs, funnel = mine_edits(easy_vqa_sample(4, seed=9) + chart_items(tmp_path, 2, seed=3), tmp_path, QUIET)
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    assert write_report(tmp_path / "pairs.jsonl", tmp_path / "report.html", funnel=funnel) == len(pairs) >= 5
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 * len(pairs)  # C+, C- and the heat map per pair
    assert page.count("Difference heat map") == len(pairs) and page.count('class="region"') == 2 * len(pairs)
    for p in pairs:
        assert f'id="pair-{p.id}"' in page and Path(p.negative.image_path).name in page
    assert "passes_ssim_filter" in page


def test_edit_pairs_per_minute_quick():
    out = edit_pairs_per_minute(quick=True)
    assert out["edit_candidates"] == 100 and 0 < out["edit_pairs"] <= 100
    assert out["edit_pairs_per_minute"] == pytest.approx(60 * out["edit_pairs"] / out["edit_seconds"], rel=0.01)
    assert out["edit_easy_vqa_funnel"]["candidates"] == 80 and out["edit_skimage_funnel"]["candidates"] == 20
