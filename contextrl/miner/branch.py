"""Branching on conditions: counterfactual traces of a live trajectory (online pair mining).

`BranchMiner.mine(traj, task)`:
1. rebuilds the task's start state in a sandbox the way `CodingEnv` does (files, `git init`,
   setup commands, the "task start" commit) and records that commit as the *base*;
2. finds conditions (`contextrl.conditions`, tree-sitter) in the Python files the trajectory
   viewed or edited (and always the files in its diff), and in the code its edits wrote;
   orders their flips deterministically by seed: conditions inside functions the trajectory
   edited first, then those a view showed, one flip per condition before a second one;
3. per flip, forks the start state *inside the same sandbox*: `git reset --hard <base> &&
   git clean -fdq` (a file-level fork of the workspace: files outside it are not reset, nor
   ignored files; shell state and stray processes happen to be, because `run_tests` ends
   with `exit`, which restarts the session shell; `Sandbox.fork()` copies the whole
   container but costs ~0.5 s per flip), applies the flip, replays the recorded actions
   with a `ToolRunner` (invalid actions are kept as they were: parsing is pure, so replaying
   one gives the same error; `submit` is not replayed: the tests run and the env's "[tests]"
   line is rebuilt) and scores the result with `run_tests` (pytest with `--tb=no`, the task's tests only);
4. keeps the counterfactual when its observations are near-identical to the original's (at
   most `max_diff_lines` differing lines, similarity >= `min_similarity`) yet its outcome
   (resolved, reward) differs, builds the pair and verifies it (`verify_pair`).

Flip sites: "state" flips a condition in a start-state file before the replay (the views
show the flipped code); "action" flips a condition inside the code an edit wrote (edit
payloads are masked when rendered, so only later observations and the test line differ).
A flip that no observation can show ("blind") differs from the original in the test line
only; blind counterfactuals of one trajectory render alike, so after one kept blind pair
the other blind flips of that trajectory are skipped (funnel: `skipped_blind`).
Pairs: Q = the issue plus a question about the outcome; A = the original outcome with the
deciding test names; C+ = the original trajectory, C- = the counterfactual, both rendered
masked; each context records the answer it supports, so exactly one supports A.
`OnlineBranchMiner` runs this beside training: a bounded queue of trajectories, worker
threads with their own sandboxes, and a `PairBuffer` (`contextrl.miner.buffer`) they feed.
"""

from __future__ import annotations

import difflib
import json
import posixpath
import random
import re
import shlex
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Mapping, Sequence, Union

from contextrl.conditions import Mutation, enclosing_definitions, find_conditions, flips
from contextrl.envs.task import Task
from contextrl.envs.testing import PASSING, TestReport, run_tests
from contextrl.envs.tools import MAX_VIEW_LINES, ToolCallError, ToolRunner
from contextrl.errors import ConfigError, MiningError, SandboxError, TaskError
from contextrl.configs import FromDict
from contextrl.miner.funnel import Funnel
from contextrl.miner.pair import Context, ContrastivePair, Provenance, split_lines, text_difference
from contextrl.miner.render import render_trajectory
from contextrl.miner.verify import VerifyConfig, verify_pair
from contextrl.patches import parse_patch, touched_lines
from contextrl.sandboxes.base import Sandbox
from contextrl.sandboxes.pool import SandboxPool
from contextrl.trajectory import Step, Trajectory


FileSource = Literal["view", "edit", "bash"]
Site = Literal["state", "action"]
SandboxSource = Union[SandboxPool, Callable[[], Sandbox]]
_READERS = frozenset({"cat", "head", "tail", "nl", "less", "more", "bat"})
_GIT_ID = "-c user.name=contextrl -c user.email=contextrl@invalid"
_BASE_FILE = '"${TMPDIR:-/tmp}/.contextrl_base"'
FUNNEL_STAGES: tuple[tuple[str, str], ...] = (
    ("trajectories", "trajectories"), ("conditions", "conditions"), ("candidates", "flips"), ("forks", "forks"),
    ("replayed", "forks"), ("outcome_differs", "forks"), ("near_identical", "forks"), ("answers_differ", "forks"),
    ("verified", "forks"), ("kept", "pairs"))
"""Stages of the branch funnel in pipeline order, with the unit each counts."""
_UNITS = {"skipped_unscored": "trajectories", "setup_errors": "trajectories", "budget_forks": "trajectories",
          "budget_seconds": "trajectories", "skipped_blind": "flips"}


