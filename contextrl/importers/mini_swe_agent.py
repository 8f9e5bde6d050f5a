"""mini-swe-agent trajectories (``.traj.json``) and their export.

Shapes read: ``trajectory_format`` ``mini-swe-agent-1`` (v1: actions are fenced ```bash blocks
in assistant text, observations are user messages ``<returncode>..</returncode><output>..``),
``mini-swe-agent-1.1`` (v2: text mode with ```mswea_bash_command blocks and ``extra.actions``,
or tool-calling mode with ``tool_calls`` answered by ``role: tool`` messages, and a final
``role: exit`` message), and a bare message list (``[{role, content}, ...]``).

Mapped: each action -> ``bash`` ``{"command"}``, or ``submit`` when the command echoes
COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT / MINI_SWE_AGENT_FINAL_OUTPUT; a response without exactly
one action (a FormatError) -> ``invalid``; the observation is the message the agent saw; exit
code from ``extra.returncode`` or the ``<returncode>`` tag; timeouts from the timeout template.
Trajectory: instance_id, info.submission (diff), exit_status, model, cost, api calls, version.
Dropped: system prompt, config templates, raw LLM responses, cache-control markers, timestamps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from contextrl.importers._common import (bash_step, classify_tool_call, exit_code_of, expect, extract_problem, fail,
                                         first_line, is_patch, is_submit_command, load_json, parse_arguments,
                                         parse_tool_call_raw, require, stem, text_of, tool_call_raw)
from contextrl.trajectory import Step, Trajectory

FMT = "mini_swe_agent"
ACTION_RE = re.compile(r"```(?:mswea_bash_command|bash|sh)[ \t]*\n(.*?)\n```", re.S)
_FORMAT_ERROR_RE = re.compile(r"EXACTLY ONE action|Expected exactly 1 action|found \d+ actions|Tool call error|No tool calls found")
_TIMEOUT_RE = re.compile(r"timed out and has been killed")
_RETURNCODE_RE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")
_OBS_ROLES = frozenset({"user", "tool", "exit"})


def is_mini(data: Any) -> bool:
    """Whether parsed JSON `data` is a mini-swe-agent trajectory (wrapped or a bare message list)."""
    if isinstance(data, dict):
        fmt = data.get("trajectory_format")
        if isinstance(fmt, str) and fmt.startswith("mini-swe-agent"):
            return True
        info = data.get("info")
        return isinstance(data.get("messages"), list) and isinstance(info, dict) and (
            "mini_version" in info or "config" in info or "exit_status" in info)
    return (isinstance(data, list) and bool(data) and all(isinstance(m, dict) and "role" in m and "content" in m for m in data[:3])
            and any(m.get("role") == "assistant" for m in data if isinstance(m, dict)))


def import_mini(path: Path) -> list[Trajectory]:
    """Import one mini-swe-agent trajectory file."""
    path = Path(path)
    data = load_json(path, FMT)
    if isinstance(data, list):
        messages, info, field, top = data, {}, "", {}
    else:
        top = expect(data, dict, path, "$", FMT)
        messages = expect(require(data, "messages", path, "", FMT), list, path, "messages", FMT)
        info = data.get("info") if isinstance(data.get("info"), dict) else {}
        field = "messages"
    steps, problem, meta = messages_to_steps(messages, path, field)
    cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    env_cfg = cfg.get("environment") if isinstance(cfg.get("environment"), dict) else {}
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    for k, v in (("exit_status", info.get("exit_status")), ("mini_version", info.get("mini_version")),
                 ("model", model_cfg.get("model_name")), ("image", env_cfg.get("image")),
                 ("cost", stats.get("instance_cost")), ("api_calls", stats.get("api_calls")),
                 ("trajectory_format", top.get("trajectory_format")), ("agent_type", cfg.get("agent_type"))):
        if v is not None:
            meta[k] = v
    submission = info.get("submission") or meta.pop("submission", "")
    if not submission and steps and steps[-1].tool == "submit" and is_patch(steps[-1].observation):
        submission = steps[-1].observation  # v1 message lists: the submit output is the patch
    if submission and not is_patch(submission):
        meta["submission"] = submission
    task_id = top.get("instance_id") or info.get("instance_id") or stem(path)
    return [Trajectory(task_id=str(task_id), steps=steps, outcome="imported", diff=submission if is_patch(submission) else "",
                       problem_statement=problem, source=FMT, metadata={**meta, "file": str(path)})]


def _command_step(command: str) -> tuple[str, dict[str, Any]]:
    return ("submit", {"command": command}) if is_submit_command(command) else bash_step(command)


def _classify_call(name: str, arguments: Any) -> tuple[str, dict[str, Any]]:
    parsed = parse_arguments(arguments)
    if parsed is None:
        return "invalid", {}
    if name == "bash" and "command" in parsed:
        return _command_step(str(parsed["command"]))
    return classify_tool_call(name, parsed)


def _thought_text(m: Mapping[str, Any], text_mode: bool) -> str | None:
    content = text_of(m.get("content"))
    if text_mode:
        content = ACTION_RE.sub("", content)
    content = content.strip()
    if content.startswith("THOUGHT:"):
        content = content[len("THOUGHT:"):].strip()
    reasoning = m.get("reasoning_content") if isinstance(m.get("reasoning_content"), str) else ""
    parts = [p for p in (reasoning.strip(), content) if p]
    return "\n\n".join(parts) or None


def _actions(m: Mapping[str, Any], path: Path, where: str) -> list[dict[str, Any]]:
    """The actions of one assistant message: [{tool, args, raw_action, call_id, thought, n}]."""
    calls = m.get("tool_calls")
    if calls:
        out = []
        for j, tc in enumerate(expect(calls, list, path, f"{where}.tool_calls", FMT)):
            fn = expect(tc.get("function") if isinstance(tc, dict) else None, dict, path, f"{where}.tool_calls[{j}].function", FMT)
            name, arguments = str(fn.get("name", "")), fn.get("arguments", "")
            tool, args = _classify_call(name, arguments)
            out.append({"tool": tool, "args": args, "raw_action": tool_call_raw(name, arguments), "call_id": tc.get("id"),
                        "thought": _thought_text(m, False) if j == 0 else None})
        return out
    content = text_of(m.get("content"))
    extra = m.get("extra") if isinstance(m.get("extra"), dict) else {}
    commands = [a["command"] for a in extra.get("actions") or [] if isinstance(a, dict) and isinstance(a.get("command"), str)]
    if not commands:
        commands = [c.strip() for c in ACTION_RE.findall(content)]
    if len(commands) != 1:
        return [{"tool": "invalid", "args": {}, "raw_action": content, "call_id": None, "thought": _thought_text(m, True),
                 "n": len(commands)}]
    tool, args = _command_step(commands[0])
    return [{"tool": tool, "args": args, "raw_action": content, "call_id": None, "thought": _thought_text(m, True)}]


def messages_to_steps(messages: list[Any], path: Path, field: str) -> tuple[tuple[Step, ...], str, dict[str, Any]]:
    """Turn a mini-swe-agent message list into steps; returns (steps, task text, metadata)."""
    slots: list[dict[str, Any]] = []
    problem, meta = None, {}
    pending: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]" if field else f"[{i}]"
        if not isinstance(m, dict):
            raise fail(path, where, FMT, f"expected a message object, got {type(m).__name__}")
        role = expect(require(m, "role", path, where, FMT), str, path, f"{where}.role", FMT)
        if role == "assistant":
            pending = _actions(m, path, where)
            slots.extend(pending)
            continue
        if role == "user" and problem is None and not slots:
            problem = extract_problem(text_of(m.get("content")))
            continue
        extra = m.get("extra") if isinstance(m.get("extra"), dict) else {}
        if role == "exit":
            meta.update({k: extra[k] for k in ("exit_status", "submission") if extra.get(k) is not None})
        if role not in _OBS_ROLES or not pending:
            continue
        target = next((s for s in pending if s["call_id"] and s["call_id"] == m.get("tool_call_id")), None)
        target = target or next((s for s in pending if "observation" not in s), None)
        if target is None or "observation" in target:
            continue
        text = text_of(m.get("content"))
        target["observation"] = text
        target["exit_code"] = exit_code_of(extra.get("returncode"), *_RETURNCODE_RE.findall(text)[:1])
        interrupt = str(extra.get("interrupt_type") or "")
        target["timed_out"] = "Timeout" in interrupt or bool(_TIMEOUT_RE.search(text))
        if interrupt == "FormatError" or (target["tool"] == "invalid") or (
                target.get("n", 1) != 1 and _FORMAT_ERROR_RE.search(text)):
            target.update(tool="invalid", args={}, error="parse: " + first_line(text))
        elif extra.get("exception_info"):
            target["error"] = "tool: " + first_line(str(extra["exception_info"]))
    for s in slots:
        if s["tool"] == "invalid" and "error" not in s:
            s["error"] = "parse: " + (first_line(s.get("observation", "")) or f"expected exactly one action, found {s.get('n', 0)}")
    steps = tuple(Step(index=i, tool=s["tool"], args=s["args"], observation=s.get("observation", ""),
                       exit_code=s.get("exit_code"), error=s.get("error"), raw_action=s["raw_action"],
                       thought=s["thought"], timed_out=s.get("timed_out", False)) for i, s in enumerate(slots))
    return steps, problem or "", meta


# ----------------------------------------------------------------------------- export


def export_mini(traj: Trajectory, path: Path) -> None:
    """Write `traj` as a ``mini-swe-agent-1.1`` .traj.json (text-mode steps keep their raw text,
    function-calling steps become tool_calls + role-tool messages)."""
    md = dict(traj.metadata)
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
                                      {"role": "user", "content": traj.problem_statement}]
    for step in traj.steps:
        call_id = f"call_{step.index}"
        tc = parse_tool_call_raw(step.raw_action)
        if tc is not None and _classify_call(*tc) != (step.tool, dict(step.args)):
            tc = None  # another agent's tool call: write the canonical step instead
        if tc is None and step.tool not in ("bash", "submit", "invalid"):
            tc = (step.tool, json.dumps(dict(step.args), ensure_ascii=False))
        extra: dict[str, Any] = {}
        if step.exit_code is not None:
            extra["returncode"] = step.exit_code
        if step.timed_out:
            extra["interrupt_type"] = "ExecutionTimeoutError"
        if step.tool == "invalid":
            extra["interrupt_type"] = "FormatError"
        elif step.error and step.error.startswith("tool: "):
            extra["exception_info"] = step.error[len("tool: "):]
        if tc is not None:
            messages.append({"role": "assistant", "content": step.thought or "", "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": tc[0], "arguments": tc[1]}}]})
            messages.append({"role": "tool", "tool_call_id": call_id, "content": step.observation, "extra": extra})
            continue
        command = str(step.args.get("command", ""))
        raw = step.raw_action
        if step.tool != "invalid" and not (raw and [c.strip() for c in ACTION_RE.findall(raw)] == [command]):
            raw = (f"THOUGHT: {step.thought}\n\n" if step.thought else "") + f"```mswea_bash_command\n{command}\n```"
        msg: dict[str, Any] = {"role": "assistant", "content": raw or ""}
        if step.tool != "invalid":
            msg["extra"] = {"actions": [{"command": command}]}
        messages.append(msg)
        messages.append({"role": "user", "content": step.observation, "extra": extra})
    submission = traj.diff or md.get("submission", "")
    last = traj.steps[-1].tool if traj.steps else ""
    info = {"exit_status": md.get("exit_status", "Submitted" if last == "submit" else ""), "submission": submission,
            "model_stats": {"instance_cost": md.get("cost", 0.0), "api_calls": md.get("api_calls", len(traj.steps))},
            "mini_version": md.get("mini_version", "contextrl-export"),
            "config": {"model": {"model_name": md.get("model")}, "agent_type": md.get("agent_type")}}
    doc = {"info": info, "messages": messages, "trajectory_format": "mini-swe-agent-1.1", "instance_id": traj.task_id}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
