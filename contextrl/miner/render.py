"""Rendering: trajectories as masked text, pairs as A/B selection prompts.

- `render_trajectory` writes a trajectory as line-oriented text. With `mask_patches`, the
  content an agent *wrote* (edit-tool payloads, heredoc bodies that create files or apply
  patches, `sed -i`/`perl -pi` scripts, `echo ... > file`, `python -c` writers) becomes
  `<PATCH_MASKED>`; the command shape, file views, test output, errors and reasoning stay.
  Outcome, reward and resolution are never rendered: they would be shortcut cues.
- `selection_prompt` builds the context-selection prompt of the method (Q, A, "Context A",
  "Context B", "Answer with A or B"), with the option order drawn per instance from a seed
  and recorded, and truncation to a token budget that never cuts the decisive difference:
  lines far from the difference go first, symmetrically in both contexts, and each run of
  removed lines leaves an elision marker.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from contextrl.miner.pair import ContrastivePair, Difference, line_opcodes, split_lines, text_difference
from contextrl.trajectory import Step, Trajectory

MASK = "<PATCH_MASKED>"
EDIT_CONTENT_KEYS = frozenset(
    {"old_str", "new_str", "file_text", "content", "new_content", "old_string", "new_string", "insert_text",
     "text", "patch", "diff", "replacement", "search", "replace", "code", "edits"}
)
"""Edit-tool argument names whose values are written content (masked)."""
INSTRUCTION = "Which context supports the answer? Answer with A or B."
TokenCounter = Callable[[str], int]


def approx_token_count(text: str) -> int:
    """Cheap token estimate: each whitespace-separated word costs ceil(len/4) tokens."""
    return sum((len(w) + 3) // 4 for w in text.split())


# --------------------------------------------------------------------------- masking

_HEREDOC_RE = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_TOKEN_RE = re.compile(
    r"""(?P<sep>&&|\|\||[;|&])
      |(?P<redir>\d*>>?(?:&\d*)?|<)
      |(?P<word>(?:'[^']*'?|"(?:[^"\\]|\\.)*"?|\\.|[^\s'"\\;&|<>])+)""",
    re.X,
)
_WRITES_RE = re.compile(r"(?<![0-9&<])>>?\s*(?!&|/dev/null)\S|\btee\b|\bgit\s+apply\b|\bpatch\b|\bapply_?patch\b")
_PY_WRITES_RE = re.compile(r"\.write(?:_text|_bytes|lines)?\s*\(")
_PYTHON_RE = re.compile(r"^(?:.*/)?python(?:\d+(?:\.\d+)?)?$")


def _writes_file(line: str, body: list[str]) -> bool:
    if _WRITES_RE.search(line):
        return True
    words = line.split()
    return bool(words) and _PYTHON_RE.match(words[0]) is not None and any(_PY_WRITES_RE.search(b) for b in body)