@dataclass(frozen=True)
class BranchConfig(FromDict):
    """How `BranchMiner` picks, runs and filters flips (validated at construction)."""

    max_forks_per_trajectory: int = 8
    """Flips replayed per trajectory at most (each costs one replay and one test run); >= 1."""
    max_seconds_per_trajectory: float = 120.0
    """Wall-time budget per trajectory, set-up included; no new fork starts after it; > 0."""
    max_diff_lines: int = 12
    """k: the replayed observations may differ from the original's in at most k lines; >= 0."""
    min_similarity: float = 0.75
    """s: difflib similarity ratio of the observation lines must be at least s; in [0, 1]."""
    seed: int = 0
    """Seeds the flip order (with the trajectory's episode id), so mining is reproducible."""
    file_sources: tuple[FileSource, ...] = ("view", "edit", "bash")
    """Which steps name files to consider: `view` paths, `edit` paths, bash `cat`/`sed -n`/
    `head`/`tail` of .py files. The files in the trajectory's diff are always considered."""
    flip_sites: tuple[Site, ...] = ("state", "action")
    """"state": conditions in start-state files; "action": conditions in code the edits wrote."""
    max_files: int = 16
    """Files scanned for conditions per trajectory (diff files first); >= 1."""
    command_timeout: float = 60.0
    """Timeout of one replayed command, seconds (the env's `command_timeout`); > 0."""
    test_timeout: float = 300.0
    """Upper bound on one test run, seconds; > 0."""
    test_timeout_factor: float = 5.0
    """A fork's test run may take this many times the original's scoring time (the submit
    step's duration, when recorded), at least `min_test_timeout`: a flip that makes the code
    loop forever costs seconds, not `test_timeout`; > 0."""
    min_test_timeout: float = 10.0
    """Lower bound of the adaptive test timeout, seconds; > 0."""
    quiet_tracebacks: bool = True
    """Append `--tb=no` to a pytest test command in forks: per-test outcomes (the `-rA`
    summary) are unchanged, and failing runs skip rendering tracebacks nobody reads."""
    sandbox_reuse: int = 16
    """Trajectories mined in one sandbox (workspace wiped between them) before it is
    returned; 1 = a fresh sandbox per trajectory. Tasks with a `repo` always get a fresh one."""
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    """Thresholds of the shortcut checks every kept pair must pass."""

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"BranchConfig.{name}={getattr(self, name)!r}: {fix}")

        for name, low in (("max_forks_per_trajectory", 1), ("max_diff_lines", 0), ("max_files", 1), ("sandbox_reuse", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(name, f"use an integer >= {low}")
        for name in ("max_seconds_per_trajectory", "command_timeout", "test_timeout", "test_timeout_factor", "min_test_timeout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise bad(name, "use a number of seconds > 0")
        s = self.min_similarity
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s <= 1.0:
            raise bad("min_similarity", "use a ratio in [0, 1], e.g. 0.75")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise bad("seed", "use an integer")
        if not isinstance(self.quiet_tracebacks, bool):
            raise bad("quiet_tracebacks", "use true or false")
        for name, allowed in (("file_sources", FileSource.__args__), ("flip_sites", Site.__args__)):  # type: ignore[attr-defined]
            v = getattr(self, name)
            if isinstance(v, str) or not all(x in allowed for x in v):
                raise bad(name, f"use a list drawn from {list(allowed)}")
            object.__setattr__(self, name, tuple(v))
        if not self.flip_sites:
            raise bad("flip_sites", "name at least one site: 'state' and/or 'action'")
        if isinstance(self.verify, Mapping):
            object.__setattr__(self, "verify", VerifyConfig.from_dict(self.verify))
        if not isinstance(self.verify, VerifyConfig):
            raise bad("verify", "use a VerifyConfig or a mapping of its fields")



@dataclass(frozen=True)
class Flip:
    """One candidate: a mutation at a site. For "action" flips, `mutation` offsets are into the
    file as the edit at `step` left it, and the edit payload `arg` starts at byte `offset`."""

    site: Site
    mutation: Mutation
    enclosing: str
    preferred: bool
    step: int | None = None
    arg: str | None = None
    offset: int = 0


@dataclass(frozen=True)
class BranchAttempt:
    """What one fork did: the flip, the replayed outcome, the trace distance and the verdict."""

    site: Site
    file: str
    line: int
    operator: str
    original: str
    replacement: str
    status: str
    """"kept", "same_outcome", "not_near_identical", "same_answer", "duplicate",
    "rejected:<checks>", "mutation_error", "test_error" or "sandbox_error"."""
    reward: float | None = None
    resolved: bool | None = None
    diff_lines: int | None = None
    similarity: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class BranchResult:
    """`BranchMiner.mine`'s output: verified pairs, forks run, funnel counts and wall time."""

    pairs: tuple[ContrastivePair, ...]
    attempts: int
    funnel: Funnel
    """Stage or reject reason -> count, in pipeline order (stages first), with units; the
    phase timings are in its notes too."""
    seconds: float
    records: tuple[BranchAttempt, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds spent per phase: setup, candidates, fork (reset + flip), replay, tests, pair (render + verify)."""


def new_funnel() -> Funnel:
    """An empty branch funnel, stages in pipeline order (reject reasons are appended as they occur)."""
    return Funnel("branch", {k: 0 for k, _ in FUNNEL_STAGES}, dict(FUNNEL_STAGES))


def considered_files(traj: Trajectory, workdir: str, sources: Sequence[str] = ("view", "edit", "bash")) -> list[str]:
    """Workspace-relative .py files the trajectory looked at or changed: its diff's files
    first, then `view`/`edit` paths and bash readers' (`cat`, `sed -n`, ...) arguments."""
    out: list[str] = []

    def add(path: Any) -> None:
        if not isinstance(path, str) or not path.endswith(".py"):
            return
        full = posixpath.normpath(path if path.startswith("/") else posixpath.join(workdir, path))
        rel = posixpath.relpath(full, workdir)
        if not rel.startswith("..") and rel not in out:
            out.append(rel)

    try:
        for fp in parse_patch(traj.diff):
            add(fp.old_path)
    except ValueError:
        pass
    for st in traj.steps:
        if st.tool in ("view", "edit") and st.tool in sources:
            add(st.args.get("path"))
        elif st.tool == "bash" and "bash" in sources and isinstance(st.args.get("command"), str):
            for part in re.split(r"&&|\|\||[;|\n]", st.args["command"]):
                try:
                    words = shlex.split(part)
                except ValueError:
                    continue
                if words and (posixpath.basename(words[0]) in _READERS or (words[0] == "sed" and "-n" in words)):
                    for w in words[1:]:
                        if not w.startswith("-"):
                            add(w)
    return out


def outcome_statement(task: Task, resolved: bool, reward: float, statuses: Mapping[str, str] | None) -> str:
    """A short statement of an outcome naming the deciding tests (the pair's answer A)."""

    def names(ts: Sequence[str]) -> str:
        return ", ".join(ts[:3]) + (f" and {len(ts) - 3} more" if len(ts) > 3 else "")

    if resolved:
        extra = f", and the other {len(task.pass_to_pass)} tests keep passing" if task.pass_to_pass else ""
        return f"The change resolves the issue: it makes {names(task.fail_to_pass)} pass{extra}."
    if statuses:
        failing = [t for t in dict.fromkeys(task.fail_to_pass + task.pass_to_pass) if statuses.get(t) not in PASSING]
        if failing:
            return f"The change does not resolve the issue: {names(failing)} {'fails' if len(failing) == 1 else 'fail'}."
    return f"The change does not resolve the issue (reward {reward:.3f})."


def tests_message(task: Task, rep: TestReport) -> str:
    """The "[tests]" observation `CodingEnv` records on the submit step."""
    return (f"[tests] reward={rep.reward:.3f} resolved={rep.resolved} "
            f"({len(rep.fail_to_pass_passed)}/{len(task.fail_to_pass)} FAIL_TO_PASS pass, "
            f"{len(rep.pass_to_pass_failed)} PASS_TO_PASS broken)")


def trace_distance(a: Sequence[Step], b: Sequence[Step]) -> tuple[int, float]:
    """(differing lines, similarity ratio) between two traces' observations (and errors)."""

    def lines(steps: Sequence[Step]) -> list[str]:
        return [ln for s in steps for ln in split_lines(s.observation) + ([f"Error: {s.error}"] if s.error else [])]

    sm = difflib.SequenceMatcher(None, lines(a), lines(b), autojunk=False)
    n = sum(max(i2 - i1, j2 - j1) for op, i1, i2, j1, j2 in sm.get_opcodes() if op != "equal")
    return n, sm.ratio()


def query_for(task: Task) -> str:
    """Q: the issue plus a question about the outcome (never the outcome itself)."""
    return (f"{task.problem_statement.strip()}\n\nAn agent worked on this issue. After its final change, "
            "is the issue resolved, and which tests decide it?")


class BranchMiner:
    """Mines counterfactual pairs from one trajectory at a time (not thread-safe: one per worker).

    `sandbox_source`: a `SandboxPool` (acquire/release) or a zero-argument factory; its
    sandboxes must run the tasks' image. The miner keeps one sandbox for up to
    `config.sandbox_reuse` trajectories; `close()` gives it back."""

    def __init__(self, config: BranchConfig | None = None, sandbox_source: SandboxSource | None = None):
        from contextrl.sandboxes import make_sandbox_factory

        self.config = config or BranchConfig()
        self.source: SandboxSource = sandbox_source if sandbox_source is not None else make_sandbox_factory("auto")
        self._sb: Sandbox | None = None
        self._uses = 0
        self._timings: dict[str, float] = {}
        self._test_timeout = self.config.test_timeout

    def _lap(self, phase: str, t0: float) -> float:
        now = time.perf_counter()
        self._timings[phase] = self._timings.get(phase, 0.0) + now - t0
        return now

    # -- sandboxes ----------------------------------------------------------------------
    def _drop(self, sb: Sandbox | None) -> None:
        if sb is None:
            return
        if sb is self._sb:
            self._sb, self._uses = None, 0
        if isinstance(self.source, SandboxPool):
            self.source.release(sb)
        else:
            sb.close()

    def _sandbox_for(self, task: Task) -> Sandbox:
        sb = self._sb
        if sb is not None and not task.repo and self._uses < self.config.sandbox_reuse:
            wd = shlex.quote(sb.workdir)
            res = sb.exec(f"cd / && find {wd} -mindepth 1 -delete 2>/dev/null; cd {wd}", timeout=60)
            if res.exit_code == 0:
                self._uses += 1
                return sb
        self._drop(sb)
        sb = self.source.acquire() if isinstance(self.source, SandboxPool) else self.source()
        image = getattr(getattr(sb, "config", None), "image", None)
        if task.image and image and image != task.image:
            self._drop(sb)
            raise MiningError(f"task {task.id!r} needs image {task.image!r} but the sandbox source runs {image!r}; "
                              "pass a sandbox source (pool or factory) for that image")
        self._sb, self._uses = sb, 1
        return sb

    def close(self) -> None:
        """Give the held sandbox back (idempotent)."""
        self._drop(self._sb)

    def __enter__(self) -> "BranchMiner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the start state ----------------------------------------------------------------
    def _setup(self, sb: Sandbox, task: Task) -> tuple[str, str]:
        """Build the start state as `CodingEnv._setup_workspace` does; return (workdir, base commit)."""
        wd = task.workdir if task.repo else sb.workdir
        q = shlex.quote(wd)
        for rel, text in task.files.items():
            sb.write_file(rel if rel.startswith("/") else f"{wd}/{rel}", text)
        steps = [] if task.repo else ["git init -q && git add -A && git commit -qm 'contextrl: task files' --no-verify"]
        for cmd in [*steps, *task.setup_commands]:
            res = sb.exec(f"cd {q} && {cmd}", timeout=self.config.test_timeout)
            if res.exit_code != 0:
                raise TaskError(f"task {task.id!r}: set-up command {cmd!r} failed (exit {res.exit_code}): {res.output[-300:]}")
        res = sb.exec(f"cd {q} && git add -A && git {_GIT_ID} commit -qm 'contextrl: task start' --no-verify --allow-empty "
                      f">/dev/null 2>&1; git rev-parse HEAD > {_BASE_FILE} && git rev-parse HEAD", timeout=60)
        base = res.output.strip().splitlines()[-1] if res.output.strip() else ""
        if res.exit_code != 0 or not re.fullmatch(r"[0-9a-f]{40,64}", base):
            raise TaskError(f"task {task.id!r}: could not record the base commit: {res.output[-300:]}")
        return wd, base

    # -- candidates ---------------------------------------------------------------------
    def candidates(self, sb: Sandbox, traj: Trajectory, task: Task, wd: str, funnel: Funnel) -> list[Flip]:
        """Every flip of the trajectory, in mining order (deterministic for the config's seed)."""
        cfg = self.config
        files = considered_files(traj, wd, cfg.file_sources)[: cfg.max_files]
        touched: dict[str, list[tuple[int, int]]] = {}
        try:
            for fp in parse_patch(traj.diff):
                if fp.old_path:
                    touched[fp.old_path] = touched_lines(fp)
        except ValueError:
            pass
        start: dict[str, str | None] = {}
        for rel in set(files) | {p for st in traj.steps if st.tool == "edit" for p in [self._rel(st.args.get("path"), wd)] if p}:
            try:
                start[rel] = sb.read_file(f"{wd}/{rel}").decode("utf-8")
            except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
                start[rel] = None
        groups: list[tuple[tuple[bool, bool], list[Flip]]] = []  # ((preferred, visible), flips)
        shown = _shown_lines(traj, wd, self._rel)
        if "state" in cfg.flip_sites:
            for rel in files:
                src = start.get(rel)
                if src is None:
                    continue
                edited = enclosing_definitions(src, touched.get(rel, []))
                for cond in find_conditions(src, rel):
                    pref = bool(cond.enclosing) and cond.enclosing in edited
                    seen = any(a <= cond.start_line and cond.end_line <= b for a, b in shown.get(rel, ()))
                    groups.append(((pref, seen), [Flip("state", m, cond.enclosing, pref) for m in flips(cond)]))
        if "action" in cfg.flip_sites:
            for i, rel, key, after, off in _edit_payloads(traj, start, wd, self._rel):
                end = off + len(str(traj.steps[i].args[key]).encode())
                for cond in find_conditions(after, rel):
                    if off <= cond.start_byte and cond.end_byte <= end:
                        found = [Flip("action", m, cond.enclosing, True, i, key, off) for m in flips(cond)]
                        groups.append(((True, False), found))
        groups = [g for g in groups if g[1]]
        funnel["conditions"] += len(groups)
        rng = random.Random(f"{cfg.seed}:{traj.episode_id or traj.task_id}")
        rng.shuffle(groups)
        groups.sort(key=lambda g: (not g[0][0], not g[0][1]))  # stable: in edited functions, then shown by a view
        order = [g[1][r] for r in range(max((len(g[1]) for g in groups), default=0)) for g in groups if r < len(g[1])]
        funnel["candidates"] += len(order)
        return order

    @staticmethod
    def _rel(path: Any, wd: str) -> str | None:
        if not isinstance(path, str):
            return None
        rel = posixpath.relpath(posixpath.normpath(path if path.startswith("/") else posixpath.join(wd, path)), wd)
        return None if rel.startswith("..") else rel

    # -- mining -------------------------------------------------------------------------
    def mine(self, traj: Trajectory, task: Task) -> BranchResult:
        """Fork, flip, replay and filter within the budgets; return the verified pairs."""
        cfg, t0 = self.config, time.perf_counter()
        funnel = new_funnel()
        funnel["trajectories"] = 1
        records: list[BranchAttempt] = []
        pairs: dict[str, ContrastivePair] = {}
        self._timings = {}
        if traj.task_id != task.id:
            raise MiningError(f"trajectory of task {traj.task_id!r} mined against task {task.id!r}")
        if traj.failure is not None or traj.reward is None or traj.resolved is None:
            _bump(funnel, "skipped_unscored")
            return BranchResult((), 0, funnel, time.perf_counter() - t0)
        sb = None
        try:
            sb = self._sandbox_for(task)
            wd, base = self._setup(sb, task)
            t1 = self._lap("setup", t0)
            order = self.candidates(sb, traj, task, wd, funnel)
            self._lap("candidates", t1)
            pos_text = render_trajectory(traj, mask_patches=True)
            scored = traj.steps[-1].duration_s if traj.steps and traj.steps[-1].tool == "submit" else 0.0
            self._test_timeout = cfg.test_timeout if scored <= 0 else \
                min(cfg.test_timeout, max(cfg.min_test_timeout, cfg.test_timeout_factor * scored))
            answer = outcome_statement(task, bool(traj.resolved), traj.reward, traj.metadata.get("tests"))
            blind_done, shown = False, _shown_lines(traj, wd, self._rel)
            for flip in order:
                if funnel["forks"] >= cfg.max_forks_per_trajectory:
                    _bump(funnel, "budget_forks")
                    break
                if time.perf_counter() - t0 > cfg.max_seconds_per_trajectory:
                    _bump(funnel, "budget_seconds")
                    break
                blind = _blind(traj, flip, wd, shown)
                if blind and blind_done:
                    _bump(funnel, "skipped_blind")  # would render like an already kept pair
                    continue
                funnel["forks"] += 1
                rec, pair = self._attempt(sb, wd, base, traj, task, flip, pos_text, answer, funnel)
                if pair is not None and pair.id in pairs:
                    rec = replace(rec, status="duplicate")
                    _bump(funnel, "duplicates")
                elif pair is not None:
                    pairs[pair.id] = pair
                    funnel["kept"] += 1
                    blind_done = blind_done or blind
                records.append(rec)
                if rec.status == "sandbox_error":
                    self._drop(sb)
                    sb = None
                    break
        except (SandboxError, TaskError) as e:
            _bump(funnel, "setup_errors")
            self._drop(sb)
            raise MiningError(f"branching {task.id!r}: {e}") from e
        timings = {k: round(v, 4) for k, v in self._timings.items()}
        funnel.note("seconds", timings)
        return BranchResult(tuple(pairs.values()), funnel["forks"], funnel, time.perf_counter() - t0, tuple(records), timings)

    def _attempt(self, sb: Sandbox, wd: str, base: str, traj: Trajectory, task: Task, flip: Flip,
                 pos_text: str, answer: str, funnel: Funnel) -> tuple[BranchAttempt, ContrastivePair | None]:
        t0 = time.perf_counter()
        m = flip.mutation
        rec = BranchAttempt(flip.site, m.file, m.line, m.operator, m.original, m.replacement, "")
        try:
            steps, rep, diff = self._replay(sb, wd, base, traj, task, flip)
        except (ValueError, KeyError):
            _bump(funnel, "mutation_errors")
            return replace(rec, status="mutation_error", seconds=time.perf_counter() - t0), None
        except TaskError:
            _bump(funnel, "test_errors")
            return replace(rec, status="test_error", seconds=time.perf_counter() - t0), None
        except SandboxError:
            _bump(funnel, "sandbox_errors")
            return replace(rec, status="sandbox_error", seconds=time.perf_counter() - t0), None
        funnel["replayed"] += 1
        if rep.exec_result is not None and rep.exec_result.timed_out:
            _bump(funnel, "test_timeouts")  # the flipped code hung: a real (failing) outcome
        t1 = time.perf_counter()
        n, sim = trace_distance(traj.steps, steps)
        rec = replace(rec, reward=rep.reward, resolved=rep.resolved, diff_lines=n, similarity=round(sim, 4))
        done = lambda status: (replace(rec, status=status, seconds=time.perf_counter() - t0), None)  # noqa: E731
        if (rep.resolved, round(rep.reward, 6)) == (bool(traj.resolved), round(traj.reward or 0.0, 6)):
            _bump(funnel, "rejected_same_outcome")
            return done("same_outcome")
        funnel["outcome_differs"] += 1
        if n > self.config.max_diff_lines or sim < self.config.min_similarity:
            _bump(funnel, "rejected_not_near_identical")
            return done("not_near_identical")
        funnel["near_identical"] += 1
        other = outcome_statement(task, rep.resolved, rep.reward, rep.statuses)
        if other == answer:
            _bump(funnel, "rejected_same_answer")
            return done("same_answer")
        funnel["answers_differ"] += 1
        cf = replace(traj, steps=tuple(steps), reward=rep.reward, resolved=rep.resolved, diff=diff, failure=None,
                     episode_id=f"{traj.episode_id or traj.task_id}~branch-{m.start_byte}-{m.operator}",
                     metadata={**dict(traj.metadata), "tests": dict(rep.statuses), "branch_of": traj.episode_id})
        neg_text = render_trajectory(cf, mask_patches=True)
        params = {"site": flip.site, "operator": m.operator, "file": m.file, "line": m.line, "original": m.original,
                  "flipped": m.replacement, "enclosing": flip.enclosing, "step": flip.step, "diff_lines": n,
                  "similarity": round(sim, 4), "seed": self.config.seed,
                  "outcome": {"resolved": rep.resolved, "reward": rep.reward},
                  "original_outcome": {"resolved": traj.resolved, "reward": traj.reward}}
        pair = ContrastivePair(
            kind="trajectory", query=query_for(task), answer=answer,
            positive=Context(text=pos_text, trajectory=traj, supported_answer=answer),
            negative=Context(text=neg_text, trajectory=cf, supported_answer=other),
            difference=text_difference(pos_text, neg_text),
            provenance=Provenance(miner="branch", sources=(traj.episode_id or traj.task_id, task.id), params=params),
        )
        pair = verify_pair(pair, self.config.verify)
        self._lap("pair", t1)
        if not pair.verdict.ok:
            for c in pair.verdict.failed:
                _bump(funnel, f"rejected_{c.name}")
            return done("rejected:" + ",".join(c.name for c in pair.verdict.failed))
        funnel["verified"] += 1
        return replace(rec, status="kept", seconds=time.perf_counter() - t0), pair

    def _replay(self, sb: Sandbox, wd: str, base: str, traj: Trajectory, task: Task,
                flip: Flip) -> tuple[list[Step], TestReport, str]:
        """Fork the start state, apply the flip, replay the actions, diff and test."""
        q, m, t0 = shlex.quote(wd), flip.mutation, time.perf_counter()
        # Stale bytecode could outlive a same-size flip written within the same second: drop it.
        res = sb.exec(f"cd {q} && git reset -q --hard {base} && git clean -fdq && echo {base} > {_BASE_FILE} && "
                      "{ find . -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null; true; }", timeout=60)
        if res.exit_code != 0:
            raise SandboxError(f"fork (git reset) failed: {res.output[-300:]}")
        if flip.site == "state":
            path = f"{wd}/{m.file}"
            sb.write_file(path, m.apply(sb.read_file(path).decode("utf-8")))
            # Amend the start commit: `git status`/`git log` in the replay look as they did originally.
            res = sb.exec(f"cd {q} && git add -A && git {_GIT_ID} commit -q --amend --no-edit --no-verify --allow-empty "
                          f">/dev/null 2>&1 && git rev-parse HEAD > {_BASE_FILE}", timeout=60)
            if res.exit_code != 0:
                raise SandboxError(f"fork: could not commit the flipped start state: {res.output[-300:]}")
        t0 = self._lap("fork", t0)
        runner = ToolRunner(sb, wd, self.config.command_timeout)
        out: list[Step] = []
        final = traj.steps[-1] if traj.steps and traj.steps[-1].tool == "submit" else None
        for st in traj.steps[: len(traj.steps) - (final is not None)]:
            out.append(_replay_step(runner, st, len(out), flip))
        res = sb.exec(f"cd {q} && git add -A >/dev/null 2>&1; git -c core.quotepath=off diff --cached --no-color "
                      f"\"$(cat {_BASE_FILE})\"", timeout=60)
        diff = res.output if res.exit_code == 0 else ""
        t0 = self._lap("replay", t0)
        rep = run_tests(sb, self._fork_test_task(task), timeout=self._test_timeout, workdir=wd)
        self._lap("tests", t0)
        if final is not None:
            out.append(Step(index=len(out), tool="submit", args=final.args, observation=tests_message(task, rep), exit_code=0,
                            raw_action=final.raw_action, thought=final.thought))
        return out, rep, diff


    def _fork_test_task(self, task: Task) -> Task:
        """The task with the forks' test command (`--tb=no` added to pytest)."""
        cmd = task.test_command
        if self.config.quiet_tracebacks and "pytest" in cmd and "--tb" not in cmd:
            cmd += " --tb=no"
        return task if cmd == task.test_command else replace(task, test_command=cmd)


def _bump(funnel: Funnel, key: str, n: int = 1) -> None:
    funnel.bump(key, n, _UNITS.get(key, "forks"))


_OBSERVING = re.compile(r"\b(python[\d.]*|pytest|tox|nox|make|cat|head|tail|less|more|sed|awk|grep|rg|diff|nl|bat"
                        r"|git\s+(diff|show|log|blame|grep))\b")
"""Bash commands that may print code or run it (and so show a flipped condition's effect)."""


def _blind(traj: Trajectory, flip: Flip, wd: str, shown: Mapping[str, list[tuple[float, float]]]) -> bool:
    """True when no observation can show the flip, only the test line: such counterfactuals of
    one trajectory render alike, so one kept blind pair is enough. A state flip is seen when a
    view showed its lines; an action flip when a later view shows its file; either one when a
    (later) bash command may print or run code (`_OBSERVING`)."""
    m, after = flip.mutation, (flip.step + 1 if flip.site == "action" else 0)
    if flip.site == "state" and any(a <= m.line <= b for a, b in shown.get(m.file, ())):
        return False
    for st in traj.steps[after:]:
        if st.tool == "view" and flip.site == "action" and BranchMiner._rel(st.args.get("path"), wd) == m.file:
            return False
        if st.tool == "bash" and _OBSERVING.search(str(st.args.get("command", ""))):
            return False
    return True


def _shown_lines(traj: Trajectory, wd: str, rel_of: Callable[[Any, str], str | None]) -> dict[str, list[tuple[float, float]]]:
    """1-based line ranges of each file that the trajectory's successful views (and `cat`s) showed."""
    out: dict[str, list[tuple[float, float]]] = {}
    for st in traj.steps:
        if st.error:
            continue
        if st.tool == "view" and (rel := rel_of(st.args.get("path"), wd)):
            rng = st.args.get("view_range")
            ok = isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(x, int) for x in rng)
            a, b = (rng[0], float("inf") if rng[1] == -1 else rng[1]) if ok else (1, float("inf"))
            out.setdefault(rel, []).append((a, min(b, a + MAX_VIEW_LINES - 1)))
        elif st.tool == "bash" and isinstance(st.args.get("command"), str) and re.match(r"\s*cat\s", st.args["command"]):
            for word in st.args["command"].split()[1:]:
                if (rel := rel_of(word, wd)) and rel.endswith(".py"):
                    out.setdefault(rel, []).append((1, float("inf")))
    return out


def _edit_payloads(traj: Trajectory, start: Mapping[str, str | None], wd: str, rel_of: Callable[[Any, str], str | None]):
    """Simulate the trajectory's successful edits on the start files; yield, per edit that
    wrote code, (step index, file, payload arg, file text after the edit, payload byte offset)."""
    files = dict(start)
    history: dict[str, list[str | None]] = {}
    for i, st in enumerate(traj.steps):
        rel = rel_of(st.args.get("path"), wd) if st.tool == "edit" else None
        if rel is None or st.error or not rel.endswith(".py"):
            continue
        cmd, text = st.args.get("command"), files.get(rel)
        if cmd == "undo_edit":
            if history.get(rel):
                files[rel] = history[rel].pop()
            continue
        key, after, off = None, None, 0
        if cmd == "create" and isinstance(st.args.get("file_text"), str):
            key, after = "file_text", st.args["file_text"]
        elif cmd == "str_replace" and text is not None and isinstance(st.args.get("old_str"), str) and st.args["old_str"] in text:
            new = st.args.get("new_str", "")
            if isinstance(new, str):
                at = text.index(st.args["old_str"])
                key, after, off = "new_str", text.replace(st.args["old_str"], new, 1), len(text[:at].encode())
        elif (cmd == "insert" and text is not None and isinstance(st.args.get("new_str"), str)
              and isinstance(st.args.get("insert_line"), int)):
            lines, at = text.split("\n"), st.args["insert_line"]
            ins = st.args["new_str"].split("\n")
            ins = ins[:-1] if st.args["new_str"].endswith("\n") else ins
            if 0 <= at <= len(lines):
                key, after = "new_str", "\n".join(lines[:at] + ins + lines[at:])
                off = len("\n".join(lines[:at]).encode()) + (1 if at > 0 else 0)
        if after is None:
            files[rel] = None  # the simulation lost track of this file
            continue
        history.setdefault(rel, []).append(text)
        files[rel] = after
        yield i, rel, key, after, off


def _replay_step(runner: ToolRunner, st: Step, index: int, flip: Flip) -> Step:
    """Replay one recorded step as `CodingEnv.step` runs it (same observations and errors)."""
    t0 = time.perf_counter()
    tool, args, raw = st.tool, dict(st.args), st.raw_action
    exit_code, timed_out, truncated, error = None, False, False, None
    if flip.site == "action" and flip.step == st.index:
        payload, m = args[flip.arg].encode(), flip.mutation
        a, b = m.start_byte - flip.offset, m.end_byte - flip.offset
        if payload[a:b] != m.original.encode():
            raise ValueError(f"step {st.index}: flip target {m.original!r} not found in the edit payload")
        args[flip.arg] = (payload[:a] + m.replacement.encode() + payload[b:]).decode()
        raw = json.dumps({"tool": tool, "args": args})
    if tool == "invalid":  # parsing is pure: replaying the action yields the same error observation
        return replace(st, index=index, duration_s=0.0)
    try:
        obs, res = getattr(runner, tool)(args)
        if res is not None:
            exit_code, timed_out, truncated = res.exit_code, res.timed_out, res.truncated
    except ToolCallError as e:
        error = f"tool: {e}"
        obs = f"[error] {e}"
    return Step(index=index, tool=tool, args=args, observation=obs, exit_code=exit_code, duration_s=time.perf_counter() - t0,
                error=error, raw_action=raw, thought=st.thought, timed_out=timed_out, truncated=truncated)


def __getattr__(name: str):
    if name == "OnlineBranchMiner":  # moved to contextrl.miner.online
        from contextrl.miner.online import OnlineBranchMiner

        return OnlineBranchMiner
    raise AttributeError(name)
