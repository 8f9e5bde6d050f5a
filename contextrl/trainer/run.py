"""Building and running a training run from a `RunConfig` (`contextrl train run.yaml`).

`plan_run(cfg)` does everything short of loading weights, and is what `--dry-run` prints:
it builds the TRL arguments (`ContextRLConfig`, whose validation runs here), the branch
miner's config, the sandbox pool and limits, the LoRA config, checks the model source, the
sandbox backend, the env ids (loading their task lists) and the pair files, and resolves
the checkpoint to resume from. Every config error surfaces here, before a model loads.
On a machine without a GPU, GPU-only settings (bf16, vLLM) are validated with the GPU
switched off and the plan says so.

`train(cfg)` then loads the policy (with the tool-calling chat template), builds the env
factory (TRL's `environment_factory`), the online `PairBuffer` + `OnlineBranchMiner`, the
callbacks (mining, held-out probe, summary plot) and the trainer (`ContextRLTrainer` with
`InfraFailureMasking`), trains (resuming when asked), saves the final model, and writes
`summary.json`, `online_pairs.jsonl` and `summary.png` into the output directory.
TensorBoard logs go to `<output_dir>/runs/`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from contextrl.errors import ConfigError, ContextRLError
from contextrl.trainer.runconfig import RunConfig


@dataclass
class RunPlan:
    """Everything a run needs except the weights (see `plan_run`)."""

    config: RunConfig
    args: Any
    """The `ContextRLConfig` passed to the trainer."""
    branch: Any
    """The `BranchConfig` of the online miner (None when mining is off)."""
    pool: Any
    limits: Any
    peft_config: Any
    model_source: str
    backend: str
    factory: Any
    """The `CodingEnvFactory` (tasks loaded, no sandbox started)."""
    tasks: dict[str, int]
    """Training tasks per env id."""
    offline_pairs: int | None
    eval_pairs: int | None
    resume_from: str | None
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """A human-readable summary (what `contextrl train --dry-run` prints)."""
        c, a = self.config, self.args
        lines = [
            f"model        {self.model_source} (dtype {c.model.dtype}, chat template {c.model.chat_template})",
            "envs         " + ", ".join(f"{k}: {v} tasks" for k, v in self.tasks.items()),
            f"sandbox      {self.backend}; pool warm={self.pool.warm} max_live={self.pool.max_live}; "
            f"{self.limits.memory_mb} MiB, {self.limits.cpus} CPU",
            f"trainer      mode={a.mode} lambda={a.ca_lambda} c={a.ca_clip} pairs/step={a.ca_pairs_per_step} "
            f"mix={a.pair_mix_ratio} lr={a.learning_rate} steps={a.max_steps}",
            f"batches      per-device={a.per_device_train_batch_size} accumulation={a.gradient_accumulation_steps} "
            f"generations={a.num_generations} completion={a.max_completion_length} tokens "
            f"(per turn: {c.trainer.max_turn_tokens or 'same'})",
            "generation   " + (f"vLLM {a.vllm_mode} (gpu_memory_utilization={a.vllm_gpu_memory_utilization}, "
                                f"tp={a.vllm_tensor_parallel_size})" if c.vllm.enabled else "transformers"),
            "lora         " + (f"r={c.lora.r} alpha={c.lora.alpha} modules={c.lora.target_modules}" if c.lora.enabled else "off"),
            "miner        " + (f"online, {c.miner.workers} worker(s), <= {c.miner.max_submit_per_step} rollouts/step, "
                                f"<= {self.branch.max_forks_per_trajectory} forks/trajectory" if self.branch else "off"),
            f"pairs        offline={self.offline_pairs if self.offline_pairs is not None else 'none'} "
            f"held-out={self.eval_pairs if self.eval_pairs is not None else 'none'}",
            f"output       {a.output_dir} (report_to={a.report_to}, " + (f"checkpoint every {c.logging.save_steps} steps)" if c.logging.save_steps else "checkpoint at the end)"),
            f"resume       {self.resume_from or 'fresh start'}",
        ]
        return "\n".join(lines + [f"note         {n}" for n in self.notes])


@dataclass
class RunResult:
    """What a finished run produced."""

    output_dir: Path
    final_dir: Path | None
    plot: Path | None
    tensorboard_dir: Path | None
    summary: dict[str, Any]
    log_history: list[dict]
    online_pairs: list = field(default_factory=list)


def build_training_args(cfg: RunConfig, *, dry_run: bool = False) -> tuple[Any, list[str]]:
    """The `ContextRLConfig` of a run, and notes on settings that could not be checked here."""
    import torch

    from contextrl.trainer.config import ContextRLConfig

    t, v, lg, notes = cfg.trainer, cfg.vllm, cfg.logging, []
    cuda = torch.cuda.is_available()
    if t.device == "cuda" and not cuda and not dry_run:
        raise ConfigError("trainer.device=cuda but torch sees no CUDA device; use device=auto or cpu")
    use_cpu = t.device == "cpu" or (t.device == "auto" and not cuda)
    bf16 = t.bf16
    if not cuda and (bf16 or v.enabled):
        if not dry_run:
            raise ConfigError("trainer.bf16 / vllm.enabled need a CUDA GPU, and torch sees none; set them false or run on a GPU")
        notes.append("no CUDA GPU here: bf16 and vLLM settings were validated with the GPU switched off")
        bf16, use_cpu = False, True
    report_to = [r for r in lg.report_to if r != "none"]
    extra = dict(t.extra)
    if t.max_turn_tokens is not None:
        extra["generation_kwargs"] = {**(extra.get("generation_kwargs") or {}), "max_new_tokens": t.max_turn_tokens}
    kwargs: dict[str, Any] = dict(
        output_dir=lg.output_dir, run_name=lg.run_name or Path(lg.output_dir).name, report_to=report_to,
        logging_steps=lg.logging_steps, save_strategy="steps" if lg.save_steps else "no", save_steps=lg.save_steps or 500,
        save_total_limit=lg.save_total_limit, log_completions=lg.log_completions, seed=t.seed, bf16=bf16, use_cpu=use_cpu,
        gradient_checkpointing=cfg.model.gradient_checkpointing, mode=t.mode, ca_lambda=t.ca_lambda, ca_clip=t.ca_clip,
        ca_pairs_per_step=t.ca_pairs_per_step, pair_mix_ratio=t.pair_mix_ratio, ca_max_prompt_tokens=t.ca_max_prompt_tokens,
        learning_rate=t.learning_rate, max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, num_generations=t.num_generations,
        max_completion_length=t.max_completion_length, max_tool_calling_iterations=t.max_tool_calling_iterations,
        temperature=t.temperature, beta=t.beta, use_vllm=v.enabled, vllm_mode=v.mode,
        vllm_gpu_memory_utilization=v.gpu_memory_utilization, vllm_tensor_parallel_size=v.tensor_parallel_size,
        vllm_max_model_length=v.max_model_length, vllm_enable_sleep_mode=v.enable_sleep_mode,
        vllm_server_base_url=v.server_base_url, **extra,
    )
    try:
        return ContextRLConfig(**kwargs), notes
    except ConfigError as e:
        raise ConfigError(str(e).replace("ContextRLConfig.", "trainer.")) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"trainer: TRL rejected the settings: {e}") from None


def _lora(cfg: RunConfig) -> Any:
    if not cfg.lora.enabled:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("lora.enabled=true needs peft: `pip install peft` (or set lora.enabled=false)") from None
    mods = cfg.lora.target_modules
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                      target_modules=mods[0] if mods == ["all-linear"] else list(mods))


def _count_pairs(path: str | None, name: str) -> int | None:
    if path is None:
        return None
    from contextrl.miner.pair import read_pairs

    if not Path(path).is_file():
        raise ConfigError(f"{name}={path!r}: no such file; give a pairs JSONL (e.g. from `contextrl mine`)")
    try:
        pairs = list(read_pairs(path))
    except ContextRLError as e:
        raise ConfigError(f"{name}={path!r}: {e}") from None
    if not pairs:
        raise ConfigError(f"{name}={path!r}: the file holds no pairs")
    if any(p.kind == "image" for p in pairs):
        raise ConfigError(f"{name}={path!r}: image pairs need the multimodal loader; use trajectory pairs here")
    return len(pairs)


def resolve_resume(cfg: RunConfig) -> str | None:
    """The checkpoint directory to resume from (see `logging.resume_from`), or None."""
    r, out = cfg.logging.resume_from, Path(cfg.logging.output_dir)
    if r is None or r in ("never", "none", ""):
        return None
    if r == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(r).is_dir():
        raise ConfigError(f"logging.resume_from={r!r}: no such checkpoint directory; use 'auto', null or a checkpoint path")
    return r


def plan_run(cfg: RunConfig, *, dry_run: bool = False) -> RunPlan:
    """Validate and build everything short of loading weights (see the module docstring)."""
    from contextrl.miner.branch import BranchConfig
    from contextrl.sandboxes import PoolConfig, SandboxLimits
    from contextrl.sandboxes.dockerclient import docker_available
    from contextrl.trainer.envs import CodingEnvFactory
    from contextrl.trainer.models import check_model_source

    args, notes = build_training_args(cfg, dry_run=dry_run)
    try:
        branch = BranchConfig.from_dict(cfg.miner.branch) if cfg.miner.online else None
    except ConfigError as e:
        raise ConfigError(f"miner.branch: {e}") from None
    s, e = cfg.sandbox, cfg.envs
    pool = PoolConfig(warm=s.warm, max_live=s.max_live)
    limits = SandboxLimits(memory_mb=s.memory_mb, cpus=s.cpus, pids=s.pids, default_timeout_s=e.command_timeout)
    peft_config = _lora(cfg)
    model_source = check_model_source(cfg.model.name_or_path)
    if cfg.model.chat_template == "chatml_tools":
        from contextrl.trainer.models import tool_chat_template

        tool_chat_template(cfg.model.system_prompt)
    if s.kind == "docker" and not docker_available():
        raise ConfigError("sandbox.kind=docker but no Docker daemon answers; start dockerd (see `make docker-up`) or use "
                          "sandbox.kind=auto / local")
    backend = "docker" if s.kind in ("docker", "auto") and docker_available() else "local"
    if backend == "local" and s.kind == "auto":
        notes.append("no Docker daemon answers: episodes would run in the local sandbox (no isolation)")
    if cfg.vllm.enabled:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            if not dry_run:
                raise ConfigError("vllm.enabled=true but vllm is not installed; `pip install vllm` on the GPU machine")
            notes.append("vllm is not installed here; install it on the GPU machine")
    factory = CodingEnvFactory(
        e.ids, sandbox=s.kind, pool=pool, limits=limits, env_kwargs=e.kwargs, max_episode_steps=e.max_turns,
        command_timeout=e.command_timeout, test_timeout=e.test_timeout, max_observation_chars=e.max_observation_chars,
        trajectory_dir=str(Path(cfg.logging.output_dir) / "trajectories") if e.save_trajectories else None,
        seed=cfg.trainer.seed,
    )
    tasks: dict[str, int] = {}
    for env_id in e.ids:
        try:
            tasks[env_id] = len(factory.select(env_id, e.task_ids, e.tasks_per_env))
        except ConfigError:
            raise
        except ContextRLError as err:
            raise ConfigError(f"envs.ids: {env_id}: {err}") from None
    if not sum(tasks.values()):
        raise ConfigError(f"envs.task_ids={e.task_ids}: no task of {e.ids} matches")
    offline = _count_pairs(cfg.miner.offline_pairs, "miner.offline_pairs")
    held_out = _count_pairs(cfg.eval.pairs, "eval.pairs")
    return RunPlan(cfg, args, branch, pool, limits, peft_config, model_source, backend, factory, tasks, offline, held_out,
                   resolve_resume(cfg), notes)


def dry_run(cfg: RunConfig) -> RunPlan:
    """`plan_run` in dry-run mode: GPU-only settings are validated without a GPU."""
    return plan_run(cfg, dry_run=True)


def make_trainer_class() -> type:
    """`ContextRLTrainer` with `InfraFailureMasking` (rollouts whose sandbox failed leave the loss)."""
    from contextrl.trainer.envs import InfraFailureMasking
    from contextrl.trainer.trainer import ContextRLTrainer

    return type("EnvContextRLTrainer", (InfraFailureMasking, ContextRLTrainer), {"__module__": __name__})


def train(cfg: RunConfig, *, plan: RunPlan | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Run the whole training (see the module docstring); returns where everything went."""
    from contextrl.miner.online import OnlineBranchMiner
    from contextrl.miner.buffer import PairBuffer
    from contextrl.miner.pair import read_pairs, write_pairs
    from contextrl.sandboxes import make_sandbox_factory
    from contextrl.trainer.callbacks import CAProbeCallback, MiningCallback, SummaryPlotCallback, restore_buffer
    from contextrl.trainer.models import load_policy

    plan = plan or plan_run(cfg)  # every config error is raised here, before a model loads
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    out = Path(cfg.logging.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    t0 = time.time()
    log(f"loading {plan.model_source}")
    model, tok = load_policy(cfg.model.name_or_path, dtype=cfg.model.dtype, chat_template=cfg.model.chat_template,
                             system_prompt=cfg.model.system_prompt, attn_implementation=cfg.model.attn_implementation)
    factory = plan.factory
    miner = None
    try:
        dataset = factory.dataset(cfg.envs.task_ids, cfg.envs.tasks_per_env)
        buffer = PairBuffer(capacity=cfg.miner.buffer_capacity, seed=cfg.trainer.seed) if cfg.miner.online else None
        if buffer is not None:
            restored = restore_buffer(buffer, plan.resume_from)
            if restored:
                log(f"restored {restored} online pairs from {plan.resume_from}")
            sandboxes = make_sandbox_factory(cfg.sandbox.kind, limits=plan.limits, uid=1000, workdir="/workspace")
            miner = OnlineBranchMiner(plan.branch, sandboxes, buffer, workers=cfg.miner.workers,
                                      queue_size=cfg.miner.queue_size, name="online-miner")
        held_out = list(read_pairs(cfg.eval.pairs))[: cfg.eval.max_pairs] if cfg.eval.pairs else []
        probe_cb = CAProbeCallback(held_out, tok, every_steps=cfg.eval.every_steps, batch_size=cfg.eval.batch_size,
                                   max_prompt_tokens=cfg.trainer.ca_max_prompt_tokens) if held_out else None
        plot_cb = SummaryPlotCallback(out / "summary.png", probe_cb, title=f"{cfg.trainer.mode}: {cfg.model.name_or_path}") \
            if cfg.logging.plot else None
        trainer = make_trainer_class()(
            model, None, args=plan.args, train_dataset=dataset, processing_class=tok, pair_source=buffer,
            offline_pairs=cfg.miner.offline_pairs,
            environment_factory=factory, peft_config=plan.peft_config,
        )
        mining_cb = MiningCallback(factory.sink, miner, max_submit_per_step=cfg.miner.max_submit_per_step,
                                   submit=cfg.miner.submit, pair_source=trainer.pair_source).bind(trainer)
        for cb in (mining_cb, probe_cb.bind(trainer) if probe_cb else None, plot_cb):
            if cb is not None:
                trainer.add_callback(cb)
        trainer.train(resume_from_checkpoint=plan.resume_from)
        final = out / "final"
        trainer.save_model(str(final))
        if miner is not None and cfg.miner.drain_seconds > 0:
            log(f"mining the last rollouts (at most {cfg.miner.drain_seconds:.0f} s)")
            miner.wait_idle(timeout=cfg.miner.drain_seconds)
    finally:
        if miner is not None:
            miner.close()
        factory.close()
    online = buffer.snapshot() if buffer is not None else []
    write_pairs(out / "online_pairs.jsonl", online)
    summary = summarize(trainer.state.log_history, probe_cb, miner, factory.sink, time.time() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tb = out / "runs"
    return RunResult(out, final, plot_cb.written if plot_cb else None, tb if tb.is_dir() else None, summary,
                     list(trainer.state.log_history), online)


def summarize(history: list[dict], probe_cb: Any, miner: Any, sink: Any, seconds: float) -> dict[str, Any]:
    """The headline numbers of a run (what `summary.json` holds)."""

    def series(key: str) -> list[float]:
        return [h[key] for h in history if isinstance(h.get(key), (int, float))]

    rewards = series("reward")
    ca = series("ca/accuracy")
    out: dict[str, Any] = {
        "steps": max((h.get("step", 0) for h in history), default=0),
        "seconds": round(seconds, 1),
        "task_reward_first": rewards[0] if rewards else None,
        "task_reward_last": rewards[-1] if rewards else None,
        "task_reward_mean": sum(rewards) / len(rewards) if rewards else None,
        "ca_batch_accuracy_mean": sum(ca) / len(ca) if ca else None,
        "ca_skipped_steps": sum(1 for v in series("ca/skipped") if v >= 1.0),
        "rollouts": int(sink.counts["rollouts"]),
        "rollouts_masked": int(sink.counts["masked"]),
        "rollouts_resolved": int(sink.counts["resolved"]),
    }
    if probe_cb is not None and probe_cb.before is not None:
        out["heldout_ca_accuracy_before"] = probe_cb.before.accuracy
        out["heldout_ca_accuracy_after"] = probe_cb.after.accuracy if probe_cb.after is not None else None
        out["heldout_pairs"] = probe_cb.before.n_pairs
    if miner is not None:
        st = miner.stats()
        out["miner"] = {k: st[k] for k in ("submitted", "mined", "failed", "dropped", "pairs", "pairs_added")}
        out["online_pairs"] = st["buffer"]["size"]
    return out
