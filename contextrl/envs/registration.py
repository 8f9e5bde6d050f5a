"""Versioned env ids, registered with Gymnasium on `import contextrl`.

`contextrl.make(id)` is `gym.make` with a friendlier error: an unknown id lists the
closest registered ids ("did you mean").
"""

from __future__ import annotations

import difflib
from typing import Any

import gymnasium as gym

from contextrl.errors import UnknownEnvError

NAMESPACE = "contextrl"
ENV_IDS = ("contextrl/HumanEval-v0", "contextrl/BugFix-v0", "contextrl/Task-v0")


def make_humaneval(limit: int | None = None, **kwargs: Any):
    from contextrl.envs.coding import CodingEnv
    from contextrl.envs.sources import load_humaneval

    return CodingEnv(lambda: load_humaneval(limit=limit), env_id="contextrl/HumanEval-v0", **_route_step_limit(kwargs))


def make_bugfix(cache_dir: str | None = None, projects: list[str] | None = None, **kwargs: Any):
    from contextrl.envs.bugfix import load_bugfix_tasks
    from contextrl.envs.coding import CodingEnv

    def load():
        tasks = load_bugfix_tasks(cache_dir=cache_dir)
        if projects:
            tasks = [t for t in tasks if any(t.id.startswith(p) for p in projects)]
        return tasks

    return CodingEnv(load, env_id="contextrl/BugFix-v0", **_route_step_limit(kwargs))


def make_task_env(spec: str | None = None, tasks: list | None = None, **kwargs: Any):
    from contextrl.envs.coding import CodingEnv
    from contextrl.errors import ConfigError

    kwargs = _route_step_limit(kwargs)
    if (spec is None) == (tasks is None):
        raise ConfigError("contextrl/Task-v0 needs exactly one of spec='path/to/tasks.yaml' (or a directory) or tasks=[Task, ...]")
    if spec is not None:
        from contextrl.envs.sources import load_tasks

        return CodingEnv(lambda: load_tasks(spec), env_id="contextrl/Task-v0", **kwargs)
    return CodingEnv(tasks, env_id="contextrl/Task-v0", **kwargs)


def register_envs() -> None:
    registered = gym.registry
    entries = {
        "contextrl/HumanEval-v0": "contextrl.envs.registration:make_humaneval",
        "contextrl/BugFix-v0": "contextrl.envs.registration:make_bugfix",
        "contextrl/Task-v0": "contextrl.envs.registration:make_task_env",
    }
    for env_id, entry in entries.items():
        if env_id not in registered:
            # max_episode_steps is handled inside CodingEnv (truncation also scores), so no TimeLimit here.
            gym.register(id=env_id, entry_point=entry, disable_env_checker=True)


def registered_ids() -> list[str]:
    return sorted(k for k in gym.registry if k.startswith(NAMESPACE + "/"))


def _route_step_limit(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "step_limit" in kwargs:
        kwargs["max_episode_steps"] = kwargs.pop("step_limit")
    return kwargs


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """`gym.make` with a "did you mean" error for unknown ids.

    `max_episode_steps` goes to the env itself (truncation then also runs the tests);
    through plain `gym.make`, pass `step_limit=N` for the same effect — Gymnasium's own
    `max_episode_steps` adds a `TimeLimit` wrapper that truncates without scoring.
    """
    register_envs()
    if "max_episode_steps" in kwargs:
        kwargs["step_limit"] = kwargs.pop("max_episode_steps")
    if env_id not in gym.registry:
        candidates = registered_ids()
        close = difflib.get_close_matches(env_id, candidates, n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownEnvError(f"unknown env id {env_id!r}.{hint} Registered: {', '.join(candidates)}")
    return gym.make(env_id, **kwargs)
