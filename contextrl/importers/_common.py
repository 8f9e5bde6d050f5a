"""Helpers shared by the importers: JSON loading with located errors, text extraction
from chat-style content, problem-statement extraction, and the canonical tool mapping.

Canonical step vocabulary (see `contextrl.trajectory.Step`):
- ``bash``   args ``{"command": str}`` (plus ``"is_input": True`` when keys were sent to a
  running process);
- ``view``   args ``{"command": "view", "path": str, "view_range"?: [a, b]}``;
- ``edit``   args ``{"command": "create"|"str_replace"|"insert"|..., "path", "file_text"?,
  "old_str"?, "new_str"?, "insert_line"?, "line_range"?}``;
- ``submit`` the agent declared itself done (finish / submit);
- ``invalid`` the action could not be parsed;
- any other tool keeps its source name (``think``, ``ipython``, ``task_tracker``, ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from contextrl.errors import TrajectoryFormatError

FORMAT_NAMES = {
    "openhands_v0": "OpenHands v0 events (event list, event files, eval/resolver output.jsonl)",
    "openhands_v1": "OpenHands v1 SDK events (events/ directory, event file, events.jsonl)",
    "mini_swe_agent": "mini-swe-agent trajectory (.traj.json: {info, messages} or a message list)",
    "swe_agent": "SWE-agent trajectory (.traj: {trajectory, history, info})",
    "contextrl": "contextrl trajectory JSONL (collection or episode log)",
}

EDITOR_KEYS = ("command", "path", "file_text", "old_str", "new_str", "insert_line", "view_range", "line_range")
BASH_TOOL_NAMES = frozenset({"bash", "execute_bash", "terminal", "shell", "run", "run_command", "execute_command", "cmd_run"})
EDITOR_TOOL_NAMES = frozenset({"str_replace_editor", "file_editor", "str_replace_based_edit_tool", "planning_file_editor"})
SUBMIT_TOOL_NAMES = frozenset({"finish", "submit", "submit_patch"})
SUBMIT_SENTINELS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")


def fail(path: str | Path, field: str, fmt: str | None, problem: str) -> TrajectoryFormatError:
    """Build the error every importer raises: names the file, the JSON path and the format."""
    expected = FORMAT_NAMES.get(fmt or "", fmt or "a known trajectory format")
    return TrajectoryFormatError(f"{path}: {field or '$'}: {problem} (expected {expected})")


def load_json(path: Path, fmt: str | None = None) -> Any:
    """Parse a whole-file JSON document; a syntax error (e.g. a truncated file) names line and column."""
    text = read_text(path, fmt)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (file truncated?)" if e.pos >= len(text.rstrip()) - 1 else ""
        raise fail(path, f"$ (line {e.lineno}, column {e.colno})", fmt, f"not valid JSON: {e.msg}{hint}") from None


def load_jsonl(path: Path, fmt: str | None = None) -> list[Any]:
    """Parse a JSON-lines file (blank lines skipped); a bad line is reported by its number."""
    out = []
    for lineno, line in enumerate(read_text(path, fmt).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise fail(path, f"line {lineno}", fmt, f"not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object") from None
    return out


def read_text(path: Path, fmt: str | None = None) -> str:
    """Read a file as UTF-8 text, turning I/O and decoding problems into a format error."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise fail(path, "$", fmt, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise fail(path, "$", fmt, f"cannot read file ({e.strerror or e})") from None


def expect(obj: Any, kind: type | tuple[type, ...], path: Path, field: str, fmt: str) -> Any:
    """Return `obj` if it has the JSON type `kind`, else raise a located format error."""
    if not isinstance(obj, kind):
        names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
        want = " or ".join(names.get(k, k.__name__) for k in (kind if isinstance(kind, tuple) else (kind,)))
        got = "null" if obj is None else names.get(type(obj), type(obj).__name__)
        raise fail(path, field, fmt, f"expected a JSON {want}, got {got}")
    return obj


def require(d: Mapping[str, Any], key: str, path: Path, field: str, fmt: str) -> Any:
    """Return `d[key]`, or raise a format error naming the missing field `field.key`."""
    if key not in d:
        raise fail(path, f"{field}.{key}" if field else key, fmt, "missing required field")
    return d[key]


