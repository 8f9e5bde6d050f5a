"""A synthetic trajectory pool shaped like the paper's (66k SWE-style agent trajectories).

Shapes, taken from the real fixtures (SWE-agent, OpenHands, mini-swe-agent runs on
SWE-bench/SWE-smith tasks) and the paper's setting:
- repositories with a long-tailed number of commits (most have one snapshot, a few many),
  files per commit and functions per file (power-law draws: a few hot spots, a long tail);
- issues drawn per (repo, commit, file, function), hot spots more often; 1-12 rollouts per
  issue (geometric, mean about 4); 3% of issues are near-duplicate re-reports of another
  one at the same function, 12% loosely related requests (docs, typing, refactors), 10%
  sweeping changes that touch the function in passing (unrelated statements);
- problem statements of 60-250 words (title, report, snippet, expected/actual);
- 20-60 steps: listing, grep, views with a few numbered lines, a reproduction script,
  1-3 `str_replace` edits, test runs; observations of a few lines; a quarter of the
  agents re-view the edited code (which leaks the patch: verification must catch it);
- final diffs in git format, one or two hunks (sometimes two files), with the function
  context git writes after `@@`; a fifth of the hunks contain the `def` line itself.

`SyntheticPool(n, seed)` is a `Sequence`: trajectory i is built on demand from (seed, i),
so iterating it streams and indexing it re-creates the same trajectory. Only small
numpy tables (issue -> location, trajectory -> issue) live in memory.
"""

from __future__ import annotations

import hashlib
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import fields

import numpy as np

from contextrl.trajectory import Step, Trajectory

NOUNS = ("header timestamp timezone offset precision payload schema field record column index token session cache "
         "buffer encoding locale currency duration interval boundary cursor batch chunk query filter window frame "
         "matrix vector config option plugin handler request response cookie parser lexer node graph edge path "
         "url slug label widget layout style color font image thumbnail archive manifest version license").split()
VERBS = ("parse format load dump serialize validate normalize resolve merge split render encode decode compute "
         "convert group sort filter fetch build update apply export import read write").split()
BASES = ("Field Base Mixin Handler Model Schema Reader Writer Client Backend Node Visitor Transformer").split()
EXCS = ("ValueError TypeError KeyError IndexError AttributeError OverflowError ZeroDivisionError "
        "UnicodeDecodeError RecursionError AssertionError").split()
SYMPTOMS = (
    ("returns {bad} instead of {good}", "wrong result"),
    ("raises {exc} when the {noun} is empty", "crash"),
    ("ignores the `{opt}` argument", "ignored option"),
    ("drops the last {noun} of the input", "off by one"),
    ("is not idempotent for nested {noun}s", "idempotence"),
    ("mutates its input {noun}", "side effect"),
    ("fails on {noun}s with unicode characters", "unicode"),
    ("rounds {noun} values down instead of to the nearest unit", "rounding"),
)
RELATED_TOPICS = ("Improve the docstring of", "Add type hints to", "Deprecate the old alias of",
                  "Document the return value of", "Refactor the helpers around")
SWEEPING = (
    "Drop support for Python 3.{v}\n\nThe minimum version moves up; remove compatibility shims and old-style "
    "string formatting across the code base.",
    "Enable the stricter linter rules\n\nTurn on the unused-argument and shadowed-builtin checks in CI and fix "
    "what they report everywhere.",
    "Replace the vendored {a} helpers with the standard library\n\nWe carry an old copy of a {b} utility module; "
    "switch every call site to the stdlib equivalent.",
    "Rename the deprecated `{a}` keyword to `{b}` everywhere\n\nThe old name has warned for two releases; "
    "update all internal callers before the next major version.",
)
STEP_KINDS = ("grep", "view", "ls", "python", "cat", "find", "sed_n")


def _h(*parts: object) -> int:
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _pick(seq: Sequence[str], *parts: object) -> str:
    return seq[_h(*parts) % len(seq)]


_STEP_DEFAULTS = {f.name: f.default for f in fields(Step)}
_FAST_STEP = not hasattr(Step, "__slots__")


def _step(index: int, tool: str, args: dict, obs: str, code: int | None, thought: str | None) -> Step:
    """`Step(...)` without the frozen-dataclass `__init__` cost (same object; checked in tests)."""
    if not _FAST_STEP:
        return Step(index=index, tool=tool, args=args, observation=obs, exit_code=code, thought=thought)
    st = object.__new__(Step)
    st.__dict__.update(_STEP_DEFAULTS, index=index, tool=tool, args=args, observation=obs, exit_code=code, thought=thought)
    return st


def _power_index(u: float, k: int, gamma: float) -> int:
    """An index in [0, k) skewed towards 0 (a long tail): floor(k * u**gamma)."""
    return min(k - 1, int(k * u ** gamma))


