"""`make demo`: two scripted agents on HumanEval and BugFix tasks in real sandboxes.

A reference-patch agent (applies the task's reference patch through the tools) should
resolve every task; a submit-at-once agent none. Trajectories go to `<out>/<env>/<agent>/`.
This is an end-to-end check of envs, tools, sandboxes and scoring; the trainer issue
replaces the scripted agent with the trained policy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

import contextrl
from contextrl.agents import ReferencePatchAgent, SubmitAgent, run_episode
from contextrl.sandboxes import PoolConfig


def main(out: str = "runs/demo", n: int = 3, sandbox: str = "auto") -> int:
    out_dir = Path(out)
    results = []
    t_start = time.time()
    for env_id in ("contextrl/HumanEval-v0", "contextrl/BugFix-v0"):
        for agent in (ReferencePatchAgent(), SubmitAgent()):
            env = contextrl.make(env_id, sandbox=sandbox, pool=PoolConfig(warm=2, max_live=8),
                                 trajectory_dir=out_dir / env_id.split("/")[1] / agent.name)
            try:
                tasks = env.unwrapped.tasks
                step = max(1, len(tasks) // n)
                ids = [t.id for t in tasks[::step][:n]]
                solved = 0
                for tid in tqdm(ids, desc=f"{env_id.split('/')[1]:<13} {agent.name:<16}", leave=False):
                    traj = run_episode(env, agent, tid)
                    solved += bool(traj.resolved)
                    results.append({"env": env_id, "agent": agent.name, "task": tid, "reward": traj.reward,
                                    "resolved": traj.resolved, "steps": len(traj.steps), "outcome": traj.outcome,
                                    "failure": traj.failure.message if traj.failure else None})
            finally:
                env.close()
    print(f"\n{'env':<24} {'agent':<18} {'tasks':>5} {'resolve rate':>12}")
    rates = {}
    for env_id in ("contextrl/HumanEval-v0", "contextrl/BugFix-v0"):
        for agent in ("reference-patch", "submit-at-once"):
            rows = [r for r in results if r["env"] == env_id and r["agent"] == agent]
            rate = sum(bool(r["resolved"]) for r in rows) / max(1, len(rows))
            rates[f"{env_id}:{agent}"] = rate
            print(f"{env_id:<24} {agent:<18} {len(rows):>5} {rate:>12.2f}")
    (out_dir).mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"results": results, "resolve_rates": rates}, indent=1))
    print(f"\ntrajectories in {out_dir}/, summary in {out_dir / 'results.json'} ({time.time() - t_start:.0f}s)")
    expected = all(v == (1.0 if "reference" in k else 0.0) for k, v in rates.items())
    print("expected 1.00 (reference-patch) and 0.00 (submit-at-once):", "OK" if expected else "MISMATCH")
    return 0 if expected else 1
