"""`CodingEnv` as a TRL `environment_factory`: the env's tools become the model's tools.

`CodingEnvFactory(env_ids, ...)` is the factory TRL calls once per concurrent rollout; each
call returns a `CodingToolEnv`, which TRL drives like this:

- `reset(**row)`: the dataset row names `env_id` and `task_id`; the adapter resets its
  `CodingEnv` on that task (a sandbox comes from the factory's shared `SandboxPool`) and
  returns the task prompt, which TRL appends to the (empty) user turn;
- the public methods `bash`, `view`, `edit` and `submit` are the tools: TRL renders their
  signatures and docstrings into the chat template's tool list, parses the model's tool calls
  and calls them; each is one `CodingEnv.step` with the matching JSON action, and returns the
  observation (cut in the middle beyond `max_observation_chars`);
- `get_reward()`: the test reward (SWE-bench semantics). A rollout that never called
  `submit` is submitted then (scoring on truncation, as the env does at its step limit).

Infrastructure failures are not the policy's: when the sandbox fails (at reset, mid-episode
or while scoring) or the task cannot be set up, `get_reward` returns None, so TRL gives the
rollout no reward and no advantage, and `InfraFailureMasking` (a trainer mixin) removes it
from the loss mask and the loss normaliser and counts it (`env/masked`). Every finished
rollout (a `Rollout` record) goes to the factory's `RolloutSink`, from which the mining
callback hands trajectories to the branch miner.

In `da_rl` mode some rows are selection prompts (pairs as RL prompts): for those `reset`
returns None, the tools answer that no environment is attached, and `get_reward` returns
None, leaving the row to the selection reward.
"""

from __future__ import annotations

import collections
import json
import random
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from contextrl.envs.task import Task
from contextrl.envs.tools import TOOLS_DOC
from contextrl.errors import ConfigError, SandboxError, TaskError
from contextrl.sandboxes.base import SandboxLimits
from contextrl.sandboxes.pool import PoolConfig, SandboxPool
from contextrl.trajectory import Failure, Trajectory

SELECTION_KEY = "ca_positive_option"
"""The dataset column that marks a `da_rl` selection row (`contextrl.trainer.pairs.POSITIVE_OPTION_KEY`)."""
PROMPT_SUFFIX = "Use the tools to inspect, run and edit the code; call submit when you are done."


@dataclass(frozen=True)
class Rollout:
    """One finished rollout: its trajectory, its task, and how it was scored."""

    trajectory: Trajectory
    task: Task
    env_id: str
    reward: float | None
    """The test reward, or None when the rollout was masked (infrastructure failure)."""
    failure: Failure | None = None
    """The infrastructure failure that masked it, if any."""
    auto_submitted: bool = False
    """True when the policy never called submit and the rollout was scored at its end."""

    @property
    def acted(self) -> bool:
        """Whether the policy ran, viewed or edited anything (what branch mining can flip)."""
        return any(s.tool in ("bash", "view", "edit") and not s.error for s in self.trajectory.steps)


class RolloutSink:
    """A thread-safe hand-off of finished rollouts (adapters put, the mining callback drains)."""

    def __init__(self, maxlen: int = 4096):
        self._items: collections.deque[Rollout] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        """rollouts, masked, resolved, auto_submitted."""

    def put(self, rollout: Rollout) -> None:
        with self._lock:
            self._items.append(rollout)
            self.counts.update(rollouts=1, masked=int(rollout.reward is None), auto_submitted=int(rollout.auto_submitted),
                               resolved=int(bool(rollout.trajectory.resolved) and rollout.reward is not None))

    def drain(self) -> list[Rollout]:
        """Every rollout put since the last drain, oldest first."""
        with self._lock:
            out = list(self._items)
            self._items.clear()
        return out


