"""Which functions and classes a patch changes: the "same target" key of the condition filter.

With the pre-patch source of a Python file, targets come from
`contextrl.conditions.enclosing_definitions` over the lines the patch touches. Without it
(imported trajectories rarely carry sources), from the patch itself: each hunk's old and
new text is parsed with tree-sitter and a changed line inside a definition names that
definition; a changed line outside any definition in the hunk belongs to the hunk
header's function context (`@@ -1472,7 +1472,7 @@ class TimeDelta(Field):`), which git
fills with the nearest preceding line that starts at column 0 - the enclosing top-level
function or class. Both ways agree on the outermost name, hence `level="top"`.
Non-Python files use the header context only.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Callable, Mapping

from contextrl.patches import FilePatch, Hunk, parse_patch, touched_lines
from contextrl.trajectory import Trajectory

SOURCE_KEYS = ("source_files", "files")
"""Trajectory metadata keys that may map file paths to their pre-patch text."""
SourceLookup = Callable[[Trajectory, str], "str | None"]
"""`(trajectory, path) -> pre-patch text of that file, or None`."""

_HUNK_CTX = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@ ?(.*)$")
_PY_DEF = re.compile(r"^\s*(?:async\s+def|def|class)\s+([A-Za-z_]\w*)")
_DEF_LINE = re.compile(r"\s*(?:@|async\s+def\s|def\s|class\s)")
_KEYWORD_NAME = re.compile(r"\b(?:class|struct|interface|trait|impl|enum|fn|func|function|def|fun|be|new|actor|primitive|"
                           r"type|module|sub|method)\s+(?:ref\s+|box\s+|val\s+|iso\s+)?([A-Za-z_$][\w$]*)")
_CALL = re.compile(r"([A-Za-z_$][\w$]*)\s*\(")
_CONTROL = frozenset("if for while switch return catch elif else do sizeof".split())


def hunk_contexts(diff: str) -> list[list[str]]:
    """Per file and per hunk, the function context git wrote after the second "@@" (same
    walk as `parse_patch`, so the result lines up with its files and hunks)."""
    files: list[list[str]] = []
    lines, i = diff.splitlines(), 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        ctxs: list[str] = []
        i += 2
        while i < len(lines) and (m := _HUNK_CTX.match(lines[i])):
            ol, nl, o, n = int(m[1] or 1), int(m[2] or 1), 0, 0
            ctxs.append(m[3].strip())
            i += 1
            while i < len(lines) and (o < ol or n < nl):
                tag = lines[i][:1] or " "
                if tag == "\\":
                    i += 1
                    continue
                if tag not in " -+":
                    break
                o, n, i = o + (tag in " -"), n + (tag in " +"), i + 1
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
        files.append(ctxs)
    return files


def header_name(context: str) -> str | None:
    """The function or class named by a hunk header's context ("class Foo(Bar):" -> "Foo",
    "static int foo(int x)" -> "foo"); None when it names none."""
    if m := _PY_DEF.match(context) or _KEYWORD_NAME.search(context):
        return m[1]
    return next((c for c in _CALL.findall(context) if c not in _CONTROL), None)


def _snippet_defs(text: str) -> list[tuple[int, int, str, int]]:
    """(first line, last line, name qualified within the snippet, column of its outermost
    enclosing definition in the snippet) of each def/class in a code snippet (tree-sitter)."""
    query, parse, cursor = _tree_sitter()
    raw = []
    for n in cursor(query).captures(parse(text).root_node).get("def", []):
        name = n.child_by_field_name("name")
        top = n.parent if n.parent is not None and n.parent.type == "decorated_definition" else n
        raw.append((top.start_point[0] + 1, n.end_point[0] + 1, name.text.decode(errors="replace") if name else "?",
                    top.start_point[1]))
    raw.sort(key=lambda d: (d[0], -d[1]))
    out: list[tuple[int, int, str, int]] = []
    for s, e, name, col in raw:
        parents = [d for d in out if d[0] <= s and e <= d[1]]
        parent = max(parents, key=lambda d: d[0]) if parents else None
        out.append((s, e, f"{parent[2]}.{name}", parent[3]) if parent else (s, e, name, col))
    return out


@lru_cache(maxsize=1)
def _tree_sitter():
    """(definitions query, `contextrl.conditions.parse`, QueryCursor), built once."""
    from tree_sitter import Query, QueryCursor

    from contextrl.conditions import parse

    return Query(parse(b"").language, "[(function_definition) (class_definition)] @def"), parse, QueryCursor


def _names(lines: list[str], changed: list[int], header: str | None) -> set[str]:
    """Targets of the changed (1-based) lines of a Python snippet."""
    if not changed:
        return set()
    last = max(changed)
    # Only a definition that starts at or before the last changed line can contain one.
    defs = _snippet_defs("\n".join(lines)) if any(_DEF_LINE.match(x) for x in lines[:last]) else []
    first_top = next((k for k, x in enumerate(lines) if _top_level(x)), len(lines))
    names: set[str] = set()
    for ln in changed:
        inside = [d for d in defs if d[0] <= ln <= d[1]]
        if inside:
            _, _, qual, root_col = max(inside, key=lambda d: d[0])
            name = qual if root_col == 0 else f"{header}.{qual}" if header else None
        else:  # no column-0 statement between the hunk start and the line: the header's body
            name = header if first_top >= ln else None
        if name:
            names.add(name)
    return names


def hunk_targets(hunk: Hunk, context: str = "", python: bool = True) -> set[str]:
    """Qualified names of the functions/classes a hunk changes, from the patch alone.

    A changed line inside a definition of the hunk text names it (prefixed with the header's
    name when that definition is indented); an indented changed line outside them belongs to
    the header's definition unless a column-0 statement comes before it in the hunk; a
    column-0 line outside definitions is module level (no target). Removed lines are placed
    in the old text, added ones at the old line before them, and, when the added lines
    define something, also in the new text.
    """
    header = header_name(context)
    if not python:
        return {header} if header and any(x[:1] in "-+" for x in hunk.lines) else set()
    old: list[str] = []
    new: list[str] = []
    changed_old: list[int] = []
    changed_new: list[int] = []
    adds_def = False
    for line in hunk.lines:
        tag, body = line[:1], line[1:]
        if tag in " -":
            old.append(body)
        if tag in " +":
            new.append(body)
        if tag == "-":
            changed_old.append(len(old))
        elif tag == "+":
            changed_old.append(max(1, len(old)))
            changed_new.append(len(new))
            adds_def = adds_def or bool(_DEF_LINE.match(body))
    names = _names(old, changed_old, header) if old else set()
    return names | _names(new, changed_new, header) if adds_def or not old else names


def _top_level(line: str) -> bool:
    """A statement starting at column 0 (closing brackets of a signature do not count)."""
    return bool(line) and not line[0].isspace() and line[0] not in ")]}#"


def file_targets(fp: FilePatch, contexts: list[str], source: str | None, level: str = "top") -> set[str]:
    """Targets of one file's patch: `enclosing_definitions` over the pre-patch `source` when
    given (Python files), else `hunk_targets`; cut to the outermost name for level "top"."""
    python = (fp.old_path or fp.path).endswith(".py")
    if source is not None and python:
        from contextrl.conditions import enclosing_definitions

        names = enclosing_definitions(source, touched_lines(fp))
    else:
        names = set()
        for k, h in enumerate(fp.hunks):
            names |= hunk_targets(h, contexts[k] if k < len(contexts) else "", python)
    return {x.split(".")[0] for x in names} if level == "top" else names


def trajectory_targets(traj: Trajectory, level: str = "top", source_lookup: SourceLookup | None = None) -> dict[str, set[str]]:
    """Modified file -> targets for a trajectory's final diff (created files are skipped:
    they were not modified). Raises PatchError on a malformed diff."""
    out: dict[str, set[str]] = {}
    contexts = hunk_contexts(traj.diff)
    for k, fp in enumerate(parse_patch(traj.diff)):
        if fp.old_path is None or not fp.hunks:
            continue
        src = source_lookup(traj, fp.old_path) if source_lookup else _metadata_source(traj, fp.old_path)
        out[fp.old_path] = file_targets(fp, contexts[k] if k < len(contexts) else [], src, level)
    return out


def _metadata_source(traj: Trajectory, path: str) -> str | None:
    for key in SOURCE_KEYS:
        files = traj.metadata.get(key)
        if isinstance(files, Mapping):
            for p in (path, "./" + path, "/" + path):
                if isinstance(files.get(p), str):
                    return files[p]
    return None


__all__ = ["SOURCE_KEYS", "SourceLookup", "file_targets", "header_name", "hunk_contexts", "hunk_targets",
           "trajectory_targets"]
