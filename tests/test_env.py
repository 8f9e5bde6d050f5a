"""CodingEnv: Gymnasium conformance, tools, scoring, bad input and faults."""

from __future__ import annotations

import json
import subprocess
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import contextrl
from contextrl.agents import ReferencePatchAgent, SubmitAgent, run_episode
from contextrl.envs.task import Provenance, Task
from contextrl.errors import TaskError, UnknownEnvError
from contextrl.trajectory import read_trajectories

BUGGY = {
    "calc.py": "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return lo\n    return x\n",
    "test_calc.py": "from calc import clamp\n\ndef test_low():\n    assert clamp(-1, 0, 5) == 0\n\n"
                    "def test_high():\n    assert clamp(9, 0, 5) == 5\n\ndef test_mid():\n    assert clamp(3, 0, 5) == 3\n",
}
PATCH = ("--- a/calc.py\n+++ b/calc.py\n@@ -3,4 +3,4 @@ def clamp(x, lo, hi):\n         return lo\n"
         "     if x > hi:\n-        return lo\n+        return hi\n     return x\n")


def clamp_task(**kw) -> Task:
    base = dict(id="demo/clamp", problem_statement="clamp(9, 0, 5) returns 0 instead of 5.", files=BUGGY,
                fail_to_pass=("test_calc.py::test_high",), pass_to_pass=("test_calc.py::test_low", "test_calc.py::test_mid"),
                reference_patch=PATCH, provenance=Provenance(source="test"))
    base.update(kw)
    return Task(**base)


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request):
    return request.param


def make_env(backend, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return contextrl.make("contextrl/Task-v0", tasks=[clamp_task()], sandbox=backend, **kw)


def test_reference_agent_resolves_and_submit_agent_does_not(backend, tmp_path):
    env = make_env(backend, trajectory_dir=tmp_path)
    try:
        good = run_episode(env, ReferencePatchAgent(), "demo/clamp")
        bad = run_episode(env, SubmitAgent(), "demo/clamp")
    finally:
        env.close()
    assert good.reward == 1.0 and good.resolved and "+        return hi" in good.diff
    assert bad.reward == 0.0 and bad.resolved is False and bad.diff == ""
    assert good.metadata["tests"]["test_calc.py::test_high"] == "PASSED"
    logs = sorted(tmp_path.glob("*.jsonl"))
    assert len(logs) == 2
    trajs = [t for p in logs for t in read_trajectories(p)]
    assert {t.outcome for t in trajs} == {"submitted"} and {t.reward for t in trajs} == {0.0, 1.0}


def test_swe_reward_semantics_breaking_pass_to_pass_scores_zero(backend):
    env = make_env(backend)
    try:
        env.reset(seed=0)
        env.step(json.dumps({"tool": "edit", "args": {"command": "create", "path": "calc.py",
                                                       "file_text": "def clamp(x, lo, hi):\n    return hi\n"}}))
        _, reward, term, _, info = env.step('{"tool": "submit", "args": {}}')
    finally:
        env.close()
    assert term and reward == 0.0 and not info["resolved"]  # F2P passes, P2P broken -> 0


def test_malformed_actions_become_observations_and_are_counted(backend):
    env = make_env(backend)
    try:
        env.reset(seed=0)
        obs, r, term, trunc, info = env.step("this is not json")
        assert obs.startswith("[error]") and "not JSON" in obs and info["invalid_actions"] == 1 and not term
        obs, *_ , info = env.step('{"tool": "rm_rf", "args": {}}')
        assert "unknown tool" in obs and info["invalid_actions"] == 2
        obs, *_ , info = env.step('{"tool": "edit", "args": {"command": "str_replace", "path": "calc.py", "old_str": "nope", "new_str": "x"}}')
        assert "not found" in obs and info["tool_errors"] == 1
        obs, *_ , info = env.step('{"tool": "view", "args": {"path": "calc.py", "view_range": [2, 3]}}')
        assert "     2\t    if x < lo:" in obs and "[showing lines 2-3 of 6]" in obs
        traj = info["trajectory"]
        assert [s.tool for s in traj.steps] == ["invalid", "invalid", "edit", "view"]
        assert traj.steps[0].error.startswith("parse:")
    finally:
        env.close()


def test_openhands_v1_tool_names_are_accepted(backend):
    env = make_env(backend)
    try:
        env.reset(seed=0)
        obs, *_ = env.step('{"name": "terminal", "arguments": "{\\"command\\": \\"echo oh-v1\\"}"}')
        assert "oh-v1" in obs
        obs, *_ = env.step(json.dumps({"tool": "file_editor", "args": {"command": "str_replace", "path": "calc.py",
                                                                       "old_str": "        return lo\n    return x", "new_str": "        return hi\n    return x"}}))
        assert "Edited" in obs
        obs, reward, term, _, info = env.step('{"tool": "finish", "args": {"message": "done"}}')
        assert term and reward == 1.0 and info["resolved"]
    finally:
        env.close()


def test_truncation_at_max_episode_steps_scores(backend):
    env = make_env(backend, max_episode_steps=2)
    try:
        env.reset(seed=0)
        _, _, term, trunc, _ = env.step('{"tool": "bash", "args": {"command": "sed -i \'5s/return lo/return hi/\' calc.py"}}')
        assert not term and not trunc
        obs, reward, term, trunc, info = env.step('{"tool": "bash", "args": {"command": "true"}}')
        assert trunc and not term and reward == 1.0 and info["trajectory"].outcome == "truncated"
        with pytest.raises(gym.error.ResetNeeded):
            env.step('{"tool": "bash", "args": {"command": "true"}}')
    finally:
        env.close()


def test_hanging_command_times_out_and_episode_goes_on(backend):
    env = make_env(backend, command_timeout=1)
    try:
        env.reset(seed=0)
        obs, _, term, _, info = env.step('{"tool": "bash", "args": {"command": "sleep 100"}}')
        assert "timed out" in obs and not term and info["trajectory"].steps[-1].timed_out
        obs, *_ = env.step('{"tool": "bash", "args": {"command": "echo still-here"}}')
        assert "still-here" in obs
    finally:
        env.close()


def test_reset_is_deterministic_per_seed_and_task_id_option():
    tasks = [clamp_task(id=f"demo/clamp-{i}") for i in range(5)]
    env = contextrl.make("contextrl/Task-v0", tasks=tasks, sandbox="local")
    try:
        a = [env.reset(seed=s)[1]["task_id"] for s in (1, 2, 3)]
        b = [env.reset(seed=s)[1]["task_id"] for s in (1, 2, 3)]
        assert a == b and len(set(a + [env.reset(seed=s)[1]["task_id"] for s in range(10)])) > 1
        assert env.reset(options={"task_id": "demo/clamp-3"})[1]["task_id"] == "demo/clamp-3"
        with pytest.raises(TaskError, match="did you mean"):
            env.reset(options={"task_id": "demo/clamp-33"})
    finally:
        env.close()


def test_unknown_env_id_says_did_you_mean():
    with pytest.raises(UnknownEnvError, match="Did you mean: contextrl/HumanEval-v0"):
        contextrl.make("contextrl/HumanEvl-v0")
    with pytest.raises(gym.error.Error):
        gym.make("contextrl/HumanEval-v9")


@pytest.mark.docker
def test_container_killed_mid_episode_records_failure_and_close_works(tmp_path):
    env = make_env("docker", trajectory_dir=tmp_path)
    try:
        env.reset(seed=0)
        env.step('{"tool": "bash", "args": {"command": "echo before"}}')
        cid = env.unwrapped._sb.container_id
        subprocess.run(["docker", "kill", cid], check=True, capture_output=True)
        obs, reward, term, trunc, info = env.step('{"tool": "bash", "args": {"command": "echo after"}}')
        assert obs.startswith("[sandbox error]") and term and reward == 0.0
        traj = info["trajectory"]
        assert traj.outcome == "failed" and traj.failure.boundary == "sandbox"
        assert [s.tool for s in traj.steps] == ["bash", "bash"] and traj.steps[0].observation == "before\n"
        on_disk = list(read_trajectories(next(tmp_path.glob("*.jsonl"))))
        assert on_disk[0].failure.boundary == "sandbox" and len(on_disk[0].steps) == 2
    finally:
        env.close()
        env.close()


ENV_KWARGS = {
    "contextrl/HumanEval-v0": {"limit": 3},
    "contextrl/BugFix-v0": {},
    "contextrl/Task-v0": {"spec": "examples/tasks"},
}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("env_id", contextrl.registered_ids())
def test_every_registered_env_passes_gymnasium_check_env(env_id):
    env = contextrl.make(env_id, sandbox="docker", **ENV_KWARGS[env_id])
    try:
        check_env(env.unwrapped, skip_render_check=True)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["trajectory"].task_id == info["task_id"]
    finally:
        env.close()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["contextrl/HumanEval-v0", "contextrl/BugFix-v0"])
