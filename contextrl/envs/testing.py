"""Running a task's tests and scoring them with SWE-bench semantics.

reward = fraction of FAIL_TO_PASS tests that pass, and 0 if any PASS_TO_PASS test fails.
Per-test outcomes come from pytest's `-rA` short summary ("PASSED path::name"), which is
what SWE-bench's own log parsers read for pytest projects.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping

from contextrl.envs.task import Task
from contextrl.sandboxes.base import ExecResult, Sandbox

# The id runs to the end of the line, or to pytest's " - <message>" suffix; ids may contain
# spaces inside their parameter brackets ("test_x[funky jeans]").
_STATUS_RE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(.+?)(?:\s+-\s.*)?$")
PASSING = frozenset({"PASSED", "XFAIL", "XPASS"})


def parse_pytest_statuses(output: str) -> dict[str, str]:
    """Map test id -> status from pytest `-rA` output (last status wins)."""
    statuses: dict[str, str] = {}
    for line in output.splitlines():
        m = _STATUS_RE.match(line.strip())
        if m:
            statuses[m.group(2)] = m.group(1)
    return statuses


@dataclass(frozen=True)
class TestReport:
    """Outcome of one scoring run."""

    reward: float
    resolved: bool
    statuses: Mapping[str, str] = field(default_factory=dict)
    fail_to_pass_passed: tuple[str, ...] = ()
    pass_to_pass_failed: tuple[str, ...] = ()
    exec_result: ExecResult | None = None


def score(statuses: Mapping[str, str], fail_to_pass: tuple[str, ...], pass_to_pass: tuple[str, ...]) -> tuple[float, bool, tuple[str, ...], tuple[str, ...]]:
    f2p_ok = tuple(t for t in fail_to_pass if statuses.get(t) in PASSING)
    p2p_bad = tuple(t for t in pass_to_pass if statuses.get(t) not in PASSING)
    frac = len(f2p_ok) / len(fail_to_pass) if fail_to_pass else 0.0
    reward = 0.0 if p2p_bad else frac
    resolved = bool(fail_to_pass) and len(f2p_ok) == len(fail_to_pass) and not p2p_bad
    return reward, resolved, f2p_ok, p2p_bad


def test_command_for(task: Task, test_ids: tuple[str, ...] | None = None) -> str:
    ids = test_ids if test_ids is not None else tuple(dict.fromkeys(task.fail_to_pass + task.pass_to_pass))
    files = sorted({t.split("::", 1)[0] for t in ids})
    return task.test_command + ("" if not files else " " + " ".join(shlex.quote(f) for f in files))


def run_tests(sandbox: Sandbox, task: Task, timeout: float = 300.0, workdir: str | None = None) -> TestReport:
    """Write hidden files, apply the test patch, run the tests in the workspace, and score.

    `workdir` defaults to `task.workdir`; envs pass the sandbox's actual workspace (a
    LocalSandbox's lives in a temp directory)."""
    wd = workdir or task.workdir
    q = shlex.quote(wd)
    for rel, text in task.hidden_files.items():
        sandbox.write_file(rel if rel.startswith("/") else f"{wd.rstrip('/')}/{rel}", text)
    if task.test_patch:
        sandbox.write_file(f"{wd.rstrip('/')}/.contextrl_test.patch", task.test_patch)
        res = sandbox.exec(f"cd {q} && git apply --whitespace=nowarn .contextrl_test.patch; rc=$?; rm -f .contextrl_test.patch; exit $rc", timeout=60)
        if res.exit_code != 0:
            from contextrl.errors import TaskError

            raise TaskError(f"task {task.id!r}: the test patch does not apply: {res.output[-500:]}")
    # Full log to a file, then only the per-test status lines and the tail: the summary
    # survives any output cap, however large the test suite.
    cmd = (
        f"cd {q} && {{ {test_command_for(task)} ; }} > \"${{TMPDIR:-/tmp}}/.contextrl_test.log\" 2>&1; "
        "__rc=$?; grep -E '^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ' \"${TMPDIR:-/tmp}/.contextrl_test.log\"; "
        "tail -n 3 \"${TMPDIR:-/tmp}/.contextrl_test.log\"; (exit $__rc)"
    )
    res = sandbox.exec(cmd, timeout=timeout)
    statuses = parse_pytest_statuses(res.output)
    reward, resolved, f2p_ok, p2p_bad = score(statuses, task.fail_to_pass, task.pass_to_pass)
    return TestReport(reward, resolved, statuses, f2p_ok, p2p_bad, res)

