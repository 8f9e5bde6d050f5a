"""Bug injection: flip conditions in a real project and keep the flips its tests catch.

`generate_tasks` takes an unpacked pure-Python project with a pytest suite, runs the
unmutated suite once (the baseline), enumerates every condition flip
(`contextrl.conditions`) in the non-test source, samples mutants deterministically by
seed, and runs the suite on each inside one reused sandbox (the mutated file is written,
the suite runs, the original is written back). A mutant is kept when at least one
baseline-passing test fails, every other test keeps its baseline status (tests that fail
or skip on the unmutated project are tolerated, never used), nothing errors, and at most
`max_fail_to_pass` tests fail. Kept mutants become `GeneratedMutant`s with FAIL_TO_PASS /
PASS_TO_PASS, a problem statement built from the pytest output (failing test names and
assertion excerpts, never the mutation's location) and the reverse diff as reference
patch. Test ids depend on the pytest version (pytest >= 8 shortens parameters longer
than 100 characters), so tests with such parameters are never listed, and manifests
are best generated in the sandbox image that will score them (`build.py`).
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import random
import re
import shlex
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from contextrl.conditions import Mutation, find_conditions, flips
from contextrl.envs.bugfix.issue import problem_statement
from contextrl.envs.task import DEFAULT_TEST_COMMAND
from contextrl.envs.testing import PASSING, parse_pytest_statuses
from contextrl.errors import TaskError
from contextrl.sandboxes.base import Sandbox

DEFAULT_EXCLUDE = ("test_*.py", "*_test.py", "*/tests/*", "tests/*", "*/test/*", "test/*", "conftest.py",
                   "*/conftest.py", "setup.py", "docs/*", "doc/*", "*/_version.py", "*.egg-info/*")
_SUMMARY_RE = re.compile(r"(\d+) (failed|passed|errors?|skipped|xfailed|xpassed)\b")
MAX_PARAM_ID = 100
"""Longest `[...]` part of a test id that every pytest version spells the same way."""
REJECT_REASONS = ("syntax", "survived", "timeout", "error", "unparsed", "unstable_id", "too_broad", "inconsistent")
"""Why a mutant was not kept (see `_judge`)."""


@dataclass(frozen=True)
class GeneratedMutant:
    """A kept mutant: the mutation plus everything a task needs."""

    id: str
    mutation: Mutation
    fail_to_pass: tuple[str, ...]
    pass_to_pass: tuple[str, ...]
    pass_to_pass_files: tuple[str, ...]
    problem_statement: str
    reference_patch: str
    """Reverse diff (mutated -> original), `git apply`-able with a/ b/ prefixes."""


@dataclass(frozen=True)
class GenerationReport:
    """What one `generate_tasks` run produced, with yields per operator."""

    kept: tuple[GeneratedMutant, ...]
    baseline_passed: tuple[str, ...]
    candidates: int
    """Distinct flips available in the mutable source."""
    sites: int = 0
    """Distinct condition sites among them (at most one flip per site is tried)."""
    tried_by_operator: Mapping[str, int] = field(default_factory=dict)
    kept_by_operator: Mapping[str, int] = field(default_factory=dict)
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    baseline_seconds: float = 0.0
    duration_s: float = 0.0

    @property
    def tried(self) -> int:
        return sum(self.tried_by_operator.values())

    def yields(self) -> dict[str, object]:
        """A JSON-able summary: candidates, tried/kept overall and per operator, rejections."""
        return {
            "candidates": self.candidates, "sites": self.sites, "tried": self.tried, "kept": len(self.kept),
            "per_operator": {op: {"tried": n, "kept": self.kept_by_operator.get(op, 0)}
                             for op, n in sorted(self.tried_by_operator.items())},
            "rejected": dict(sorted(self.rejected_by_reason.items())),
        }


@dataclass(frozen=True)
class _Run:
    exit_code: int
    timed_out: bool
    log: str
    statuses: Mapping[str, str]
    summary: Mapping[str, int]


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in patterns)


def candidate_mutations(project_dir: str | Path, mutate: Sequence[str] = ("**/*.py", "*.py"),
                        exclude: Sequence[str] = DEFAULT_EXCLUDE, operators: Sequence[str] | None = None,
                        skip_module_level: bool = True) -> list[Mutation]:
    """Every distinct flip in the project's mutable files, in a fixed order (file, offset, operator).

    Module-level conditions (version checks, import fallbacks) are skipped by default:
    flipping them breaks imports rather than behaviour.
    """
    root = Path(project_dir)
    seen: set[tuple[str, int, int, str]] = set()
    out: list[Mutation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not _matches(rel, mutate) or _matches(rel, exclude):
            continue
        source = path.read_bytes()
        for cond in find_conditions(source, rel):
            if skip_module_level and not cond.enclosing:
                continue
            for m in flips(cond):
                key = (rel, m.start_byte, m.end_byte, m.replacement)
                if (operators is None or m.operator in operators) and key not in seen:
                    seen.add(key)
                    out.append(m)
    return out


def sample_mutations(candidates: Sequence[Mutation], n: int, seed: int) -> list[Mutation]:
    """At most one flip per condition site, `n` sites, chosen by `seed` (same inputs, same picks)."""
    sites: dict[tuple[str, int, int], list[Mutation]] = {}
    for m in candidates:
        sites.setdefault((m.file, m.start_byte, m.end_byte), []).append(m)
    rng = random.Random(seed)
    keys = rng.sample(sorted(sites), min(n, len(sites)))
    out = []
    for k in keys:
        # Prefer an operator-level flip (`<` -> `<=`, `and` -> `or`) over wrapping in `not (...)`:
        # it reads like a real slip. Bare tests (`if x:`) only have negate / remove_not.
        ops = [m for m in sites[k] if m.operator not in ("negate", "remove_not")] or sites[k]
        out.append(rng.choice(ops))
    return out


def mutant_id(prefix: str, m: Mutation) -> str:
    """Stable id from the mutation itself: "<prefix>/mut-<8 hex>"."""
    h = hashlib.sha1(f"{m.file}\0{m.start_byte}\0{m.end_byte}\0{m.replacement}".encode()).hexdigest()[:8]
    return f"{prefix}/mut-{h}" if prefix else f"mut-{h}"


class _Runner:
    """Runs the suite in one sandbox holding the project; restores each mutated file."""

    def __init__(self, sandbox: Sandbox, project_dir: Path, test_command: str, run_prefix: str):
        self.sandbox = sandbox
        try:
            sandbox.upload(project_dir)
        except BaseException:
            sandbox.close()
            raise
        self.wd = sandbox.workdir.rstrip("/")
        self.cmd = test_command
        self.prefix = run_prefix
        self.log_path = f"/tmp/contextrl-gen-{uuid.uuid4().hex[:8]}.log"

    def run(self, test_files: Sequence[str] = (), timeout: float = 300.0) -> _Run:
        args = "".join(" " + shlex.quote(f) for f in test_files)
        cmd = (f"cd {shlex.quote(self.wd)} && {{ {self.prefix} {self.cmd} --tb=short{args} ; }} "
               f"> {self.log_path} 2>&1; echo __rc=$?")
        res = self.sandbox.exec(cmd, timeout=timeout)
        m = re.search(r"__rc=(\d+)", res.output)
        try:
            log = self.sandbox.read_file(self.log_path).decode("utf-8", errors="replace")
        except FileNotFoundError:
            log = res.output
        summary: Counter[str] = Counter()
        tail = [ln for ln in log.splitlines()[-5:] if _SUMMARY_RE.search(ln)]
        for n, word in _SUMMARY_RE.findall(tail[-1] if tail else ""):
            summary["error" if word.startswith("error") else word] += int(n)
        code = int(m.group(1)) if m and not res.timed_out else (124 if res.timed_out else res.exit_code)
        return _Run(code, res.timed_out, log, parse_pytest_statuses(log), dict(summary))

    def write(self, rel: str, text: str) -> None:
        self.sandbox.write_file(f"{self.wd}/{rel}", text)

    def close(self) -> None:
        try:
            self.sandbox.exec(f"rm -f {self.log_path}", timeout=30)
        finally:
            self.sandbox.close()


def generate_tasks(
    project_dir: str | Path,
    sandbox_factory: Callable[[], Sandbox],
    *,
    max_mutants: int = 100,
    seed: int = 0,
    test_command: str = DEFAULT_TEST_COMMAND,
    project: str | None = None,
    task_prefix: str | None = None,
    mutate: Sequence[str] = ("**/*.py", "*.py"),
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    operators: Sequence[str] | None = None,
    max_fail_to_pass: int = 20,
    timeout: float | None = None,
    workers: int = 1,
    run_prefix: str = "PYTHONDONTWRITEBYTECODE=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
    validate: bool = True,
    progress: bool = True,
) -> GenerationReport:
    """Inject condition flips into `project_dir` and keep those its tests catch.

    `sandbox_factory()` must return an empty sandbox; the project is uploaded to its
    workdir. One sandbox per worker is reused for every mutant. `test_command` runs the
    whole suite from the project root (pytest with `-rA`; `--tb=short` and, per test
    file, the file paths are appended). `max_mutants` flips are tried, sampled from all
    candidates by `seed`. With `validate`, each kept mutant is re-run on only its test
    files (as scoring will) and dropped unless FAIL_TO_PASS fail and PASS_TO_PASS pass
    there too. Mutations of tests are never made (`exclude`).
    """
    root = Path(project_dir)
    name = project or root.name
    prefix = task_prefix if task_prefix is not None else root.name
    started = time.monotonic()
    cands = candidate_mutations(root, mutate, exclude, operators)
    picked = sample_mutations(cands, max_mutants, seed)
    originals = {m.file: (root / m.file).read_bytes().decode("utf-8") for m in picked}
    runners: list[_Runner] = []
    try:
        runners.append(_Runner(sandbox_factory(), root, test_command, run_prefix))
        first = runners[0]
        t0 = time.monotonic()
        base = first.run(timeout=timeout or 1800)
        baseline_s = time.monotonic() - t0
        if base.exit_code not in (0, 1) or base.timed_out:
            raise TaskError(f"the unmutated test suite of {name} did not run (exit {base.exit_code}):\n{base.log[-3000:]}")
        passed = tuple(sorted(t for t, s in base.statuses.items() if s in PASSING and stable_test_id(t)))
        if not passed:
            raise TaskError(f"no passing tests parsed from the baseline run of {name}; is `-rA` in the test command?")
        per_timeout = timeout or max(30.0, 10 * baseline_s)
        for _ in range(max(1, workers) - 1):
            runners.append(_Runner(sandbox_factory(), root, test_command, run_prefix))
        ctx = _Context(name, prefix, dict(base.statuses), set(passed), passed, max_fail_to_pass, per_timeout, validate,
                       originals)
        results = _run_all(picked, runners, ctx, progress)
    finally:
        for r in runners:
            r.close()
    tried, kept_ops, reasons = Counter(), Counter(), Counter()
    kept: list[GeneratedMutant] = []
    for m, outcome in zip(picked, results):
        tried[m.operator] += 1
        if isinstance(outcome, GeneratedMutant):
            kept.append(outcome)
            kept_ops[m.operator] += 1
        else:
            reasons[outcome] += 1
    kept.sort(key=lambda g: (g.mutation.file, g.mutation.start_byte, g.mutation.operator, g.id))
    n_sites = len({(m.file, m.start_byte, m.end_byte) for m in cands})
    return GenerationReport(tuple(kept), passed, len(cands), n_sites, dict(tried), dict(kept_ops), dict(reasons),
                            baseline_s, time.monotonic() - started)


@dataclass
class _Context:
    project: str
    prefix: str
    baseline: Mapping[str, str]
    passed: set[str]
    passed_sorted: tuple[str, ...]
    max_fail_to_pass: int
    timeout: float
    validate: bool
    originals: Mapping[str, str]


def _run_all(picked: list[Mutation], runners: list[_Runner], ctx: _Context, progress: bool) -> list[object]:
    from queue import Queue

    from tqdm.auto import tqdm

    pool: Queue[_Runner] = Queue()
    for r in runners:
        pool.put(r)
    results: list[object] = [None] * len(picked)

    def job(i: int) -> None:
        runner = pool.get()
        try:
            results[i] = _evaluate(runner, picked[i], ctx)
        finally:
            pool.put(runner)

    bar = tqdm(total=len(picked), desc=f"mutants {ctx.project}", unit="mut", disable=not progress)
    ex = ThreadPoolExecutor(max_workers=len(runners))
    try:
        futures = [ex.submit(job, i) for i in range(len(picked))]
        for fut in as_completed(futures):
            fut.result()
            bar.update(1)
            bar.set_postfix(kept=sum(isinstance(r, GeneratedMutant) for r in results))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C / error: finish running mutants only
        bar.close()
    return results


def _evaluate(runner: _Runner, m: Mutation, ctx: _Context) -> GeneratedMutant | str:
    """Run one mutant; returns the kept mutant or the rejection reason."""
    original = ctx.originals[m.file]
    mutated = m.apply(original)
    try:
        ast.parse(mutated)
    except SyntaxError:
        return "syntax"
    runner.write(m.file, mutated)
    try:
        run = runner.run(timeout=ctx.timeout)
        verdict = _judge(run, ctx)
        if isinstance(verdict, str):
            return verdict
        f2p = verdict
        files = tuple(sorted({t.split("::", 1)[0] for t in f2p}))
        p2p = tuple(t for t in ctx.passed_sorted if t.split("::", 1)[0] in files and t not in set(f2p))
        if ctx.validate:
            sub = runner.run(files, timeout=ctx.timeout)
            if sub.timed_out or any(sub.statuses.get(t) != "FAILED" for t in f2p) or \
                    any(sub.statuses.get(t) not in PASSING for t in p2p):
                return "inconsistent"
    finally:
        runner.write(m.file, original)
    return GeneratedMutant(
        id=mutant_id(ctx.prefix, m), mutation=m, fail_to_pass=f2p, pass_to_pass=p2p, pass_to_pass_files=files,
        problem_statement=problem_statement(ctx.project, f2p, run.log), reference_patch=m.diff(original, reverse=True),
    )


def stable_test_id(test_id: str) -> bool:
    """False for ids whose parameter part pytest >= 8 would shorten (so they differ by version)."""
    return len(test_id.partition("[")[2]) <= MAX_PARAM_ID + 1


def _judge(run: _Run, ctx: _Context) -> tuple[str, ...] | str:
    """FAIL_TO_PASS of a mutant run, or the reason to reject it."""
    if run.timed_out:
        return "timeout"
    if run.exit_code not in (0, 1):
        return "error"
    failed = {t for t, s in run.statuses.items() if s == "FAILED"}
    if run.summary.get("failed", 0) != len(failed):
        return "unparsed"  # a failing test whose id the status parser cannot read (e.g. spaces)
    for t in set(run.statuses) | set(ctx.baseline):
        before, after = ctx.baseline.get(t), run.statuses.get(t)
        if before in PASSING and after == "FAILED":
            continue
        if (before in PASSING) != (after in PASSING) or (before not in PASSING and before != after):
            return "error"  # skipped, errored, vanished or newly appeared
    f2p = tuple(sorted(failed & ctx.passed))
    if len(f2p) != len({t for t in failed if ctx.baseline.get(t) in PASSING}):
        return "unstable_id"
    if not f2p:
        return "survived"
    if len(f2p) > ctx.max_fail_to_pass:
        return "too_broad"
    return f2p
