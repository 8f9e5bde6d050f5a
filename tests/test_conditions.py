"""Conditions and flips on real source: the Python stdlib's bisect.py and textwrap.py."""

from __future__ import annotations

import ast
import bisect
import itertools
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from contextrl.conditions import (
    OPERATORS,
    Mutation,
    all_flips,
    definitions,
    enclosing_definitions,
    find_conditions,
    flips,
    unified_diff,
)

BISECT = Path(bisect.__file__).read_text(encoding="utf-8")
TEXTWRAP = Path(textwrap.__file__).read_text(encoding="utf-8")


def _find(conds, text, enclosing=None):
    hits = [c for c in conds if c.text == text and (enclosing is None or c.enclosing == enclosing)]
    assert hits, f"condition {text!r} in {enclosing!r} not found; have {[c.text for c in conds][:40]}"
    return hits[0]


def test_bisect_conditions_found_with_context_and_enclosing_function():
    conds = find_conditions(BISECT, "bisect.py")
    lo = _find(conds, "lo < 0", "bisect_right")
    assert (lo.kind, lo.node_type, lo.context) == ("comparison", "comparison_operator", "if")
    assert [o.text for o in lo.operators] == ["<"]
    assert BISECT.encode()[lo.start_byte:lo.end_byte].decode() == "lo < 0"
    assert BISECT.splitlines()[lo.start_line - 1].strip() == "if lo < 0:"
    loop = _find(conds, "lo < hi", "bisect_left")
    assert loop.context == "while"
    ident = _find(conds, "hi is None", "bisect_left")
    assert [o.text for o in ident.operators] == ["is"]
    # each `if` test that is a comparison appears once, not twice
    assert len({(c.start_byte, c.end_byte) for c in conds}) == len(conds)


def test_textwrap_booleans_nots_tests_and_nesting():
    conds = find_conditions(TEXTWRAP, "textwrap.py")
    kinds = {c.kind for c in conds}
    contexts = {c.context for c in conds}
    assert kinds == {"comparison", "boolean", "not", "test"}
    assert {"if", "elif", "while", "conditional", "comprehension", "expression"} <= contexts
    width = _find(conds, "self.width <= 0", "TextWrapper._wrap_chunks")
    assert width.context == "if"
    chunks = [c for c in conds if c.text == "chunks" and c.context == "while"]
    assert chunks and chunks[0].kind == "test" and chunks[0].node_type == "identifier"
    nl = _find(conds, "not line", "dedent")
    assert nl.kind == "not" and nl.operands[0].text == "line"
    disj = _find(conds, "not line or line.startswith(margin)", "dedent")
    assert disj.kind == "boolean" and disj.operators[0].text == "or"
    multi = [c for c in conds if c.kind == "boolean" and c.start_line != c.end_line]
    assert multi, "multi-line boolean conditions (inside parentheses) must be found"


def test_find_conditions_is_deterministic_and_sorted():
    a = find_conditions(TEXTWRAP, "textwrap.py")
    b = find_conditions(TEXTWRAP.encode(), "textwrap.py")
    assert a == b
    keys = [(c.start_byte, -c.end_byte) for c in a]
    assert keys == sorted(keys)


@pytest.mark.parametrize("source,name", [(BISECT, "bisect.py"), (TEXTWRAP, "textwrap.py")])
def test_every_flip_parses_differs_and_reverts(source, name):
    muts = all_flips(source, name)
    assert len(muts) > 10
    assert {m.operator for m in muts} <= set(OPERATORS)
    for m in muts:
        mutated = m.apply(source)
        assert mutated != source
        ast.parse(mutated)  # valid Python
        assert m.revert(mutated) == source
        assert m.line >= 1


def test_flip_operators_on_a_comparison():
    cond = _find(find_conditions(BISECT, "bisect.py"), "lo < 0", "bisect_right")
    by_op = {m.operator: m.replacement for m in flips(cond)}
    assert by_op == {"negate": "not (lo < 0)", "boundary_shift": "lo <= 0", "swap_direction": "lo > 0"}
    ident = _find(find_conditions(BISECT), "hi is None", "bisect_right")
    assert {m.operator: m.replacement for m in flips(ident)}["swap_identity"] == "hi is not None"


def test_flip_operators_on_textwrap_not_boolean_and_membership():
    conds = find_conditions(TEXTWRAP, "textwrap.py")
    nl = _find(conds, "not line", "dedent")
    assert [(m.operator, m.replacement) for m in flips(nl)] == [("remove_not", "line")]
    disj = _find(conds, "not line or line.startswith(margin)", "dedent")
    assert ("swap_boolean", "not line and line.startswith(margin)") in [(m.operator, m.replacement) for m in flips(disj)]
    src = "def f(x, xs):\n    return x in xs or x not in {1}\n"
    reps = {m.replacement for m in all_flips(src)}
    assert {"x not in xs", "x in {1}"} <= reps


