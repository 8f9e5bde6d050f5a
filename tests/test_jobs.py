"""Mining jobs: sharding with group keys, resume after a kill, bad inputs, process pool and Ray
give the same pairs, CLI. Uses the real outcome-contrast miner on real `Trajectory` objects
(written as contextrl JSONL, episode logs and mini-swe-agent files) and real fixture files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contextrl.cli import main as cli_main
from contextrl.errors import ConfigError, MiningError
from contextrl.importers import export_file
from contextrl.miner.jobs import (
    BranchJobConfig,
    JobSummary,
    MinerSpec,
    OutcomeConfig,
    OutcomeContrastMiner,
    ShardMiner,
    branch_miner,
    filter_miner,
    outcome_miner,
    run_mining_job,
)
from contextrl.miner.pair import read_pairs
from contextrl.miner.shard_miners import _require
from contextrl.trajectory import EpisodeLog, Step, Trajectory, write_trajectories

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def make_traj(task: int, episode: int, resolved: bool) -> Trajectory:
    """A small but realistic bug-fix episode: grep, view, failing test, edit, test, submit."""
    path = f"src/widgets/op{task}.py"
    new = f"return x + {task + 2}" if resolved else f"return x - {episode + 1}"
    listing = "\n".join(f"{i + 1:>4}  {line}" for i, line in enumerate(
        ["import math", "", f"def compute_{task}(x):", '    """Add the offset."""', f"    return x + {task + 1}", "",
         f"def helper_{task}(y):", "    return math.floor(y)"]))
    steps = (
        Step(0, "bash", {"command": f"grep -rn compute_{task} src/"}, f"{path}:3:def compute_{task}(x):", exit_code=0),
        Step(1, "view", {"path": path}, listing, exit_code=0, thought=f"Look at the function the issue names (attempt {episode + 1})."),
        Step(2, "bash", {"command": "python -m pytest -q tests/"}, f"F...\nFAILED tests/test_op{task}.py::test_offset - assert {task + 1} == {task + 2}", exit_code=1),
        Step(3, "edit", {"path": path, "old_str": f"return x + {task + 1}", "new_str": new}, f"The file {path} has been edited.", exit_code=0),
        Step(4, "bash", {"command": "python -m pytest -q tests/"},
             "4 passed" if resolved else f"F...\nFAILED tests/test_op{task}.py::test_offset - assert {-episode} == {task + 2}", exit_code=0 if resolved else 1),
        Step(5, "submit", {}, "", exit_code=0),
    )
    diff = (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -5 +5 @@\n-    return x + {task + 1}\n+    {new}\n")
    return Trajectory(task_id=f"acme__widgets-{task}", steps=steps, reward=1.0 if resolved else 0.0, resolved=resolved,
                      outcome="submitted", diff=diff, problem_statement=f"compute_{task} is off by one: compute_{task}(0) should be {task + 2}",
                      episode_id=f"ep-{task}-{episode}", source="contextrl/BugFix-v0",
                      metadata={"repo": "acme/widgets", "base_commit": f"c{task % 3:040d}"})


def make_inputs(root: Path, n_tasks: int = 6) -> Path:
    """Episodes of each task spread over several files and formats (so groups span files)."""
    root.mkdir(parents=True, exist_ok=True)
    trajs = [make_traj(t, e, resolved=(e % 2 == 0)) for e in range(3) for t in range(n_tasks)]
    write_trajectories(root / "a" / "collection-0.jsonl", trajs[: len(trajs) // 2])
    write_trajectories(root / "b" / "collection-1.jsonl", trajs[len(trajs) // 2: -2])
    for t in trajs[-2:]:  # the last two as an episode log
        log = EpisodeLog(root / "c" / f"{t.episode_id}.jsonl", {"task_id": t.task_id, "episode_id": t.episode_id})
        for s in t.steps:
            log.step(s)
        log.end(t)
    return root


def pair_lines(out: Path) -> list[str]:
    return (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()


def test_outcome_miner_makes_verified_pairs():
    trajs = [make_traj(1, e, resolved=(e == 0)) for e in range(3)] + [make_traj(2, 0, True)]
    pairs, funnel = OutcomeContrastMiner().mine_shard(trajs)
    assert isinstance(OutcomeContrastMiner(), ShardMiner)
    assert len(pairs) == 2 and funnel["tasks_with_both_outcomes"] == 1 and funnel["candidate_pairs"] == 2
    for p in pairs:
        assert p.positive.trajectory.resolved and not p.negative.trajectory.resolved
        assert p.answer == p.positive.trajectory.diff and p.difference and p.verdict is not None
        assert "<PATCH_MASKED>" in p.positive.text
    only_ok = OutcomeContrastMiner(OutcomeConfig(only_verified=True)).mine_shard(trajs)[0]
    assert all(p.verdict.ok for p in only_ok) and funnel["verified_ok"] == len(only_ok)


def test_job_groups_across_files_and_resumes(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    s = run_mining_job([inputs], out, outcome_miner(), shard_size=6, progress=False)
    assert isinstance(s, JobSummary) and s.trajectories == 18 and s.input_units == 4 and not s.input_failures
    assert s.shards_total == 3 and s.shards_done == 3 and s.shards_failed == 0
    # the groups (tasks) span the input files; one shard with everything gives the same pairs
    whole = run_mining_job([inputs], tmp_path / "whole", outcome_miner(), shard_size=1000, progress=False)
    assert whole.shards_total == 1
    assert sorted(pair_lines(out)) == sorted(pair_lines(tmp_path / "whole")) and s.pairs == 12
    assert [p.id for p in read_pairs(out / "pairs.jsonl")] == [json.loads(x)["id"] for x in pair_lines(out)]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["pairs"] == 12 and saved["funnel"]["candidate_pairs"] == 12
    assert json.loads((out / "funnel.json").read_text()) == s.funnel and list(s.funnel)[0] == "trajectories"
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"shard-{i:05d}.{x}" for i in range(3) for x in ("done", "pairs.jsonl")]
    before = (out / "pairs.jsonl").read_bytes()
    again = run_mining_job([inputs], out, outcome_miner(), shard_size=6, progress=False)
    assert again.shards_skipped == 3 and again.shards_done == 0 and (out / "pairs.jsonl").read_bytes() == before
    assert again.funnel == s.funnel
    # a changed miner config invalidates the done markers
    other = run_mining_job([inputs], out, outcome_miner(OutcomeConfig(max_pairs_per_task=1)), shard_size=6, progress=False)
    assert other.shards_done == 3 and other.pairs == 6


def test_sequential_shards_without_group_key(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    s = run_mining_job(inputs, tmp_path / "out", outcome_miner(), shard_size=5, group_key=None, progress=False)
    assert s.shards_total == 4 and s.trajectories == 18  # ceil(18 / 5); tasks are split, so fewer pairs
    assert s.pairs < 12


def test_bad_inputs_are_reported_per_file(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    (inputs / "broken.json").write_text('{"task_id": "x", "steps": [', encoding="utf-8")
    good = [json.dumps(make_traj(9, e, e == 0).to_dict()) for e in range(2)]
    (inputs / "partial.jsonl").write_text("\n".join(good + ["{not json"]) + "\n", encoding="utf-8")
    (inputs / "notes.txt").write_text("not a trajectory", encoding="utf-8")  # not a candidate: ignored
    export_file(make_traj(9, 5, False), "mini_swe_agent", inputs / "mini" / "ep.traj.json")
    fixture = FIXTURES / "mini_swe_agent"
    extra = [p for p in sorted(fixture.rglob("*.traj.json"))[:2]] if fixture.is_dir() else []
    s = run_mining_job([inputs, *extra, tmp_path / "missing"], tmp_path / "out", outcome_miner(), shard_size=6, progress=False)
    failed = {Path(p).name: e for p, e in s.input_failures}
    assert set(failed) == {"broken.json", "partial.jsonl", "missing"}
    assert "kept the 2 trajectories" in failed["partial.jsonl"] and "not valid JSON" in failed["broken.json"]
    assert s.shards_failed == 0 and s.input_units == 4 + 3 + len(extra)
    assert s.trajectories == 18 + 2 + 1 + len(extra)
    # task 9's resolved episode pairs with its unresolved one (both from partial.jsonl); imported
    # mini-swe-agent files carry no test outcome, so they are read but never paired
    assert s.pairs == 12 + 1 and s.funnel["known_outcome"] == 18 + 2
    assert "bad input:" in s.format()


class FlakyFactory:
    """Builds the outcome miner, but one whose shard containing task `bad_task` raises
    (or kills the worker process), or which exits the process after `exit_after` shards."""

    group_key = "task"

    def __init__(self, bad_task: str | None = None, kill: bool = False, exit_after: int | None = None):
        self.bad_task, self.kill, self.exit_after = bad_task, kill, exit_after

    @property
    def fingerprint(self) -> str:  # same miner: its finished shards count as done for outcome_miner()
        return outcome_miner().fingerprint

    def __call__(self) -> "FlakyMiner":
        return FlakyMiner(self)


class FlakyMiner(OutcomeContrastMiner):
    def __init__(self, spec: FlakyFactory):
        super().__init__()
        self.spec, self.calls = spec, 0

    def mine_shard(self, trajectories):
        self.calls += 1
        if self.spec.exit_after is not None and self.calls > self.spec.exit_after:
            os._exit(3)  # like a SIGKILL: no cleanup, no exception handling
        if any(t.task_id == self.spec.bad_task for t in trajectories):
            if self.spec.kill:
                os._exit(4)
            raise RuntimeError(f"boom on {self.spec.bad_task}")
        return super().mine_shard(trajectories)


def test_failing_shard_is_recorded_and_retried(tmp_path):
    inputs, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    s = run_mining_job(inputs, out, FlakyFactory(bad_task="acme__widgets-3"), shard_size=6, progress=False)
    assert s.shards_failed == 1 and s.shards_done == 2 and s.failures[0]["error"] == "RuntimeError: boom on acme__widgets-3"
    failed = json.loads((out / "shards" / f"shard-{s.failures[0]['shard']:05d}.failed").read_text())
    assert "Traceback" in failed["traceback"] and "failed shard" in s.format()
    assert s.pairs == 8  # the two good shards' pairs are merged
    fixed = run_mining_job(inputs, out, outcome_miner(), shard_size=6, progress=False)
    assert fixed.shards_skipped == 2 and fixed.shards_done == 1 and fixed.pairs == 12
    assert not list((out / "shards").glob("*.failed"))


def test_killed_run_resumes_without_losing_pairs(tmp_path):
    inputs, out = make_inputs(tmp_path / "in", n_tasks=9), tmp_path / "out"
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_jobs import FlakyFactory
        from contextrl.miner.jobs import run_mining_job
        run_mining_job([{str(inputs)!r}], {str(out)!r}, FlakyFactory(exit_after=2), shard_size=6, progress=False)
    """), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    done = sorted(p.name for p in (out / "shards").glob("*.done"))
    assert done == ["shard-00000.done", "shard-00001.done"] and not (out / "pairs.jsonl").exists()
    assert not list((out / "shards").glob("*.tmp*"))
    resumed = run_mining_job(inputs, out, outcome_miner(), shard_size=6, progress=False)
    assert resumed.shards_skipped == 2 and resumed.shards_done == resumed.shards_total - 2 == 3
    clean = run_mining_job(inputs, tmp_path / "clean", outcome_miner(), shard_size=6, progress=False)
    assert (out / "pairs.jsonl").read_bytes() == (tmp_path / "clean" / "pairs.jsonl").read_bytes()
    assert resumed.pairs == clean.pairs == 18 and resumed.funnel == clean.funnel