class CodingEnvFactory:
    """Makes `CodingToolEnv`s for TRL; owns the task lists, the shared sandbox pool and the sink."""

    def __init__(
        self,
        env_ids: Sequence[str],
        *,
        sandbox: str = "auto",
        pool: PoolConfig | None = None,
        limits: SandboxLimits | None = None,
        env_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        max_episode_steps: int = 8,
        command_timeout: float = 30.0,
        test_timeout: float = 120.0,
        max_observation_chars: int = 2000,
        trajectory_dir: str | None = None,
        tasks: Mapping[str, Sequence[Task]] | None = None,
        seed: int = 0,
    ):
        """
        Args:
            env_ids: registered env ids; their tasks are loaded once, on first use.
            sandbox: "auto", "docker" or "local" (resolved once, when the pool is made).
            pool: sizes of the shared rollout pool (default: 2 warm, 16 live).
            limits: sandbox resource limits (default: 1 GiB, 1 CPU).
            env_kwargs: extra `contextrl.make` arguments per env id (e.g. BugFix `projects`).
            max_episode_steps / command_timeout / test_timeout: passed to every `CodingEnv`.
            max_observation_chars: tool results are cut in the middle beyond this.
            trajectory_dir: write every episode as JSONL here.
            tasks: task lists per env id, instead of loading them (tests, custom suites).
        """
        if not env_ids:
            raise ConfigError("CodingEnvFactory needs at least one env id")
        self.env_ids = list(env_ids)
        self.sandbox_kind = sandbox
        self.pool_config = pool or PoolConfig(warm=2, max_live=16)
        self.limits = limits or SandboxLimits(memory_mb=1024, default_timeout_s=command_timeout)
        self.env_kwargs = {k: dict(v) for k, v in (env_kwargs or {}).items()}
        self.max_episode_steps = max_episode_steps
        self.command_timeout = command_timeout
        self.test_timeout = test_timeout
        self.max_observation_chars = max_observation_chars
        self.trajectory_dir = trajectory_dir
        self.seed = seed
        self.sink = RolloutSink()
        self._tasks: dict[str, list[Task]] = {k: list(v) for k, v in (tasks or {}).items()}
        self._pool: SandboxPool | None = None
        self._lock = threading.Lock()
        self._adapters: list[CodingToolEnv] = []
        self._closed = False

    def __call__(self) -> "CodingToolEnv":
        adapter = CodingToolEnv(self)
        with self._lock:
            self._adapters.append(adapter)
        return adapter

    # -- tasks ------------------------------------------------------------------------
    def tasks(self, env_id: str) -> list[Task]:
        """The tasks of `env_id` (loaded once with `contextrl.make(env_id, **env_kwargs)`)."""
        with self._lock:
            if env_id not in self._tasks:
                import contextrl

                if env_id not in self.env_ids:
                    raise ConfigError(f"env id {env_id!r} is not one of this factory's {self.env_ids}")
                env = contextrl.make(env_id, sandbox="local", **self.env_kwargs.get(env_id, {}))
                try:
                    self._tasks[env_id] = list(env.unwrapped.tasks)
                finally:
                    env.close()
            return self._tasks[env_id]

    def select(self, env_id: str, task_ids: Sequence[str] = (), limit: int | None = None) -> list[Task]:
        """The tasks of `env_id` named in `task_ids` (all when empty), the first `limit` of them."""
        tasks = self.tasks(env_id)
        if task_ids:
            tasks = [t for t in tasks if t.id in set(task_ids)]
        return tasks[:limit] if limit is not None else tasks

    def dataset(self, task_ids: Sequence[str] = (), limit_per_env: int | None = None) -> Any:
        """A TRL train dataset: one row per task (`prompt` placeholder, `env_id`, `task_id`),
        interleaved across envs in a seeded order. Fails when no task is selected."""
        from datasets import Dataset

        rows: list[dict[str, Any]] = []
        for env_id in self.env_ids:
            for task in self.select(env_id, task_ids, limit_per_env):
                rows.append({"prompt": [{"role": "user", "content": ""}], "env_id": env_id, "task_id": task.id})
        if not rows:
            raise ConfigError(f"no training task selected from {self.env_ids} (envs.task_ids={list(task_ids)}); check the ids "
                              "with `contextrl tasks list ENV_ID`")
        random.Random(self.seed).shuffle(rows)
        return Dataset.from_list(rows)

    # -- sandboxes and envs -------------------------------------------------------------
    def make_env(self, env_id: str) -> Any:
        """A fresh `CodingEnv` over `env_id`'s tasks. Tasks on the default image share the
        factory's pool; an env with custom images gets its own pools (none kept warm)."""
        from contextrl.envs.coding import CodingEnv

        tasks = self.tasks(env_id)
        default_image = all(t.image is None and not t.repo for t in tasks)
        kwargs: dict[str, Any] = dict(max_episode_steps=self.max_episode_steps, command_timeout=self.command_timeout,
                                      test_timeout=self.test_timeout, limits=self.limits, env_id=env_id,
                                      trajectory_dir=self.trajectory_dir)
        if default_image:
            return CodingEnv(tasks, sandbox=self.shared_pool(), **kwargs)
        return CodingEnv(tasks, sandbox=self.sandbox_kind, pool=PoolConfig(warm=0, max_live=4), **kwargs)

    def shared_pool(self) -> SandboxPool:
        """The rollout pool (made on first use: this resolves "auto" to Docker or local)."""
        with self._lock:
            if self._closed:
                raise SandboxError("CodingEnvFactory is closed")
            if self._pool is None:
                from contextrl.sandboxes import make_sandbox_factory

                make = make_sandbox_factory(self.sandbox_kind, limits=self.limits, uid=1000, workdir="/workspace")
                self._pool = SandboxPool(make, self.pool_config, name="rollout-pool")
            return self._pool

    def close(self) -> None:
        """Close every adapter's envs and the shared pool (idempotent)."""
        with self._lock:
            adapters, self._adapters = self._adapters, []
            pool, self._pool = self._pool, None
            self._closed = True
        for a in adapters:
            a._close()
        if pool is not None:
            pool.close()

    def __enter__(self) -> "CodingEnvFactory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CodingToolEnv:
    """One rollout's environment for TRL (public methods other than `reset`/`get_reward` are tools)."""

    def __init__(self, factory: CodingEnvFactory):
        self._factory = factory
        self._envs: dict[str, Any] = {}
        self._env: Any = None
        self._env_id = ""
        self._task: Task | None = None
        self._traj: Trajectory | None = None
        self._failure: Failure | None = None
        self._done = False
        self._inactive = True
        self._auto_submitted = False
        self._reward: float | None = None
        self._scored = False

    # -- TRL protocol -------------------------------------------------------------------
    def reset(self, **row: Any) -> str | None:
        """Start an episode on the row's task; returns the task prompt (None for selection rows)."""
        self._traj, self._failure, self._done, self._auto_submitted = None, None, False, False
        self._reward, self._scored, self._task = None, False, None
        self._inactive = row.get(SELECTION_KEY) is not None
        if self._inactive:
            return None
        f = self._factory
        self._env_id = row.get("env_id") or f.env_ids[0]
        task_id = row.get("task_id")
        tasks = f.tasks(self._env_id)
        self._task = next((t for t in tasks if t.id == task_id), None) if task_id else random.choice(tasks)
        if self._task is None:
            raise ConfigError(f"dataset row names task {task_id!r}, which {self._env_id} does not have")
        try:
            if self._env_id not in self._envs:
                self._envs[self._env_id] = f.make_env(self._env_id)
            self._env = self._envs[self._env_id]
            obs, info = self._env.reset(options={"task_id": self._task.id})
            self._traj = info["trajectory"]
        except (SandboxError, TaskError) as e:
            self._failure = Failure("sandbox" if isinstance(e, SandboxError) else "task", f"reset: {e}")
            self._done = True
            return f"{self._task.problem_statement.strip()}\n\n[the environment could not be set up: {e}]"
        prompt = obs.replace(TOOLS_DOC, "").rstrip()
        return prompt.replace("Make the change, then submit.", PROMPT_SUFFIX)

    def get_reward(self) -> float | None:
        """The test reward of the episode (submitting it first if the policy did not), or None
        when the rollout is masked (infrastructure failure) or is a selection row."""
        if self._inactive or self._task is None:
            return None
        if self._scored:
            return self._reward
        if not self._done:
            self._auto_submitted = True
            self._act("submit")
        traj = self._traj or Trajectory(task_id=self._task.id)
        failure = self._failure or (traj.failure if traj.failure and traj.failure.boundary in ("sandbox", "task", "env") else None)
        self._failure = failure
        self._reward = None if failure is not None else float(traj.reward or 0.0)
        self._scored = True
        self._factory.sink.put(Rollout(traj, self._task, self._env_id, self._reward, failure, self._auto_submitted))
        return self._reward

    # -- tools --------------------------------------------------------------------------
    def bash(self, command: str) -> str:
        """Run a shell command in the repository; returns its output.

        Args:
            command: The command, e.g. `ls` or `python3 -m pytest -q`.
        """
        return self._act("bash", command=command)

    def view(self, path: str, view_range: list[int] | None = None) -> str:
        """Show a file with line numbers, or list a directory.

        Args:
            path: File or directory.
            view_range: Optional [first, last] line (-1: to the end).
        """
        return self._act("view", path=path, view_range=view_range)

    def edit(self, command: str, path: str, file_text: str | None = None, old_str: str | None = None,
             new_str: str | None = None, insert_line: int | None = None) -> str:
        """Edit a file.

        Args:
            command: create, str_replace, insert or undo_edit.
            path: The file.
            file_text: create: the new file's content.
            old_str: str_replace: the exact text to replace.
            new_str: str_replace: the replacement; insert: the new lines.
            insert_line: insert: insert after this line (0: at the top).
        """
        return self._act("edit", command=command, path=path, file_text=file_text, old_str=old_str, new_str=new_str,
                         insert_line=insert_line)

    def submit(self) -> str:
        """Finish: the tests run and decide the reward."""
        return self._act("submit")

    # -- state (properties are not tools) -----------------------------------------------
    @property
    def trajectory(self) -> Trajectory | None:
        """The episode so far (final after `get_reward`)."""
        return self._traj

    @property
    def task(self) -> Task | None:
        """The episode's task."""
        return self._task

    @property
    def env_id(self) -> str:
        """The env id of the episode."""
        return self._env_id

    @property
    def failure(self) -> Failure | None:
        """The infrastructure failure of the episode, if any."""
        return self._failure

    @property
    def masked(self) -> bool:
        """Whether the rollout must be left out of the loss (infrastructure failure)."""
        return not self._inactive and self._task is not None and self._failure is not None

    @property
    def sandbox(self) -> Any:
        """The sandbox the episode runs in (None before reset and after scoring)."""
        return getattr(self._env.unwrapped, "_sb", None) if self._env is not None else None

    # -- internals ----------------------------------------------------------------------
    def _act(self, tool: str, **args: Any) -> str:
        if self._inactive or self._task is None:
            return "[no environment] this prompt has no coding environment; answer directly."
        if self._failure is not None:
            return f"[sandbox error] the environment is unavailable: {self._failure.message}"
        if self._done:
            return "[episode over] the episode has ended (submitted or out of turns); no more tool calls are run."
        action = json.dumps({"tool": tool, "args": {k: v for k, v in args.items() if v is not None}}, default=str)
        obs, _reward, terminated, truncated, info = self._env.step(action)
        self._traj = info["trajectory"]
        fail = info.get("failure")
        if isinstance(fail, Failure) and fail.boundary in ("sandbox", "task", "env"):
            self._failure = fail
        self._done = bool(terminated or truncated)
        return _cut(obs, self._factory.max_observation_chars)

    def _close(self) -> None:
        for env in self._envs.values():
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the pool closes the rest
                pass
        self._envs.clear()
        self._env = None


