"""Typed trajectories: what an episode did, step by step, and how it ended.

Two on-disk shapes, one reader:
- an *episode log* (one file per episode) written line by line as the env steps:
  `{"event": "start", ...}`, `{"event": "step", ...}` per step, `{"event": "end", ...}`;
  a crash mid-episode leaves every observed step on disk;
- a *collection* (JSONL, one complete trajectory per line), what importers and the miner
  write.
`read_trajectories` accepts both and any mix of them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from contextrl.errors import TrajectoryFormatError

FORMAT_VERSION = 1

Outcome = Literal["submitted", "truncated", "failed", "running", "imported"]
Boundary = Literal["sandbox", "task", "policy", "env"]


@dataclass(frozen=True)
class Failure:
    """Why a rollout failed, and which boundary failed: infrastructure failures are masked
    out of training; policy failures are data."""

    boundary: Boundary
    message: str


@dataclass(frozen=True)
class Step:
    """One action and what it produced."""

    index: int
    tool: str
    """Canonical tool name (bash, view, edit, submit), or "invalid" for an unparseable action."""
    args: Mapping[str, Any]
    observation: str
    exit_code: int | None = None
    duration_s: float = field(default=0.0, compare=False)
    """Wall time of the step; not part of equality (two replays of an episode are equal)."""
    error: str | None = None
    """Set when the action failed: "parse: ...", "tool: ...", "sandbox: ..."."""
    raw_action: str | None = None
    """The action exactly as the policy wrote it."""
    thought: str | None = None
    """Reasoning text that came with the action, when the source has it."""
    timed_out: bool = False
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["args"] = dict(self.args)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Step":
        return cls(**_pick(cls, d, "step"))


@dataclass(frozen=True)
class Trajectory:
    """A whole episode. `diff` is the unified diff of the final workspace against the start."""

    task_id: str
    steps: tuple[Step, ...] = ()
    reward: float | None = None
    resolved: bool | None = None
    outcome: Outcome = "running"
    failure: Failure | None = None
    diff: str = ""
    problem_statement: str = ""
    episode_id: str = ""
    source: str = ""
    """Where it came from: an env id, or an importer name ("openhands_v1")."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Free-form extras: repo, base_commit, model, test results, infrastructure timings."""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["steps"] = [s.to_dict() for s in self.steps]
        d["failure"] = asdict(self.failure) if self.failure else None
        d["metadata"] = dict(self.metadata)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Trajectory":
        kw = _pick(cls, d, "trajectory")
        version = kw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise TrajectoryFormatError(f"trajectory format_version={version} is not supported (expected {FORMAT_VERSION})")
        kw["steps"] = tuple(Step.from_dict(s) for s in kw.get("steps", ()))
        if kw.get("failure"):
            kw["failure"] = Failure(**kw["failure"])
        return cls(**kw)

    def with_steps(self, steps: Sequence[Step]) -> "Trajectory":
        return replace(self, steps=tuple(steps))


def _pick(cls: type, d: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(d, Mapping):
        raise TrajectoryFormatError(f"{what}: expected a JSON object, got {type(d).__name__}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is f.default_factory is _MISSING}
    missing = required - set(d)
    if missing:
        raise TrajectoryFormatError(f"{what}: missing field(s) {sorted(missing)}")
    return {k: v for k, v in d.items() if k in names}


from dataclasses import MISSING as _MISSING  # noqa: E402


class EpisodeLog:
    """Appends an episode to a JSONL file as it happens (flushed per line)."""

    def __init__(self, path: str | Path, header: Mapping[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._write({"event": "start", "format_version": FORMAT_VERSION, **header})

    def _write(self, obj: Mapping[str, Any]) -> None:
        if self._fh.closed:
            return
        self._fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._fh.flush()

    def step(self, step: Step) -> None:
        self._write({"event": "step", **step.to_dict()})

    def end(self, traj: Trajectory) -> None:
        d = traj.to_dict()
        d.pop("steps")
        self._write({"event": "end", **d})
        self.close()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def write_trajectories(path: str | Path, trajs: Sequence[Trajectory] | Iterator[Trajectory]) -> int:
    """Write a collection atomically (temp file + rename). Returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for t in trajs:
            fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_trajectories(path: str | Path) -> Iterator[Trajectory]:
    """Yield trajectories from a collection or episode-log JSONL file (streaming).

    An episode log without an "end" line (a crash) yields its steps with outcome "failed".
    """
    path = Path(path)
    partial: dict[str, Any] | None = None
    psteps: list[Step] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrajectoryFormatError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from e
            try:
                event = obj.get("event") if isinstance(obj, dict) else None
                if event == "start":
                    if partial is not None:
                        yield _from_partial(partial, psteps, crashed=True)
                    partial, psteps = obj, []
                elif event == "step":
                    if partial is None:
                        raise TrajectoryFormatError("a 'step' event came before any 'start' event")
                    obj = dict(obj)
                    obj.pop("event")
                    psteps.append(Step.from_dict(obj))
                elif event == "end":
                    if partial is None:
                        raise TrajectoryFormatError("an 'end' event came before any 'start' event")
                    end = dict(obj)
                    end.pop("event")
                    yield Trajectory.from_dict({**end, "steps": [s.to_dict() for s in psteps]})
                    partial, psteps = None, []
                else:
                    yield Trajectory.from_dict(obj)
            except TrajectoryFormatError as e:
                raise TrajectoryFormatError(f"{path}:{lineno}: {e}") from None
            except TypeError as e:
                raise TrajectoryFormatError(f"{path}:{lineno}: bad field value ({e})") from None
    if partial is not None:
        yield _from_partial(partial, psteps, crashed=True)


def _from_partial(header: Mapping[str, Any], steps: list[Step], crashed: bool) -> Trajectory:
    return Trajectory(
        task_id=header.get("task_id", "?"),
        steps=tuple(steps),
        outcome="failed" if crashed else "running",
        failure=Failure("env", "episode log ended without an 'end' event (process crashed?)") if crashed else None,
        problem_statement=header.get("problem_statement", ""),
        episode_id=header.get("episode_id", ""),
        source=header.get("source", ""),
        metadata=header.get("metadata", {}),
    )