@pytest.mark.slow
def test_process_pool_matches_in_process(tmp_path):
    inputs = make_inputs(tmp_path / "in", n_tasks=8)
    a = run_mining_job(inputs, tmp_path / "serial", outcome_miner(), shard_size=3, progress=False)
    b = run_mining_job(inputs, tmp_path / "pool", outcome_miner(), shard_size=3, workers=3, progress=False)
    assert b.backend == "processes:3" and b.shards_done == a.shards_done == a.shards_total
    assert (tmp_path / "pool" / "pairs.jsonl").read_bytes() == (tmp_path / "serial" / "pairs.jsonl").read_bytes()


@pytest.mark.slow
def test_process_pool_survives_a_dying_worker(tmp_path):
    inputs, out = make_inputs(tmp_path / "in", n_tasks=8), tmp_path / "out"
    s = run_mining_job(inputs, out, FlakyFactory(bad_task="acme__widgets-1", kill=True), shard_size=3, workers=2, progress=False)
    assert 1 <= s.shards_failed < s.shards_total and s.shards_done + s.shards_failed == s.shards_total
    assert all("worker died" in f["error"] for f in s.failures)
    fixed = run_mining_job(inputs, out, outcome_miner(), shard_size=3, workers=2, progress=False)
    assert fixed.shards_skipped == s.shards_done and fixed.shards_failed == 0 and fixed.pairs == 16