def _cut(text: str, limit: int) -> str:
    """`text`, its middle replaced by a marker when longer than `limit` characters."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


class InfraFailureMasking:
    """Trainer mixin (before `ContextRLTrainer`/`GRPOTrainer` in the bases): rollouts whose
    environment failed are removed from the loss mask and from the loss normaliser, and the
    batch's rollout statistics are logged: `env/masked` (count), `env/masked_frac`,
    `env/resolved`, `env/auto_submitted` and `env/turns` (over the rollouts that were scored)."""

    def _generate_and_score_completions(self, inputs):  # noqa: D102 - see the class docstring
        import torch

        out = super()._generate_and_score_completions(inputs)
        envs = list(self.environments or [])
        active = [e for e in envs if isinstance(e, CodingToolEnv) and e.task is not None and not e._inactive]
        masked = torch.tensor([isinstance(e, CodingToolEnv) and e.masked for e in envs] or [False] * len(inputs),
                              dtype=torch.bool, device=out["completion_mask"].device)
        if masked.any():
            tool_mask = out.get("tool_mask")
            if tool_mask is None:
                tool_mask = torch.ones_like(out["completion_mask"])
            out["tool_mask"] = tool_mask * (~masked).unsqueeze(1).to(tool_mask.dtype)
        loss_mask = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()  # every rank: a collective
        scored = [e for e in active if not e.masked]
        local = torch.tensor([float(masked.sum()), float(len(active)), float(len(scored)),
                              sum(bool(e.trajectory and e.trajectory.resolved) for e in scored),
                              sum(e._auto_submitted for e in scored),
                              sum(len(e.trajectory.steps) if e.trajectory else 0 for e in scored)],
                             dtype=torch.float32, device=out["completion_mask"].device)
        n_masked, n_active, n_scored, resolved, auto, turns = self.accelerator.gather(local).view(-1, 6).sum(0).tolist()
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        metrics["env/masked"].append(n_masked)
        metrics["env/masked_frac"].append(n_masked / n_active if n_active else 0.0)
        if n_scored:
            metrics["env/resolved"].append(resolved / n_scored)
            metrics["env/auto_submitted"].append(auto / n_scored)
            metrics["env/turns"].append(turns / n_scored)
        return out
