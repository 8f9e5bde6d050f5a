"""Tests for contrastive pairs: records, JSONL I/O, datasets export, rendering, prompts, truncation."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

from contextrl.errors import MiningError
from contextrl.miner.pair import (
    Check, Context, ContrastivePair, Difference, Provenance, Verdict, dedupe_pairs, pairs_to_dataset,
    read_pairs, split_lines, text_difference, write_pairs,
)
from contextrl.miner.render import (
    MASK, approx_token_count, elision_marker, mask_command, render_trajectory, selection_prompt,
)
from contextrl.trajectory import Step, Trajectory


# ---- small real-looking SWE trajectories: a branched pair around `scale()` ----
from pair_data import PATCH, QUERY, TEST_NAMES, _pytest, _view, make_pair, make_traj  # noqa: F401



# --------------------------------------------------------------------------- the record


def test_id_is_a_content_hash_and_duplicates_collapse(tmp_path):
    a = make_pair()
    b = make_pair(provenance=Provenance("other_miner", ("x",), {}))  # same content, other provenance
    assert a.id == b.id and len(a.id) == 16 and hash(a) == hash(b)
    c = make_pair(pos=make_traj(), neg=make_traj(flipped=True, extra=(Step(0, "bash", {"command": "ls"}, "geom tests"),)))
    assert c.id != a.id
    d = ContrastivePair("trajectory", QUERY + "!", PATCH, a.positive, a.negative, a.difference)
    assert d.id != a.id
    assert [p.id for p in dedupe_pairs([a, b, c, a])] == [a.id, c.id]
    assert write_pairs(tmp_path / "p.jsonl", [a, b, c]) == 2
    assert write_pairs(tmp_path / "all.jsonl", [a, b, c], dedupe=False) == 3


def test_validation_rejects_malformed_pairs():
    good = make_pair()
    with pytest.raises(MiningError, match="kind"):
        ContrastivePair("video", "q", "a", good.positive, good.negative)
    with pytest.raises(MiningError, match="negative: a trajectory pair needs context text"):
        ContrastivePair("trajectory", "q", "a", good.positive, Context(image_path="x.png"))
    with pytest.raises(MiningError, match="image_path"):
        ContrastivePair("image", "q", "a", Context(image_path="a.png"), Context(text="x"))
    n = len(split_lines(good.positive.text))
    with pytest.raises(MiningError, match=r"difference.positive: line span \(0, %d\)" % (n + 5)):
        ContrastivePair("trajectory", "q", "a", good.positive, good.negative, Difference(((0, n + 5),), ()))
    with pytest.raises(MiningError, match="4 integers"):
        ContrastivePair("image", "q", "a", Context(image_path="a.png"), Context(image_path="b.png"), Difference(((1, 2),), ()))


def test_text_difference_finds_the_flipped_condition():
    pair = make_pair()
    pos_lines, neg_lines = split_lines(pair.positive.text), split_lines(pair.negative.text)
    hunks_p = ["\n".join(pos_lines[s:e]) for s, e in pair.difference.positive]
    hunks_n = ["\n".join(neg_lines[s:e]) for s, e in pair.difference.negative]
    assert any("if factor <= 0:" in h for h in hunks_p)
    assert any("if factor < 0:" in h for h in hunks_n)
    # lines outside the difference are the same in both, in order
    inside_p = {i for s, e in pair.difference.positive for i in range(s, e)}
    inside_n = {j for s, e in pair.difference.negative for j in range(s, e)}
    assert [l for i, l in enumerate(pos_lines) if i not in inside_p] == [l for j, l in enumerate(neg_lines) if j not in inside_n]
    # whitespace-only hunks are formatting, not evidence
    d = text_difference("a\nb  \nc\nx = 1\n", "a\nb\nc\nx = 2\n")
    assert d == Difference(((3, 4),), ((3, 4),))
    assert text_difference("a\nb  \n", "a\nb\n", include_whitespace_only=True) == Difference(((1, 2),), ((1, 2),))


# --------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip_keeps_everything(tmp_path):
    verdict = Verdict.from_checks([Check("identical", True, "contexts differ"), Check("masking", False, "1 vs 2")])
    pair = make_pair(verdict=verdict)
    image = ContrastivePair("image", "What colour is the shape?", "red", Context(image_path="imgs/a.png"),
                            Context(image_path="imgs/b.png", supported_answer="blue"),
                            Difference(((4, 4, 20, 20),), ((4, 4, 20, 20),)), Provenance("edit", ("imgs/a.png",), {"editor": "procedural"}))
    path = tmp_path / "out" / "pairs.jsonl"
    assert write_pairs(path, [pair, image]) == 2
    back = list(read_pairs(path))
    assert back == [pair, image]
    assert back[0].id == pair.id and back[0].positive.trajectory == pair.positive.trajectory
    assert back[0].verdict.failed == (Check("masking", False, "1 vs 2"),)
    assert back[1].negative.supported_answer == "blue" and back[1].provenance.params == {"editor": "procedural"}
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temp file left


def test_write_is_atomic_when_the_source_fails(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, [make_pair()])
    before = path.read_bytes()

    def broken():
        yield make_pair(neg=make_traj(flipped=True, mask_count=2))
        raise RuntimeError("miner crashed")

    with pytest.raises(RuntimeError):
        write_pairs(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: "{not json", r":2: not valid JSON"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "query"}), r":2: field 'query': missing"),
        (lambda d: json.dumps({**d, "answer": 7}), r":2: field 'answer': expected str, got int"),
        (lambda d: json.dumps({**d, "positive": "ctx"}), r":2: field 'positive': expected a JSON object"),
        (lambda d: json.dumps({**d, "negative": {**d["negative"], "text": 3}}), r":2: field 'negative.text': expected str or null"),
        (lambda d: json.dumps({**d, "difference": {"positive": [[0, "x"]]}}), r":2: field 'difference.positive\[0\]'"),
        (lambda d: json.dumps({**d, "verdict": {"ok": True, "reasons": [["x", "yes", "d"]]}}), r":2: field 'verdict.reasons\[0\]'"),
        (lambda d: json.dumps({**d, "provenance": {"sources": [1]}}), r":2: field 'provenance.sources\[0\]'"),
        (lambda d: json.dumps({**d, "kind": "audio"}), r":2: field 'kind'"),
        (lambda d: json.dumps({**d, "positive": {**d["positive"], "trajectory": {"steps": []}}}), r":2: field 'positive.trajectory'.*task_id"),
    ],
)
def test_malformed_jsonl_names_file_line_and_field(tmp_path, mutate, expected):
    good = make_pair().to_dict()
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n" + mutate(good) + "\n", encoding="utf-8")
    it = read_pairs(path)
    assert next(it).query == QUERY  # the good first line is read before the error
    with pytest.raises(MiningError, match=re.escape(str(path)) + expected):
        next(it)


def test_pairs_to_dataset_is_flat_and_typed():
    pair = make_pair(verdict=Verdict.from_checks([Check("identical", True, "ok")]))
    unverified = make_pair(neg=make_traj(flipped=True, mask_count=2))
    ds = pairs_to_dataset([pair, unverified])
    assert ds.num_rows == 2
    row = ds[0]
    assert row["id"] == pair.id and row["kind"] == "trajectory" and row["positive_text"] == pair.positive.text
    assert row["difference_positive"] == [list(s) for s in pair.difference.positive]
    assert row["verified"] is True and row["verdict_ok"] is True and ds[1]["verified"] is False
    assert json.loads(row["params"]) == {"condition": "factor <= 0", "line": 14}
    assert row["positive_image"] is None
    assert pairs_to_dataset([]).num_rows == 0


# --------------------------------------------------------------------------- rendering


def test_render_masks_written_content_and_keeps_evidence():
    traj = make_traj()
    text = render_trajectory(traj)
    assert "_check_factor" not in text  # neither in the edit args, the edit's echo, nor the heredoc
    assert "old_str=" + MASK in text and "new_str=" + MASK in text
    assert "path=geom/shapes.py" in text
    assert "cat >> geom/shapes.py << 'EOF'\n" + MASK + "\nEOF" in text
    assert "The file geom/shapes.py has been edited." in text  # the status line of the edit stays
    assert "14:    if factor <= 0:" in text  # file views stay
    assert "FAILED tests/test_shapes.py::test_scale_zero" in text  # test output stays
    assert "Thought: Let me look at scale() first." in text
    assert "resolved" not in text.lower() and "reward" not in text.lower()  # no outcome cues
    assert text.count(MASK) == 4
    raw = render_trajectory(traj, mask_patches=False)
    assert MASK not in raw and "_check_factor(factor)" in raw


def test_render_keeps_failed_edit_output_and_views_through_the_edit_tool():
    steps = (
        Step(0, "edit", {"command": "view", "path": "a.py"}, "     1\tx = 1\n     2\ty = 2"),
        Step(1, "edit", {"command": "str_replace", "path": "a.py", "old_str": "z = 3", "new_str": "z = 4"},
             "ERROR: No replacement was performed, old_str `z = 3` did not appear verbatim in a.py.\nTry again."),
        Step(2, "edit", {"command": "create", "path": "b.py", "file_text": "print('hi')\n"}, "File created successfully at: b.py"),
        Step(3, "invalid", {}, "parse: no action", raw_action="```bash\necho 'x = 1' > c.py\n```", error="parse: no code block"),
    )
    text = render_trajectory(Trajectory("t", steps))
    assert "     2\ty = 2" in text and "old_str `z = 3` did not appear verbatim in a.py.\nTry again." in text
    assert "file_text=" + MASK in text and "print('hi')" not in text
    assert "echo " + MASK + " > c.py" in text and "Error: parse: no code block" in text


@pytest.mark.parametrize(
    "command, expected",
    [
        ("sed -i 's/factor <= 0/factor < 0/' geom/shapes.py && pytest -q", "sed -i " + MASK + " geom/shapes.py && pytest -q"),
        ("sed -i -e 's/a;b/c/' -e '2d' f.py; cat f.py", f"sed -i -e {MASK} -e {MASK} f.py; cat f.py"),
        ("sed -n '1,20p' f.py", "sed -n '1,20p' f.py"),
        ("perl -pi -e 's/foo/bar/' a.pl", f"perl -pi -e {MASK} a.pl"),
        ("echo 'return x + 1' >> src/mod.py", f"echo {MASK} >> src/mod.py"),
        ("echo hello 2>&1 | grep h", "echo hello 2>&1 | grep h"),
        ("python -c \"open('a','w').write('x')\"", f"python -c {MASK}"),
        ("git apply <<'PATCH'\ndiff --git a/x b/x\n+new\nPATCH\ngit diff", f"git apply <<'PATCH'\n{MASK}\nPATCH\ngit diff"),
        ("python3 - <<EOF\np='a.py'\nopen(p,'w').write('y')\nEOF", f"python3 - <<EOF\n{MASK}\nEOF"),
        ("python3 - <<EOF\nimport sys\nprint(sys.version)\nEOF", "python3 - <<EOF\nimport sys\nprint(sys.version)\nEOF"),
        ("cat <<-END | grep x\n\tx\n\tEND", "cat <<-END | grep x\n\tx\n\tEND"),
    ],
)
def test_mask_command_masks_writes_and_keeps_shape(command, expected):
    assert mask_command(command) == expected


# --------------------------------------------------------------------------- selection prompts


def _context_block(text: str, letter: str) -> str:
    m = re.search(rf"Context {letter}:\n(.*?)\n\n(?:Context B:|Which context)", text, re.S)
    assert m, text
    return m.group(1)


def test_selection_prompt_records_which_option_is_positive():
    pair = make_pair()
    sp = selection_prompt(pair, 7)
    assert sp.pair_id == pair.id and sp.seed == 7 and sp.positive_option in ("A", "B")
    assert _context_block(sp.text, sp.positive_option) == pair.positive.text.rstrip("\n")
    assert _context_block(sp.text, sp.negative_option) == pair.negative.text.rstrip("\n")
    assert sp.text.startswith("You are given a question") and f"Question:\n{QUERY}" in sp.text and f"Answer:\n{PATCH}" in sp.text
    assert sp.text.endswith("Answer with A or B.")
    assert sp.messages == ({"role": "user", "content": sp.text},)
    assert selection_prompt(pair, 7) == sp  # deterministic per seed


def test_option_order_is_randomised_per_instance():
    pairs = [make_pair(neg=make_traj(flipped=True, extra=(Step(0, "bash", {"command": f"ls {i}"}, "x"),) * (i % 3))) for i in range(3)]
    pairs += [ContrastivePair("trajectory", f"q{i}", "a", Context(text=f"x\n{i}\n"), Context(text=f"x\n{i + 1000}\n")) for i in range(40)]
    letters = [selection_prompt(p, 0).positive_option for p in pairs]
    assert 10 < letters.count("A") < 33  # both orders occur for a fixed seed
    seeds = {selection_prompt(pairs[0], s).positive_option for s in range(20)}
    assert seeds == {"A", "B"}
    rng = random.Random(3)
    drawn = [selection_prompt(pairs[5], rng).positive_option for _ in range(30)]
    assert set(drawn) == {"A", "B"} and selection_prompt(pairs[5], random.Random(3)).seed is None


def test_image_prompt_puts_images_in_option_order():
    pair = ContrastivePair("image", "How many circles?", "3", Context(image_path="a.png"), Context(image_path="b.png"))
    for seed in range(6):
        sp = selection_prompt(pair, seed)
        assert sp.images[("A", "B").index(sp.positive_option)] == "a.png"
        parts = sp.messages[0]["content"]
        assert [p["image"] for p in parts if p["type"] == "image"] == list(sp.images)
        assert "Answer with A or B." in parts[-1]["text"] and "How many circles?" in parts[0]["text"]


# --------------------------------------------------------------------------- truncation


def _long_pair() -> ContrastivePair:
    noise = tuple(Step(0, "bash", {"command": f"sed -n '{i},{i + 5}p' geom/io.py"}, "\n".join(f"{i + k}: load_{i}_{k}(path)" for k in range(6)), exit_code=0) for i in range(30))
    return make_pair(pos=make_traj(extra=noise), neg=make_traj(flipped=True, extra=noise))


def _assert_difference_intact(pair: ContrastivePair, sp) -> None:
    a = _context_block(sp.text, sp.positive_option)
    b = _context_block(sp.text, sp.negative_option)
    for ctx, rendered, spans in ((pair.positive, a, pair.difference.positive), (pair.negative, b, pair.difference.negative)):
        lines = split_lines(ctx.text)
        for s, e in spans:
            assert "\n".join(lines[s:e]) in rendered
    assert "14:    if factor <= 0:" in a and "14:    if factor < 0:" in b


def test_truncation_never_cuts_the_difference_and_is_symmetric():
    pair = _long_pair()
    full = selection_prompt(pair, 1)
    budget = approx_token_count(full.text) // 3
    sp = selection_prompt(pair, 1, max_tokens=budget)
    assert sp.fits and approx_token_count(sp.text) <= budget
    assert sp.elided[0] > 100 and sp.elided[0] == sp.elided[1]  # the shared lines go from both sides
    _assert_difference_intact(pair, sp)
    a, b = _context_block(sp.text, sp.positive_option), _context_block(sp.text, sp.negative_option)
    markers = re.compile(r"\[\.\.\. \d+ lines? elided \.\.\.\]")
    assert markers.findall(a) == markers.findall(b) and markers.findall(a)
    # far lines go first: the noise steps in the middle are elided, the lines next to the difference stay
    assert "load_15_3" not in a and "Let me look at scale() first." in a


def test_truncation_with_a_budget_below_the_difference_keeps_it_whole():
    pair = _long_pair()
    sp = selection_prompt(pair, 2, max_tokens=50)
    assert not sp.fits
    _assert_difference_intact(pair, sp)
    assert elision_marker(1) == "[... 1 line elided ...]"


def test_truncation_counts_with_a_huggingface_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pair = _long_pair()
    raw = Tokenizer(models.BPE(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator([pair.positive.text, pair.negative.text, QUERY, PATCH], trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")

    def count(t: str) -> int:
        return len(tok(t).input_ids)

    full = count(selection_prompt(pair, 3).text)
    sp = selection_prompt(pair, 3, max_tokens=full // 2, count_tokens=count)
    assert sp.fits and count(sp.text) <= full // 2 and sp.elided[0] > 0
    _assert_difference_intact(pair, sp)
    # nothing is trimmed when the prompt already fits
    assert selection_prompt(pair, 3, max_tokens=full, count_tokens=count).elided == (0, 0)


def test_truncation_keeps_a_declared_region_wider_than_the_textual_diff():
    base = _long_pair()
    lines = split_lines(base.positive.text)
    start = lines.index("Thought: Let me look at scale() first.")
    span = (start, start + 8)  # thought, action, observation header and the whole 5-line file view
    wide = dataclasses.replace(base, difference=Difference((span,) + base.difference.positive[1:], (span,) + base.difference.negative[1:]))
    full = approx_token_count(selection_prompt(wide, 4).text)
    sp = selection_prompt(wide, 4, max_tokens=full // 4)
    assert sp.fits and sp.elided[0] > 0
    a = _context_block(sp.text, sp.positive_option)
    assert "\n".join(lines[span[0]:span[1]]) in a
    assert "16:    return Shape([p * factor for p in shape.points])" in _context_block(sp.text, sp.negative_option)
    tiny = selection_prompt(wide, 4, max_tokens=10)  # everything else goes; the declared block stays whole
    assert not tiny.fits and "\n".join(lines[span[0]:span[1]]) in _context_block(tiny.text, tiny.positive_option)


def test_line_opcodes_is_a_valid_alignment_and_matches_difflib_on_near_identical_texts():
    import difflib
    import random

    from contextrl.miner.pair import line_opcodes, split_lines

    rng = random.Random(7)
    for trial in range(40):
        a = [f"line {rng.randrange(12)}" for _ in range(rng.randrange(0, 30))]
        b = list(a)
        for _ in range(rng.randrange(0, 4)):  # a few local edits
            k = rng.randrange(len(b) + 1)
            if b and rng.random() < 0.5:
                b[min(k, len(b) - 1)] = f"changed {trial}"
            else:
                b.insert(k, f"inserted {trial}")
        ta, tb = "\n".join(a) + "\n", "\n".join(b) + "\n"
        ops = line_opcodes(ta, tb)
        la, lb = split_lines(ta), split_lines(tb)
        # contiguous, covers both texts, and rebuilding b from a by the opcodes gives b
        assert ops[0][1] == 0 and ops[0][3] == 0 if ops else (not la and not lb)
        rebuilt, pi, pj = [], 0, 0
        for op, i1, i2, j1, j2 in ops:
            assert (i1, j1) == (pi, pj)
            if op == "equal":
                assert la[i1:i2] == lb[j1:j2]
            rebuilt += lb[j1:j2]
            pi, pj = i2, j2
        assert (pi, pj) == (len(la), len(lb)) and rebuilt == lb
        assert not any(x[0] == y[0] == "equal" for x, y in zip(ops, ops[1:])), "adjacent equal blocks are merged"
        if len(set(a)) == len(a):  # unique lines: the alignment is unambiguous, so it is difflib's
            assert list(ops) == difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes()