def _mask_line(line: str) -> str:
    """Mask written content inside one shell line (sed/perl scripts, echo > file, python -c)."""
    toks = [(m.lastgroup, m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(line)]
    cmds, cur = [], []
    for t in toks:
        if t[0] == "sep":
            cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    cmds.append(cur)
    spans: list[tuple[int, int]] = []
    for cmd in cmds:
        words = [t for t in cmd if t[0] == "word"]
        if not words:
            continue
        prog = words[0][3].rsplit("/", 1)[-1]
        if prog in ("sed", "perl") and any(re.match(r"^-[a-zA-Z]*i|^--in-place", w[3]) for w in words[1:]):
            expect, script_done = False, False
            for w in words[1:]:
                if expect:
                    spans.append((w[1], w[2]))
                    expect, script_done = False, True
                elif w[3] in ("-e", "--expression"):
                    expect = True
                elif w[3].startswith("--expression="):
                    spans.append((w[1] + len("--expression="), w[2]))
                    script_done = True
                elif w[3].startswith("-"):
                    continue
                elif not script_done:
                    spans.append((w[1], w[2]))
                    script_done = True
        elif prog in ("echo", "printf"):
            for k, t in enumerate(cmd):
                if t[0] == "redir" and t[3].lstrip("0123456789").startswith(">") and "&" not in t[3]:
                    target = cmd[k + 1][3] if k + 1 < len(cmd) else ""
                    args = [w for w in cmd[1:k] if w[0] == "word" and not re.fullmatch(r"-[neE]+", w[3])]
                    if args and target != "/dev/null":
                        spans.append((args[0][1], args[-1][2]))
                    break
        elif _PYTHON_RE.match(prog):
            for a, b in zip(words, words[1:]):
                if a[3] == "-c" and _PY_WRITES_RE.search(b[3]):
                    spans.append((b[1], b[2]))
    for start, end in sorted(spans, reverse=True):
        line = line[:start] + MASK + line[end:]
    return line


def mask_command(command: str) -> str:
    """Mask the content a shell command writes, keeping the command's shape.

    Heredoc bodies are masked when their command writes a file or applies a patch
    (`cat > f <<EOF`, `tee`, `git apply`, `patch`, a python script that calls `.write`);
    the heredoc delimiters stay. Inline writers are masked by `_mask_line`.
    """
    lines = command.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(_mask_line(line))
        i += 1
        for h in _HEREDOC_RE.finditer(line):
            strip_tabs, delim = h.group(1) == "-", h.group(3)
            body: list[str] = []
            while i < len(lines) and (lines[i].lstrip("\t") if strip_tabs else lines[i]).rstrip("\r") != delim:
                body.append(lines[i])
                i += 1
            if _writes_file(line, body) and body:
                out.append(MASK)
            else:
                out.extend(body)
            if i < len(lines):
                out.append(lines[i])
                i += 1
    return "\n".join(out)


def _is_edit(step: Step) -> bool:
    return step.tool == "edit" and str(step.args.get("command", "")) != "view"


def _render_args(step: Step, mask: bool) -> list[str]:
    inline: list[str] = []
    blocks: list[str] = []
    for key, value in step.args.items():
        if mask and _is_edit(step) and key in EDIT_CONTENT_KEYS and value not in (None, ""):
            inline.append(f"{key}={MASK}")
            continue
        text = value if isinstance(value, str) else repr(value)
        if "\n" in text:
            if mask and _is_edit(step):
                text = text.split("\n", 1)[0] + "\n" + MASK
            blocks.append(f"{key}:\n{text}")
        else:
            inline.append(f"{key}={text}")
    return [" ".join([f"Action: {step.tool}", *inline]), *blocks]


def render_step(step: Step, mask_patches: bool = True) -> str:
    """One step as text: header, thought, action, observation, error."""
    lines = [f"## Step {step.index}: {step.tool}"]
    if step.thought:
        lines.append(f"Thought: {step.thought}")
    if step.tool == "bash" and isinstance(step.args.get("command"), str):
        cmd = step.args["command"]
        lines.append(f"Action: $ {mask_command(cmd) if mask_patches else cmd}")
    elif step.tool == "invalid":
        raw = step.raw_action or ""
        lines.append(f"Action (unparsed): {mask_command(raw) if mask_patches else raw}")
    else:
        lines.extend(_render_args(step, mask_patches))
    flags = [f"exit {step.exit_code}"] if step.exit_code is not None else []
    flags += ["timed out"] * step.timed_out + ["output truncated"] * step.truncated
    obs = step.observation
    failed = bool(step.error) or (step.exit_code not in (None, 0)) or obs.lstrip().upper().startswith("ERROR")
    if mask_patches and _is_edit(step) and not failed and "\n" in obs.strip():
        obs = obs.strip().split("\n", 1)[0] + "\n" + MASK
    lines.append(f"Observation{' (' + ', '.join(flags) + ')' if flags else ''}:")
    if obs:
        lines.append(obs.rstrip("\n"))
    if step.error:
        lines.append(f"Error: {step.error}")
    return "\n".join(lines)


def render_trajectory(traj: Trajectory, mask_patches: bool = True) -> str:
    """A trajectory as text, steps separated by blank lines; edit payloads masked by default."""
    return "\n\n".join(render_step(s, mask_patches) for s in traj.steps) + ("\n" if traj.steps else "")


# --------------------------------------------------------------------------- truncation


@dataclass(frozen=True)
class FittedContexts:
    """Contexts after truncation: texts, lines elided from each, whether the budget was met."""

    positive: str
    negative: str
    elided: tuple[int, int]
    fits: bool


def elision_marker(n: int) -> str:
    """The line that replaces a run of `n` removed lines."""
    return f"[... {n} line{'s' if n != 1 else ''} elided ...]"


def _distances(n: int, spans: tuple[tuple[int, ...], ...]) -> list[int]:
    if not spans:
        return [min(i, n - 1 - i) for i in range(n)]  # no difference: trim the middle first
    out = []
    for i in range(n):
        out.append(min((s - i) if i < s else (i - e + 1) if i >= e else 0 for s, e in ((sp[0], sp[1]) for sp in spans)))
    return out


def _collapse(lines: list[str], removed: set[int]) -> tuple[str, int]:
    """Replace each run of removed lines by a marker; a lone line no longer than its
    marker is kept (eliding it would save nothing). Returns (text, lines elided)."""
    out: list[str] = []
    run: list[str] = []
    elided = 0

    def flush() -> None:
        nonlocal elided
        if len(run) == 1 and len(run[0]) <= len(elision_marker(1)):
            out.append(run[0])
        elif run:
            out.append(elision_marker(len(run)))
            elided += len(run)
        run.clear()

    for i, line in enumerate(lines):
        if i in removed:
            run.append(line)
        else:
            flush()
            out.append(line)
    flush()
    return "\n".join(out), elided


def fit_contexts(
    positive: str,
    negative: str,
    difference: Difference | None,
    budget: int,
    measure: Callable[[str, str], int],
) -> FittedContexts:
    """Trim two contexts until `measure(pos, neg) <= budget`, never cutting the difference.

    Lines are removed farthest-from-the-difference first. Lines the two contexts share
    (aligned by difflib) are removed together, so the trimmed contexts stay parallel.
    If even the bare difference does not fit, everything else is removed and
    `fits=False` is returned (the difference is still kept whole).
    """
    a, b = split_lines(positive), split_lines(negative)
    if measure(positive, negative) <= budget:
        return FittedContexts(positive, negative, (0, 0), True)
    diff = difference if difference else text_difference(positive, negative)
    da, db = _distances(len(a), diff.positive), _distances(len(b), diff.negative)
    keep_a = {i for s, e in diff.positive for i in range(s, e)}
    keep_b = {j for s, e in diff.negative for j in range(s, e)}
    units: list[tuple[int, int, list[int], list[int]]] = []
    aligned_a: set[int] = set()
    aligned_b: set[int] = set()
    for op, i1, i2, j1, j2 in line_opcodes(positive, negative):
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if i not in keep_a and j not in keep_b:
                    units.append((min(da[i], db[j]), i, [i], [j]))
                    aligned_a.add(i)
                    aligned_b.add(j)
    units += [(da[i], i, [i], []) for i in range(len(a)) if i not in keep_a and i not in aligned_a]
    units += [(db[j], j, [], [j]) for j in range(len(b)) if j not in keep_b and j not in aligned_b]
    units.sort(key=lambda u: (-u[0], u[1]))

    def render(k: int) -> tuple[str, str, int, int]:
        ta, na = _collapse(a, {i for u in units[:k] for i in u[2]})
        tb, nb = _collapse(b, {j for u in units[:k] for j in u[3]})
        return ta, tb, na, nb

    lo, hi = 0, len(units)
    while lo < hi:
        mid = (lo + hi) // 2
        pa, pb, _, _ = render(mid)
        if measure(pa, pb) <= budget:
            hi = mid
        else:
            lo = mid + 1
    pa, pb, na, nb = render(lo)
    return FittedContexts(pa, pb, (na, nb), measure(pa, pb) <= budget)


# --------------------------------------------------------------------------- selection prompt


@dataclass(frozen=True)
class SelectionPrompt:
    """A context-selection instance as the policy sees it, plus the recorded answer key."""

    pair_id: str
    messages: tuple[Mapping[str, Any], ...]
    """Chat messages (one user turn); image pairs use content parts with {"type": "image"}."""
    text: str
    """The user turn as plain text (images appear as `<image>` placeholders)."""
    positive_option: Literal["A", "B"]
    """Which option letter shows C+."""
    images: tuple[str, ...] = ()
    """Image paths in option order (A, B); empty for trajectory pairs."""
    seed: int | None = None
    """The seed the order was drawn with (None when a caller's Random was used)."""
    elided: tuple[int, int] = (0, 0)
    """Lines elided from (C+, C-) by truncation."""
    fits: bool = True
    """False when the decisive difference alone exceeded the token budget."""

    @property
    def negative_option(self) -> Literal["A", "B"]:
        """Which option letter shows C-."""
        return "B" if self.positive_option == "A" else "A"


def _prompt_text(query: str, answer: str, ctx_a: str, ctx_b: str) -> str:
    ctx_a, ctx_b = ctx_a.rstrip("\n"), ctx_b.rstrip("\n")
    return (
        "You are given a question, an answer, and two contexts. Exactly one context supports the answer.\n\n"
        f"Question:\n{query}\n\nAnswer:\n{answer}\n\nContext A:\n{ctx_a}\n\nContext B:\n{ctx_b}\n\n{INSTRUCTION}"
    )


def selection_prompt(
    pair: ContrastivePair,
    rng: random.Random | int | None = None,
    *,
    max_tokens: int | None = None,
    count_tokens: TokenCounter = approx_token_count,
) -> SelectionPrompt:
    """Build the A/B selection prompt for a pair.

    `rng`: a `random.Random` (consumed), or an int seed (the order is then a deterministic
    function of the seed and the pair id, so it varies across pairs), or None (seed 0).
    `max_tokens`: budget for the whole user turn as counted by `count_tokens` (any
    `str -> int`, e.g. `lambda t: len(tok(t).input_ids)`); contexts are trimmed by
    `fit_contexts`, never inside the decisive difference. Image pairs are not truncated.
    """
    if isinstance(rng, random.Random):
        seed, flip = None, rng.random() < 0.5
    else:
        seed = 0 if rng is None else int(rng)
        flip = random.Random(f"{seed}:{pair.id}").random() < 0.5
    positive_option: Literal["A", "B"] = "B" if flip else "A"

    def order(x: Any, y: Any) -> tuple[Any, Any]:
        return (y, x) if flip else (x, y)

    if pair.kind == "image":
        images = order(pair.positive.image_path, pair.negative.image_path)
        text = _prompt_text(pair.query, pair.answer, "<image>", "<image>")
        head, tail = text.split("Context A:")[0], INSTRUCTION
        content = [
            {"type": "text", "text": head + "Context A:"},
            {"type": "image", "image": images[0]},
            {"type": "text", "text": "\n\nContext B:"},
            {"type": "image", "image": images[1]},
            {"type": "text", "text": "\n\n" + tail},
        ]
        return SelectionPrompt(pair.id, ({"role": "user", "content": content},), text, positive_option, tuple(images), seed)

    pos, neg = pair.positive.text or "", pair.negative.text or ""
    elided, fits = (0, 0), True
    if max_tokens is not None:

        def measure(p: str, n: str) -> int:
            return count_tokens(_prompt_text(pair.query, pair.answer, *order(p, n)))

        fitted = fit_contexts(pos, neg, pair.difference, max_tokens, measure)
        pos, neg, elided, fits = fitted.positive, fitted.negative, fitted.elided, fitted.fits
    text = _prompt_text(pair.query, pair.answer, *order(pos, neg))
    return SelectionPrompt(pair.id, ({"role": "user", "content": text},), text, positive_option, (), seed, elided, fits)
