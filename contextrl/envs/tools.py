"""Agent tools as typed calls: parsing JSON actions and running them against a sandbox.

Canonical tools: `bash`, `view`, `edit` (create / str_replace / insert / undo_edit),
`submit`. OpenHands V1 names and argument shapes (`terminal`, `file_editor`, `finish`)
map onto them, so a policy moves between the two without retraining its format.
A malformed action is a `ToolCallError` the env turns into an observation; it never
escapes `env.step`.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from contextrl.sandboxes.base import Sandbox

TOOLS_DOC = """Tools (reply with exactly one JSON object per turn):
  {"tool": "bash", "args": {"command": "<shell command>"}}            run a command in the workspace
  {"tool": "view", "args": {"path": "<file or dir>", "view_range": [start, end]}}  show a file with line numbers
  {"tool": "edit", "args": {"command": "create", "path": "...", "file_text": "..."}}
  {"tool": "edit", "args": {"command": "str_replace", "path": "...", "old_str": "...", "new_str": "..."}}
  {"tool": "edit", "args": {"command": "insert", "path": "...", "insert_line": N, "new_str": "..."}}
  {"tool": "submit", "args": {}}                                        finish; the tests decide the reward
OpenHands V1 names are accepted too: terminal, file_editor, finish."""

CANONICAL = ("bash", "view", "edit", "submit")
ALIASES = {"terminal": "bash", "execute_bash": "bash", "shell": "bash", "file_editor": "file_editor",
           "str_replace_editor": "file_editor", "finish": "submit", "str_replace_based_edit_tool": "file_editor"}
MAX_VIEW_LINES = 400


class ToolCallError(Exception):
    """The action could not be understood or the tool rejected its arguments (policy error)."""


@dataclass(frozen=True)
class ToolCall:
    tool: str
    args: Mapping[str, Any] = field(default_factory=dict)


def parse_action(action: Any) -> ToolCall:
    """Parse a JSON tool call (string or mapping) into a canonical `ToolCall`."""
    if isinstance(action, (bytes, bytearray)):
        action = action.decode("utf-8", "replace")
    if isinstance(action, str):
        text = action.strip()
        if text.startswith("```"):
            text = text.strip("`").removeprefix("json").strip()
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ToolCallError(f"action is not JSON ({e.msg} at char {e.pos}); send one object like "
                                '{"tool": "bash", "args": {"command": "ls"}}') from None
    else:
        obj = action
    if not isinstance(obj, Mapping):
        raise ToolCallError(f"action must be a JSON object, got {type(obj).__name__}")
    if "function" in obj and isinstance(obj["function"], Mapping):  # OpenAI tool_call shape
        obj = obj["function"]
    name = obj.get("tool", obj.get("name"))
    if not isinstance(name, str) or not name:
        raise ToolCallError('action names no tool; use {"tool": "<bash|view|edit|submit>", "args": {...}}')
    args = obj.get("args", obj.get("arguments", obj.get("parameters", obj.get("input", {}))))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise ToolCallError(f"arguments of {name!r} are a string that is not JSON") from None
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise ToolCallError(f"arguments of {name!r} must be an object, got {type(args).__name__}")
    name = ALIASES.get(name, name)
    if name == "file_editor":
        cmd = args.get("command")
        name = "view" if cmd == "view" else "edit"
    if name not in CANONICAL:
        import difflib

        close = difflib.get_close_matches(name, list(CANONICAL) + list(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ToolCallError(f"unknown tool {name!r}{hint} Known tools: {', '.join(CANONICAL)} (and {', '.join(sorted(ALIASES))})")
    return ToolCall(name, dict(args))


def _req(args: Mapping[str, Any], key: str, typ: type | tuple[type, ...], tool: str) -> Any:
    if key not in args:
        raise ToolCallError(f"{tool}: missing argument {key!r}")
    val = args[key]
    if not isinstance(val, typ):
        raise ToolCallError(f"{tool}: argument {key!r} must be {getattr(typ, '__name__', typ)}")
    return val


class ToolRunner:
    """Runs tool calls in one sandbox; keeps per-file undo history for `undo_edit`."""

    def __init__(self, sandbox: Sandbox, workdir: str, command_timeout: float):
        self.sandbox = sandbox
        self.workdir = workdir
        self.command_timeout = command_timeout
        self._history: dict[str, list[bytes | None]] = {}

    def _abs(self, path: str) -> str:
        return posixpath.normpath(path if path.startswith("/") else posixpath.join(self.workdir, path))

    def bash(self, args: Mapping[str, Any]):
        cmd = _req(args, "command", str, "bash")
        if args.get("is_input"):
            raise ToolCallError("bash: interactive input (is_input) is not supported; commands get /dev/null as stdin")
        timeout = args.get("timeout")
        timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else self.command_timeout
        res = self.sandbox.exec(cmd, timeout=min(timeout, self.command_timeout * 4))
        obs = res.output
        if res.timed_out:
            obs += f"\n[command timed out after {timeout:.0f}s and was killed]"
        if res.exit_code == 137 and not res.timed_out:
            mem = getattr(getattr(self.sandbox, "limits", None), "memory_mb", None)
            obs += f"\n[exit code 137: killed, most likely out of memory (sandbox limit {mem} MiB)]"
        elif res.exit_code not in (0, 124) and not res.timed_out:
            obs += f"\n[exit code {res.exit_code}]"
        if res.truncated:
            obs += f"\n[output truncated: the command wrote {res.output_bytes} bytes]"
        if res.session_restarted:
            obs += "\n[the shell was restarted: working directory kept, shell variables lost]"
        return obs, res

    def view(self, args: Mapping[str, Any]):
        path = self._abs(_req(args, "path", str, "view"))
        rng = args.get("view_range")
        res = self.sandbox.exec(f"test -d {shlex.quote(path)} && echo DIR || (test -f {shlex.quote(path)} && echo FILE || echo MISSING)", timeout=10)
        kind = res.output.strip()
        if kind == "MISSING":
            raise ToolCallError(f"view: {path} does not exist")
        if kind == "DIR":
            out = self.sandbox.exec(f"cd {shlex.quote(path)} && find . -maxdepth 2 -not -path '*/.git*' | sort | head -n 300", timeout=10)
            return f"Files under {path}:\n{out.output}", out
        data = self.sandbox.read_file(path).decode("utf-8", "replace")
        lines = data.split("\n")
        if data.endswith("\n"):
            lines = lines[:-1]
        start, end = 1, len(lines)
        if rng is not None:
            if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(x, int) for x in rng)):
                raise ToolCallError("view: view_range must be [start, end] (1-based; end -1 means to the end)")
            start, end = rng[0], (len(lines) if rng[1] == -1 else rng[1])
            if start < 1 or start > max(1, len(lines)) or end < start:
                raise ToolCallError(f"view: view_range {list(rng)} is outside the file's {len(lines)} lines")
        end = min(end, len(lines), start + MAX_VIEW_LINES - 1)
        body = "\n".join(f"{i:6d}\t{lines[i - 1]}" for i in range(start, end + 1))
        more = f"\n[showing lines {start}-{end} of {len(lines)}]" if (start, end) != (1, len(lines)) else ""
        return f"Contents of {path}:\n{body}{more}", None

    def edit(self, args: Mapping[str, Any]):
        cmd = _req(args, "command", str, "edit")
        path = self._abs(_req(args, "path", str, "edit"))
        if cmd == "undo_edit":
            hist = self._history.get(path)
            if not hist:
                raise ToolCallError(f"edit: no edit to undo for {path}")
            prev = hist.pop()
            if prev is None:
                self.sandbox.exec(f"rm -f {shlex.quote(path)}", timeout=10)
            else:
                self.sandbox.write_file(path, prev)
            return f"Undid the last edit of {path}.", None
        old = self._read_or_none(path)
        if cmd == "create":
            text = _req(args, "file_text", str, "edit")
            new = text.encode()
            msg = f"{'Overwrote' if old is not None else 'Created'} {path} ({len(new)} bytes)."
        elif cmd == "str_replace":
            if old is None:
                raise ToolCallError(f"edit: {path} does not exist; use command=create")
            old_str = _req(args, "old_str", str, "edit")
            new_str = args.get("new_str", "")
            if not isinstance(new_str, str):
                raise ToolCallError("edit: new_str must be a string")
            text = old.decode("utf-8", "replace")
            n = text.count(old_str) if old_str else 0
            if n == 0:
                raise ToolCallError(f"edit: old_str was not found in {path}; view the file and copy the text exactly")
            if n > 1:
                raise ToolCallError(f"edit: old_str occurs {n} times in {path}; include more context to make it unique")
            new = text.replace(old_str, new_str, 1).encode()
            line = text[: text.index(old_str)].count("\n") + 1
            msg = f"Edited {path} at line {line}."
        elif cmd == "insert":
            if old is None:
                raise ToolCallError(f"edit: {path} does not exist; use command=create")
            at = _req(args, "insert_line", int, "edit")
            new_str = _req(args, "new_str", str, "edit")
            lines = old.decode("utf-8", "replace").split("\n")
            if at < 0 or at > len(lines):
                raise ToolCallError(f"edit: insert_line {at} is outside 0..{len(lines)}")
            ins = new_str.split("\n")
            if new_str.endswith("\n"):
                ins = ins[:-1]
            new = "\n".join(lines[:at] + ins + lines[at:]).encode()
            msg = f"Inserted {len(ins)} line(s) after line {at} of {path}."
        else:
            raise ToolCallError(f"edit: unknown command {cmd!r}; use create, str_replace, insert or undo_edit")
        self.sandbox.write_file(path, new)
        self._history.setdefault(path, []).append(old)
        return msg, None

    def _read_or_none(self, path: str) -> bytes | None:
        try:
            return self.sandbox.read_file(path)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise ToolCallError(f"edit: {path} is a directory") from None
