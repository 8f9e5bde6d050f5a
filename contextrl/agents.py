"""Scripted agents: deterministic policies used by the demo, tests and benchmarks.

`ReferencePatchAgent` solves a task by applying its reference patch *through the tools*
(views and `str_replace` edits, like a real agent would), so a resolve rate of 1.0 checks
the env, the tools and the scorer end to end. `SubmitAgent` submits at once (rate 0.0).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import gymnasium as gym

from contextrl.envs.task import Task
from contextrl.patches import parse_patch
from contextrl.trajectory import Trajectory


def _act(tool: str, **args: Any) -> str:
    return json.dumps({"tool": tool, "args": args})


class SubmitAgent:
    name = "submit-at-once"

    def actions(self, task: Task) -> Iterator[str]:
        yield _act("submit")


class ReferencePatchAgent:
    name = "reference-patch"

    def actions(self, task: Task) -> Iterator[str]:
        yield _act("bash", command="git status --short && ls")
        for fp in parse_patch(task.reference_patch):
            if fp.new_path is None:
                yield _act("bash", command=f"rm -f -- '{fp.old_path}'")
                continue
            if fp.old_path is None:
                yield _act("edit", command="create", path=fp.new_path, file_text="".join(h.new_text for h in fp.hunks))
                continue
            yield _act("view", path=fp.new_path)
            for h in fp.hunks:
                yield _act("edit", command="str_replace", path=fp.new_path, old_str=h.old_text, new_str=h.new_text)
        yield _act("submit")


def run_episode(env: gym.Env, agent: Any, task_id: str, seed: int = 0) -> Trajectory:
    """Run one episode of `agent` on `task_id`; return the final trajectory."""
    obs, info = env.reset(seed=seed, options={"task_id": task_id})
    task = env.unwrapped._task
    terminated = truncated = False
    for action in agent.actions(task):
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    if not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(_act("submit"))
    return info["trajectory"]
