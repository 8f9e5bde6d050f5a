"""Miners as shard workers: the `ShardMiner` protocol, picklable factories (`MinerSpec`),
and adapters for the condition-filter, branching and outcome-contrast miners.

A factory is what crosses a process or Ray boundary; it builds the miner inside the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from contextrl.errors import ConfigError, ContextRLError, MiningError
from contextrl.miner.pair import Context, ContrastivePair, Provenance, text_difference
from contextrl.trajectory import Trajectory

GroupKey = Callable[[Trajectory], Any]


@runtime_checkable
class ShardMiner(Protocol):
    """What a job runs per shard: pairs plus funnel counts (stage name -> count, in order)."""

    name: str

    def mine_shard(self, trajectories: list[Trajectory]) -> tuple[list[ContrastivePair], dict[str, int]]: ...


@dataclass(frozen=True)
class MinerSpec:
    """A picklable miner factory: ``spec()`` imports ``builder`` ("module:function") and calls
    it with ``config``. Shard results are reused on rerun only when ``fingerprint`` matches."""

    name: str
    builder: str
    config: Any = None
    group_key: str | None = None
    """The bucketing this miner needs ("repo_commit", "task" or None), used when the job's
    ``group_key`` is "auto"."""

    def __call__(self) -> ShardMiner:
        module, _, attr = self.builder.partition(":")
        return getattr(importlib.import_module(module), attr)(self.config)

    @property
    def fingerprint(self) -> str:
        """Miner identity recorded in each shard's done marker (name and config repr)."""
        return self.name if self.config is None else f"{self.name}:{self.config!r}"


# --------------------------------------------------------------------------- miners


class _MineAdapter:
    """Wraps a miner with ``mine(trajectories) -> result(pairs, funnel)`` as a `ShardMiner`."""

    def __init__(self, name: str, miner: Any):
        self.name, self.miner = name, miner

    def mine_shard(self, trajectories: list[Trajectory]) -> tuple[list[ContrastivePair], dict[str, int]]:
        if hasattr(self.miner, "mine_shard"):
            return self.miner.mine_shard(trajectories)
        result = self.miner.mine(trajectories)
        funnel = getattr(result, "funnel", {})
        funnel = funnel.to_dict() if hasattr(funnel, "to_dict") else dict(funnel)
        return list(getattr(result, "pairs", result)), {str(k): int(v) for k, v in funnel.items()}


def _require(module: str, what: str) -> None:
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:  # fail in the driver, before any shard runs
        raise MiningError(f"the {what} miner is not available: module {module} is missing from this installation "
                          "(update contextrl, or use --miner outcome)")


def _build(module: str, cls: str, config_cls: str, name: str, config: Any) -> ShardMiner:
    try:
        mod = importlib.import_module(module)
        return _MineAdapter(name, getattr(mod, cls)(config if config is not None else getattr(mod, config_cls)()))
    except (ImportError, AttributeError) as e:
        raise MiningError(f"the {name} miner cannot be loaded from {module}: {e}") from e


def _build_filter(config: Any) -> ShardMiner:
    return _build("contextrl.miner.filter", "ConditionFilterMiner", "FilterConfig", "filter", config)


def _build_branch(config: Any) -> ShardMiner:
    _require("contextrl.miner.branch", "branch")
    return _BranchShardMiner(config if isinstance(config, BranchJobConfig) else BranchJobConfig(branch=config))


@dataclass(frozen=True)
class BranchJobConfig:
    """An offline branch job: the `BranchConfig` plus where the trajectories' tasks come from."""

    branch: Any = None
    """A `contextrl.miner.branch.BranchConfig` (None: its defaults)."""
    tasks: str | None = None
    """Task file or directory (`contextrl.envs.sources.load_tasks`); None: the env named by
    `env_id`, else each trajectory's `source` (the env id it was recorded in)."""
    env_id: str | None = None
    """Env whose task list holds the tasks, e.g. "contextrl/BugFix-v0"."""
    sandbox: str = "auto"
    """Sandbox backend for the forks: "auto", "docker" or "local"."""

    def __post_init__(self) -> None:
        if self.sandbox not in ("auto", "docker", "local"):
            raise ConfigError(f"BranchJobConfig.sandbox={self.sandbox!r}: use 'auto', 'docker' or 'local'")


