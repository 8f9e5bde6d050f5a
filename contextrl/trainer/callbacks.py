"""Trainer callbacks: online mining, the held-out context probe, and the summary plot.

- `MiningCallback`: after every optimizer step, drains the env factory's `RolloutSink` and
  hands up to `max_submit_per_step` finished rollouts to an `OnlineBranchMiner` (its
  `submit` only enqueues: mining runs in the miner's threads, within `BranchConfig`'s
  per-trajectory budgets, and its queue drops the oldest when full). It logs `miner/*`
  (submitted, skipped, queued, dropped, pairs mined, buffer size) and, with a mixed pair
  source, `pairs/online` (pairs of the last batch drawn from the buffer). On checkpoint it
  writes the buffer to `<checkpoint>/online_pairs.jsonl`; `restore_buffer` reads it back
  when a run resumes.
- `CAProbeCallback`: CA accuracy of the policy on a held-out pair set before training,
  every `every_steps` steps, and after training (`probe/ca_accuracy`, ...), with
  `contextrl.trainer.probe` (each pair in both option orders).
- `SummaryPlotCallback`: at the end, `plot_summary` writes a PNG of the run's log history.

Callbacks add metrics through `bind(trainer)`: values appended to the trainer's metric
lists are averaged into the next log line (and TensorBoard) by `GRPOTrainer.log`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from transformers import TrainerCallback

from contextrl.miner.pair import ContrastivePair, read_pairs, write_pairs

ONLINE_PAIRS_FILE = "online_pairs.jsonl"


class _MetricsCallback(TrainerCallback):
    """Base: holds the trainer (after `bind`) to add metrics to its next log line."""

    trainer: Any = None

    def bind(self, trainer: Any) -> "_MetricsCallback":
        """Attach to the trainer whose metrics this callback extends; returns self."""
        self.trainer = trainer
        return self

    def record(self, key: str, value: float) -> None:
        """Add a value to the trainer's current metrics (averaged at the next log)."""
        if self.trainer is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
            self.trainer._metrics["train"][key].append(float(value))


class MiningCallback(_MetricsCallback):
    """Hands finished rollouts to the online branch miner after each optimizer step."""

    def __init__(self, sink: Any, miner: Any = None, *, max_submit_per_step: int = 4, submit: str = "acted",
                 pair_source: Any = None):
        """
        Args:
            sink: the env factory's `RolloutSink`.
            miner: an `OnlineBranchMiner` (None: rollouts are drained and dropped; metrics still logged).
            max_submit_per_step: budget of rollouts handed over per optimizer step.
            submit: "acted" (only rollouts that used a tool successfully) or "all".
            pair_source: the trainer's pair source, to log the online share of pair batches.
        """
        self.sink, self.miner = sink, miner
        self.max_submit_per_step = max_submit_per_step
        self.submit = submit
        self.pair_source = pair_source
        self.submitted = 0
        self.skipped = 0

    def on_step_end(self, args, state, control, **kwargs):
        rollouts = self.sink.drain()
        eligible = [r for r in rollouts if r.reward is not None and (self.submit == "all" or r.acted)]
        budget = eligible[: self.max_submit_per_step] if self.miner is not None else []
        for r in budget:
            self.miner.submit(r.trajectory, r.task)
        self.submitted += len(budget)
        self.skipped += len(rollouts) - len(budget)
        self.record("miner/submitted", self.submitted)
        self.record("miner/skipped", self.skipped)
        if self.miner is not None:
            st = self.miner.stats()
            for key in ("queued", "dropped", "mined", "failed", "pairs_added"):
                self.record(f"miner/{key}", st[key])
            self.record("miner/buffer_size", st["buffer"]["size"])
        last_online = getattr(self.pair_source, "last_online", None)
        if last_online is not None:
            self.record("pairs/online", last_online)
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.miner is not None and state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_pairs(ckpt / ONLINE_PAIRS_FILE, self.miner.buffer.snapshot())
        return control


def restore_buffer(buffer: Any, checkpoint: str | Path | None) -> int:
    """Refill an online `PairBuffer` from a checkpoint's `online_pairs.jsonl`; returns the count added."""
    if checkpoint is None:
        return 0
    path = Path(checkpoint) / ONLINE_PAIRS_FILE
    return buffer.add(list(read_pairs(path))) if path.exists() else 0


class CAProbeCallback(_MetricsCallback):
    """CA accuracy on held-out pairs before, during (every `every_steps`) and after training."""

    def __init__(self, pairs: Sequence[ContrastivePair], processing_class: Any, *, every_steps: int = 0,
                 batch_size: int = 4, max_prompt_tokens: int | None = 4096):
        self.pairs = list(pairs)
        self.processing_class = processing_class
        self.every_steps = every_steps
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.before: Any = None
        """`ProbeResult` before the first step."""
        self.after: Any = None
        """`ProbeResult` after the last step."""
        self.history: list[tuple[int, Any]] = []

    def run(self, model: Any) -> Any:
        """Probe `model` now; returns the `ProbeResult`."""
        from contextrl.trainer.probe import probe

        return probe(model, self.processing_class, self.pairs, batch_size=self.batch_size,
                     max_prompt_tokens=self.max_prompt_tokens)

    def _log(self, step: int, res: Any) -> None:
        self.history.append((step, res))
        self.record("probe/ca_accuracy", res.accuracy)
        self.record("probe/position_consistency", res.position_consistency)
        self.record("probe/mean_margin", res.mean_margin)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.pairs and model is not None:
            self.before = self.run(model)
            self._log(state.global_step, self.before)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.pairs and self.every_steps and state.global_step % self.every_steps == 0 and state.global_step < state.max_steps:
            self._log(state.global_step, self.run(model))
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.pairs and model is not None:
            self.after = self.run(model)
            self.history.append((state.global_step, self.after))
        return control


class SummaryPlotCallback(TrainerCallback):
    """Writes `plot_summary(state.log_history)` to `path` when training ends."""

    def __init__(self, path: str | Path, probe: CAProbeCallback | None = None, title: str = "ContextRL run"):
        self.path = Path(path)
        self.probe = probe
        self.title = title
        self.written: Path | None = None

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            probe_points = [(s, r.accuracy) for s, r in self.probe.history] if self.probe is not None else []
            self.written = plot_summary(state.log_history, self.path, probe_points=probe_points, title=self.title)
        return control


PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("task reward", ("reward", "env/resolved")),
    ("context awareness", ("ca/accuracy", "ca/loss", "ca/skipped")),
    ("pairs", ("miner/buffer_size", "miner/pairs_added", "ca/num_pairs", "pairs/online")),
    ("rollouts", ("env/masked", "env/turns", "tools/call_frequency", "completions/mean_length")),
)


def plot_summary(log_history: Sequence[dict], path: str | Path, *, probe_points: Sequence[tuple[int, float]] = (),
                 title: str = "ContextRL run") -> Path:
    """A 2x2 PNG of the logged metrics against the optimizer step: task reward, CA metrics
    (with the held-out probe accuracy as points), pair counts, rollout statistics. Metrics
    never logged are left out; an empty panel says so. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (name, keys) in zip(axes.flat, PANELS):
        drawn = False
        for key in keys:
            pts = [(h["step"], h[key]) for h in log_history if key in h and isinstance(h[key], (int, float))
                   and not math.isnan(h[key]) and "step" in h]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
                drawn = True
        if name == "context awareness" and probe_points:
            xs, ys = zip(*probe_points)
            ax.plot(xs, ys, marker="s", linestyle="--", color="black", label="held-out CA accuracy")
            drawn = True
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
