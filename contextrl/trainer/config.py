"""`ContextRLConfig`: TRL's `GRPOConfig` plus the context-awareness settings.

The added fields choose the training mode (the method or one of the paper's ablation
baselines) and configure the auxiliary pair batch. They are validated when the config is
built, before any model loads: a bad value raises `ConfigError` naming the field and the
fix. Every GRPO field keeps TRL's meaning and default.

Modes (see DESIGN.md, "The method, precisely"):

- `contextrl`: GRPO + `ca_lambda` x mean L_CA over one pair batch per optimizer step.
- `grpo`: plain GRPO (no pair term). With `budget_matched_grpo` (default), the pair
  budget goes to more task prompts: `per_device_train_batch_size` is raised so every
  optimizer step carries at least `ca_pairs_per_step` more completions per device
  (rounded up to whole prompt groups) - one extra completion per pair the `contextrl`
  run would have scored. Set `budget_matched_grpo=False` for stock GRPO batches.
- `da_rl`: pairs become RL prompts; a fraction `da_rl_pair_fraction` of the prompt groups
  of each generation batch is replaced by selection prompts rewarded 1 for the correct
  letter, 0 otherwise.
- `da_sft`: supervised fine-tuning on the selection answers: `sft_lambda` x cross-entropy
  of the correct letter, on one pair batch per optimizer step, *during* the GRPO run.
  The paper runs SFT first and GRPO after; `da_sft_warmup_steps` > 0 reproduces that
  order (the GRPO term is weighted 0 for those first optimizer steps; generation still
  runs, so the warm-up costs rollouts it does not use).

Vision-language policies (a processor as `processing_class`, image pairs; see
`contextrl.trainer.vlm`): the pair batch holds `ca_image_pairs_per_step` pairs (default 32,
the paper's multimodal batch) instead of `ca_pairs_per_step` (default 8, agentic), and
`budget_matched_grpo` spends that image budget. `freeze_vision_tower` keeps the image
encoder fixed for the GRPO and the pair term alike.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from trl import GRPOConfig

from contextrl.errors import ConfigError

Mode = Literal["grpo", "contextrl", "da_rl", "da_sft"]
MODES: tuple[str, ...] = get_args(Mode)


@dataclass
class ContextRLConfig(GRPOConfig):
    """GRPO settings plus the ContextRL mode and pair-batch settings (validated at construction)."""

    mode: Mode = field(default="contextrl", metadata={"help": f"Training mode, one of {MODES}."})
    """`contextrl` (GRPO + lambda L_CA), or a baseline: `grpo`, `da_rl`, `da_sft`."""
    ca_lambda: float = field(default=0.005, metadata={"help": "Weight of the context-awareness loss (paper: 0.005)."})
    """lambda in L = L_GRPO + lambda E_z[L_CA(z)]; 0 disables the term (the run is then exactly GRPO)."""
    ca_clip: float = field(default=5.0, metadata={"help": "Margin clip c in -log sigmoid(clip(margin, -c, c))."})
    """c: once |margin| >= c the pair contributes no gradient."""
    ca_pairs_per_step: int = field(default=8, metadata={"help": "Pairs per optimizer step (8 agentic, 32 multimodal)."})
    """Size of the one pair batch drawn per optimizer step (per device) for a text-only policy."""
    ca_image_pairs_per_step: int = field(default=32, metadata={"help": "Pairs per optimizer step for a VLM policy."})
    """Size of the pair batch when the policy is a vision-language model (its processing_class is a
    processor): image pairs are cheap to show next to trajectories, so the paper uses 32."""
    freeze_vision_tower: bool = field(default=False, metadata={"help": "VLM only: keep the vision tower fixed."})
    """Only for a vision-language policy: no gradient reaches its image encoder (`get_encoder('image')`,
    for Qwen2-VL `model.visual` including the patch merger); the language model still trains."""
    pair_mix_ratio: float = field(default=0.5, metadata={"help": "Fraction of each pair batch drawn from the online source."})
    """With both an online source and an offline pair set, the expected fraction of each pair
    batch taken from the online source; a shortfall there is filled from the offline set."""
    ca_max_prompt_tokens: int | None = field(default=8192, metadata={"help": "Token budget of one selection prompt."})
    """Budget for the selection prompt's user turn; contexts are trimmed around their decisive
    difference to fit. None: no truncation."""
    budget_matched_grpo: bool = field(default=True, metadata={"help": "grpo mode: spend the pair budget on task prompts."})
    """Only for mode `grpo`: raise the per-device batch so the pair budget becomes task completions."""
    da_rl_pair_fraction: float = field(default=0.25, metadata={"help": "da_rl: fraction of prompt groups that are pairs."})
    """Only for mode `da_rl`: expected fraction of each generation batch's prompt groups replaced by selection prompts."""
    sft_lambda: float = field(default=1.0, metadata={"help": "da_sft: weight of the selection cross-entropy."})
    """Only for mode `da_sft`: weight of the cross-entropy on the correct option letter."""
    da_sft_warmup_steps: int = field(default=0, metadata={"help": "da_sft: optimizer steps of SFT only before GRPO starts."})
    """Only for mode `da_sft`: for this many first optimizer steps the GRPO term is weighted 0."""

    def __post_init__(self) -> None:
        self._validate_contextrl_fields()
        super().__post_init__()
        self.pair_budget_extra_completions = 0
        """Completions per device per optimizer step added by `budget_matched_grpo` (0 otherwise)."""
        self.task_batch_size = self.per_device_train_batch_size
        """`per_device_train_batch_size` as given, before `budget_matched_grpo` raised it."""
        if self.mode == "grpo" and self.budget_matched_grpo:
            self._spend_pair_budget_on_prompts(self.ca_pairs_per_step)
        if self.mode == "da_rl" and (self.per_device_train_batch_size * self.steps_per_generation) % self.num_generations:
            raise ConfigError(
                f"ContextRLConfig: mode='da_rl' replaces whole prompt groups, so each device's generation batch "
                f"(per_device_train_batch_size x steps_per_generation = {self.per_device_train_batch_size} x "
                f"{self.steps_per_generation}) must be a multiple of num_generations={self.num_generations}; "
                "change per_device_train_batch_size"
            )

    # ------------------------------------------------------------------ validation

    def _validate_contextrl_fields(self) -> None:
        if self.mode not in MODES:
            close = difflib.get_close_matches(str(self.mode), MODES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"ContextRLConfig.mode={self.mode!r} is not one of {MODES}{hint}")
        _number(self.ca_lambda, "ca_lambda", lo=0.0, fix="use a weight >= 0 (paper: 0.005; 0 disables L_CA)")
        _number(self.ca_clip, "ca_clip", lo=0.0, lo_open=True, fix="use a clip > 0 (default 5.0)")
        _integer(self.ca_pairs_per_step, "ca_pairs_per_step", lo=1, fix="use at least 1 (8 agentic, 32 multimodal)")
        _integer(self.ca_image_pairs_per_step, "ca_image_pairs_per_step", lo=1, fix="use at least 1 (paper: 32)")
        if not isinstance(self.freeze_vision_tower, bool):
            raise ConfigError(f"ContextRLConfig.freeze_vision_tower={self.freeze_vision_tower!r} is invalid: use true or false")
        _number(self.pair_mix_ratio, "pair_mix_ratio", lo=0.0, hi=1.0, fix="use a fraction in [0, 1]")
        if self.ca_max_prompt_tokens is not None:
            _integer(self.ca_max_prompt_tokens, "ca_max_prompt_tokens", lo=32, fix="use at least 32 tokens, or None")
        _number(self.da_rl_pair_fraction, "da_rl_pair_fraction", lo=0.0, hi=1.0, lo_open=True, hi_open=True,
                fix="use a fraction strictly between 0 and 1 (some prompt groups must stay task prompts)")
        _number(self.sft_lambda, "sft_lambda", lo=0.0, fix="use a weight >= 0")
        _integer(self.da_sft_warmup_steps, "da_sft_warmup_steps", lo=0, fix="use 0 or a positive number of optimizer steps")
        if self.da_sft_warmup_steps and self.mode != "da_sft":
            raise ConfigError(f"ContextRLConfig.da_sft_warmup_steps={self.da_sft_warmup_steps} only applies to mode='da_sft' "
                              f"(mode is {self.mode!r}); set it to 0")

    def _spend_pair_budget_on_prompts(self, pairs: int) -> None:
        """Raise the per-device batch by ceil(pairs / accumulation steps), rounded up so every
        device's generation batch still holds whole prompt groups."""
        extra = math.ceil(pairs / self.gradient_accumulation_steps)
        per_device = self.task_batch_size + extra
        while (per_device * self.world_size * self.steps_per_generation) % self.num_generations:
            per_device += 1
        self.pair_budget_extra_completions = (per_device - self.task_batch_size) * self.gradient_accumulation_steps
        self.per_device_train_batch_size = per_device
        self.generation_batch_size = per_device * self.world_size * self.steps_per_generation

    def pairs_per_step(self, multimodal: bool) -> int:
        """The pair-batch size for a text-only (`ca_pairs_per_step`) or a VLM policy (`ca_image_pairs_per_step`)."""
        return self.ca_image_pairs_per_step if multimodal else self.ca_pairs_per_step

    def use_multimodal_pair_budget(self) -> None:
        """Called by the trainer for a VLM policy: `budget_matched_grpo` spends `ca_image_pairs_per_step`."""
        if self.mode == "grpo" and self.budget_matched_grpo:
            self._spend_pair_budget_on_prompts(self.ca_image_pairs_per_step)

    @property
    def uses_pair_batch(self) -> bool:
        """Whether a pair batch is scored per optimizer step (contextrl with lambda > 0, or da_sft)."""
        return (self.mode == "contextrl" and self.ca_lambda > 0) or self.mode == "da_sft"

    @property
    def needs_pairs(self) -> bool:
        """Whether this mode reads pairs at all."""
        return self.uses_pair_batch or self.mode == "da_rl"


def _number(value: object, name: str, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False, fix: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise ConfigError(f"ContextRLConfig.{name}={value!r} is invalid: {fix}")


def _integer(value: object, name: str, *, lo: int, fix: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(f"ContextRLConfig.{name}={value!r} is invalid: {fix}")