@pytest.mark.slow
def test_ray_local_matches_in_process(tmp_path):
    pytest.importorskip("ray")
    inputs = make_inputs(tmp_path / "in", n_tasks=8)
    a = run_mining_job(inputs, tmp_path / "serial", outcome_miner(), shard_size=3, progress=False)
    b = run_mining_job(inputs, tmp_path / "ray", outcome_miner(), shard_size=3, ray_address="local", progress=False)
    assert b.backend == "ray:local" and b.shards_done == a.shards_total and b.shards_failed == 0
    assert (tmp_path / "ray" / "pairs.jsonl").read_bytes() == (tmp_path / "serial" / "pairs.jsonl").read_bytes()
    assert b.pairs == a.pairs == 16 and b.funnel == a.funnel


@pytest.mark.slow
def test_branch_miner_over_recorded_episodes(tmp_path, capsys):
    """The real branch miner (local sandboxes) over real episodes of the example tasks, via the CLI."""
    import contextrl
    from contextrl.agents import ReferencePatchAgent, run_episode

    specs = Path(__file__).resolve().parents[1] / "examples" / "tasks"
    env = contextrl.make("contextrl/Task-v0", spec=str(specs), sandbox="local")
    try:
        trajs = [run_episode(env, ReferencePatchAgent(), t.id, seed=i) for i, t in enumerate(env.unwrapped.tasks)]
    finally:
        env.close()
    write_trajectories(tmp_path / "in" / "episodes.jsonl", trajs + [make_traj(1, 0, True)])  # one with no task
    out = tmp_path / "out"
    rc = cli_main(["mine", "--input", str(tmp_path / "in"), "--out", str(out), "--miner", "branch", "--tasks", str(specs),
                   "--sandbox", "local", "--quiet"])
    assert rc == 0, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_failed"] == 0 and summary["pairs"] > 0 and summary["funnel"]["no_task"] == 1
    assert summary["funnel"]["trajectories"] == len(trajs) + 1 and summary["funnel"]["kept"] == summary["pairs"]
    pairs = list(read_pairs(out / "pairs.jsonl"))
    assert all(p.provenance.miner == "branch" and p.verdict.ok for p in pairs)
    assert {p.positive.trajectory.task_id for p in pairs} <= {t.task_id for t in trajs}