def test_shipped_suites_reference_patch_resolves(env_id):
    env = contextrl.make(env_id, sandbox="docker")
    try:
        tasks = env.unwrapped.tasks
        picks = [tasks[0].id, tasks[len(tasks) // 2].id, tasks[-1].id]
        for tid in picks:
            traj = run_episode(env, ReferencePatchAgent(), tid)
            assert traj.resolved and traj.reward == 1.0, (tid, traj.metadata.get("tests"))
        assert not run_episode(env, SubmitAgent(), picks[0]).resolved
    finally:
        env.close()


@pytest.mark.docker
def test_env_reports_memory_hog_and_fork_bomb_and_goes_on():
    from contextrl.sandboxes import SandboxLimits

    env = make_env("docker", limits=SandboxLimits(memory_mb=256, pids=64, default_timeout_s=20))
    try:
        env.reset(seed=0)
        obs, _, term, _, info = env.step(json.dumps({"tool": "bash", "args": {
            "command": "python3 -c \"b = bytearray(2 * 1024**3)\""}}))
        assert "out of memory" in obs and "256 MiB" in obs and not term
        obs, _, term, _, _ = env.step(json.dumps({"tool": "bash", "args": {
            "command": "bomb() { bomb | bomb & }; bomb; sleep 2; echo count $(ps -e --no-headers | wc -l)", "timeout": 10}}))
        assert not term and ("fork" in obs.lower() or "Resource temporarily unavailable" in obs or "timed out" in obs)
        obs, *_ = env.step('{"tool": "bash", "args": {"command": "pkill -9 -f bomb; echo recovered"}}')
        obs, *_ = env.step('{"tool": "bash", "args": {"command": "echo recovered"}}')
        assert "recovered" in obs
    finally:
        env.close()
