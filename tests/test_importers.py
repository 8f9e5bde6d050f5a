"""Importers on the real fixture files (../shared/fixtures, see PROVENANCE.md there), plus
malformed input, round trips through the exporters, and directory imports."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from contextrl.errors import TrajectoryFormatError
from contextrl.importers import FORMATS, ImportReport, detect_format, export_file, import_file, import_path
from contextrl.trajectory import Trajectory, read_trajectories

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures not found at {FIXTURES}")

OH0 = FIXTURES / "openhands_v0"
OH1 = FIXTURES / "openhands_v1"
MINI = FIXTURES / "mini_swe_agent"
SWEA = FIXTURES / "swe_agent"
STEP_FIELDS = ("tool", "args", "observation", "exit_code", "thought", "raw_action", "error", "timed_out")


def one(path: Path, fmt: str | None = None) -> Trajectory:
    trajs = import_file(path, fmt)
    assert len(trajs) == 1
    return trajs[0]


def tools(t: Trajectory) -> Counter:
    return Counter(s.tool for s in t.steps)


def commands(t: Trajectory) -> list[str]:
    return [s.args["command"] for s in t.steps if s.tool == "bash"]


# ----------------------------------------------------------------------------- detection


@pytest.mark.parametrize("rel,fmt", [
    ("openhands_v0/basic.json", "openhands_v0"),
    ("openhands_v0/multi_swe_bench_examples/output.jsonl", "openhands_v0"),
    ("openhands_v0/resolver_mock_output/output.jsonl", "openhands_v0"),
    ("openhands_v0/sessions/63b4315947a049e2b7a51249b3d4fcc3", "openhands_v0"),
    ("openhands_v0/sessions/63b4315947a049e2b7a51249b3d4fcc3/events/8.json", "openhands_v0"),
    ("openhands_v1/conversations/cd94562403b9487ebdd4018e3f531dfd", "openhands_v1"),
    ("openhands_v1/cli_trajectories/confirmation_mode", "openhands_v1"),
    ("openhands_v1/goal_fixtures/events.jsonl", "openhands_v1"),
    ("mini_swe_agent/mini-swe-agent-trajectory.json", "mini_swe_agent"),
    ("mini_swe_agent/github_issue.traj.json", "mini_swe_agent"),
    ("mini_swe_agent/deepseek_bench1/django__django-14752/django__django-14752.traj.json", "mini_swe_agent"),
    ("swe_agent/demonstrations/function_calling_simple.traj", "swe_agent"),
    ("swe_agent/swe_smith/pandas-dev__pandas.95280573.pr_53856.traj", "swe_agent"),
])
def test_detect_format_on_real_files(rel, fmt):
    assert detect_format(FIXTURES / rel) == fmt


def test_detect_sniffs_content_not_extension(tmp_path):
    src = SWEA / "demonstrations/ctf/misc/networking_1.traj"
    renamed = tmp_path / "looks_like_openhands.jsonl"
    shutil.copy(src, renamed)
    assert detect_format(renamed) == "swe_agent"
    t = one(renamed)
    assert t.source == "swe_agent" and t.steps[0].args["command"].startswith("tshark")


# ----------------------------------------------------------------------------- OpenHands v0


def test_openhands_v0_eval_output_rows():
    trajs = import_file(OH0 / "multi_swe_bench_examples/output.jsonl")
    assert [t.task_id for t in trajs] == ["ponylang__ponyc-4595", "ponylang__ponyc-4593", "ponylang__ponyc-4588"]
    t = trajs[0]
    assert t.source == "openhands_v0" and t.outcome == "imported"
    assert t.metadata["repo"] == "ponylang/ponyc" and t.metadata["base_commit"] == "f8a2feebba3aea298bde89d445ad35ca48602ca7"
    assert t.metadata["model"] == "openai/openrouter-llama-4-maverick" and t.metadata["agent_class"] == "CodeActAgent"
    assert t.problem_statement.startswith("ponyc segfaults when trying to match using a single element tuple form")
    assert t.diff.startswith("diff --git a/src/libponyc/ast/parser.c")
    assert tools(t) == Counter({"bash": 13, "view": 6, "edit": 2, "think": 1, "submit": 1})
    first = t.steps[0]
    assert first.tool == "bash" and first.args == {"command": "ls -l /workspace/ponylang__ponyc__0.1"}
    assert first.exit_code == 0 and "CMakeLists.txt" in first.observation
    assert first.thought.startswith("The task involves fixing an issue")
    assert json.loads(first.raw_action)["name"] == "execute_bash"
    view = next(s for s in t.steps if s.tool == "view")
    assert view.args == {"command": "view", "path": "/workspace/ponylang__ponyc__0.1/src/libponyc/ast/parser.c"}
    failed_edit = next(s for s in t.steps if s.tool == "edit")
    assert failed_edit.args["command"] == "str_replace" and "SET_FLAG(AST_FLAG_IN_PARENS);" in failed_edit.args["new_str"]
    assert failed_edit.error.startswith("tool: No replacement was performed")
    assert t.steps[-1].tool == "submit" and "partial" == t.steps[-1].args["task_completed"]
    assert "maximum iteration" in trajs[2].metadata["error"]


def test_openhands_v0_event_list_and_translated_editor_call():
    t = one(OH0 / "basic.json")
    assert t.task_id == "basic" and t.problem_statement.startswith("Please create a simple 2048 game")
    edit, finish = t.steps
    assert edit.tool == "edit" and edit.args["command"] == "create" and edit.args["path"] == "/workspace/game_2048.py"
    assert edit.args["file_text"].startswith("import random\nimport keyboard")
    assert finish.tool == "submit"
    w = one(OH0 / "wrong_initial_state.json")
    assert [s.tool for s in w.steps] == ["view", "bash", "view", "submit"]
    assert w.steps[1].args == {"command": "mv /workspace/game_2048.py /workspace/2048.py"} and w.steps[1].exit_code == 0
    assert "/workspace/2048.py" in w.steps[2].observation


def test_openhands_v0_resolver_output_without_ids():
    trajs = import_file(OH0 / "resolver_mock_output/output.jsonl")
    t = trajs[0]
    assert t.task_id == "neubig__pr-viewer-5" and t.metadata["repo"] == "neubig/pr-viewer"
    assert t.resolved is True and "MIT License" in t.diff
    assert t.problem_statement.startswith("Add MIT license")
    assert [s.tool for s in t.steps] == ["bash", "ipython", "bash", "submit"]
    assert t.steps[0].args == {"command": "touch LICENSE"} and t.steps[0].exit_code == 0
    assert t.steps[0].thought.startswith("Certainly! I'll add the MIT license")
    assert "MIT License" in t.steps[2].observation


def test_openhands_v0_session_directory_and_single_event_file():
    session = OH0 / "sessions/63b4315947a049e2b7a51249b3d4fcc3"
    t = one(session)
    assert t.task_id == "63b4315947a049e2b7a51249b3d4fcc3" and t.problem_statement == "Flip a coin!"
    assert t.metadata["model"] == "anthropic/claude-3-7-sonnet-20250219" and t.metadata["title"] == "Coin Flip Simulation"
    assert [s.tool for s in t.steps] == ["ipython", "ipython", "submit"]
    assert "random.random() < 0.5" in t.steps[0].args["code"]
    assert t.metadata["agent_state"] == "finished"
    assert one(session / "events/8.json") == t  # an event file imports its whole session


# ----------------------------------------------------------------------------- OpenHands v1


def test_openhands_v1_conversation_with_base_state():
    t = one(OH1 / "conversations/cd94562403b9487ebdd4018e3f531dfd")
    assert t.source == "openhands_v1" and t.task_id == "cd94562403b9487ebdd4018e3f531dfd"
    assert t.episode_id == "cd945624-03b9-487e-bdd4-018e3f531dfd" and t.metadata["model"] == "openai/gpt-4o-mini"
    assert t.problem_statement.startswith("Use the terminal tool to run `pwd`")
    bash, finish = t.steps
    assert bash.tool == "bash" and bash.args == {"command": "pwd > tool_output.txt"} and bash.exit_code == 0
    assert json.loads(bash.raw_action)["name"] == "terminal"
    assert finish.tool == "submit" and finish.args == {"message": "The current directory has been written to tool_output.txt."}
    assert t.metadata["execution_status"] == "finished"


def test_openhands_v1_cli_events_dir_reasoning_and_other_tools():
    t = one(OH1 / "cli_trajectories/confirmation_mode")
    assert t.problem_statement == "echo hello world"
    assert [s.tool for s in t.steps] == ["bash"] * 3
    assert all(s.observation == "hello world" and s.exit_code == 0 for s in t.steps)
    assert t.steps[0].thought == "The user wants me to run a simple echo command."
    plan = one(OH1 / "cli_trajectories/creating_agent_plan")
    assert [s.tool for s in plan.steps] == ["task_tracker", "task_tracker"]
    assert plan.steps[0].args["command"] == "plan" and len(plan.steps[0].args["task_list"]) == 5
    # one event file of the directory imports the conversation
    ev = sorted((OH1 / "cli_trajectories/confirmation_mode").glob("event-00003-*.json"))[0]
    assert one(ev).steps == t.steps


def test_openhands_v1_events_jsonl_partial_conversation():
    t = one(OH1 / "goal_fixtures/events.jsonl")
    assert t.task_id == "goal_fixtures" and t.metadata["model"] == "litellm_proxy/minimax-m2.7"
    assert [s.tool for s in t.steps] == ["bash"] * 3
    assert t.steps[0].error.startswith("tool: Cannot execute multiple commands at once")
    assert t.steps[0].thought.startswith("<think>Let me analyze the task.")
    assert t.steps[2].exit_code == 1 and "Traceback" in t.steps[2].observation
    assert t.steps[1].raw_action is None  # its action event is not in this excerpt


def test_openhands_v1_base_state_without_events_is_an_error():
    with pytest.raises(TrajectoryFormatError, match="no events/ directory"):
        import_file(OH1 / "conversations/v1_11_5_cli_default/base_state.json")


def test_openhands_v0_pair_history_without_ids(tmp_path):
    """2024 eval outputs store history as [action, observation] pairs with no ids/causes."""
    row = json.loads((OH0 / "multi_swe_bench_examples/output.jsonl").read_text().splitlines()[0])
    events = {e["id"]: e for e in row["history"]}
    pairs = [[{k: v for k, v in events[e["cause"]].items() if k not in ("id", "timestamp")},
              {k: v for k, v in e.items() if k not in ("id", "cause", "timestamp")}]
             for e in row["history"] if "observation" in e and e.get("cause") in events]
    (tmp_path / "old.json").write_text(json.dumps({**row, "history": pairs}))
    old, new = one(tmp_path / "old.json"), import_file(OH0 / "multi_swe_bench_examples/output.jsonl")[0]
    assert [(s.tool, dict(s.args), s.observation, s.exit_code) for s in old.steps] == \
        [(s.tool, dict(s.args), s.observation, s.exit_code) for s in new.steps if s.tool != "submit"]


def test_openhands_v1_older_shapes_errors_and_rejections(tmp_path):
    files = sorted((OH1 / "cli_trajectories/confirmation_mode").glob("event-*.json"))
    events = [json.loads(p.read_text()) for p in files]
    act, obs = events[2], events[3]
    act["action"]["kind"], act["tool_name"] = "ExecuteBashAction", "execute_bash"  # pre-rename SDK
    obs["observation"] = {"kind": "ExecuteBashObservation", "output": "hello world", "exit_code": 0, "error": False}
    rejected = events[6]
    events[7] = {"kind": "UserRejectObservation", "id": "r1", "source": "user", "tool_name": "terminal",
                 "tool_call_id": rejected["tool_call_id"], "action_id": rejected["id"], "rejection_reason": "too risky"}
    events.append({"kind": "AgentErrorEvent", "id": "e1", "source": "agent", "tool_name": "nonexistent",
                   "tool_call_id": "call_zzz", "error": "Tool 'nonexistent' not found."})
    (tmp_path / "events.json").write_text(json.dumps(events))
    t = one(tmp_path / "events.json")
    assert [s.tool for s in t.steps] == ["bash", "bash", "bash", "invalid"]
    assert t.steps[0].args == {"command": "echo hello world"} and t.steps[0].observation == "hello world" and t.steps[0].exit_code == 0
    assert t.steps[1].error == "tool: rejected: too risky" and t.steps[1].observation == "Action rejected: too risky"
    assert t.steps[3].error == "parse: Tool 'nonexistent' not found."


# ----------------------------------------------------------------------------- mini-swe-agent


def test_mini_v1_text_format():
    t = one(MINI / "mini-swe-agent-trajectory.json")
    assert t.source == "mini_swe_agent" and t.metadata["mini_version"] == "1.13.4"
    assert t.metadata["model"] == "anthropic/claude-3-5-sonnet-20241022" and t.metadata["exit_status"] == "Submitted"
    assert t.problem_statement == 'Create a file called hello.txt with "Hello, world!" as the content.'
    assert commands(t) == ['echo "Hello, world!" > hello.txt', "cat hello.txt"]
    assert t.steps[1].exit_code == 0 and "Hello, world!" in t.steps[1].observation
    assert t.steps[0].thought.startswith("To create a file called hello.txt") and "```" not in t.steps[0].thought
    assert t.steps[0].raw_action.startswith("THOUGHT:") and "```bash" in t.steps[0].raw_action
    assert t.steps[-1].tool == "submit" and t.steps[-1].args == {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}


def test_mini_v2_tool_calling_format():
    t = one(MINI / "deepseek_bench1/django__django-14752/django__django-14752.traj.json")
    assert t.task_id == "django__django-14752" and t.metadata["repo"] == "django/django"
    assert t.metadata["model"] == "deepseek/deepseek-chat" and t.metadata["mini_version"] == "2.2.7"
    assert t.problem_statement.startswith("Refactor AutocompleteJsonView to support extra fields")
    assert t.diff.startswith("diff --git a/django/contrib/admin/views/autocomplete.py")
    assert tools(t) == Counter({"bash": 30, "submit": 1})
    assert t.steps[0].args["command"].startswith("find /testbed -type f -name")
    assert t.steps[3].exit_code == 1
    assert "cat /testbed/django/contrib/admin/views/autocomplete.py" in commands(t)
    assert t.steps[-1].observation.startswith("diff --git")


def test_mini_message_list():
    t = one(MINI / "github_issue.traj.json")
    assert t.task_id == "github_issue" and t.problem_statement.startswith("GitHub Issue: SyntaxError: invalid syntax")
    assert t.steps[0].exit_code == 1 and "No such file or directory" in t.steps[0].observation
    assert "ls -la" in commands(t) and t.steps[-1].tool == "submit"
    assert "def division(a: float, b: float) -> float:" in t.diff
    assert [s.tool for s in one(MINI / "local.traj.json").steps] == ["bash", "submit"]


def test_mini_format_error_becomes_invalid_step(tmp_path):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Please solve this issue: fix it\n\nYou can execute bash commands and edit files"},
            {"role": "assistant", "content": "two actions\n```bash\nls\n```\n```bash\npwd\n```"},
            {"role": "user", "content": "Please always provide EXACTLY ONE action in triple backticks, found 2 actions."},
            {"role": "assistant", "content": "ok\n```bash\nls\n```"}, {"role": "user", "content": "<returncode>0</returncode>\n<output>\na\n</output>"}]
    p = tmp_path / "x.traj.json"
    p.write_text(json.dumps(msgs))
    t = one(p)
    assert t.problem_statement == "fix it"
    assert t.steps[0].tool == "invalid" and t.steps[0].error.startswith("parse: Please always provide EXACTLY ONE action")
    assert t.steps[1].tool == "bash" and t.steps[1].exit_code == 0


# ----------------------------------------------------------------------------- SWE-agent


def test_swe_agent_0x_windowed_editor():
    t = one(SWEA / "test_data/gpt4__swe-bench-dev-easy_first_only__default__t-0.00__p-0.95__c-3.00__install-1/pydicom__pydicom-1458.traj")
    assert t.task_id == "pydicom__pydicom-1458" and t.metadata["repo"] == "pydicom/pydicom" and t.metadata["model"] == "gpt4"
    assert t.metadata["exit_status"] == "submitted" and "numpy_handler.py" in t.diff
    assert "Pixel Representation" in t.problem_statement and "INSTRUCTIONS" not in t.problem_statement
    assert tools(t) == Counter({"edit": 6, "bash": 4, "view": 1, "submit": 1})
    assert t.steps[0].args == {"command": "create", "path": "reproduce_bug.py", "file_text": ""}
    edit = t.steps[1]
    assert edit.args["path"] == "/pydicom__pydicom/reproduce_bug.py" and edit.args["line_range"] == [1, 1]
    assert edit.args["new_str"].startswith("import numpy as np")
    assert t.steps[4].args == {"command": "view", "path": "pydicom/pixel_data_handlers/numpy_handler.py", "line": 293}
    assert t.steps[5].error.startswith("tool: Your proposed edit has introduced new syntax error")
    assert t.steps[3].args == {"command": 'find_file "numpy_handler.py"'}
    assert t.steps[0].raw_action.endswith("```\ncreate reproduce_bug.py\n```") and t.steps[0].thought.startswith("First, I'll create")


def test_swe_agent_1x_function_calling():
    t = one(SWEA / "swe_smith/pandas-dev__pandas.95280573.pr_53856.traj")
    assert t.metadata["model"] == "claude-3-7-sonnet-20250219" and t.metadata["swe_agent_version"] == "1.0.1"
    assert t.metadata["repo"] == "pandas-dev/pandas" and t.problem_statement.startswith("BUG: to_sql fails with arrow date column")
    assert t.steps[3].tool == "view" and t.steps[3].args == {"command": "view", "path": "/testbed/pandas/io/sql.py", "view_range": [1030, 1074]}
    create = t.steps[6]
    assert create.tool == "edit" and create.args["command"] == "create" and create.args["file_text"].startswith("import pandas as pd")
    replace = next(s for s in t.steps if s.args.get("command") == "str_replace")
    assert replace.args["path"] == "/testbed/pandas/io/sql.py" and "ArrowExtensionArray" in replace.args["old_str"]
    assert json.loads(replace.raw_action)["name"] == "str_replace_editor"
    assert t.steps[0].duration_s > 0 and "pandas/io/sql.py" in t.diff
    assert [s.tool for s in t.steps].count("submit") == 2


def test_swe_agent_history_only_and_ctf():
    t = one(SWEA / "demonstrations/function_calling_simple.traj")
    assert [s.tool for s in t.steps] == ["bash", "view", "edit", "bash", "submit"]
    assert t.steps[2].args == {"command": "str_replace", "path": "/SWE-agent__test-repo/tests/missing_colon.py",
                               "old_str": "def division(a: float, b: float) -> float", "new_str": "def division(a: float, b: float) -> float:"}
    assert "(Open file:" not in t.steps[3].observation and t.steps[3].observation.strip() == "8.2"
    ctf = one(SWEA / "demonstrations/ctf/crypto/BabyEncryption.traj")
    assert ctf.diff == "" and ctf.metadata["submission"] == "HTB{l00k_47_y0u_r3v3rs1ng_3qu4710n5_c0ngr475}"
    assert ctf.steps[-1].tool == "submit" and "HTB{" in ctf.steps[-1].args["command"]


# ----------------------------------------------------------------------------- round trips


def _assert_same_steps(a: Trajectory, b: Trajectory) -> None:
    assert len(a.steps) == len(b.steps)
    for x, y in zip(a.steps, b.steps):
        for f in STEP_FIELDS:
            vx, vy = getattr(x, f), getattr(y, f)
            assert (dict(vx) if f == "args" else vx) == (dict(vy) if f == "args" else vy), (x.index, f)


@pytest.mark.parametrize("rel", [
    "mini_swe_agent/mini-swe-agent-trajectory.json",
    "mini_swe_agent/github_issue.traj.json",
    "mini_swe_agent/deepseek_bench1/django__django-14752/django__django-14752.traj.json",
])
def test_mini_round_trip(rel, tmp_path):
    t = one(FIXTURES / rel)
    out = export_file(t, "mini_swe_agent", tmp_path / f"{t.task_id}.traj.json")
    assert detect_format(out) == "mini_swe_agent"
    back = one(out)
    _assert_same_steps(t, back)
    assert (back.task_id, back.diff, back.problem_statement) == (t.task_id, t.diff, t.problem_statement)
    assert back.metadata.get("model") == t.metadata.get("model") and back.source == "mini_swe_agent"


@pytest.mark.parametrize("rel", [
    "openhands_v0/basic.json",
    "openhands_v0/wrong_initial_state.json",
    "openhands_v0/multi_swe_bench_examples/output.jsonl",
    "openhands_v0/resolver_mock_output/output.jsonl",
    "openhands_v0/sessions/63b4315947a049e2b7a51249b3d4fcc3",
])
def test_openhands_v0_round_trip(rel, tmp_path):
    for t in import_file(FIXTURES / rel):
        out = export_file(t, "openhands_v0", tmp_path / f"{t.task_id}.json")
        back = one(out)
        assert back.source == "openhands_v0" and back.task_id == t.task_id
        _assert_same_steps(t, back)


def test_cross_format_export_keeps_commands(tmp_path):
    t = one(SWEA / "demonstrations/function_calling_simple.traj")
    back = one(export_file(t, "mini_swe_agent", tmp_path / "x.traj.json"))
    assert [s.tool for s in back.steps] == [s.tool for s in t.steps]
    assert [dict(s.args) for s in back.steps] == [dict(s.args) for s in t.steps]
    native = export_file(t, "contextrl", tmp_path / "x.jsonl")
    assert list(read_trajectories(native)) == [t] == import_file(native)


def test_export_unsupported_format(tmp_path):
    with pytest.raises(TrajectoryFormatError, match="supported export formats"):
        export_file(Trajectory(task_id="t"), "swe_agent", tmp_path / "x.traj")


# ----------------------------------------------------------------------------- bad input


def test_truncated_json_names_file_position_and_formats(tmp_path):
    text = (MINI / "mini-swe-agent-trajectory.json").read_text()
    bad = tmp_path / "cut.traj.json"
    bad.write_text(text[: len(text) // 2])
    with pytest.raises(TrajectoryFormatError) as e:
        import_file(bad)
    msg = str(e.value)
    assert str(bad) in msg and "line " in msg and "not valid JSON" in msg and "mini-swe-agent" in msg
    with pytest.raises(TrajectoryFormatError, match=r"cut\.traj\.json: \$ \(line \d+"):
        import_file(bad, "mini_swe_agent")


def test_truncated_jsonl_line(tmp_path):
    lines = (OH0 / "resolver_mock_output/output.jsonl").read_text().splitlines()
    bad = tmp_path / "output.jsonl"
    bad.write_text(lines[0] + "\n" + lines[1][:500] + "\n")
    with pytest.raises(TrajectoryFormatError, match=r"output\.jsonl: line 2: not valid JSON.*OpenHands v0"):
        import_file(bad)


def test_unknown_format(tmp_path):
    p = tmp_path / "weird.json"
    p.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(TrajectoryFormatError, match=r"weird\.json: \$: unknown content \(keys: hello\).*expected one of"):
        detect_format(p)
    with pytest.raises(TrajectoryFormatError, match="predictions file"):
        import_file(MINI / "results.json")
    with pytest.raises(TrajectoryFormatError, match="unknown format 'nope'"):
        import_file(p, "nope")


@pytest.mark.parametrize("mutate,field,fmt", [
    (lambda d: d["trajectory"][3].pop("action"), r"trajectory\[3\]\.action: missing required field", "SWE-agent"),
    (lambda d: d.pop("trajectory") and d.pop("history"), r"trajectory: missing required field.*", "SWE-agent"),
])
def test_swe_agent_missing_required_field(tmp_path, mutate, field, fmt):
    d = json.loads((SWEA / "test_data/gpt4__swe-bench-dev-easy_first_only__default__t-0.00__p-0.95__c-3.00__install-1/pydicom__pydicom-1458.traj").read_text())
    mutate(d)
    p = tmp_path / "broken.traj"
    p.write_text(json.dumps(d))
    with pytest.raises(TrajectoryFormatError, match=rf"broken\.traj: {field} \(expected {fmt}"):
        import_file(p, "swe_agent")


def test_missing_fields_in_other_formats(tmp_path):
    d = json.loads((MINI / "mini-swe-agent-trajectory.json").read_text())
    del d["messages"]
    (tmp_path / "m.traj.json").write_text(json.dumps(d))
    with pytest.raises(TrajectoryFormatError, match=r"m\.traj\.json: messages: missing required field \(expected mini-swe-agent"):
        import_file(tmp_path / "m.traj.json")
    events = json.loads((OH0 / "wrong_initial_state.json").read_text())
    events[3]["action"] = 5
    (tmp_path / "oh.json").write_text(json.dumps(events))
    with pytest.raises(TrajectoryFormatError, match=r"oh\.json: \[3\]\.action: expected a JSON string, got number \(expected OpenHands v0"):
        import_file(tmp_path / "oh.json", "openhands_v0")
    msgs = json.loads((MINI / "local.traj.json").read_text())
    del msgs[2]["role"]
    (tmp_path / "l.json").write_text(json.dumps(msgs))
    with pytest.raises(TrajectoryFormatError, match=r"l\.json: \[2\]\.role: missing required field"):
        import_file(tmp_path / "l.json", "mini_swe_agent")
    ev = json.loads(sorted((OH1 / "cli_trajectories/confirmation_mode").glob("event-00002-*.json"))[0].read_text())
    del ev["action"]
    (tmp_path / "v1.json").write_text(json.dumps([ev]))
    with pytest.raises(TrajectoryFormatError, match=r"v1\.json: \[0\]\.action: missing required field \(expected OpenHands v1"):
        import_file(tmp_path / "v1.json")


def test_directory_mixing_good_and_bad_files(tmp_path):
    shutil.copy(MINI / "mini-swe-agent-trajectory.json", tmp_path / "good.traj.json")
    shutil.copytree(OH1 / "conversations/cd94562403b9487ebdd4018e3f531dfd", tmp_path / "conv")
    (tmp_path / "nested").mkdir()
    shutil.copy(SWEA / "demonstrations/ctf/misc/networking_1.traj", tmp_path / "nested/net.traj")
    (tmp_path / "nested/truncated.json").write_text('[{"id": 0, "action": "run", "args": {"command": "ls"')
    (tmp_path / "unknown.json").write_text('{"a": 1}')
    (tmp_path / "notes.md").write_text("not a trajectory; skipped")
    report = import_path(tmp_path)
    assert isinstance(report, ImportReport)
    assert report.n_files == 5 and report.n_trajectories == 3 and report.n_failed == 2
    assert report.n_steps == sum(len(t.steps) for t in report.trajectories) == 3 + 2 + 4
    assert report.formats == {"mini_swe_agent": 1, "openhands_v1": 1, "swe_agent": 1}
    failed = dict(report.failures)
    assert set(failed) == {str(tmp_path / "nested/truncated.json"), str(tmp_path / "unknown.json")}
    assert "not valid JSON" in failed[str(tmp_path / "nested/truncated.json")]
    assert report.summary()["steps"] == 9


def test_import_all_fixtures():
    report = import_path(FIXTURES)
    by_source = Counter(t.source for t in report.trajectories)
    assert by_source == {"swe_agent": 16, "openhands_v0": 9, "openhands_v1": 7, "mini_swe_agent": 4}
    assert report.n_steps > 300
    assert all(t.outcome == "imported" and t.source in FORMATS for t in report.trajectories)
    assert all(s.tool != "invalid" for t in report.trajectories for s in t.steps)
    failed = {Path(p).relative_to(FIXTURES).parts[0] for p, _ in report.failures}
    assert failed <= {"atif", "claude_code", "gemini_cli", "harbor_traces", "mini_swe_agent", "openhands_v1",
                      "swe_instances", "swe_predictions", "swe_smith_ft"}
    # every trajectory survives the project's own JSONL format
    for t in report.trajectories:
        assert Trajectory.from_dict(json.loads(json.dumps(t.to_dict()))) == t
