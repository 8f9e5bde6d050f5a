"""OpenHands v1 (software-agent-sdk / OpenHands-CLI) conversations.

Shapes read: a persistence directory ``<conversation>/base_state.json`` + ``events/``
(``event-<NNNNN>-<uuid>.json``, one event per file, ordered by NNNNN), a bare events directory,
one event file (imports the enclosing events directory), an ``events.jsonl`` (one event per
line) or a JSON array of events. Events are discriminated by ``kind``.

Mapped: ``ActionEvent`` (TerminalAction/ExecuteBashAction -> bash, FileEditorAction ->
view/edit, FinishAction -> submit, ThinkAction -> think, other tools keep ``tool_name``) paired
with its ``ObservationEvent`` / ``AgentErrorEvent`` / ``UserRejectObservation`` by action id or
tool_call_id. ``reasoning_content`` and the visible ``thought`` become ``Step.thought``; the
first user ``MessageEvent`` is the problem statement; base_state and state-update events give
metadata (a ConversationErrorEvent -> metadata["error"]). Dropped: system prompt and tool
schemas, agent chat messages, condensation, token and LLM-log events, security-risk
annotations, thinking-block signatures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from contextrl.importers._common import (BASH_TOOL_NAMES, EDITOR_TOOL_NAMES, bash_step, classify_tool_call,
                                         editor_step, exit_code_of, expect, extract_problem, fail, first_line, load_json,
                                         load_jsonl, parse_arguments, stem, text_of, tool_call_raw)
from contextrl.trajectory import Step, Trajectory

FMT = "openhands_v1"
EVENT_FILE = re.compile(r"^event-(\d+)-[^/]*\.json$")
_BASH_KINDS = frozenset({"TerminalAction", "ExecuteBashAction", "BashAction"})
_EDITOR_KINDS = frozenset({"FileEditorAction", "StrReplaceEditorAction", "PlanningFileEditorAction"})


def is_event(obj: Any) -> bool:
    """Whether `obj` looks like one serialized v1 event (has a ``kind`` and an ``id``)."""
    return isinstance(obj, dict) and isinstance(obj.get("kind"), str) and "id" in obj and (
        "source" in obj or obj["kind"].endswith(("Event", "Observation")))


def is_base_state(obj: Any) -> bool:
    """Whether `obj` is a serialized ConversationState (``base_state.json``)."""
    return isinstance(obj, dict) and isinstance(obj.get("agent"), dict) and "id" in obj and (
        "execution_status" in obj or "agent_status" in obj or "persistence_dir" in obj or "max_iterations" in obj)


def is_events_dir(path: Path) -> bool:
    """A directory holding ``event-NNNNN-*.json`` files."""
    return path.is_dir() and any(EVENT_FILE.match(p.name) for p in path.iterdir())


def import_v1(path: Path) -> list[Trajectory]:
    """Import a v1 conversation directory, events directory, event file, events.jsonl or event list."""
    path = Path(path)
    if path.is_dir():
        return [_import_dir(path)]
    if path.suffix == ".jsonl":
        events = load_jsonl(path, FMT)
        return [_build(events, path, "", path.parent / "base_state.json", stem(path) if stem(path) != "events" else path.parent.name)]
    data = load_json(path, FMT)
    if is_base_state(data):
        return [_import_dir(path.parent)]
    if is_event(data) and is_events_dir(path.parent):
        return [_import_dir(path.parent)]
    events = [data] if is_event(data) else expect(data, list, path, "$", FMT)
    return [_build(events, path, "", None, stem(path))]


def _import_dir(path: Path) -> Trajectory:
    events_dir = path / "events" if (path / "events").is_dir() else path
    conv_dir = events_dir.parent if events_dir.name == "events" else events_dir
    if not is_events_dir(events_dir):
        where = "events/" if events_dir != path else "$"
        raise fail(path, where, FMT, "no event-NNNNN-<id>.json files (a conversation without events/ has nothing to import)")
    files = sorted((p for p in events_dir.iterdir() if EVENT_FILE.match(p.name)), key=lambda p: int(EVENT_FILE.match(p.name).group(1)))
    events = []
    for p in files:
        ev = load_json(p, FMT)
        if not is_event(ev):
            raise fail(p, "kind", FMT, "not a v1 event (needs 'kind' and 'id')")
        events.append(ev)
    return _build(events, events_dir, "events", conv_dir / "base_state.json", conv_dir.name)


def _build(events: list[Any], path: Path, field: str, base_state: Path | None, task_id: str) -> Trajectory:
    steps, problem, meta = events_to_steps(events, path, field)
    episode = ""
    if base_state is not None and base_state.is_file():
        bs = load_json(base_state, FMT)
        if isinstance(bs, dict):
            episode = str(bs.get("id") or "")
            llm = (bs.get("agent") or {}).get("llm") if isinstance(bs.get("agent"), dict) else None
            if isinstance(llm, dict) and llm.get("model"):
                meta.setdefault("model", llm["model"])
            status = bs.get("execution_status") or bs.get("agent_status")
            if status:
                meta.setdefault("execution_status", status)
            ws = bs.get("workspace") if isinstance(bs.get("workspace"), dict) else {}
            if ws.get("working_dir") or bs.get("working_dir"):
                meta["working_dir"] = ws.get("working_dir") or bs.get("working_dir")
            if bs.get("max_iterations") is not None:
                meta["max_iterations"] = bs["max_iterations"]
            cost = _cost(bs.get("stats"))
            if cost is not None:
                meta.setdefault("cost", cost)
    return Trajectory(task_id=task_id, steps=steps, outcome="imported", problem_statement=problem, source=FMT,
                      episode_id=episode, metadata={**meta, "file": str(path)})


def _cost(stats: Any) -> float | None:
    metrics = stats.get("usage_to_metrics") or stats.get("service_to_metrics") if isinstance(stats, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        return None
    return sum(float(m.get("accumulated_cost") or 0) for m in metrics.values() if isinstance(m, dict))


def _model(stats: Any) -> str | None:
    metrics = stats.get("usage_to_metrics") if isinstance(stats, dict) else None
    for m in (metrics or {}).values():
        if isinstance(m, dict) and m.get("model_name"):
            return m["model_name"]
    return None


def map_action(tool_name: str, action: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Canonical (tool, args) for a v1 action object (discriminated by ``kind``)."""
    kind = str(action.get("kind", ""))
    args = {k: v for k, v in action.items() if k != "kind" and v is not None}
    if kind in _BASH_KINDS or (tool_name in BASH_TOOL_NAMES and "command" in args):
        return bash_step(args.get("command"), bool(args.get("is_input")))
    if kind in _EDITOR_KINDS or tool_name in EDITOR_TOOL_NAMES:
        return editor_step(args)
    if kind == "FinishAction" or tool_name == "finish":
        return "submit", {"message": args["message"]} if args.get("message") else {}
    if kind == "ThinkAction" or tool_name == "think":
        return "think", {"thought": args.get("thought", "")}
    return classify_tool_call(tool_name or kind.removesuffix("Action").lower(), args)


