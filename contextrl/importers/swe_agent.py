"""SWE-agent trajectories (``.traj``), 0.x and 1.x, and history-only demonstration files.

Shapes read: ``{trajectory: [{action, observation, response, thought, state?, execution_time?}],
history: [{role, content, agent, thought?, action?, tool_calls?, is_demo?}], info: {exit_status,
submission, model_stats, ...}, replay_config?, environment?}``; a file with only ``history``
is rebuilt from its action/observation messages.

Mapped: ``str_replace_editor view|create|str_replace|insert|undo_edit`` -> view/edit (args from
the function call when the history has one, else parsed from the command line); the windowed
editor ``open``/``goto``/``scroll_*``/``set_cursors`` -> view, ``create``/``edit``/``insert``/
``append`` -> edit (path = the open file from ``state`` or the ``(Open file: ..)`` footer);
``submit`` and ``exit_*`` autosubmissions -> submit; any other command -> bash. ``thought`` ->
Step.thought, ``response`` (or the function call) -> raw_action, ``execution_time`` ->
duration_s. Trajectory: instance id (problem_statement.id or file stem), problem statement
(replay_config or the first task message), info.submission (diff, or metadata for CTF flags),
exit status, model, cost, repo/base commit. Dropped: demonstrations, system prompt, per-step
messages/state snapshots, edited_files* context windows. SWE-agent records no exit codes.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Mapping

from contextrl.importers._common import (bash_step, classify_tool_call, editor_step, expect, extract_problem, fail,
                                         first_line, is_patch, load_json, parse_arguments, require, stem, text_of,
                                         tool_call_raw)
from contextrl.trajectory import Step, Trajectory

FMT = "swe_agent"
_NAV = frozenset({"open", "goto", "scroll_up", "scroll_down", "set_cursors"})
_FOOTER_RE = re.compile(r"\n?\(Open file: ([^)\n]*)\)\n\(Current directory: [^)\n]*\)\n?(?:bash-\$)?\s*$")
_TIMEOUT_RE = re.compile(r"EXECUTION TIMED OUT|took more than \d+ seconds", re.I)
_EDIT_RANGE_RE = re.compile(r"^edit\s+(\d+):(\d+)[^\n]*\n(.*?)\n?end_of_edit\s*$", re.S)
_EDIT_CURSOR_RE = re.compile(r"^edit\s*\n(.*?)\n?end_of_edit\s*$", re.S)


def is_swe_agent(data: Any) -> bool:
    """Whether parsed JSON `data` is a SWE-agent .traj (full or history-only)."""
    if not isinstance(data, dict):
        return False
    if isinstance(data.get("trajectory"), list) and ("history" in data or "info" in data):
        return True
    hist = data.get("history")
    return isinstance(hist, list) and bool(hist) and all(isinstance(m, dict) and "role" in m for m in hist[:3]) and (
        any("agent" in m or "message_type" in m for m in hist[:3]))


def import_swe_agent(path: Path) -> list[Trajectory]:
    """Import one SWE-agent .traj file."""
    path = Path(path)
    data = expect(load_json(path, FMT), dict, path, "$", FMT)
    history = data.get("history") if isinstance(data.get("history"), list) else []
    actions = [m for m in history if isinstance(m, dict) and m.get("role") == "assistant" and "action" in m and not m.get("is_demo")]
    if "trajectory" in data:
        entries = expect(data["trajectory"], list, path, "trajectory", FMT)
        field = "trajectory"
    else:
        if "history" not in data:
            raise fail(path, "trajectory", FMT, "missing required field (and no history to rebuild it from)")
        entries, field = _from_history(history), "history"
    rc = data.get("replay_config")
    rc = parse_arguments(rc) if isinstance(rc, str) else rc if isinstance(rc, dict) else None
    steps = _steps(entries, actions, path, field)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    meta: dict[str, Any] = {k: info[k] for k in ("exit_status", "swe_agent_version") if info.get(k)}
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    meta.update({k: stats[src] for k, src in (("cost", "instance_cost"), ("api_calls", "api_calls"),
                                              ("tokens_sent", "tokens_sent"), ("tokens_received", "tokens_received")) if src in stats})
    ps = (rc or {}).get("problem_statement") if isinstance((rc or {}).get("problem_statement"), dict) else {}
    agent = (rc or {}).get("agent") if isinstance((rc or {}).get("agent"), dict) else {}
    model = agent.get("model") if isinstance(agent.get("model"), dict) else {}
    env = (rc or {}).get("env") if isinstance((rc or {}).get("env"), dict) else {}
    repo = env.get("repo") if isinstance(env.get("repo"), dict) else {}
    run_name = path.parent.name
    if model.get("name"):
        meta["model"] = model["name"]
    elif "__" in run_name:
        meta["model"] = run_name.split("__")[0]
    url = repo.get("github_url") if isinstance(repo.get("github_url"), str) else ""
    meta.update({k: v for k, v in (("repo", "/".join(url.rstrip("/").removesuffix(".git").split("/")[-2:]) if url else None),
                                   ("repo_dir", repo.get("repo_name") or repo.get("path")), ("base_commit", repo.get("base_commit")),
                                   ("image", (env.get("deployment") or {}).get("image") if isinstance(env.get("deployment"), dict) else None),
                                   ("environment", data.get("environment") if isinstance(data.get("environment"), str) else None),
                                   ("run_name", run_name if "__" in run_name else None)) if v})
    problem = ps.get("text") or ""
    if not problem:
        first_task = next((m for m in history if isinstance(m, dict) and m.get("role") == "user" and not m.get("is_demo")
                           and "DEMONSTRATION" not in text_of(m.get("content"))[:300]), None)
        problem = extract_problem(text_of(first_task.get("content"))) if first_task else ""
    submission = info.get("submission") or ""
    if submission and not is_patch(submission):
        meta["submission"] = submission
    return [Trajectory(task_id=str(ps.get("id") or stem(path)), steps=steps, outcome="imported",
                       diff=submission if is_patch(submission) else "", problem_statement=problem,
                       source=FMT, metadata={**meta, "file": str(path)})]


def _from_history(history: list[Any]) -> list[dict[str, Any]]:
    """Rebuild trajectory entries from a history-only file: action message + next observation."""
    entries: list[dict[str, Any]] = []
    for m in history:
        if not isinstance(m, dict) or m.get("is_demo"):
            continue
        if m.get("role") == "assistant" and "action" in m:
            entries.append({"action": m["action"], "thought": m.get("thought"), "response": text_of(m.get("content")),
                            "observation": None, "_msg": m})
        elif entries and entries[-1]["observation"] is None and m.get("role") in ("tool", "user"):
            entries[-1]["observation"] = text_of(m.get("content"))
    for e in entries:
        e["observation"] = e["observation"] or ""
    return entries


def _open_file(state: Any) -> str | None:
    if isinstance(state, str):
        state = parse_arguments(state.strip() or "{}")
    f = state.get("open_file") if isinstance(state, dict) else None
    return f if isinstance(f, str) and f and f != "n/a" else None


def _steps(entries: list[Any], actions: list[dict[str, Any]], path: Path, field: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    open_file: str | None = None
    cursors: list[int] | None = None
    h = 0
    for i, t in enumerate(entries):
        where = f"{field}[{i}]"
        t = expect(t, dict, path, where, FMT)
        action = expect(require(t, "action", path, where, FMT), str, path, f"{where}.action", FMT)
        observation = text_of(t.get("observation"))
        msg = t.get("_msg")
        if msg is None:  # find this step's history message (for its function call), in order
            j = next((k for k in range(h, len(actions)) if str(actions[k].get("action", "")).strip() == action.strip()), None)
            msg, h = (actions[j], j + 1) if j is not None else (None, h)
        footer = _FOOTER_RE.search(observation)
        if footer and field == "history":
            observation = observation[: footer.start()]
        open_file = _open_file(t.get("state")) or open_file
        call = _call(msg)
        tool, args = classify(action, call, open_file, cursors)
        if args.get("command") == "set_cursors" and "view_range" in args:
            cursors = args["view_range"]
        if tool in ("view", "edit") and args.get("path") and args.get("command") in ("view", "create", "open"):
            open_file = args["path"]
        if footer and footer.group(1) not in ("", "n/a"):
            open_file = footer.group(1)
        thought = t.get("thought") if isinstance(t.get("thought"), str) and t["thought"].strip() else None
        raw = tool_call_raw(call[0], call[1]) if call else (t.get("response") if isinstance(t.get("response"), str) else None)
        error = None
        if observation.lstrip().startswith("Your proposed edit has introduced new syntax error"):
            error = "tool: " + first_line(observation)
        et = t.get("execution_time")
        steps.append(Step(index=i, tool=tool, args=args, observation=observation, raw_action=raw or action,
                          thought=thought.strip() if thought else None, error=error,
                          duration_s=float(et) if isinstance(et, (int, float)) else 0.0,
                          timed_out=bool(_TIMEOUT_RE.search(observation[:500]))))
    return tuple(steps)


def _call(msg: Mapping[str, Any] | None) -> tuple[str, str] | None:
    calls = msg.get("tool_calls") if isinstance(msg, Mapping) else None
    if isinstance(calls, list) and calls and isinstance(calls[0], dict) and isinstance(calls[0].get("function"), dict):
        fn = calls[0]["function"]
        args = fn.get("arguments", "{}")
        return str(fn.get("name", "")), args if isinstance(args, str) else json.dumps(args)
    return None


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command, posix=True)
    except ValueError:
        return command.split()


def classify(action: str, call: tuple[str, str] | None, open_file: str | None, cursors: list[int] | None) -> tuple[str, dict[str, Any]]:
    """Canonical (tool, args) for one SWE-agent action string (and its function call, if any)."""
    text = action.strip()
    name = text.split(None, 1)[0] if text else ""
    fargs = parse_arguments(call[1]) if call else None
    if call and fargs is not None:
        name = call[0] or name
        if name == "bash" and "command" in fargs:
            return bash_step(fargs["command"])
        if name == "str_replace_editor":
            return editor_step(fargs)
        if name == "edit" and "search" in fargs:
            return "edit", {"command": "str_replace", "path": open_file, "old_str": fargs["search"], "new_str": fargs.get("replace", "")}
        if name == "insert" and "text" in fargs:
            out = {"command": "insert", "path": open_file, "new_str": fargs["text"]}
            return "edit", {**out, "insert_line": fargs["line"]} if fargs.get("line") is not None else out
    if name == "str_replace_editor":
        return editor_step(_editor_cli(text))
    if name in ("submit",) or name.startswith("exit_"):
        return "submit", ({"command": text} if text != "submit" else {})
    if name in _NAV:
        parts = _split(text)
        args: dict[str, Any] = {"command": "view", "path": parts[1] if name == "open" and len(parts) > 1 else open_file}
        nums = [int(p) for p in parts[1:] if p.lstrip("-").isdigit()]
        if name == "set_cursors" and len(nums) == 2:
            args.update(command="set_cursors", view_range=nums)
        elif nums:
            args["line"] = nums[0]
        return "view", {k: v for k, v in args.items() if v is not None}
    if name == "create":
        parts = _split(text)
        return "edit", {"command": "create", "path": parts[1] if len(parts) > 1 else open_file, "file_text": ""}
    if name == "edit":
        m = _EDIT_RANGE_RE.match(text)
        if m:
            return "edit", _drop_none({"command": "edit", "path": open_file, "new_str": m.group(3), "line_range": [int(m.group(1)), int(m.group(2))]})
        m = _EDIT_CURSOR_RE.match(text)
        if m:
            return "edit", _drop_none({"command": "edit", "path": open_file, "new_str": m.group(1), "line_range": cursors})
        parts = _split(text)
        if len(parts) >= 3:
            return "edit", _drop_none({"command": "str_replace", "path": open_file, "old_str": parts[1], "new_str": parts[2]})
    if name in ("insert", "append"):
        parts = _split(text)
        out = _drop_none({"command": "insert", "path": open_file, "new_str": parts[1] if len(parts) > 1 else ""})
        if name == "insert" and len(parts) > 2 and parts[2].isdigit():
            out["insert_line"] = int(parts[2])
        return "edit", out
    if call and fargs is not None and name not in ("open", "goto", "create", "find_file", "search_dir", "search_file"):
        return classify_tool_call(name, fargs)
    return bash_step(text)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _editor_cli(text: str) -> dict[str, Any]:
    """Parse ``str_replace_editor <command> <path> [--flag value ...]`` into tool arguments."""
    parts = _split(text)
    out: dict[str, Any] = {"command": parts[1] if len(parts) > 1 else "view"}
    if len(parts) > 2:
        out["path"] = parts[2]
    i = 3
    while i < len(parts):
        if parts[i].startswith("--"):
            key = parts[i][2:]
            if key == "view_range":
                out[key] = [int(x) for x in parts[i + 1:i + 3] if x.lstrip("-").isdigit()]
                i += 3
                continue
            val: Any = parts[i + 1] if i + 1 < len(parts) else ""
            out[key] = int(val) if key == "insert_line" and str(val).isdigit() else val
            i += 2
        else:
            i += 1
    return out