@pytest.mark.parametrize("expr", ["a or b and c or d", "a and b and c", "(a or b) and c", "a and (b or c) and d",
                                  "not a and b or c", "a or b or c and d"])
def test_swap_boolean_keeps_grouping(expr):
    """Swapping one and/or changes exactly that operator: same truth table as the fully
    parenthesised intended edit `((L) new (R))` at the node's span."""
    src = f"def f(a, b, c, d):\n    return {expr}\n"
    seen = 0
    for cond in find_conditions(src):
        for m in flips(cond):
            if m.operator != "swap_boolean":
                continue
            seen += 1
            left, right = cond.operands
            new = "or" if cond.operators[0].text == "and" else "and"
            want = src.encode()[:cond.start_byte].decode() + f"(({left.text}) {new} ({right.text}))" + \
                src.encode()[cond.end_byte:].decode()
            got_f, want_f = {}, {}
            exec(m.apply(src), got_f)
            exec(want, want_f)
            for vals in itertools.product([False, True], repeat=4):
                assert got_f["f"](*vals) == want_f["f"](*vals), (expr, cond.text, m.replacement, vals)
    assert seen == expr.count(" and ") + expr.count(" or ")


def test_byte_offsets_with_non_ascii_text():
    src = 'def f(x):\n    s = "héllo ✓"\n    if x < len(s):\n        return s\n'
    cond = _find(find_conditions(src), "x < len(s)")
    assert src.encode()[cond.start_byte:cond.end_byte] == b"x < len(s)"
    m = next(m for m in flips(cond) if m.operator == "boundary_shift")
    assert "if x <= len(s):" in m.apply(src)


def test_apply_refuses_a_source_that_does_not_match():
    m = next(iter(all_flips(BISECT, "bisect.py")))
    with pytest.raises(ValueError, match="does not match"):
        m.apply("x = 1\n" + BISECT)
    assert Mutation.from_dict(m.to_dict()) == m


def test_syntax_errors_are_skipped_not_raised():
    conds = find_conditions("def f(:\n    if a < b:\n        pass\nx = c == d\n")
    assert any(c.text == "c == d" for c in conds)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_diff_applies_with_git_apply_both_ways(tmp_path):
    m = next(m for m in all_flips(BISECT, "bisect.py") if m.operator == "boundary_shift")
    mutated = m.apply(BISECT)
    forward = m.diff(BISECT)
    assert forward.startswith("--- a/bisect.py\n+++ b/bisect.py\n")
    assert m.diff(BISECT, reverse=True) == unified_diff("bisect.py", mutated, BISECT)
    (tmp_path / "bisect.py").write_text(mutated, encoding="utf-8")
    (tmp_path / "fix.patch").write_text(m.diff(BISECT, reverse=True), encoding="utf-8")
    subprocess.run(["git", "apply", "fix.patch"], cwd=tmp_path, check=True)
    assert (tmp_path / "bisect.py").read_text(encoding="utf-8") == BISECT


def test_unified_diff_marks_missing_final_newline():
    d = unified_diff("x.py", "a = 1\nb = 2", "a = 1\nb = 3")
    assert d.endswith("+b = 3\n\\ No newline at end of file\n")


def test_enclosing_definitions_on_textwrap():
    defs = {name: (s, e) for s, e, name in definitions(TEXTWRAP)}
    s, e = defs["TextWrapper._wrap_chunks"]
    assert enclosing_definitions(TEXTWRAP, [(s + 5, s + 6)]) == {"TextWrapper._wrap_chunks"}
    d0, _ = defs["dedent"]
    both = enclosing_definitions(TEXTWRAP, [(s + 5, s + 5), (d0 + 3, d0 + 3)])
    assert both == {"TextWrapper._wrap_chunks", "dedent"}
    assert enclosing_definitions(TEXTWRAP, [(1, 3)]) == set()  # module docstring
    cls_start, _ = defs["TextWrapper"]
    assert enclosing_definitions(TEXTWRAP, [(cls_start, cls_start)]) == {"TextWrapper"}
    # a range spanning the end of one method and the start of the next names both
    nxt = min((st for st, _, n in definitions(TEXTWRAP) if st > e and n.startswith("TextWrapper.")))
    assert len(enclosing_definitions(TEXTWRAP, [(e, nxt + 1)])) >= 2


def test_enclosing_definitions_nested_and_decorated():
    src = "import functools\nclass A:\n    @functools.cache\n    def m(self):\n        def inner():\n            return 1\n        return inner\n"
    assert enclosing_definitions(src, [(3, 3)]) == {"A.m"}
    assert enclosing_definitions(src, [(6, 6)]) == {"A.m.inner"}
    assert enclosing_definitions(src, [(7, 7)]) == {"A.m"}