def _thought(ev: Mapping[str, Any]) -> str | None:
    visible = text_of(ev.get("thought")).strip()
    reasoning = ev.get("reasoning_content") if isinstance(ev.get("reasoning_content"), str) else ""
    if not reasoning.strip():
        blocks = ev.get("thinking_blocks") if isinstance(ev.get("thinking_blocks"), list) else []
        reasoning = "\n".join(b.get("thinking", "") for b in blocks if isinstance(b, dict) and b.get("thinking"))
    parts = [reasoning.strip()] if reasoning.strip() and reasoning.strip() not in visible else []
    if visible:
        parts.append(visible)
    return "\n\n".join(parts) or None


def _observation(obs: Mapping[str, Any]) -> dict[str, Any]:
    text = text_of(obs.get("content")) if obs.get("content") is not None else str(obs.get("output") or "")
    md = obs.get("metadata") if isinstance(obs.get("metadata"), dict) else {}
    out: dict[str, Any] = {"observation": text, "exit_code": exit_code_of(obs.get("exit_code"), md.get("exit_code")),
                           "timed_out": bool(obs.get("timeout"))}
    if isinstance(obs.get("error"), str) and obs["error"]:
        out["error"] = "tool: " + first_line(obs["error"])
        out["observation"] = text or obs["error"]
    elif obs.get("is_error") or obs.get("error") is True:
        out["error"] = "tool: " + first_line(text)
    return out


