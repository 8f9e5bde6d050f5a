"""The `Task` record: everything an episode needs to set up a workspace and score it.

A task is data, not code: source files (or a repository at a commit inside an image),
setup commands, a test command, the SWE-bench test lists and a reference patch. Loaders
for each source live in `contextrl.envs.sources`; they all return this one type.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from contextrl.errors import TaskError

DEFAULT_TEST_COMMAND = "python3 -m pytest -rA -q -p no:cacheprovider"


@dataclass(frozen=True)
class Provenance:
    """Where a task came from, so a pair or a score can be traced back to its source."""

    source: str
    """Loader or generator name: "humaneval", "yaml", "swe-bench", "bugfix-generator"."""
    origin: str = ""
    """Dataset row id, file path, or "package==version" of the project."""
    license: str = ""
    """License of the underlying code or data, when known."""
    details: Mapping[str, Any] = field(default_factory=dict)
    """Generator parameters (mutation operator, location) or loader notes."""


@dataclass(frozen=True)
class Task:
    """One coding task. Paths in `files` and `hidden_files` are relative to the workspace."""

    id: str
    """Unique id, e.g. "HumanEval/0" or "inflection-0.5.1/mut-0042"."""
    problem_statement: str
    """The issue text shown to the agent."""
    files: Mapping[str, str] = field(default_factory=dict)
    """Workspace files written before the episode (path -> text)."""
    repo: str | None = None
    """A repository ("owner/name") already present in `image` at `workdir`, for SWE-style rows."""
    base_commit: str | None = None
    """Commit of `repo` the task starts from."""
    image: str | None = None
    """Sandbox image to run in; None means the default contextrl sandbox image."""
    workdir: str = "/workspace"
    """Directory the agent starts in and the diff is taken over."""
    setup_commands: tuple[str, ...] = ()
    """Shell commands run once after files are written, before the agent's first step."""
    test_command: str = DEFAULT_TEST_COMMAND
    """Command that runs the tests; test ids are appended. Its output is parsed per test."""
    fail_to_pass: tuple[str, ...] = ()
    """Tests that fail before the fix and must pass after it."""
    pass_to_pass: tuple[str, ...] = ()
    """Tests that pass before the fix and must keep passing."""
    hidden_files: Mapping[str, str] = field(default_factory=dict)
    """Files written only at scoring time (hidden tests); the agent never sees them."""
    test_patch: str = ""
    """A unified diff applied at scoring time (SWE-bench's test_patch)."""
    reference_patch: str = ""
    """A unified diff that solves the task (SWE-bench's patch)."""
    provenance: Provenance = field(default_factory=lambda: Provenance(source="unknown"))
    """Where the task came from."""

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise TaskError("Task.id must be a non-empty string")
        if not self.files and not self.repo:
            raise TaskError(f"task {self.id!r}: give either `files` or `repo` (an image with the repository)")
        if not self.fail_to_pass:
            raise TaskError(f"task {self.id!r}: `fail_to_pass` is empty; list at least one test that the fix makes pass")
        for name in ("setup_commands", "fail_to_pass", "pass_to_pass"):
            val = getattr(self, name)
            if isinstance(val, str) or not all(isinstance(v, str) for v in val):
                raise TaskError(f"task {self.id!r}: `{name}` must be a list of strings")
        if not self.workdir.startswith("/"):
            raise TaskError(f"task {self.id!r}: `workdir` must be an absolute path, got {self.workdir!r}")

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Provenance):
                v = {"source": v.source, "origin": v.origin, "license": v.license, "details": dict(v.details)}
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Task":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TaskError(f"unknown Task field(s) {sorted(unknown)}; known fields: {sorted(known)}")
        kw = dict(data)
        for name in ("setup_commands", "fail_to_pass", "pass_to_pass"):
            if name in kw and isinstance(kw[name], list):
                kw[name] = tuple(kw[name])
        prov = kw.get("provenance")
        if isinstance(prov, Mapping):
            kw["provenance"] = Provenance(**prov)
        return cls(**kw)
