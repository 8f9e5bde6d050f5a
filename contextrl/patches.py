"""Unified diffs as typed records: which files and line ranges a patch touches, and the
old/new text of each hunk (what the scripted agent turns into `str_replace` edits and the
miner turns into target functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from contextrl.errors import ContextRLError

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(ContextRLError, ValueError):
    """A unified diff could not be parsed."""


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[str, ...]
    """Body lines with their ' ', '-', '+' prefix ('\\' lines dropped)."""

    @property
    def old_text(self) -> str:
        return "".join(l[1:] + "\n" for l in self.lines if l[:1] in (" ", "-"))

    @property
    def new_text(self) -> str:
        return "".join(l[1:] + "\n" for l in self.lines if l[:1] in (" ", "+"))


@dataclass(frozen=True)
class FilePatch:
    old_path: str | None
    """None for a created file."""
    new_path: str | None
    """None for a deleted file."""
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""


def _strip(p: str) -> str | None:
    p = p.split("\t")[0].strip()
    if p == "/dev/null":
        return None
    return p[2:] if p[:2] in ("a/", "b/") else p


def parse_patch(text: str) -> list[FilePatch]:
    """Parse a (git or plain) unified diff into per-file patches."""
    files: list[FilePatch] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _strip(lines[i][4:]), _strip(lines[i + 1][4:])
            i += 2
            hunks = []
            while i < len(lines) and lines[i].startswith("@@"):
                m = _HUNK.match(lines[i])
                if not m:
                    raise PatchError(f"line {i + 1}: malformed hunk header {lines[i]!r}")
                os_, ol, ns, nl = int(m[1]), int(m[2] or 1), int(m[3]), int(m[4] or 1)
                i += 1
                body: list[str] = []
                o = n = 0
                while i < len(lines) and (o < ol or n < nl):
                    line = lines[i]
                    if line.startswith("\\"):
                        i += 1
                        continue
                    tag = line[:1] or " "
                    if tag not in " -+":
                        break
                    body.append(tag + line[1:])
                    o += tag in " -"
                    n += tag in " +"
                    i += 1
                while i < len(lines) and lines[i].startswith("\\"):
                    i += 1
                if (o, n) != (ol, nl):
                    raise PatchError(f"hunk at line {i}: expected {ol} old/{nl} new lines, found {o}/{n}")
                hunks.append(Hunk(os_, ol, ns, nl, tuple(body)))
            files.append(FilePatch(old, new, tuple(hunks)))
        else:
            i += 1
    return files


def touched_lines(fp: FilePatch) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of the *old* file that the patch changes."""
    out = []
    for h in fp.hunks:
        ln = h.old_start
        start = end = None
        for l in h.lines:
            if l[0] == "-":
                start = ln if start is None else start
                end = ln
                ln += 1
            elif l[0] == " ":
                ln += 1
            else:  # insertion: anchor at the current old line
                start = ln if start is None else start
                end = max(end or ln, ln)
        if start is not None:
            out.append((start, end))
    return out
