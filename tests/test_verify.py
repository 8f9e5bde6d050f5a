"""Tests for pair verification: each shortcut check on real-looking branched trajectory pairs."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image, ImageDraw

from contextrl.errors import ConfigError, MiningError
from contextrl.miner.judge import JudgeVerdict
from contextrl.miner.pair import Context, ContrastivePair, Difference, Provenance, text_difference
from contextrl.miner.render import MASK
from contextrl.miner.verify import CHECKS, VerifyConfig, looks_like_patch, patch_tokens, verify_pair, verify_pairs
from contextrl.trajectory import Step, Trajectory


# ---- small real-looking SWE trajectories: a branched pair around `scale()` ----
from pair_data import PATCH, QUERY, TEST_NAMES, _pytest, _view, make_pair, make_traj  # noqa: F401



def _checks(pair: ContrastivePair) -> dict[str, tuple[bool, str]]:
    assert pair.verdict is not None
    return {c.name: (c.passed, c.detail) for c in pair.verdict.reasons}


def test_a_clean_branched_pair_passes_every_check():
    pair = make_pair()
    assert pair.verdict is None
    out = verify_pair(pair)
    checks = _checks(out)
    assert out.verdict.ok, out.verdict.failed
    assert set(checks) == set(CHECKS) - {"judge"}
    assert out.id == pair.id and out.verdict.failed == ()
    assert "mask tokens" in checks["masking"][1] and "4 vs 4" in checks["masking"][1]


def test_identical_contexts_are_rejected():
    t = make_traj()
    c = Context.from_trajectory(t)
    out = verify_pair(ContrastivePair("trajectory", QUERY, PATCH, c, c))
    assert _checks(out)["identical"] == (False, "contexts are identical")
    ws = Context(text=c.text.replace("\n", " \n"))
    assert _checks(verify_pair(ContrastivePair("trajectory", QUERY, PATCH, c, ws)))["identical"][0] is False


def test_length_disparity_is_rejected_and_the_ratio_is_configurable():
    noise = tuple(Step(0, "bash", {"command": f"cat docs/page{i}.md"}, "Geometry helpers.\n" * 8, exit_code=0) for i in range(12))
    pair = make_pair(neg=make_traj(flipped=True, extra=noise))
    passed, detail = _checks(verify_pair(pair, VerifyConfig(allow_undeclared_differences=True)))["length_ratio"]
    assert not passed and "> 1.25" in detail
    assert _checks(verify_pair(pair, VerifyConfig(max_length_ratio=3.0)))["length_ratio"][0]


def test_formatting_differences_outside_the_difference_are_rejected():
    base = make_pair()
    lines = base.negative.text.split("\n")
    i = lines.index("PASSED tests/test_shapes.py::test_area_square")
    trailing = base.negative.text.replace(lines[i] + "\n", lines[i] + "   \n", 1)
    pair = ContrastivePair("trajectory", QUERY, PATCH, base.positive, Context(text=trailing),
                           text_difference(base.positive.text, trailing))
    checks = _checks(verify_pair(pair))
    assert not checks["formatting"][0] and "whitespace-only difference" in checks["formatting"][1]
    assert checks["undeclared_difference"][0]  # the trailing spaces are formatting, not undeclared content
    crlf = base.negative.text.replace("\n", "\r\n")
    pair = ContrastivePair("trajectory", QUERY, PATCH, base.positive, Context(text=crlf), text_difference(base.positive.text, crlf))
    passed, detail = _checks(verify_pair(pair))["formatting"]
    assert not passed and "CRLF in C- only" in detail


def test_differences_outside_the_declared_region_are_rejected():
    full = make_pair()
    partial = dataclasses.replace(full, difference=Difference(full.difference.positive[:1], full.difference.negative[:1]))
    passed, detail = _checks(verify_pair(partial))["undeclared_difference"]
    assert not passed and f"{len(full.difference.positive) - 1} differing hunk(s)" in detail
    assert _checks(verify_pair(partial, VerifyConfig(allow_undeclared_differences=True)))["undeclared_difference"][0]
    undeclared = dataclasses.replace(full, difference=Difference())
    assert _checks(verify_pair(undeclared))["undeclared_difference"] == (False, "no decisive difference declared (set it, e.g. with text_difference)")


def test_patch_tokens_leaking_into_a_context_are_rejected():
    assert looks_like_patch(PATCH) and not looks_like_patch("red")
    assert patch_tokens(PATCH, exclude=QUERY) == {"_check_factor", "negative"}
    peek = (Step(0, "bash", {"command": "tail -3 geom/shapes.py"}, "def _check_factor(factor):\n    if factor < 0:\n        raise ValueError", exit_code=0),)
    pair = make_pair(pos=make_traj(extra=peek), neg=make_traj(flipped=True, extra=peek))
    passed, detail = _checks(verify_pair(pair))["patch_leakage"]
    assert not passed and "C+ shows 1 token(s) of the answer: _check_factor" in detail and "C- shows" in detail
    assert _checks(verify_pair(pair, VerifyConfig(max_leaked_tokens=1)))["patch_leakage"][0]
    # unmasked edits leak the patch, and the masking check notices the missing masks
    raw = verify_pair(make_pair(mask_pos=False, mask_neg=False))
    assert not _checks(raw)["patch_leakage"][0]
    assert _checks(raw)["masking"] == (False, "C+ has 4 unmasked edit payload(s) (0 of 4 masked)")


def test_inconsistent_masking_is_rejected():
    one_sided = make_pair(mask_neg=False)
    assert not _checks(verify_pair(one_sided))["masking"][0]
    text_only = ContrastivePair("trajectory", QUERY, PATCH, Context(text="edit x.py old_str=" + MASK + "\nok\n"), Context(text="edit x.py\nfail\n"))
    assert _checks(verify_pair(text_only))["masking"] == (False, "only C+ is masked (1 vs 0 mask tokens)")
    more_edits = make_pair(neg=make_traj(flipped=True, mask_count=2))
    passed, detail = _checks(verify_pair(more_edits))["masking"]
    assert not passed and "4 vs 7" in detail
    assert _checks(verify_pair(more_edits, VerifyConfig(mask_count_tolerance=3)))["masking"][0]


def test_answers_supported_by_both_contexts_are_rejected():
    both_resolved = make_pair(neg=make_traj(flipped=True, resolved=True))
    passed, detail = _checks(verify_pair(both_resolved))["answer_support"]
    assert not passed and "acme__geom-412" in detail and "resolved=True" in detail
    # different tasks (condition-filtered pairs): both resolved says nothing about A
    other_task = dataclasses.replace(make_traj(flipped=True, resolved=True), task_id="acme__geom-377")
    assert _checks(verify_pair(make_pair(neg=other_task)))["answer_support"][0]
    # metadata: the confounder's own answer equals A
    pair = make_pair()
    same = dataclasses.replace(pair, negative=dataclasses.replace(pair.negative, supported_answer=" " + PATCH.upper()))
    assert not _checks(verify_pair(same))["answer_support"][0]
    # an oracle
    calls = []

    def oracle(p, side):
        calls.append(side)
        return side == "negative"

    assert _checks(verify_pair(pair, support=oracle))["answer_support"] == (False, "support oracle: C- also supports the answer")
    assert calls == ["positive", "negative"]
    assert _checks(verify_pair(pair, support=lambda p, side: None))["answer_support"][0]


def _png(path, size=(64, 48), circles=3, mode="RGB", fmt="PNG"):
    im = Image.new(mode, size, "white")
    d = ImageDraw.Draw(im)
    for k in range(circles):
        d.ellipse((4 + 18 * k, 10, 18 + 18 * k, 24), fill="black")
    im.save(path, fmt)
    return str(path)


def test_image_pairs(tmp_path):
    a, b = _png(tmp_path / "a.png", circles=3), _png(tmp_path / "b.png", circles=2)
    good = ContrastivePair("image", "How many circles are there?", "3", Context(image_path=a), Context(image_path=b, supported_answer="2"),
                           Difference(((40, 10, 54, 24),), ((40, 10, 54, 24),)), Provenance("edit", (a,), {}))
    out = verify_pair(good)
    assert out.verdict.ok, out.verdict.failed
    same = dataclasses.replace(good, negative=Context(image_path=_png(tmp_path / "c.png", circles=3)))
    assert _checks(verify_pair(same))["identical"] == (False, "the two image files have identical bytes")
    resized = dataclasses.replace(good, negative=Context(image_path=_png(tmp_path / "d.png", size=(80, 48), circles=2)))
    passed, detail = _checks(verify_pair(resized))["formatting"]
    assert not passed and "(64, 48)" in detail and "(80, 48)" in detail
    jpeg = dataclasses.replace(good, negative=Context(image_path=_png(tmp_path / "e.jpg", circles=2, fmt="JPEG")))
    assert not _checks(verify_pair(jpeg))["formatting"][0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert not _checks(verify_pair(dataclasses.replace(good, negative=Context(image_path=str(broken)))))["formatting"][0]
    agree = dataclasses.replace(good, negative=dataclasses.replace(good.negative, supported_answer="3"))
    assert not _checks(verify_pair(agree))["answer_support"][0]


def test_judge_hook_is_recorded_and_only_asked_when_rules_pass():
    asked = []

    def judge(p):
        asked.append(p.id)
        return JudgeVerdict(False, "C- also shows the failing test")

    good, bad = make_pair(), make_pair(neg=make_traj(flipped=True, resolved=True))
    out = verify_pair(good, judge=judge)
    assert not out.verdict.ok and out.verdict.failed[0].name == "judge" and out.verdict.failed[0].detail == "C- also shows the failing test"
    verify_pair(bad, judge=judge)
    assert asked == [good.id]
    verify_pair(bad, VerifyConfig(judge_after_failure=True), judge=judge)
    assert asked == [good.id, bad.id]
    assert verify_pair(good, judge=lambda p: JudgeVerdict(True, "fine")).verdict.ok
    assert verify_pair(good, judge=lambda p: True).verdict.ok

    def crashing(p):
        raise ConnectionResetError("peer went away")

    assert _checks(verify_pair(good, judge=crashing))["judge"] == (False, "judge raised ConnectionResetError: peer went away")

    def strict(p):
        raise MiningError("judge down")

    with pytest.raises(MiningError):
        verify_pair(good, judge=strict)
    assert "judge" not in _checks(verify_pair(good, VerifyConfig(disabled_checks=("judge",)), judge=judge))


def test_verify_pairs_filters_and_disabled_checks_are_skipped():
    good, bad = make_pair(), make_pair(neg=make_traj(flipped=True, resolved=True))
    assert [p.id for p in verify_pairs([good, bad], only_ok=True)] == [good.id]
    assert len(list(verify_pairs([good, bad]))) == 2
    out = verify_pair(bad, VerifyConfig(disabled_checks=("answer_support",)))
    assert out.verdict.ok and "answer_support" not in _checks(out)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_length_ratio": 0.9}, r"VerifyConfig.max_length_ratio=0.9: use a number >= 1.0"),
        ({"max_length_ratio": "1.5"}, r"VerifyConfig.max_length_ratio='1.5'"),
        ({"max_leaked_tokens": -1}, r"VerifyConfig.max_leaked_tokens=-1: use an integer >= 0"),
        ({"leak_min_token_len": 0}, r"leak_min_token_len=0: use an integer >= 1"),
        ({"mask_count_tolerance": 1.5}, r"mask_count_tolerance=1.5"),
        ({"allow_undeclared_differences": "yes"}, r"allow_undeclared_differences='yes': use true or false"),
        ({"disabled_checks": ("lenght_ratio",)}, r"unknown check 'lenght_ratio' \(did you mean 'length_ratio'\?\)"),
        ({"disabled_checks": "judge"}, r"disabled_checks='judge': use a list"),
    ],
)
def test_config_is_validated_with_a_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VerifyConfig(**kwargs)


def test_config_from_dict():
    cfg = VerifyConfig.from_dict({"max_length_ratio": 1.5, "disabled_checks": ["judge"]})
    assert cfg.max_length_ratio == 1.5 and cfg.disabled_checks == ("judge",)
    with pytest.raises(ConfigError, match=r"unknown field 'max_lenght_ratio' \(did you mean 'max_length_ratio'\?\)"):
        VerifyConfig.from_dict({"max_lenght_ratio": 1.5})