class SyntheticPool(Sequence):
    """`n` trajectories, deterministic in (seed, index), generated on demand."""

    REPO_SKEW, COMMIT_SKEW, FILE_SKEW, FUNC_SKEW = 2.2, 2.0, 1.8, 1.8
    """Exponents of the power-law draws (index = floor(k * u**skew)): higher, more hot spots."""
    FILES, FUNCS = (40, 500), (8, 100)
    """(base, spread) of files per commit and functions per file (long-tailed within the spread)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed = n, seed
        rng = np.random.default_rng(seed)
        self.n_repos = max(8, n // 165)
        self.commits = np.minimum(rng.zipf(1.7, self.n_repos), 80).astype(np.int32)
        rollouts = np.minimum(rng.geometric(0.25, n), 16).astype(np.int32)
        self.n_issues = int(np.searchsorted(np.cumsum(rollouts), n) + 1)
        rollouts = rollouts[: self.n_issues]
        u = rng.random((self.n_issues, 4))
        repo = np.minimum((self.n_repos * u[:, 0] ** self.REPO_SKEW).astype(np.int64), self.n_repos - 1)
        commit = np.minimum((self.commits[repo] * u[:, 1] ** self.COMMIT_SKEW).astype(np.int64), self.commits[repo] - 1)
        self.issue_repo, self.issue_commit = repo.astype(np.int32), commit.astype(np.int32)
        self.issue_file = np.array([_power_index(x, self._files(r, c), self.FILE_SKEW) for x, r, c in zip(u[:, 2], repo, commit)], np.int32)
        self.issue_func = np.array([_power_index(x, self._funcs(r, f), self.FUNC_SKEW) for x, r, f in zip(u[:, 3], repo, self.issue_file)],
                                   np.int32)
        kind = rng.random(self.n_issues)
        # 0 bug report, 1 loosely related request, 2 duplicate re-report, 3 sweeping change (touches it in passing)
        self.issue_kind = np.select([kind < 0.03, kind < 0.15, kind < 0.25], [2, 1, 3], 0).astype(np.int8)
        self.twin = np.arange(self.n_issues, dtype=np.int32)
        last_bug: dict[tuple, int] = {}
        for k, loc in enumerate(zip(self.issue_repo.tolist(), self.issue_commit.tolist(), self.issue_file.tolist(),
                                    self.issue_func.tolist())):
            if self.issue_kind[k] == 0:
                last_bug[loc] = k
            elif self.issue_kind[k] == 2 and loc in last_bug:
                self.twin[k] = last_bug[loc]  # a duplicate re-reports the latest bug at the same function
        self.traj_issue = np.repeat(np.arange(self.n_issues, dtype=np.int32), rollouts)[:n]
        self.traj_rollout = np.concatenate([np.arange(r, dtype=np.int16) for r in rollouts])[:n]
        words = random.Random(seed)
        self._code = [f"{words.choice(NOUNS)} = {words.choice(VERBS)}({words.choice(NOUNS)})" for _ in range(8192)]
        self._names = [f"{words.choice(VERBS)}_{words.choice(NOUNS)}.py" for _ in range(8192)]
        self._last: tuple[int, tuple[dict[str, object], str]] = (-1, ({}, ""))
        self.generate_seconds = self.generate_cpu_seconds = 0.0
        """Wall and CPU time spent building trajectories so far (the benchmark reports them)."""

    # ------------------------------------------------------------------ shapes

    def _files(self, repo: int, commit: int) -> int:
        base, spread = self.FILES
        return base + _h("files", self.seed, repo) % spread + (_h("files", self.seed, repo, commit) % spread if repo % 7 == 0 else 0)

    def _funcs(self, repo: int, file: int) -> int:
        base, spread = self.FUNCS
        return base + int(spread * (_h("funcs", self.seed, repo, file) % 1000 / 1000) ** 2.5)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(i)
        t0, c0 = time.perf_counter(), time.process_time()
        traj = self._make(i % self.n)
        self.generate_seconds += time.perf_counter() - t0
        self.generate_cpu_seconds += time.process_time() - c0
        return traj

    # ------------------------------------------------------------------ issue

    def location(self, issue: int) -> dict[str, object]:
        """Repo, commit, file path, class (or ""), function and the lines around it."""
        r, c, f, fn = (int(a[issue]) for a in (self.issue_repo, self.issue_commit, self.issue_file, self.issue_func))
        org, proj = _pick(NOUNS, "org", r), _pick(NOUNS, "proj", r) + ("lib", "py", "kit", "tools")[r % 4]
        path = f"{proj}/{_pick(NOUNS, 'pkg', r, f // 8)}/{_pick(VERBS, 'mod', r, f)}_{_pick(NOUNS, 'mod', r, f)}.py"
        method = _h("method", r, f, fn) % 10 < 6
        cls = (_pick(NOUNS, "cls", r, f, fn // 4).capitalize() + _pick(BASES, "base", r, f, fn // 4)) if method else ""
        func = f"{'_' if method and fn % 3 == 0 else ''}{_pick(VERBS, 'fn', r, f, fn)}_{_pick(NOUNS, 'fn', r, f, fn)}"
        line = 20 + (_h("line", r, f, fn) % 900)
        return {"repo": f"{org}-dev/{proj}", "commit": hashlib.sha1(f"{r}:{c}".encode()).hexdigest(),
                "path": path, "cls": cls, "func": func, "line": line, "noun": _pick(NOUNS, "noun", r, f, fn)}

    def statement(self, issue: int) -> str:
        """The issue text (all rollouts of an issue share it; duplicates re-word another issue)."""
        loc = self.location(issue)
        kind = int(self.issue_kind[issue])
        rng = random.Random(_h("stmt", self.seed, int(self.twin[issue])))
        name = f"{loc['cls']}.{loc['func']}" if loc["cls"] else loc["func"]
        noun, opt = loc["noun"], rng.choice(NOUNS)
        if kind == 1:
            topic = random.Random(_h("topic", self.seed, issue)).choice(RELATED_TOPICS)
            return (f"{topic} `{name}`\n\nWhile reading `{loc['path']}` I noticed that `{name}` could be clearer. "
                    f"This is not a bug, just a maintenance request: the {rng.choice(NOUNS)} handling is hard to follow "
                    f"and new contributors keep asking about it on the {rng.choice(NOUNS)} channel. Happy to send a PR.")
        if kind == 3:
            return rng.choice(SWEEPING).format(a=rng.choice(NOUNS), b=rng.choice(NOUNS), v=rng.randint(8, 13))
        symptom, label = rng.choice(SYMPTOMS)
        text = symptom.format(bad=rng.randint(1, 999), good=rng.randint(1, 999), exc=rng.choice(EXCS), noun=noun, opt=opt)
        words = " ".join(rng.choice(NOUNS + VERBS) for _ in range(rng.randint(10, 80)))
        body = (f"`{name}` {text}\n\n"
                f"**Describe the bug**\nWhen I call `{name}` on a {noun} with {opt} set, it {text}. "
                f"This looks like a {label} problem in `{loc['path']}`.\n\n"
                f"```python\nfrom {str(loc['path'])[:-3].replace('/', '.')} import {loc['cls'] or loc['func']}\n"
                f"{loc['func']}({noun}={rng.randint(0, 99)}, {opt}=True)\n```\n\n"
                f"**Expected behavior**\nIt should handle the {noun} correctly.\n\n"
                f"**Additional context**\n{words}\n")
        if kind == 2:  # a re-report: same text, a different greeting
            body = f"(Reporting again, seen on version {1 + issue % 5}.{issue % 10})\n" + body
        return body

    # ------------------------------------------------------------------ trajectory

    def _issue(self, issue: int) -> tuple[dict[str, object], str]:
        """(location, statement), cached for the last issue (rollouts of an issue are adjacent)."""
        if self._last[0] != issue:
            self._last = (issue, (self.location(issue), self.statement(issue)))
        return self._last[1]

    def _make(self, i: int) -> Trajectory:
        issue = int(self.traj_issue[i])
        loc, statement = self._issue(issue)
        rng = random.Random(_h("traj", self.seed, i))
        R = rng.random

        def pick(seq):
            return seq[int(R() * len(seq))]

        path, func, cls, noun, line = loc["path"], loc["func"], loc["cls"], loc["noun"], int(loc["line"])
        top, folder = path.split("/", 1)[0], path.rsplit("/", 1)[0]
        ind = "        " if cls else "    "
        fix = f"_{pick(VERBS)}_{pick(NOUNS)}_{issue % 97}"
        old = f"{ind}return {noun}.{pick(VERBS)}()"
        new = f"{ind}return {fix}({noun})"
        n_steps, n_edits = 20 + int(R() * 41), pick((1, 1, 1, 1, 2, 2, 2, 3))
        reviews = R() < 0.25
        steps: list[Step] = []

        def add(tool: str, args: dict, obs: str, thought: str = "", code: int | None = 0) -> None:
            steps.append(_step(len(steps), tool, args, obs, code, thought or None))

        add("bash", {"command": "ls"}, f"README.md\nsetup.cfg\n{top}/\ntests/", "Look at the repository.")
        add("edit", {"command": "create", "path": "reproduce.py",
                     "file_text": f"from x import {func}\nprint({func}({noun}=1))\n"},
            "File created successfully at: reproduce.py", "Reproduce the issue first.", None)
        add("bash", {"command": "python reproduce.py"}, f"{int(R() * 999)}" if R() < 0.5 else
            f"Traceback (most recent call last):\n  File \"reproduce.py\", line 2\n{pick(EXCS)}: {noun}", "Run it.")
        edits_at = sorted(rng.sample(range(n_steps // 2, n_steps - 4), n_edits))
        while len(steps) < n_steps - 3:
            if edits_at and len(steps) >= edits_at[0]:
                edits_at.pop(0)
                add("edit", {"command": "str_replace", "path": path, "old_str": old, "new_str": new},
                    f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet:\n"
                    f"{line + 2:6d}\t{new}\nReview the changes and make sure they are as expected.",
                    f"Change how `{func}` handles the {noun}.", None)
                continue
            kind, w, j = pick(STEP_KINDS), pick(NOUNS), int(R() * (len(self._code) - 8))
            if kind == "grep":
                add("bash", {"command": f"grep -rn '{w}' {top} | head -3"},
                    "\n".join(f"{path}:{line - 40 + j % 80 + k}:{ind}{c}" for k, c in enumerate(self._code[j:j + j % 4])),
                    f"Where is {w} used?", 0 if j % 5 else 1)
            elif kind in ("view", "cat", "sed_n"):
                lo = line - 20 + j % 25
                add("view", {"command": "view", "path": path, "view_range": [lo, lo + 4]},
                    "\n".join(f"{lo + k:6d}\t{ind}{c}" for k, c in enumerate(self._code[j:j + 3 + j % 4])),
                    f"Read `{func}` around line {lo}.", None)
            elif kind == "python":
                add("bash", {"command": f"python -c 'import {top}; print({j % 9})'"}, str(j % 7), "Check the behaviour directly.")
            else:
                add("bash", {"command": f"{kind} {folder}"}, "\n".join(self._names[j:j + 1 + j % 4]), "")
        if reviews:
            add("view", {"command": "view", "path": path, "view_range": [line + 2, line + 2]}, f"{line + 2:6d}\t{new}",
                "Double-check the edit.", None)
        add("bash", {"command": "python reproduce.py"}, str(int(R() * 999)), "Run the reproduction again.")
        add("bash", {"command": f"python -m pytest -q tests/test_{func.strip('_')}.py"},
            f"{3 + int(R() * 38)} passed in {R():.2f}s", "Run the tests.")
        add("submit", {}, "", "Submit.", None)
        return Trajectory(
            task_id=f"{str(loc['repo']).replace('/', '__')}-{issue}", steps=tuple(steps), reward=1.0, resolved=R() < 0.6,
            outcome="submitted", diff=self._diff(loc, old, new, ind, rng), problem_statement=statement,
            episode_id=f"syn-{self.seed}-{i:06d}", source="synthetic",
            metadata={"repo": loc["repo"], "base_commit": loc["commit"], "model": "synthetic-agent"})

    def _diff(self, loc: dict, old: str, new: str, ind: str, rng: random.Random) -> str:
        path, func, cls, line = loc["path"], loc["func"], loc["cls"], int(loc["line"])
        args = "self, " + str(loc["noun"]) if cls else str(loc["noun"])
        with_def = rng.random() < 0.2
        if with_def:  # the hunk starts at the def line; git's header is the previous top-level line
            head = f"class {cls}(Field):" if cls else f"def {rng.choice(VERBS)}_{rng.choice(NOUNS)}(value):"
            pre = [f"{ind[:-4]}def {func}({args}):", f"{ind}\"\"\"{func.replace('_', ' ').strip()}.\"\"\"",
                   f"{ind}if {loc['noun']} is None:"]
        else:
            head = f"class {cls}(Field):" if cls else f"def {func}({args}):"
            pre = [f"{ind}if {loc['noun']} is None:", f"{ind}    return None", f"{ind}{loc['noun']} = dict({loc['noun']})"]
        post = ["", f"{ind[:-4]}def {rng.choice(VERBS)}_{rng.choice(NOUNS)}(self):" if cls else "",
                f"{ind}pass" if cls else f"def {rng.choice(VERBS)}_{rng.choice(NOUNS)}():"]
        body = [f" {x}" for x in pre] + [f"-{old}", f"+{new}"] + [f" {x}" for x in post]
        return (f"diff --git a/{path} b/{path}\nindex {rng.getrandbits(28):07x}..{rng.getrandbits(28):07x} 100644\n"
                f"--- a/{path}\n+++ b/{path}\n@@ -{line},7 +{line},7 @@ {head}\n" + "\n".join(body) + "\n")
