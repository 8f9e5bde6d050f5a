"""Format detection by content (not by file name), and discovery of importable units in a tree.

A *unit* is what one `import_file` call reads: a trajectory file, or a conversation directory
(OpenHands v1 ``events/`` with ``event-NNNNN-*.json`` files and an optional ``base_state.json``;
OpenHands v0 ``sessions/<id>/events/<n>.json`` with an optional ``metadata.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from contextrl.importers import mini_swe_agent, openhands_v0, openhands_v1, swe_agent
from contextrl.importers._common import FORMAT_NAMES, fail, read_text

CANDIDATE_SUFFIXES = (".json", ".jsonl", ".traj")
_EXPECTED = "one of: " + "; ".join(FORMAT_NAMES.values())


def detect_format(path: str | Path) -> str:
    """Sniff the trajectory format of a file or conversation directory from its content.

    Returns one of ``openhands_v0``, ``openhands_v1``, ``mini_swe_agent``, ``swe_agent``,
    ``contextrl``. Raises `TrajectoryFormatError` (naming the file, the field and the formats
    expected) for unreadable, malformed or unknown content, including formats recognised but
    not importable (ATIF, predictions files, task instances, chat fine-tuning data).
    """
    path = Path(path)
    if path.is_dir():
        fmt = unit_dir_format(path)
        if fmt is None:
            raise fail(path, "$", None, f"not a conversation directory (use import_path to import a tree); expected {_EXPECTED}")
        return fmt
    if not path.exists():
        raise fail(path, "$", None, "no such file or directory")
    text = read_text(path)
    if not text.strip():
        raise fail(path, "$", None, f"empty file; expected {_EXPECTED}")
    try:
        data: Any = json.loads(text)
        jsonl = False
    except json.JSONDecodeError as e:
        if not (e.msg.startswith("Extra data") or path.suffix == ".jsonl"):
            hint = " (file truncated?)" if e.pos >= len(text.rstrip()) - 1 else ""
            raise fail(path, f"$ (line {e.lineno}, column {e.colno})", None, f"not valid JSON: {e.msg}{hint}; expected {_EXPECTED}") from None
        first = next(line for line in text.splitlines() if line.strip())
        try:
            data, jsonl = json.loads(first), True
        except json.JSONDecodeError as e2:
            raise fail(path, "line 1", None, f"not valid JSON ({e2.msg}); expected {_EXPECTED}") from None
    return _sniff_row(data, path) if jsonl else _sniff(data, path)


def _sniff(data: Any, path: Path) -> str:
    if isinstance(data, dict):
        if mini_swe_agent.is_mini(data):
            return "mini_swe_agent"
        if swe_agent.is_swe_agent(data):
            return "swe_agent"
        if openhands_v1.is_event(data):
            return "openhands_v1"
        if openhands_v1.is_base_state(data):
            if not (path.parent / "events").is_dir():
                raise fail(path, "$", "openhands_v1", "an OpenHands v1 base_state.json with no events/ directory next to it: no steps to import")
            return "openhands_v1"
        if openhands_v0.is_event(data) or (isinstance(data.get("history"), list) and _is_v0_row(data)):
            return "openhands_v0"
        if "conversation_id" in data and (path.parent / "events").is_dir():
            return "openhands_v0"
        if "task_id" in data and ("steps" in data or data.get("event") in ("start", "step", "end")):
            return "contextrl"
        raise fail(path, "$", None, _unknown(data))
    if isinstance(data, list):
        if not data:
            raise fail(path, "$", None, f"empty JSON array; expected {_EXPECTED}")
        first = data[0]
        if openhands_v0.is_event(first) or (isinstance(first, list) and first and openhands_v0.is_event(first[0])):
            return "openhands_v0"
        if openhands_v1.is_event(first):
            return "openhands_v1"
        if mini_swe_agent.is_mini(data):
            return "mini_swe_agent"
        raise fail(path, "[0]", None, _unknown(first, listed=True))
    raise fail(path, "$", None, f"top-level JSON {type(data).__name__} is not a trajectory; expected {_EXPECTED}")


def _sniff_row(row: Any, path: Path) -> str:
    if openhands_v1.is_event(row):
        return "openhands_v1"
    if isinstance(row, dict) and isinstance(row.get("history"), list):
        return "openhands_v0"
    if isinstance(row, dict) and ("task_id" in row and ("steps" in row or row.get("event") in ("start", "step", "end"))):
        return "contextrl"
    raise fail(path, "line 1", None, _unknown(row, listed=True))


def _is_v0_row(d: dict[str, Any]) -> bool:
    return any(k in d for k in ("instruction", "instance_id", "git_patch", "test_result", "issue"))


def _unknown(d: Any, listed: bool = False) -> str:
    """Name what an unsupported document looks like, so a report says why it was skipped."""
    what = None
    if isinstance(d, dict):
        keys = set(d)
        if str(d.get("schema_version", "")).startswith("ATIF"):
            what = "a Harbor ATIF trajectory"
        elif "model_patch" in keys or (d and all(isinstance(v, dict) and "model_patch" in v for v in d.values())):
            what = "a predictions file (instance_id -> model_patch), which has no steps"
        elif {"instance_id", "problem_statement"} <= keys:
            what = "a task-instance dataset row, which has no steps"
        elif "conversations" in keys:
            what = "Harbor traces (SFT conversations)"
        elif {"instance_id", "messages"} <= keys:
            what = "chat fine-tuning data (instance_id + messages)"
        elif "sessionId" in keys and "type" in keys:
            what = "a Claude Code session log"
        elif "fix_patch" in keys:
            what = "a patch dataset row, which has no steps"
        shown = ", ".join(sorted(map(str, keys))[:8])
        desc = f"looks like {what}" if what else f"unknown content (keys: {shown})"
    else:
        desc = f"unknown content ({type(d).__name__})"
    return f"{'elements: ' if listed else ''}{desc}, not a supported trajectory; expected {_EXPECTED}"


def unit_dir_format(path: Path) -> str | None:
    """The format of a conversation directory, or None if `path` is not one."""
    for d in (path / "events", path):
        if d.is_dir() and openhands_v1.is_events_dir(d):
            return "openhands_v1"
        if d.is_dir() and openhands_v0.is_session_events_dir(d):
            return "openhands_v0"
    return None


def iter_units(root: Path) -> Iterator[Path]:
    """Yield the importable units under `root`, depth-first in name order; hidden entries and
    files that are not JSON/JSONL/.traj are skipped."""
    skip: set[str] = set()
    if unit_dir_format(root):
        yield root
        if not (root / "events").is_dir():
            return  # `root` is itself an events directory
        skip = {"events", "base_state.json", "metadata.json"}  # consumed by the conversation unit
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in skip:
            continue
        if entry.is_dir():
            yield from iter_units(entry)
        elif entry.is_file() and entry.name.endswith(CANDIDATE_SUFFIXES):
            yield entry
