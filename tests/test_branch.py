"""Branching on conditions: real trajectories (ReferencePatchAgent on Docker), real flips,
real replays and test runs; budgets, the near-identical filter and the online miner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import contextrl
from contextrl.agents import ReferencePatchAgent, run_episode
from contextrl.errors import ConfigError, MiningError
from contextrl.miner.branch import (
    BranchConfig,
    BranchMiner,
    OnlineBranchMiner,
    considered_files,
    outcome_statement,
    trace_distance,
)
from contextrl.miner.buffer import PairBuffer
from contextrl.miner.render import MASK
from contextrl.trajectory import Step, Trajectory

ROOT = Path(__file__).resolve().parent.parent
HUMANEVAL_IDS = ("HumanEval/0", "HumanEval/3", "HumanEval/12")


# --------------------------------------------------------------------------- pure parts


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError, match=r"max_forks_per_trajectory=0.*integer >= 1"):
        BranchConfig(max_forks_per_trajectory=0)
    with pytest.raises(ConfigError, match=r"min_similarity=1.5.*\[0, 1\]"):
        BranchConfig(min_similarity=1.5)
    with pytest.raises(ConfigError, match=r"flip_sites.*'state', 'action'"):
        BranchConfig(flip_sites=("stat",))
    with pytest.raises(ConfigError, match="did you mean 'max_diff_lines'"):
        BranchConfig.from_dict({"max_diff_line": 3})
    cfg = BranchConfig.from_dict({"max_diff_lines": 3, "verify": {"max_length_ratio": 1.5}, "file_sources": ["view"]})
    assert cfg.max_diff_lines == 3 and cfg.verify.max_length_ratio == 1.5 and cfg.file_sources == ("view",)


def _step(i: int, tool: str, observation: str = "", **args) -> Step:
    return Step(index=i, tool=tool, args=args, observation=observation)


def test_considered_files_diff_first_then_views_edits_and_bash_readers():
    traj = Trajectory(
        task_id="t",
        steps=(
            _step(0, "bash", command="cat pkg/a.py | head -n 5 && sed -n '1,20p' /workspace/pkg/b.py; grep x c.py"),
            _step(1, "view", path="/workspace/pkg/d.py"),
            _step(2, "edit", command="str_replace", path="e.py", old_str="x", new_str="y"),
            _step(3, "view", path="/etc/passwd.py"),
            _step(4, "view", path="README.md"),
        ),
        diff="diff --git a/z.py b/z.py\n--- a/z.py\n+++ b/z.py\n@@ -1 +1 @@\n-a\n+b\n",
    )
    assert considered_files(traj, "/workspace") == ["z.py", "pkg/a.py", "pkg/b.py", "pkg/d.py", "e.py"]
    assert considered_files(traj, "/workspace", ("view",)) == ["z.py", "pkg/d.py"]


def test_trace_distance_counts_lines_and_similarity():
    a = [_step(0, "view", "l1\nl2\nl3\nl4"), _step(1, "submit", "[tests] reward=1.000")]
    b = [_step(0, "view", "l1\nL2\nl3\nl4"), _step(1, "submit", "[tests] reward=0.000")]
    assert trace_distance(a, a) == (0, 1.0)
    n, sim = trace_distance(a, b)
    assert n == 2 and sim == pytest.approx(0.6)  # 2 * 3 matching lines / 10


# --------------------------------------------------------------------------- real trajectories


@pytest.fixture(scope="module")
def tasks():
    from contextrl.envs.sources import load_humaneval, load_tasks

    by_id = {t.id: t for t in load_tasks(ROOT / "examples" / "tasks")}
    by_id.update({t.id: t for t in load_humaneval(limit=20) if t.id in HUMANEVAL_IDS})
    return by_id


@pytest.fixture(scope="module")
def trajectories(tasks):
    """One ReferencePatchAgent episode per task, run through the env on Docker."""
    env = contextrl.make("contextrl/Task-v0", tasks=list(tasks.values()), sandbox="docker")
    try:
        out = {tid: run_episode(env, ReferencePatchAgent(), tid) for tid in tasks}
    finally:
        env.close()
    assert all(t.resolved for t in out.values()), {k: (t.outcome, t.reward) for k, t in out.items()}
    return out


@pytest.fixture(scope="module")
def factory():
    from contextrl.sandboxes import make_sandbox_factory

    return make_sandbox_factory("docker")


def _mine(config: BranchConfig, factory, traj, task):
    with BranchMiner(config, factory) as miner:
        return miner.mine(traj, task)


def _check_pair(pair, traj, config: BranchConfig):
    assert pair.verdict is not None and pair.verdict.ok, pair.verdict.failed
    assert pair.positive.trajectory is traj and pair.positive.trajectory.resolved
    neg = pair.negative.trajectory
    assert neg is not None and neg.resolved is False and neg.task_id == traj.task_id
    assert pair.positive.supported_answer == pair.answer != pair.negative.supported_answer
    assert "resolves the issue" in pair.answer and "does not resolve" in pair.negative.supported_answer
    params = pair.provenance.params
    assert pair.provenance.miner == "branch" and params["site"] in ("state", "action")
    assert 1 <= params["diff_lines"] <= config.max_diff_lines and params["similarity"] >= config.min_similarity
    assert params["original"] != params["flipped"]
    assert pair.difference and pair.positive.text != pair.negative.text
    assert MASK in pair.positive.text and MASK in pair.negative.text
    # the outcome is never rendered except through the tests' own observation
    assert "resolved=True" in pair.positive.text.splitlines()[-1]
    assert "resolved=False" in pair.negative.text.splitlines()[-1]
    assert pair.query.endswith("which tests decide it?") and "resolved=" not in pair.query


@pytest.mark.docker
@pytest.mark.parametrize("task_id", ["examples/intervals-touching", "examples/stats-median-even"])
def test_mines_verified_state_and_action_pairs_from_a_live_trajectory(tasks, trajectories, factory, task_id):
    config = BranchConfig(max_forks_per_trajectory=6, seed=1)
    traj, task = trajectories[task_id], tasks[task_id]
    res = _mine(config, factory, traj, task)
    assert res.pairs, (res.funnel, res.records)
    assert 1 <= res.attempts <= 6 and res.seconds > 0 and res.timings["tests"] > 0
    assert res.funnel["forks"] == res.attempts == len(res.records)
    assert res.funnel["kept"] == len(res.pairs) == sum(r.status == "kept" for r in res.records)
    for pair in res.pairs:
        _check_pair(pair, traj, config)
    sites = {p.provenance.params["site"] for p in res.pairs}
    assert "state" in sites
    state = next(p for p in res.pairs if p.provenance.params["site"] == "state")
    # the flipped condition is what the counterfactual's view shows, on the pair's decisive lines
    params = state.provenance.params
    pos_lines, neg_lines = state.positive.text.splitlines(), state.negative.text.splitlines()
    (ps, pe), (ns, ne) = state.difference.positive[0], state.difference.negative[0]
    assert params["original"] in "\n".join(pos_lines[ps:pe]) and params["flipped"] in "\n".join(neg_lines[ns:ne])
    assert pos_lines[ps].split("\t")[0] == neg_lines[ns].split("\t")[0]  # the same line number of the same view
    # deterministic: the same seed mines the same pairs
    again = _mine(config, factory, traj, task)
    assert [p.id for p in again.pairs] == [p.id for p in res.pairs]


@pytest.mark.docker
def test_humaneval_action_flip_changes_only_the_test_outcome(tasks, trajectories, factory):
    config = BranchConfig(max_forks_per_trajectory=4)
    for tid in ("HumanEval/0", "HumanEval/3"):
        traj = trajectories[tid]
        res = _mine(config, factory, traj, tasks[tid])
        assert len(res.pairs) == 1, res.records  # blind action flips render alike: one is kept
        pair = res.pairs[0]
        _check_pair(pair, traj, config)
        assert pair.provenance.params["site"] == "action" and pair.provenance.params["diff_lines"] == 1
        assert res.funnel.get("skipped_blind", 0) >= 1
        assert pair.negative.trajectory.diff != traj.diff  # the flipped edit really ran


@pytest.mark.docker
class ExploringAgent:
    """The reference fix, plus what real agents do: an invalid action, a ranged view, and a
    command after the edit whose output depends on the code."""

    def actions(self, task):
        yield "this is not a tool call"
        yield from list(ReferencePatchAgent().actions(task))[:-1]
        yield json.dumps({"tool": "view", "args": {"path": "stats.py", "view_range": [10, 19]}})
        yield json.dumps({"tool": "bash", "args": {"command": "python3 -c 'import stats; print(stats.median([4, 1, 3, 2]))'"}})
        yield json.dumps({"tool": "submit", "args": {}})


@pytest.mark.docker
def test_replay_keeps_invalid_actions_and_later_observations_show_action_flips(tasks, factory):
    task = tasks["examples/stats-median-even"]
    env = contextrl.make("contextrl/Task-v0", tasks=[task], sandbox="docker")
    try:
        traj = run_episode(env, ExploringAgent(), task.id)
    finally:
        env.close()
    assert traj.resolved and traj.steps[0].tool == "invalid" and traj.steps[-2].observation.strip() == "2.5"
    config = BranchConfig(max_forks_per_trajectory=8, flip_sites=("action",))
    res = _mine(config, factory, traj, task)
    assert res.pairs and res.funnel.get("skipped_blind", 0) == 0, res.records
    for pair in res.pairs:
        _check_pair(pair, traj, config)
        neg = pair.negative.trajectory
        assert neg.steps[0] == traj.steps[0] and neg.steps[0].error.startswith("parse:")  # replayed as-is
        assert neg.steps[-2].observation != traj.steps[-2].observation  # the command saw the flipped code
        assert pair.provenance.params["flipped"] in neg.steps[-3].observation  # ... and so did the view
        assert pair.provenance.params["diff_lines"] >= 3


def test_budgets_stop_forks(tasks, trajectories, factory):
    tid = "examples/intervals-touching"
    res = _mine(BranchConfig(max_forks_per_trajectory=1), factory, trajectories[tid], tasks[tid])
    assert res.attempts <= 1 and len(res.records) <= 1 and res.funnel.get("budget_forks") == 1
    res = _mine(BranchConfig(max_seconds_per_trajectory=1e-6), factory, trajectories[tid], tasks[tid])
    assert res.attempts == 0 and res.funnel.get("budget_seconds") == 1 and not res.pairs


@pytest.mark.docker
def test_near_identical_filter_k0_rejects_everything(tasks, trajectories, factory):
    tid = "examples/stats-median-even"
    res = _mine(BranchConfig(max_diff_lines=0), factory, trajectories[tid], tasks[tid])
    assert res.attempts >= 1 and not res.pairs
    assert res.funnel["rejected_not_near_identical"] == res.funnel["outcome_differs"] >= 1
    assert {r.status for r in res.records} <= {"not_near_identical", "same_outcome"}
    res = _mine(BranchConfig(min_similarity=1.0), factory, trajectories[tid], tasks[tid])
    assert not res.pairs and res.funnel["rejected_not_near_identical"] >= 1


@pytest.mark.docker
def test_unscored_or_mismatched_trajectories(tasks, trajectories, factory):
    tid = "examples/stats-median-even"
    running = Trajectory(task_id=tid, steps=trajectories[tid].steps[:2])
    res = _mine(BranchConfig(), factory, running, tasks[tid])
    assert res.attempts == 0 and res.funnel["skipped_unscored"] == 1
    with pytest.raises(MiningError, match="mined against task"):
        _mine(BranchConfig(), factory, trajectories[tid], tasks["HumanEval/0"])


@pytest.mark.docker
def test_online_miner_feeds_the_buffer_without_blocking(tasks, trajectories, factory):
    buffer = PairBuffer(capacity=100, seed=0)
    config = BranchConfig(max_forks_per_trajectory=3)
    with OnlineBranchMiner(config, factory, buffer, workers=2, queue_size=16) as miner:
        bad = trajectories["HumanEval/12"]
        t0 = time.perf_counter()
        miner.submit(bad, tasks["HumanEval/0"])  # wrong task: recorded, the worker goes on
        for tid in ("examples/intervals-touching", "examples/stats-median-even", "HumanEval/0", "HumanEval/3"):
            assert miner.submit(trajectories[tid], tasks[tid]) is True
        assert time.perf_counter() - t0 < 0.5  # submit only enqueues
        assert miner.stats()["mined"] < 5
        assert miner.wait_idle(timeout=300)
        st = miner.stats()
    assert st["submitted"] == 5 and st["mined"] == 4 and st["failed"] == 1 and st["dropped"] == 0
    assert "mined against task" in st["recent_errors"][0]
    assert st["pairs_added"] == len(buffer) >= 4 and st["funnel"]["kept"] == st["pairs"]
    assert st["funnel"]["trajectories"] == 4 and st["timings"]["tests"] > 0
    assert {p.provenance.sources[1] for p in buffer.snapshot()} >= {"HumanEval/0", "HumanEval/3"}
    assert len(buffer.sample(4)) == 4
    with pytest.raises(MiningError, match="closed"):
        miner.submit(trajectories["HumanEval/0"], tasks["HumanEval/0"])


@pytest.mark.docker
def test_online_queue_drops_the_oldest_when_full(tasks, trajectories, factory):
    tid = "examples/intervals-touching"
    miner = OnlineBranchMiner(BranchConfig(max_forks_per_trajectory=1), factory, workers=1, queue_size=1)
    try:
        results = [miner.submit(trajectories[tid], tasks[tid]) for _ in range(5)]
        assert results.count(False) >= 3 and miner.stats()["dropped"] >= 3
    finally:
        miner.close()
    st = miner.stats()
    assert st["dropped"] + st["discarded"] + st["mined"] + st["failed"] == 5 and st["in_flight"] == 0
    miner.close()  # idempotent


def _bugfix_tasks():
    try:
        from contextrl.envs.bugfix import load_bugfix_tasks

        return load_bugfix_tasks()
    except Exception:  # noqa: BLE001
        return []


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.skipif(len(_bugfix_tasks()) < 2, reason="BugFix-v0 sources not fetched (`contextrl tasks fetch`)")
def test_bugfix_tasks_yield_pairs():
    from contextrl.sandboxes import make_sandbox_factory

    picked = _bugfix_tasks()[:2]
    env = contextrl.make("contextrl/Task-v0", tasks=picked, sandbox="docker")
    try:
        trajs = [run_episode(env, ReferencePatchAgent(), t.id) for t in picked]
    finally:
        env.close()
    config = BranchConfig(max_forks_per_trajectory=6)
    with BranchMiner(config, make_sandbox_factory("docker")) as miner:
        results = [miner.mine(tr, t) for tr, t in zip(trajs, picked) if tr.resolved]
    assert results and any(r.pairs for r in results), [r.funnel for r in results]
    for r, tr in zip(results, trajs):
        for p in r.pairs:
            _check_pair(p, tr, config)


def test_outcome_statement_names_the_deciding_tests(tasks):
    task = tasks["examples/stats-median-even"]
    ok = outcome_statement(task, True, 1.0, None)
    assert "test_stats.py::test_median_even pass" in ok and "other 3 tests keep passing" in ok
    bad = outcome_statement(task, False, 0.0, {"test_stats.py::test_median_even": "FAILED", "test_stats.py::test_mean": "PASSED"})
    assert "test_median_even" in bad and "fail" in bad and bad != ok
