"""Shared test data: a small real-looking branched pair of SWE trajectories around `scale()`."""

from __future__ import annotations

from contextrl.miner.pair import Context, ContrastivePair, Difference, Provenance, text_difference
from contextrl.trajectory import Step, Trajectory

TEST_NAMES = [
    "test_area_square", "test_area_triangle", "test_perimeter", "test_translate", "test_translate_zero",
    "test_rotate_90", "test_rotate_360", "test_scale_one", "test_scale_two", "test_scale_zero",
    "test_scale_negative_raises", "test_centroid",
]
PATCH = '''diff --git a/geom/shapes.py b/geom/shapes.py
--- a/geom/shapes.py
+++ b/geom/shapes.py
@@ -11,6 +11,10 @@ def translate(shape, dx, dy):
 def scale(shape, factor):
     """Return a copy of `shape` scaled by `factor`."""
-    if factor <= 0:
-        raise ValueError("factor must be positive")
+    _check_factor(factor)
     return Shape([p * factor for p in shape.points])
+
+def _check_factor(factor):
+    if factor < 0:
+        raise ValueError("factor must be non-negative")
'''
QUERY = "scale(square, 0) raises ValueError('factor must be positive'); scaling by zero should collapse the shape to a point."


def _view(op: str) -> str:
    return (
        "12:def scale(shape, factor):\n"
        '13:    """Return a copy of `shape` scaled by `factor`."""\n'
        f"14:    if factor {op} 0:\n"
        '15:        raise ValueError("factor must be positive")\n'
        "16:    return Shape([p * factor for p in shape.points])"
    )


def _pytest(failing: tuple[str, ...]) -> str:
    lines = ["============================= test session starts ==============================",
             "collected 12 items", "", "tests/test_shapes.py " + "".join("F" if t in failing else "." for t in TEST_NAMES),
             "", "=========================== short test summary info ============================"]
    for t in TEST_NAMES:
        lines.append(f"{'FAILED' if t in failing else 'PASSED'} tests/test_shapes.py::{t}")
    n_bad = len(failing)
    lines.append(f"{str(n_bad) + ' failed, ' if n_bad else ''}{12 - n_bad} passed in 0.{11 + n_bad}s")
    return "\n".join(lines)


def make_traj(flipped: bool = False, resolved: bool | None = None, reward: float | None = None, extra: tuple = (), mask_count: int = 1) -> Trajectory:
    """The original trajectory (bug `factor <= 0`) or its counterfactual branch (`factor < 0`)."""
    op = "<" if flipped else "<="
    before = () if flipped else ("test_scale_zero",)
    after = ("test_scale_negative_raises",) if flipped else ()
    steps = [
        Step(0, "bash", {"command": "grep -n 'def scale' -A 4 geom/shapes.py"}, _view(op), exit_code=0,
             thought="Let me look at scale() first."),
        Step(1, "bash", {"command": "python -m pytest tests/test_shapes.py -q -rA"}, _pytest(before), exit_code=1 if before else 0),
    ]
    for k in range(mask_count):
        steps.append(Step(len(steps), "edit", {
            "command": "str_replace", "path": "geom/shapes.py",
            "old_str": '    if factor <= 0:\n        raise ValueError("factor must be positive")',
            "new_str": "    _check_factor(factor)"},
            "The file geom/shapes.py has been edited. Here's the result of running `cat -n` on a snippet of geom/shapes.py:\n"
            "    12\tdef scale(shape, factor):\n    14\t    _check_factor(factor)\nReview the changes and make sure they are as expected.",
            thought="Move the check into a helper that allows zero."))
    steps.append(Step(len(steps), "bash", {"command": (
        "cat >> geom/shapes.py << 'EOF'\n\ndef _check_factor(factor):\n    if factor < 0:\n"
        "        raise ValueError(\"factor must be non-negative\")\nEOF")}, "", exit_code=0))
    steps.extend(Step(len(steps) + i, s.tool, s.args, s.observation, exit_code=s.exit_code) for i, s in enumerate(extra))
    steps.append(Step(len(steps), "bash", {"command": "python -m pytest tests/test_shapes.py -q -rA"}, _pytest(after), exit_code=1 if after else 0))
    steps.append(Step(len(steps), "submit", {}, "Submitted."))
    if resolved is None:
        resolved = not flipped
    return Trajectory(
        task_id="acme__geom-412", steps=tuple(steps), resolved=resolved, reward=(1.0 if resolved else 0.0) if reward is None else reward,
        outcome="submitted", diff=PATCH, problem_statement=QUERY, episode_id=f"ep-{'b' if flipped else 'a'}", source="contextrl/swe-lite",
        metadata={"repo": "acme/geom", "base_commit": "3f2c9a1"},
    )


def make_pair(pos: Trajectory | None = None, neg: Trajectory | None = None, mask_pos: bool = True, mask_neg: bool = True, **kw) -> ContrastivePair:
    pos = pos or make_traj()
    neg = neg or make_traj(flipped=True)
    cp, cn = Context.from_trajectory(pos, mask_patches=mask_pos), Context.from_trajectory(neg, mask_patches=mask_neg)
    kw.setdefault("difference", text_difference(cp.text, cn.text))
    kw.setdefault("provenance", Provenance("branch", (pos.episode_id, neg.episode_id), {"condition": "factor <= 0", "line": 14}))
    return ContrastivePair("trajectory", QUERY, PATCH, cp, cn, **kw)