def test_cli_mine(tmp_path, capsys):
    inputs = make_inputs(tmp_path / "in")
    rc = cli_main(["mine", "--input", str(inputs / "a"), str(inputs / "b"), str(inputs / "c"), "--out", str(tmp_path / "out"),
                   "--miner", "outcome", "--shard-size", "6", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "pairs: 12" in text and "shards: 3 total, 3 mined" in text and "summary.json" in text


def test_miner_adapters_and_validation(tmp_path):
    with pytest.raises(MiningError, match="not available"):
        _require("contextrl.miner.no_such_miner", "imaginary")
    for make in (filter_miner, branch_miner):
        try:
            spec = make()
        except MiningError as e:  # the real miner is not installed here: a clear error, not an ImportError
            assert "miner is not available" in str(e)
        else:
            assert isinstance(spec, MinerSpec) and spec.fingerprint.startswith(spec.name)
    with pytest.raises(ConfigError, match="max_pairs_per_task"):
        OutcomeConfig(max_pairs_per_task=0)
    with pytest.raises(ConfigError, match="sandbox"):
        BranchJobConfig(sandbox="vm")
    with pytest.raises(MiningError, match="workers"):
        run_mining_job(tmp_path, tmp_path / "o", outcome_miner(), workers=0, progress=False)
    with pytest.raises(MiningError, match="group_key"):
        run_mining_job(tmp_path, tmp_path / "o", outcome_miner(), group_key="repo", progress=False)
    with pytest.raises(MiningError, match="no trajectory files"):
        run_mining_job(tmp_path / "nothing", tmp_path / "o", outcome_miner(), progress=False)