class _BranchShardMiner:
    """`BranchMiner.mine(traj, task)` over a shard; per-trajectory failures are funnel counts."""

    name = "branch"

    def __init__(self, config: BranchJobConfig):
        from contextrl.miner.branch import BranchMiner
        from contextrl.sandboxes import make_sandbox_factory

        self.config, self._tasks = config, {}
        self.miner = BranchMiner(config.branch, make_sandbox_factory(config.sandbox))
        if config.tasks:
            from contextrl.envs.sources import load_tasks

            self._tasks[None] = {t.id: t for t in load_tasks(config.tasks)}

    def _task(self, traj: Trajectory) -> Any:
        key = None if self.config.tasks else (self.config.env_id or traj.source)
        if key not in self._tasks:
            import contextrl

            try:
                env = contextrl.make(key)
                self._tasks[key] = {t.id: t for t in env.unwrapped.tasks}
                env.close()
            except (ContextRLError, KeyError, TypeError) as e:
                raise MiningError(f"no tasks for trajectory {traj.episode_id or traj.task_id} (source {key!r}): {e}; "
                                  "give BranchJobConfig.tasks or env_id") from e
        return self._tasks[key].get(traj.task_id)

    def mine_shard(self, trajectories: list[Trajectory]) -> tuple[list[ContrastivePair], dict[str, int]]:
        funnel, pairs, skipped = {"trajectories": len(trajectories)}, [], {"no_task": 0, "errors": 0}
        try:
            for traj in trajectories:
                task = self._task(traj)
                if task is None:
                    skipped["no_task"] += 1
                    continue
                try:
                    res = self.miner.mine(traj, task)
                except MiningError:  # a bad rollout is data: count it, go on
                    skipped["errors"] += 1
                    continue
                pairs.extend(res.pairs)
                for k, v in res.funnel.items():
                    if k != "trajectories":
                        funnel[k] = funnel.get(k, 0) + int(v)
        finally:
            self.miner.close()  # no sandbox outlives a shard
        return pairs, {**funnel, **skipped}


def filter_miner(config: Any = None) -> MinerSpec:
    """Condition-filtering miner (`contextrl.miner.filter`); buckets by (repo, base_commit)."""
    _require("contextrl.miner.filter", "condition-filter")
    return MinerSpec("filter", f"{__name__}:_build_filter", config, group_key="repo_commit")


def branch_miner(config: Any = None) -> MinerSpec:
    """Branching-on-conditions miner (`contextrl.miner.branch`) over recorded trajectories;
    `config`: a `BranchJobConfig` (or a `BranchConfig`). Shards are bucketed by task."""
    _require("contextrl.miner.branch", "branch")
    return MinerSpec("branch", f"{__name__}:_build_branch", config, group_key="task")


@dataclass(frozen=True)
class OutcomeConfig:
    """Settings of `OutcomeContrastMiner`."""

    max_pairs_per_task: int = 4
    """At most this many (resolved, unresolved) pairs per task."""
    verify: bool = True
    """Run the rule-based verification and record each pair's verdict."""
    only_verified: bool = False
    """Keep only pairs whose verdict is ok (needs `verify`)."""

    def __post_init__(self) -> None:
        n = self.max_pairs_per_task
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"OutcomeConfig.max_pairs_per_task={n!r}: use an integer >= 1")
        if self.only_verified and not self.verify:
            raise ConfigError("OutcomeConfig.only_verified=True needs verify=True (no pair would have a verdict)")


class OutcomeContrastMiner:
    """Pairs trajectories of the same task that ended differently: C+ resolved the task (its
    diff is the answer A), C- did not. Needs shards bucketed by task (``group_key="task"``)."""

    name = "outcome"

    def __init__(self, config: OutcomeConfig | None = None):
        self.config = config or OutcomeConfig()

    def mine_shard(self, trajectories: list[Trajectory]) -> tuple[list[ContrastivePair], dict[str, int]]:
        from contextrl.miner.verify import verify_pair

        funnel = dict.fromkeys(["trajectories", "known_outcome", "tasks_with_both_outcomes", "candidate_pairs", "verified_ok", "kept"], 0)
        funnel["trajectories"] = len(trajectories)
        by_task: dict[str, tuple[list[Trajectory], list[Trajectory]]] = {}
        for t in trajectories:
            ok = t.resolved if t.resolved is not None else (t.reward > 0 if t.reward is not None else None)
            if ok is None or (ok and not t.diff.strip()):
                continue
            funnel["known_outcome"] += 1
            by_task.setdefault(t.task_id, ([], []))[0 if ok else 1].append(t)
        pairs = []
        for task_id in sorted(by_task):
            pos, neg = (sorted(g, key=lambda t: (t.episode_id, t.diff, len(t.steps))) for g in by_task[task_id])
            if not (pos and neg):
                continue
            funnel["tasks_with_both_outcomes"] += 1
            for p, n in itertools.islice(itertools.product(pos, neg), self.config.max_pairs_per_task):
                cp = Context.from_trajectory(p, supported_answer=p.diff)
                cn = Context.from_trajectory(n, supported_answer=n.diff)
                pair = ContrastivePair(
                    kind="trajectory", query=p.problem_statement or task_id, answer=p.diff, positive=cp, negative=cn,
                    difference=text_difference(cp.text, cn.text),
                    provenance=Provenance(self.name, (p.episode_id, n.episode_id), {"max_pairs_per_task": self.config.max_pairs_per_task}))
                funnel["candidate_pairs"] += 1
                if self.config.verify:
                    pair = verify_pair(pair)
                    funnel["verified_ok"] += pair.verdict.ok
                if pair.verdict is None or pair.verdict.ok or not self.config.only_verified:
                    pairs.append(pair)
        funnel["kept"] = len(pairs)
        return pairs, funnel


def _build_outcome(config: Any) -> ShardMiner:
    return OutcomeContrastMiner(config)


def outcome_miner(config: OutcomeConfig | None = None) -> MinerSpec:
    """The outcome-contrast miner as a job factory (buckets by task id)."""
    return MinerSpec("outcome", f"{__name__}:_build_outcome", config, group_key="task")