def events_to_steps(events: list[Any], path: Path, field: str) -> tuple[tuple[Step, ...], str, dict[str, Any]]:
    """Pair v1 actions with their results; returns (steps, first user message, metadata)."""
    slots: list[dict[str, Any]] = []
    by_action: dict[Any, int] = {}
    by_call: dict[Any, int] = {}
    problem, meta = "", {}
    for i, ev in enumerate(events):
        where = f"{field}[{i}]" if field else f"[{i}]"
        if not isinstance(ev, dict):
            raise fail(path, where, FMT, f"expected an event object, got {type(ev).__name__}")
        kind = expect(ev.get("kind"), str, path, f"{where}.kind", FMT)
        if kind == "MessageEvent":
            msg = ev.get("llm_message") if isinstance(ev.get("llm_message"), dict) else {}
            if (msg.get("role") == "user" or ev.get("source") == "user") and not problem:
                problem = extract_problem(text_of(msg.get("content")))
        elif kind == "ActionEvent":
            if "action" not in ev:
                raise fail(path, f"{where}.action", FMT, "missing required field")
            tool_name = str(ev.get("tool_name") or "")
            tc = ev.get("tool_call") if isinstance(ev.get("tool_call"), dict) else None
            if ev["action"] is None:  # non-executable call; an AgentErrorEvent says why
                parsed = parse_arguments(tc.get("arguments")) if tc else None
                tool, args = classify_tool_call(tool_name, parsed) if parsed is not None else ("invalid", {})
                nonexec = True
            else:
                tool, args = map_action(tool_name, expect(ev["action"], dict, path, f"{where}.action", FMT))
                nonexec = False
            raw = tool_call_raw(tc.get("name") or tool_name, tc.get("arguments", "")) if tc else None
            slots.append({"tool": tool, "args": args, "thought": _thought(ev) if tool != "think" else None,
                          "raw_action": raw, "observation": None, "nonexec": nonexec})
            by_action[ev.get("id")] = by_call[ev.get("tool_call_id")] = len(slots) - 1
        elif kind in ("ObservationEvent", "AgentErrorEvent", "UserRejectObservation"):
            idx = by_action.pop(ev.get("action_id"), None) if ev.get("action_id") is not None else None
            if idx is None:
                idx = by_call.pop(ev.get("tool_call_id"), None)
            if kind == "ObservationEvent":
                obs = expect(ev.get("observation"), dict, path, f"{where}.observation", FMT)
                result = _observation(obs)
                if idx is None:  # its action is not in this file (e.g. a partial events.jsonl)
                    tool, args = _from_observation(str(ev.get("tool_name") or ""), obs)
                    slots.append({"tool": tool, "args": args, "thought": None, "raw_action": None, "observation": None})
                    idx = len(slots) - 1
            elif kind == "AgentErrorEvent":
                err = str(ev.get("error", ""))
                result = {"observation": err, "error": "tool: " + first_line(err)}
                if idx is None:  # the call never became an action: unknown tool / bad arguments
                    slots.append({"tool": "invalid", "args": {"tool_name": ev.get("tool_name")} if ev.get("tool_name") else {},
                                  "thought": None, "raw_action": None, "observation": None, "nonexec": True})
                    idx = len(slots) - 1
                if slots[idx].get("nonexec"):
                    result["error"] = "parse: " + first_line(err)
            else:
                reason = str(ev.get("rejection_reason") or "User rejected the action")
                result = {"observation": f"Action rejected: {reason}", "error": f"tool: rejected: {first_line(reason)}"}
                if idx is None:
                    continue
            if slots[idx]["observation"] is None:
                slots[idx].update(result)
        elif kind == "ConversationErrorEvent":
            meta["error"] = str(ev.get("detail") or ev.get("code") or "conversation error")
        elif kind == "ConversationStateUpdateEvent":
            key, value = ev.get("key"), ev.get("value")
            if key == "execution_status" and isinstance(value, str):
                meta["execution_status"] = value
            elif key == "stats" and _model(value):
                meta["model"] = _model(value)
            elif key == "full_state" and isinstance(value, dict) and value.get("execution_status"):
                meta["execution_status"] = value["execution_status"]
    steps = tuple(Step(index=i, tool=s["tool"], args=s["args"], observation=s["observation"] or "",
                       exit_code=s.get("exit_code"), error=s.get("error"), raw_action=s["raw_action"],
                       thought=s["thought"], timed_out=s.get("timed_out", False)) for i, s in enumerate(slots))
    return steps, problem, meta


def _from_observation(tool_name: str, obs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Best-effort (tool, args) for an observation whose action event is missing."""
    kind = str(obs.get("kind", ""))
    if tool_name in BASH_TOOL_NAMES or kind in ("TerminalObservation", "ExecuteBashObservation"):
        return bash_step(obs.get("command", ""))
    if tool_name in EDITOR_TOOL_NAMES or kind == "FileEditorObservation":
        return editor_step({"command": obs.get("command"), "path": obs.get("path")})
    if tool_name == "finish" or kind == "FinishObservation":
        return "submit", {}
    return tool_name or kind.removesuffix("Observation").lower() or "unknown", {}
