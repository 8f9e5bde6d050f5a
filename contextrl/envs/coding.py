"""`CodingEnv`: a Gymnasium env whose episodes run in sandboxes and produce trajectories.

Observations and actions are text. An action is one JSON tool call (see `tools.py`);
`submit` (or truncation at `max_episode_steps`) runs the task's tests and gives the
SWE-bench reward. Every step is appended to an episode log as it happens, and
`info["trajectory"]` is the typed trajectory so far.

Deliberate differences from a plain Gymnasium env: a malformed action is an error
*observation* (counted in `info["invalid_actions"]`), never an exception; a sandbox that
dies mid-episode ends the episode with the failure recorded on the trajectory (boundary
"sandbox", so trainers can mask it) instead of raising; truncation also scores.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym

from contextrl.envs.spaces import UnicodeText
from contextrl.envs.task import Task
from contextrl.envs.testing import run_tests
from contextrl.envs.tools import TOOLS_DOC, ToolCallError, ToolRunner, parse_action
from contextrl.errors import ConfigError, SandboxError, TaskError
from contextrl.sandboxes import SandboxKind, SandboxLimits, make_sandbox_factory
from contextrl.sandboxes.base import Sandbox
from contextrl.sandboxes.pool import PoolConfig, SandboxPool
from contextrl.trajectory import EpisodeLog, Failure, Step, Trajectory

MAX_OBS_CHARS = 1_000_000


class CodingEnv(gym.Env[str, str]):
    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        tasks: Sequence[Task] | Callable[[], Sequence[Task]],
        *,
        sandbox: SandboxKind | SandboxPool = "auto",
        max_episode_steps: int | None = 30,
        command_timeout: float = 60.0,
        test_timeout: float = 300.0,
        limits: SandboxLimits | None = None,
        pool: PoolConfig | None = None,
        trajectory_dir: str | Path | None = None,
        env_id: str = "contextrl/CodingEnv",
        render_mode: str | None = None,
    ):
        """
        Args:
            tasks: the task list, or a zero-argument loader called lazily.
            sandbox: "auto" (Docker if a daemon answers, else local with a warning), "docker",
                "local", or a `SandboxPool` to share between envs.
            max_episode_steps: steps before truncation (which also scores); None for no limit.
            command_timeout: default per-command timeout in seconds.
            test_timeout: timeout of the scoring test run.
            limits: sandbox resource limits.
            pool: warm-pool sizes when the env makes its own pool.
            trajectory_dir: write each episode to `<dir>/<episode_id>.jsonl` as it runs.
            env_id: recorded as the trajectory's source.
        """
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode={render_mode!r}: supported modes are {self.metadata['render_modes']}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ConfigError("max_episode_steps must be >= 1 or None")
        self.render_mode = render_mode
        self._tasks_src = tasks
        self._tasks: list[Task] | None = None
        self._sandbox_kind = sandbox
        self._limits = limits or SandboxLimits(default_timeout_s=command_timeout)
        self._pool_config = pool or PoolConfig(warm=1, max_live=8)
        self._pools: dict[tuple[str | None, str], SandboxPool] = {}
        self._own_pools = not isinstance(sandbox, SandboxPool)
        self.max_episode_steps = max_episode_steps
        self.command_timeout = command_timeout
        self.test_timeout = test_timeout
        self.trajectory_dir = Path(trajectory_dir) if trajectory_dir else None
        self.env_id = env_id
        self.observation_space = UnicodeText(MAX_OBS_CHARS)
        self.action_space = UnicodeText(MAX_OBS_CHARS)
        self._sb: Sandbox | None = None
        self._sb_pool: SandboxPool | None = None
        self._task: Task | None = None
        self._steps: list[Step] = []
        self._log: EpisodeLog | None = None
        self._done = True
        self._counters: dict[str, int] = {}
        self._last_obs = ""
        self._traj: Trajectory | None = None

    # -- tasks and sandboxes ------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        if self._tasks is None:
            src = self._tasks_src
            self._tasks = list(src() if callable(src) else src)
            if not self._tasks:
                raise TaskError(f"{self.env_id}: the task list is empty")
            self._by_id = {t.id: t for t in self._tasks}
        return self._tasks

    def _pool_for(self, task: Task) -> SandboxPool:
        if isinstance(self._sandbox_kind, SandboxPool):
            return self._sandbox_kind
        workdir = task.workdir if task.repo else "/workspace"
        key = (task.image, workdir)
        if key not in self._pools:
            factory = make_sandbox_factory(self._sandbox_kind, image=task.image, limits=self._limits,
                                           uid=1000 if not task.repo else None, workdir=workdir)
            self._pools[key] = SandboxPool(factory, self._pool_config, name=f"{self.env_id}-pool")
        return self._pools[key]

    def _release(self) -> None:
        self._release_sandbox(self._sb, self._sb_pool)
        self._sb = None
        self._sb_pool = None

    @staticmethod
    def _release_sandbox(sb: Sandbox | None, pool: SandboxPool | None) -> None:
        if sb is not None and pool is not None:
            pool.release(sb)
        elif sb is not None:
            sb.close()

    # -- gymnasium API ------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._finish_log_if_open()
        # The previous sandbox is released only after the new one is set up, so its removal
        # does not compete with this reset.
        previous = (self._sb, self._sb_pool)
        self._sb = self._sb_pool = None
        try:
            tasks = self.tasks
            options = options or {}
            if "task_id" in options:
                tid = options["task_id"]
                if tid not in self._by_id:
                    import difflib

                    close = difflib.get_close_matches(str(tid), list(self._by_id), n=3)
                    raise TaskError(f"{self.env_id}: unknown task_id {tid!r}" + (f"; did you mean {close}?" if close else ""))
                task = self._by_id[tid]
            else:
                task = tasks[int(self.np_random.integers(len(tasks)))]
            self._task = task
            t0 = time.perf_counter()
            last_err: Exception | None = None
            for _attempt in range(2):
                pool = self._pool_for(task)
                sb = pool.acquire()
                self._sb, self._sb_pool = sb, pool
                try:
                    self._setup_workspace(sb, task)
                    break
                except SandboxError as e:
                    last_err = e
                    self._release()
            else:
                raise SandboxError(f"{self.env_id}: could not set up task {task.id!r} in a sandbox: {last_err}")
        finally:
            self._release_sandbox(*previous)
        self._workdir = task.workdir if task.repo else self._sb.workdir
        self._runner = ToolRunner(self._sb, self._workdir, self.command_timeout)
        self._steps = []
        self._counters = {"invalid_actions": 0, "tool_errors": 0}
        self._done = False
        # Seed-determined, so the same seed replays the same episode (and info) exactly.
        self._episode_id = f"{int(self.np_random.integers(2**62)):016x}"
        self._reset_s = time.perf_counter() - t0
        if self.trajectory_dir is not None:
            path = self.trajectory_dir / f"{self._episode_id}.jsonl"
            n = 1
            while path.exists():
                path = self.trajectory_dir / f"{self._episode_id}-{n}.jsonl"
                n += 1
            self._log = EpisodeLog(path, {
                "task_id": task.id, "episode_id": self._episode_id, "source": self.env_id,
                "problem_statement": task.problem_statement, "metadata": self._meta(),
            })
        self._traj = self._trajectory("running")
        obs = self._prompt(task)
        self._last_obs = obs
        return obs, self._info()

    def _setup_workspace(self, sb: Sandbox, task: Task) -> None:
        wd = task.workdir if task.repo else sb.workdir
        for rel, text in task.files.items():
            sb.write_file(rel if rel.startswith("/") else f"{wd}/{rel}", text)
        q = shlex.quote(wd)
        git = "git -c user.name=contextrl -c user.email=contextrl@invalid"
        # The diff base is taken *after* setup, so what setup did (e.g. SWE-smith applying the
        # bug) is not counted as the agent's change. Without setup commands this is one exec.
        record_base = (f"{git} add -A && {git} commit -qm 'contextrl: task start' --no-verify --allow-empty >/dev/null 2>&1; "
                       'git rev-parse HEAD > "${TMPDIR:-/tmp}/.contextrl_base"')
        init = f"git init -q && " if not task.repo else ""
        if not task.setup_commands:
            res = sb.exec(f"cd {q} && {init}{record_base}", timeout=60)
            if res.exit_code != 0:
                raise TaskError(f"task {task.id!r}: workspace setup failed: {res.output[-500:]}")
            return
        if init:
            res = sb.exec(f"cd {q} && git init -q && {git} add -A && {git} commit -qm 'contextrl: task files' --no-verify", timeout=60)
            if res.exit_code != 0:
                raise TaskError(f"task {task.id!r}: workspace setup failed: {res.output[-500:]}")
        for cmd in task.setup_commands:
            res = sb.exec(f"cd {q} && {cmd}", timeout=self.test_timeout)
            if res.exit_code != 0:
                raise TaskError(f"task {task.id!r}: setup command {cmd!r} failed (exit {res.exit_code}): {res.output[-500:]}")
        res = sb.exec(f"cd {q} && {record_base}", timeout=60)
        if res.exit_code != 0:
            raise TaskError(f"task {task.id!r}: could not record the diff base: {res.output[-500:]}")

    def _prompt(self, task: Task) -> str:
        return (f"{task.problem_statement.strip()}\n\nThe repository is at {self._workdir}. "
                f"Make the change, then submit.\n\n{TOOLS_DOC}\n")

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._done or self._task is None:
            raise gym.error.ResetNeeded("call reset() before step(); the episode has ended")
        t0 = time.perf_counter()
        raw = action if isinstance(action, str) else repr(action)
        reward, terminated = 0.0, False
        exit_code, timed_out, truncated_out, error = None, False, False, None
        tool, args = "invalid", {}
        try:
            call = parse_action(action)
            tool, args = call.tool, dict(call.args)
            if tool == "submit":
                obs, reward, terminated = self._finish("submitted"), self._traj.reward or 0.0, True
            else:
                obs, res = getattr(self._runner, tool)(call.args)
                if res is not None:
                    exit_code, timed_out, truncated_out = res.exit_code, res.timed_out, res.truncated
        except ToolCallError as e:
            key = "invalid_actions" if tool == "invalid" else "tool_errors"
            self._counters[key] += 1
            error = f"{'parse' if tool == 'invalid' else 'tool'}: {e}"
            obs = f"[error] {e}"
        except SandboxError as e:
            error = f"sandbox: {e}"
            obs = f"[sandbox error] {e}\nThe episode cannot continue."
            self._record(tool, args, obs, raw, exit_code, time.perf_counter() - t0, error, timed_out, truncated_out)
            self._finish("failed", failure=Failure("sandbox", str(e)))
            return obs, 0.0, True, False, self._info()
        if not terminated:
            self._record(tool, args, obs, raw, exit_code, time.perf_counter() - t0, error, timed_out, truncated_out)
        else:
            self._record(tool, args, obs, raw, 0, time.perf_counter() - t0, None, False, False, final=True)
        truncated = False
        limit = self.max_episode_steps
        if not terminated and limit is not None and len(self._steps) >= limit:
            obs = obs + "\n" + self._finish("truncated")
            reward, truncated = self._traj.reward or 0.0, True
        self._last_obs = obs
        return obs, float(reward), terminated, truncated, self._info()

    def _record(self, tool, args, obs, raw, exit_code, dur, error, timed_out, truncated, final=False) -> None:
        step = Step(index=len(self._steps), tool=tool, args=args, observation=obs, exit_code=exit_code,
                    duration_s=dur, error=error, raw_action=raw, timed_out=timed_out, truncated=truncated)
        self._steps.append(step)
        if self._log is not None:
            self._log.step(step)
        if not final:
            self._traj = replace(self._traj, steps=tuple(self._steps))
        else:
            self._traj = replace(self._traj, steps=tuple(self._steps))
            if self._log is not None:
                self._log.end(self._traj)
                self._log = None

    def _finish(self, outcome: str, failure: Failure | None = None) -> str:
        """Score (unless the sandbox failed), compute the diff, close the trajectory."""
        task = self._task
        assert task is not None and self._sb is not None
        reward, resolved, diff, msg, meta = 0.0, False, "", "", self._meta()
        if failure is None:
            try:
                diff = self._diff()
                rep = run_tests(self._sb, task, timeout=self.test_timeout, workdir=self._workdir)
                reward, resolved = rep.reward, rep.resolved
                meta["tests"] = dict(rep.statuses)
                msg = (f"[tests] reward={reward:.3f} resolved={resolved} "
                       f"({len(rep.fail_to_pass_passed)}/{len(task.fail_to_pass)} FAIL_TO_PASS pass, "
                       f"{len(rep.pass_to_pass_failed)} PASS_TO_PASS broken)")
            except SandboxError as e:
                failure = Failure("sandbox", f"scoring failed: {e}")
                outcome = "failed"
                msg = f"[sandbox error] scoring failed: {e}"
        self._done = True
        self._traj = replace(self._traj, steps=tuple(self._steps), reward=reward, resolved=resolved,
                             outcome=outcome, failure=failure, diff=diff, metadata=meta)
        if outcome == "failed" or outcome == "truncated":
            if self._log is not None:
                self._log.end(self._traj)
                self._log = None
        self._release()
        return msg

    def _diff(self) -> str:
        res = self._sb.exec(f"cd {shlex.quote(self._workdir)} && git add -A >/dev/null 2>&1; "
                            "git -c core.quotepath=off diff --cached --no-color \"$(cat \"${TMPDIR:-/tmp}/.contextrl_base\")\"",
                            timeout=60)
        return res.output if res.exit_code == 0 else ""

    def _meta(self) -> dict[str, Any]:
        t = self._task
        return {"repo": t.repo, "base_commit": t.base_commit, "sandbox": getattr(self._sb, "backend", None),
                "provenance_source": t.provenance.source}

    def _trajectory(self, outcome: str) -> Trajectory:
        return Trajectory(task_id=self._task.id, problem_statement=self._task.problem_statement,
                          episode_id=self._episode_id, source=self.env_id, outcome=outcome, metadata=self._meta())

    def _info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"task_id": self._task.id if self._task else None, "episode_id": getattr(self, "_episode_id", None),
                                "steps": len(self._steps), **self._counters, "trajectory": self._traj}
        if self._done and self._traj is not None:
            info["resolved"] = bool(self._traj.resolved)
            info["outcome"] = self._traj.outcome
            if self._traj.failure:
                info["failure"] = self._traj.failure
        return info

    def _finish_log_if_open(self) -> None:
        if self._log is not None and self._traj is not None:
            self._log.end(replace(self._traj, outcome="failed", failure=Failure("env", "episode abandoned by reset/close")))
            self._log = None

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        return None

    def close(self) -> None:
        self._finish_log_if_open()
        self._release()
        self._done = True
        if self._own_pools:
            for p in self._pools.values():
                p.close()
            self._pools.clear()
        super().close()
