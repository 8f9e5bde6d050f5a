"""Branch-mining benchmark: verified counterfactual pairs per minute, live, on Docker sandboxes.

    python -m benchmarks.miner_branch [--quick]

1. Tasks: BugFix-v0 when its sources are fetched (`contextrl tasks fetch`); otherwise
   HumanEval plus the example task specs (`task_source` says which).
2. Trajectories: `ReferencePatchAgent` episodes through `contextrl/Task-v0` on Docker
   (timed on their own: `trajectory_seconds`; not part of the mining rate).
3. Mining: `OnlineBranchMiner` with 2 workers (2 cores) on a warm pool; the clock runs from
   the first `submit` until the miner is idle (`branch_seconds`).

Baseline, measured in the same run: one plain `run_tests` of a solved task in a warm
sandbox (`baseline_test_run_s`); `fork_vs_test_run` = mean seconds per fork / baseline,
i.e. how close a fork (reset + flip + replay + tests) gets to the test run it contains, and
`pairs_per_baseline_test_run` = pairs mined per baseline test-run time (load-independent).
`load_avg_1m` (before, after) shows how busy the machine was: other processes share the cores.
Gate: `branch_pairs_per_minute` >= 30. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from benchmarks._util import device_info, emit_json, progress, table

WORKERS = 2
GATE_PAIRS_PER_MINUTE = 30.0
SIZES = {True: {"bugfix": 12, "humaneval": 16}, False: {"bugfix": 48, "humaneval": 60}}


def _tasks(quick: bool) -> tuple[str, list]:
    """BugFix tasks when available, else HumanEval + the example specs."""
    from pathlib import Path

    from contextrl.envs.sources import load_humaneval, load_tasks

    n = SIZES[quick]
    try:
        from contextrl.envs.bugfix import load_bugfix_tasks

        bugfix = load_bugfix_tasks()
    except Exception:  # noqa: BLE001 - missing sources or manifests: fall back, and say so
        bugfix = []
    if len(bugfix) >= 2:
        step = max(1, len(bugfix) // n["bugfix"])
        return "bugfix", list(bugfix)[::step][: n["bugfix"]]
    examples = load_tasks(Path(__file__).resolve().parent.parent / "examples" / "tasks")
    return "humaneval+examples (BugFix-v0 sources not fetched)", examples + load_humaneval(limit=n["humaneval"])


def _trajectories(tasks: list, show: bool) -> tuple[list, float]:
    import contextrl
    from contextrl.agents import ReferencePatchAgent, run_episode
    from contextrl.sandboxes.pool import PoolConfig

    t0 = time.perf_counter()
    env = contextrl.make("contextrl/Task-v0", tasks=tasks, sandbox="docker", pool=PoolConfig(warm=2, max_live=4))
    try:
        bar = progress(tasks, desc="episodes", enabled=show)
        trajs = [run_episode(env, ReferencePatchAgent(), t.id, seed=i) for i, t in enumerate(bar)]
    finally:
        env.close()
    return trajs, time.perf_counter() - t0


def _baseline_test_run(task, traj) -> float:
    """Seconds of one `run_tests` of a solved task in a warm sandbox (median of 3)."""
    from contextrl.envs.testing import run_tests
    from contextrl.sandboxes import make_sandbox_factory

    with make_sandbox_factory("docker")() as sb:
        for rel, text in task.files.items():
            sb.write_file(f"{sb.workdir}/{rel}", text)
        sb.exec(f"cd {sb.workdir} && git init -q && git add -A && git commit -qm base --no-verify", timeout=60)
        sb.write_file(f"{sb.workdir}/.solution.patch", traj.diff)
        sb.exec(f"cd {sb.workdir} && git apply .solution.patch && rm -f .solution.patch", timeout=60)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run_tests(sb, task, workdir=sb.workdir)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def branch_benchmark(quick: bool, show: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns the metrics (see the module docstring)."""
    from contextrl.miner.branch import BranchConfig
    from contextrl.miner.online import OnlineBranchMiner
    from contextrl.miner.buffer import PairBuffer
    from contextrl.sandboxes import SandboxLimits, make_sandbox_factory
    from contextrl.sandboxes.pool import PoolConfig, SandboxPool

    source, tasks = _tasks(quick)
    trajs, traj_s = _trajectories(tasks, show)
    by_id = {t.id: t for t in tasks}
    usable = [tr for tr in trajs if tr.reward is not None and tr.failure is None]
    solved = next(tr for tr in usable if tr.resolved)
    baseline = _baseline_test_run(by_id[solved.task_id], solved)

    config = BranchConfig(max_forks_per_trajectory=8, max_seconds_per_trajectory=60.0, seed=0)
    buffer = PairBuffer(capacity=100_000, seed=0)
    factory = make_sandbox_factory("docker", limits=SandboxLimits(cpus=1.0, memory_mb=1024))
    pool = SandboxPool(factory, PoolConfig(warm=WORKERS, max_live=2 * WORKERS + 1), name="bench-branch")
    load_before = os.getloadavg()[0]
    try:
        pool.wait_warm(WORKERS, timeout=120)
        with OnlineBranchMiner(config, pool, buffer, workers=WORKERS, queue_size=len(usable) + 1) as miner:
            t0 = time.perf_counter()
            submit_s = []
            for tr in usable:
                s0 = time.perf_counter()
                miner.submit(tr, by_id[tr.task_id])
                submit_s.append(time.perf_counter() - s0)
            bar = progress(total=len(usable), desc="mining", enabled=show)
            while not miner.wait_idle(timeout=1.0):
                bar.n = miner.stats()["mined"] + miner.stats()["failed"]
                bar.refresh()
            bar.close()
            wall = time.perf_counter() - t0
            st = miner.stats()
    finally:
        pool.close()
    pairs = buffer.snapshot()
    funnel = st["funnel"]
    forks = st["attempts"]
    sites: dict[str, int] = {}
    for p in pairs:
        sites[p.provenance.params["site"]] = sites.get(p.provenance.params["site"], 0) + 1
    timings = st["timings"]
    fork_s = sum(timings.get(k, 0.0) for k in ("fork", "replay", "tests", "pair")) / max(1, forks)
    return {
        "branch_pairs_per_minute": round(len(pairs) / wall * 60.0, 2),
        "branch_yield": round(st["funnel"].get("kept", 0) / max(1, forks), 4),
        "branch_attempts": forks,
        "branch_seconds": round(wall, 3),
        "workers": WORKERS,
        "task_source": source,
        "trajectories": len(usable),
        "trajectories_with_pairs": len({p.provenance.sources[0] for p in pairs}),
        "trajectory_seconds": round(traj_s, 3),
        "pairs": len(pairs),
        "pairs_by_site": sites,
        "pairs_per_trajectory": round(len(pairs) / max(1, len(usable)), 3),
        "submit_max_ms": round(max(submit_s) * 1000, 3) if submit_s else None,
        "mining_errors": st["failed"],
        "recent_errors": st["recent_errors"][:3],
        "seconds_by_phase": timings,
        "fork_mean_s": round(fork_s, 4),
        "baseline_test_run_s": round(baseline, 4),
        "fork_vs_test_run": round(fork_s / baseline, 3) if baseline else None,
        "pairs_per_baseline_test_run": round(len(pairs) * baseline / wall, 4),
        "tests_share_of_fork": round(timings.get("tests", 0.0) / max(1e-9, fork_s * forks), 3),
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "gate_pairs_per_minute": GATE_PAIRS_PER_MINUTE,
        "gate_ok": len(pairs) / wall * 60.0 >= GATE_PAIRS_PER_MINUTE,
        "funnel": funnel,
        "device": device_info(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.miner_branch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer trajectories (about 2 minutes)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = ap.parse_args(argv)
    show = not args.no_progress and os.environ.get("CONTEXTRL_NO_PROGRESS") != "1"
    metrics = branch_benchmark(args.quick, show)
    rows = [(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))]
    print(table(rows, title="branch mining"))
    emit_json(metrics)
    return 0 if metrics["gate_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