def text_of(content: Any) -> str:
    """Flatten chat content (a string, or a list of {"type": "text", "text": ...} blocks) to text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content.get("text", "")) if content.get("type", "text") == "text" else ""
    if isinstance(content, Iterable):
        return "".join(text_of(c) for c in content)
    return str(content)


def stem(path: Path) -> str:
    """File name without trajectory suffixes (``x.traj.json`` -> ``x``)."""
    name = Path(path).name
    for suffix in (".traj.json", ".traj", ".jsonl", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


_PROBLEM_PATTERNS = (
    re.compile(r"<pr_description>\s*(?:Consider the following PR description:\s*)?(.*?)\s*</pr_description>", re.S),
    re.compile(r"<issue_description>\s*(.*?)\s*</issue_description>", re.S),
    re.compile(r"<issue>\s*(.*?)\s*</issue>", re.S),
    re.compile(r"ISSUE:\n(.*?)\n\s*INSTRUCTIONS:", re.S),
    re.compile(r"# Problem Statement\n(.*?)\n\s*IMPORTANT:", re.S),
    re.compile(r"Please solve this issue: (.*?)\n\s*You can execute bash commands", re.S),
)


def extract_problem(text: str) -> str:
    """The task text inside a rendered instance prompt (SWE-bench/SWE-agent/OpenHands/mini
    templates); the whole text when no known template matches."""
    for pat in _PROBLEM_PATTERNS:
        m = pat.search(text or "")
        if m and m.group(1).strip():
            return m.group(1).strip()
    return (text or "").strip()


def tool_call_raw(name: str, arguments: Any) -> str:
    """`raw_action` for a function-calling step: the call as the model emitted it."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def parse_tool_call_raw(raw: str | None) -> tuple[str, str] | None:
    """Inverse of `tool_call_raw`; None when `raw` is not a tool call written by it."""
    if not raw or not raw.startswith("{"):
        return None
    try:
        d = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if isinstance(d, dict) and set(d) == {"name", "arguments"} and isinstance(d["arguments"], str):
        return d["name"], d["arguments"]
    return None


def parse_arguments(arguments: Any) -> dict[str, Any] | None:
    """Tool-call arguments as a dict (they are usually a JSON string); None if unparseable."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if isinstance(arguments, str):
        try:
            d = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return None
        return d if isinstance(d, dict) else None
    return {} if arguments is None else None


def editor_step(args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Map str_replace_editor-style arguments to ("view" | "edit", canonical args)."""
    canon = {k: args[k] for k in EDITOR_KEYS if args.get(k) is not None}
    canon.setdefault("command", "view")
    return ("view" if canon["command"] == "view" else "edit"), canon


def bash_step(command: Any, is_input: bool = False) -> tuple[str, dict[str, Any]]:
    """Canonical ("bash", {"command": ...}) for a shell command."""
    args: dict[str, Any] = {"command": "" if command is None else str(command)}
    if is_input:
        args["is_input"] = True
    return "bash", args


def is_submit_command(command: str) -> bool:
    """True for mini-swe-agent style `echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT` commands."""
    return any(s in command for s in SUBMIT_SENTINELS)


def classify_tool_call(name: str, args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Canonical (tool, args) for a function call by tool name; unknown tools keep their name."""
    if name in BASH_TOOL_NAMES and "command" in args:
        return bash_step(args["command"], bool(args.get("is_input")))
    if name in EDITOR_TOOL_NAMES:
        return editor_step(args)
    if name in ("view", "edit"):  # already canonical (e.g. written by our exporters)
        return name, {k: v for k, v in args.items() if v is not None}
    if name in SUBMIT_TOOL_NAMES:
        return "submit", {k: v for k, v in args.items() if k not in ("security_risk", "summary")}
    return name, {k: v for k, v in args.items() if k not in ("security_risk", "summary")}


def exit_code_of(*candidates: Any) -> int | None:
    """First candidate that is a real (non-negative integer) exit code; -1 means unknown."""
    for c in candidates:
        if isinstance(c, bool):
            continue
        if isinstance(c, int) and c >= 0:
            return c
        if isinstance(c, str) and c.strip().lstrip("-").isdigit() and int(c) >= 0:
            return int(c)
    return None


def first_line(text: str, limit: int = 200) -> str:
    """First non-empty line of `text`, shortened to `limit` characters (for Step.error)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def is_patch(text: Any) -> bool:
    """Whether `text` looks like a unified diff (vs. e.g. a CTF flag submission)."""
    return isinstance(text, str) and ("diff --git" in text or ("\n--- " in "\n" + text and "\n+++ " in text))


_INSTANCE_RE = re.compile(r"^([A-Za-z0-9_.-]+?)__([A-Za-z0-9_.-]+?)(?:-\d+|\.[0-9a-f]{8}(?:\.[\w.-]+)?)$")


def repo_from_instance_id(task_id: str) -> str | None:
    """``owner/name`` from a SWE-bench / SWE-smith style instance id (``django__django-14752``,
    ``pandas-dev__pandas.95280573.pr_53856``); None for other ids."""
    m = _INSTANCE_RE.match(task_id or "")
    return f"{m.group(1)}/{m.group(2)}" if m else None
