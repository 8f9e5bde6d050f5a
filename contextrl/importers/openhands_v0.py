"""OpenHands v0 (the ``openhands`` package before the V1 SDK) trajectories.

Shapes read, all built from the same serialized event (``action`` + ``args`` or
``observation`` + ``content`` + ``extras``, optional ``id``/``cause``/``tool_call_metadata``):
- an event list export: a JSON array of events;
- a session store: ``sessions/<id>/events/<n>.json`` (one event per file) + ``metadata.json``;
- evaluation ``output.jsonl`` rows ``{instance_id, instruction, history, test_result, metadata,
  instance, ...}``; history may be flat events or ``[action, observation]`` pairs;
- resolver ``output.jsonl`` rows (2024) whose history events carry their args inline.

Mapped: run -> bash, read -> view, write/edit -> edit, finish -> submit, think, run_ipython ->
ipython, browse -> browser, others keep their name. Observations are matched to actions by
``cause`` (else tool_call_id, else order). Dropped: chat messages, recall/system/state-change
events, LLM metrics, per-event timestamps.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, Mapping

from contextrl.importers._common import (bash_step, editor_step, exit_code_of, expect, extract_problem, fail,
                                         first_line, is_patch, load_json, load_jsonl, parse_arguments,
                                         parse_tool_call_raw, stem, text_of, tool_call_raw)
from contextrl.trajectory import Step, Trajectory

FMT = "openhands_v0"
NON_STEP_ACTIONS = frozenset({"message", "system", "recall", "change_agent_state", "null", "condensation",
                              "condensation_request", "pause", "resume", "loop_recovery"})
DROP_ARGS = frozenset({"thought", "impl_source", "translated_ipython_code", "blocking", "hidden", "confirmation_state",
                       "is_confirmed", "keep_prompt", "security_risk", "wait_for_response", "action_risk", "is_static",
                       "cwd", "include_extra", "kernel_init_code", "image_urls", "file_urls", "reasoning_content"})
_EVENT_TOP = frozenset({"id", "timestamp", "source", "message", "cause", "timeout", "tool_call_metadata",
                        "llm_metrics", "action", "observation", "content", "extras", "success"})
_EVENT_FILE = re.compile(r"^\d+\.json$")


def is_event(obj: Any) -> bool:
    """Whether `obj` looks like one serialized v0 event."""
    return isinstance(obj, dict) and isinstance(obj.get("action", obj.get("observation")), str)


def is_session_events_dir(path: Path) -> bool:
    """A directory of ``<n>.json`` files, each one v0 event (a session's ``events/``)."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else []
    return bool(files) and all(_EVENT_FILE.match(p.name) for p in files)


def import_v0(path: Path) -> list[Trajectory]:
    """Import any v0 shape at `path` (file or session directory)."""
    path = Path(path)
    if path.is_dir():
        return [_import_session(path)]
    if path.suffix == ".jsonl":
        return [_from_row(row, path, f"line {i}", i) for i, row in enumerate(load_jsonl(path, FMT), 1)]
    data = load_json(path, FMT)
    if isinstance(data, dict) and "history" in data:
        return [_from_row(data, path, "", 0)]
    if is_event(data):
        if is_session_events_dir(path.parent):
            return [_import_session(path.parent)]
        data = [data]
    expect(data, list, path, "$", FMT)
    steps, problem, meta = events_to_steps(data, path, "")
    return [Trajectory(task_id=stem(path), steps=steps, outcome="imported", problem_statement=problem,
                       source=FMT, metadata={**meta, "file": str(path)})]


def _import_session(path: Path) -> Trajectory:
    events_dir = path / "events" if (path / "events").is_dir() else path
    session_dir = events_dir.parent if events_dir.name == "events" else events_dir
    if not is_session_events_dir(events_dir):
        raise fail(path, "events/", FMT, "no <n>.json event files in this session directory")
    files = sorted(events_dir.iterdir(), key=lambda p: int(p.stem))
    events = [load_json(p, FMT) for p in files]
    for p, e in zip(files, events):
        if not is_event(e):
            raise fail(p, "$", FMT, "not a serialized event (no 'action' or 'observation' name)")
    steps, problem, meta = events_to_steps(events, events_dir, "events")
    task_id = session_dir.name
    meta_path = session_dir / "metadata.json"
    if meta_path.is_file():
        sm = load_json(meta_path, FMT)
        if isinstance(sm, dict):
            task_id = str(sm.get("conversation_id") or task_id)
            meta.update({k: sm[k] for k in ("title", "selected_repository", "selected_branch", "trigger",
                                            "accumulated_cost", "created_at", "last_updated_at") if sm.get(k) is not None})
            if sm.get("llm_model"):
                meta["model"] = sm["llm_model"]
    return Trajectory(task_id=task_id, steps=steps, outcome="imported", problem_statement=problem, source=FMT,
                      episode_id=session_dir.name, metadata={**meta, "file": str(session_dir)})


def _from_row(row: Any, path: Path, where: str, lineno: int) -> Trajectory:
    """One evaluation / resolver output row."""
    expect(row, dict, path, where or "$", FMT)
    history = expect(row.get("history"), list, path, f"{where}: history" if where else "history", FMT)
    steps, problem, meta = events_to_steps(history, path, f"{where}: history" if where else "history")
    inst = row.get("instance") if isinstance(row.get("instance"), dict) else {}
    issue = row.get("issue") if isinstance(row.get("issue"), dict) else {}
    rmeta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    test = row.get("test_result") if isinstance(row.get("test_result"), dict) else {}
    task_id = row.get("instance_id") or inst.get("instance_id")
    if not task_id and issue.get("repo"):
        task_id = f"{issue.get('owner', '')}__{issue['repo']}-{issue.get('number', '')}"
    problem = inst.get("problem_statement") or (
        f"{issue.get('title', '')}\n{issue.get('body', '')}".strip() if issue else "") or (
        extract_problem(row["instruction"]) if isinstance(row.get("instruction"), str) else problem)
    llm = rmeta.get("llm_config") if isinstance(rmeta.get("llm_config"), dict) else {}
    if llm.get("model"):
        meta["model"] = llm["model"]
    for k in ("agent_class", "max_iterations", "dataset", "git_commit", "start_time"):
        if rmeta.get(k) is not None:
            meta[k] = rmeta[k]
    repo = inst.get("repo") or (f"{issue['owner']}/{issue['repo']}" if issue.get("owner") and issue.get("repo") else None)
    base = inst.get("base_commit") or row.get("base_commit")
    meta.update({k: v for k, v in (("repo", repo), ("base_commit", base), ("error", row.get("error")),
                                   ("issue_type", row.get("issue_type")), ("success", row.get("success")),
                                   ("result_explanation", row.get("result_explanation"))) if v})
    metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
    if metrics.get("accumulated_cost") is not None:
        meta["cost"] = metrics["accumulated_cost"]
    diff = test.get("git_patch") or row.get("git_patch") or ""
    report = test.get("report") if isinstance(test.get("report"), dict) else {}
    resolved = report.get("resolved", row.get("resolved", row.get("success")))
    return Trajectory(task_id=str(task_id or (f"{stem(path)}-{lineno}" if lineno else stem(path))), steps=steps,
                      resolved=resolved if isinstance(resolved, bool) else None, outcome="imported",
                      diff=diff if is_patch(diff) else "", problem_statement=problem or "", source=FMT,
                      metadata={**meta, "file": str(path) + (f":{lineno}" if lineno else "")})


def _flatten(events: list[Any]) -> list[Any]:
    """Older eval outputs store history as [action, observation] pairs."""
    out: list[Any] = []
    for e in events:
        out.extend(x for x in e if x) if isinstance(e, list) else out.append(e)
    return out


def _tool_call(ev: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """(function_name, tool_call_id, arguments) from an event's tool_call_metadata."""
    tcm = ev.get("tool_call_metadata")
    if isinstance(tcm, str):
        tcm = parse_arguments(tcm)
    if not isinstance(tcm, dict) or not tcm.get("function_name"):
        return None
    name, call_id, arguments = tcm["function_name"], tcm.get("tool_call_id"), None
    resp = tcm.get("model_response") if isinstance(tcm.get("model_response"), dict) else {}
    for choice in resp.get("choices") or []:
        msg = choice.get("message") if isinstance(choice, dict) else None
        for tc in (msg or {}).get("tool_calls") or []:
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict) and (tc.get("id") == call_id or call_id is None):
                arguments = fn.get("arguments")
    return name, call_id, arguments


def _edit_args(args: Mapping[str, Any], call: tuple[str, str, Any] | None) -> tuple[str, dict[str, Any]]:
    if args.get("command"):
        return editor_step(args)
    code = args.get("translated_ipython_code")
    if isinstance(code, str) and "file_editor(**" in code:
        try:
            parsed = ast.literal_eval(code[code.index("file_editor(**") + len("file_editor(**"):code.rindex("))")])
            if isinstance(parsed, dict) and parsed.get("command"):
                return editor_step(parsed)
        except (ValueError, SyntaxError):
            pass
    parsed = parse_arguments(call[2]) if call else None
    if parsed and parsed.get("command"):
        return editor_step({**parsed, "path": parsed.get("path", args.get("path"))})
    canon = {"command": "edit", "path": args.get("path"), "new_str": args.get("content", "")}
    if (args.get("start"), args.get("end")) not in ((1, -1), (0, -1), (None, None)):
        canon["line_range"] = [args.get("start"), args.get("end")]
    return "edit", canon


def action_to_tool(name: str, args: Mapping[str, Any], call: tuple[str, str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """Canonical (tool, args) for a v0 action, or None for events that are not agent actions."""
    if name in NON_STEP_ACTIONS:
        return None
    if name == "run":
        return bash_step(args.get("command"), args.get("is_input") in (True, "true"))
    if name == "read":
        canon: dict[str, Any] = {"command": "view", "path": args.get("path")}
        if args.get("view_range"):
            canon["view_range"] = args["view_range"]
        elif (args.get("start"), args.get("end")) not in ((0, -1), (1, -1), (None, None)):
            canon["view_range"] = [args.get("start"), args.get("end")]
        return "view", canon
    if name == "write":
        return "edit", {"command": "create", "path": args.get("path"), "file_text": args.get("content", "")}
    if name == "edit":
        return _edit_args(args, call)
    if name == "finish":
        msg = args.get("final_thought") or args.get("message") or ""
        out = {"message": msg} if msg else {}
        out.update({k: v for k, v in args.items() if v and k not in DROP_ARGS and k not in ("final_thought", "message")})
        return "submit", out
    if name == "think":
        return "think", {"thought": args.get("thought", "")}
    if name == "run_ipython":
        return "ipython", {"code": args.get("code", "")}
    if name in ("browse", "browse_interactive"):
        return "browser", {"url": args["url"]} if "url" in args else {"code": args.get("browser_actions", "")}
    if name == "mcp":
        return str(args.get("name") or "mcp"), dict(args.get("arguments") or {})
    return name, {k: v for k, v in args.items() if k not in DROP_ARGS}


def events_to_steps(events: list[Any], path: Path, field: str) -> tuple[tuple[Step, ...], str, dict[str, Any]]:
    """Pair v0 actions with their observations; returns (steps, first user message, metadata)."""
    slots: list[dict[str, Any]] = []
    by_id: dict[Any, int] = {}
    by_call: dict[Any, int] = {}
    last: int | None = None
    problem, meta = "", {}
    for i, ev in enumerate(_flatten(events)):
        where = f"{field}[{i}]"
        if not isinstance(ev, dict):
            raise fail(path, where, FMT, f"expected an event object, got {type(ev).__name__}")
        if "action" in ev:
            name = expect(ev["action"], str, path, f"{where}.action", FMT)
            args = ev["args"] if isinstance(ev.get("args"), dict) else {k: v for k, v in ev.items() if k not in _EVENT_TOP}
            call = _tool_call(ev)
            if name == "message" and ev.get("source", "user") == "user" and not problem:
                problem = extract_problem(text_of(args.get("content") or ev.get("message") or ""))
            if call and "model" not in meta:
                resp = (ev.get("tool_call_metadata") or {}).get("model_response") if isinstance(ev.get("tool_call_metadata"), dict) else None
                if isinstance(resp, dict) and resp.get("model"):
                    meta["model"] = resp["model"]
            mapped = action_to_tool(name, args, call)
            if mapped is None:
                last = None
                continue
            thought = args.get("thought") if name != "think" else None
            slots.append({"tool": mapped[0], "args": mapped[1], "thought": thought if isinstance(thought, str) and thought.strip() else None,
                          "raw_action": tool_call_raw(call[0], call[2]) if call and call[2] is not None else None, "observation": None})
            last = len(slots) - 1
            if ev.get("id") is not None:
                by_id[ev["id"]] = last
            if call and call[1]:
                by_call[call[1]] = last
        elif "observation" in ev:
            name = expect(ev["observation"], str, path, f"{where}.observation", FMT)
            if name == "agent_state_changed":
                state = (ev.get("extras") or {}).get("agent_state") if isinstance(ev.get("extras"), dict) else ev.get("agent_state")
                if state:
                    meta["agent_state"] = state
                continue
            call = _tool_call(ev)
            cause = ev.get("cause")
            if cause is not None:
                idx = by_id.pop(cause, None)
            elif call and call[1] in by_call:
                idx = by_call.pop(call[1])
            else:
                idx = last
            if idx is None or slots[idx]["observation"] is not None:
                continue
            if idx == last:
                last = None
            _attach(slots[idx], name, ev)
        else:
            raise fail(path, where, FMT, "event has neither 'action' nor 'observation'")
    steps = tuple(Step(index=i, tool=s["tool"], args=s["args"], observation=s["observation"] or "",
                       exit_code=s.get("exit_code"), error=s.get("error"), raw_action=s["raw_action"],
                       thought=s["thought"], timed_out=s.get("timed_out", False)) for i, s in enumerate(slots))
    return steps, problem, meta


def _attach(slot: dict[str, Any], name: str, ev: Mapping[str, Any]) -> None:
    extras = ev["extras"] if isinstance(ev.get("extras"), dict) else {k: v for k, v in ev.items() if k not in _EVENT_TOP}
    content = text_of(ev.get("content", ""))
    md = extras.get("metadata") if isinstance(extras.get("metadata"), dict) else {}
    slot["observation"] = content
    raw_code = md.get("exit_code", extras.get("exit_code", ev.get("exit_code")))
    slot["exit_code"] = exit_code_of(raw_code)
    tail = (content[-300:] + str(md.get("suffix", ""))).lower()
    slot["timed_out"] = raw_code == -1 and ("timed out" in tail or "no new output after" in tail)
    if name == "error":
        slot["error"] = "tool: " + first_line(content)
    elif name == "user_rejected":
        slot["error"] = "tool: rejected by user"
    elif name in ("edit", "read", "write") and content.startswith("ERROR:"):
        slot["error"] = "tool: " + first_line(content[len("ERROR:"):])


# ----------------------------------------------------------------------------- export

_OBS_NAME = {"bash": "run", "view": "read", "edit": "edit", "think": "think", "ipython": "run_ipython", "browser": "browse"}


def export_v0(traj: Trajectory, path: Path) -> None:
    """Write `traj` as a v0 event-list JSON (user message, then action/observation per step)."""
    events: list[dict[str, Any]] = [{"id": 0, "source": "user", "message": traj.problem_statement, "action": "message",
                                     "args": {"content": traj.problem_statement, "image_urls": None, "wait_for_response": False}}]
    for step in traj.steps:
        aid = len(events)
        name, args = _to_v0_action(step)
        action = {"id": aid, "source": "agent", "message": "", "action": name, "args": args}
        tc = parse_tool_call_raw(step.raw_action)
        if tc:
            action["tool_call_metadata"] = {"function_name": tc[0], "tool_call_id": f"call_{aid}", "total_calls_in_response": 1,
                                            "model_response": {"choices": [{"message": {"role": "assistant", "content": step.thought,
                                                               "tool_calls": [{"id": f"call_{aid}", "type": "function",
                                                                               "function": {"name": tc[0], "arguments": tc[1]}}]}}]}}
        events.append(action)
        if step.tool == "submit" and not (step.observation or step.error or step.exit_code is not None):
            continue
        obs_name = _OBS_NAME.get(step.tool, "null" if step.tool == "submit" else step.tool)
        if step.error == "tool: rejected by user":
            obs_name = "user_rejected"
        elif step.error and not (obs_name in ("edit", "read") and step.observation.startswith("ERROR:")):
            obs_name = "error"
        extras: dict[str, Any] = {}
        if step.tool == "bash":
            md: dict[str, Any] = {"exit_code": step.exit_code if step.exit_code is not None else -1}
            if step.timed_out:
                md["suffix"] = "\n[The command timed out.]"
            extras = {"command": step.args.get("command", ""), "metadata": md}
        elif "path" in step.args:
            extras = {"path": step.args["path"]}
        elif step.exit_code is not None:
            extras = {"exit_code": step.exit_code}
        obs = {"id": aid + 1, "source": "agent", "cause": aid, "observation": obs_name, "content": step.observation, "extras": extras}
        if "tool_call_metadata" in action:
            obs["tool_call_metadata"] = action["tool_call_metadata"]
        events.append(obs)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(events, indent=2, ensure_ascii=False), encoding="utf-8")


def _to_v0_action(step: Step) -> tuple[str, dict[str, Any]]:
    a, thought = dict(step.args), step.thought or ""
    if step.tool == "bash":
        return "run", {"command": a.get("command", ""), "is_input": bool(a.get("is_input")), "thought": thought}
    if step.tool == "view":
        return "read", {"path": a.get("path"), "view_range": a.get("view_range"), "impl_source": "oh_aci", "thought": thought}
    if step.tool == "edit":
        return "edit", {**a, "impl_source": "oh_aci", "thought": thought}
    if step.tool == "submit":
        return "finish", {**a, "final_thought": a.get("message", ""), "task_completed": a.get("task_completed"),
                          "outputs": a.get("outputs") or {}, "thought": thought}
    if step.tool == "think":
        return "think", {"thought": a.get("thought", "")}
    if step.tool == "ipython":
        return "run_ipython", {"code": a.get("code", ""), "thought": thought}
    if step.tool == "browser":
        return ("browse", {"url": a["url"], "thought": thought}) if "url" in a else (
            "browse_interactive", {"browser_actions": a.get("code", ""), "thought": thought})
    return step.tool, {**a, "thought": thought}
