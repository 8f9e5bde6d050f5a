"""`ContextRLTrainer`: TRL's `GRPOTrainer` plus one pair batch per optimizer step.

A thin subclass: the GRPO loss is `super().compute_loss(...)`, unchanged. What it
deliberately does differently from stock GRPO:

- **The L_CA term** (mode `contextrl`). On the *first micro-step of each optimizer step*
  (detected by `state.global_step` changing, so a short last accumulation window is
  handled too) it draws one pair batch (`ca_pairs_per_step`), runs a prompt-only forward
  pass, and adds `ca_lambda * mean(L_CA)` to the loss that micro-step returns. The other
  micro-steps return GRPO's loss untouched.
- **Why `compute_loss`, and why the sum is exact.** `GRPOTrainer` declares
  `loss_is_scaled_for_ga = True`: the value `compute_loss` returns is already scaled for
  gradient accumulation and `Trainer.training_step` backpropagates it as is (accelerate runs
  with one accumulation step). An unscaled term added on exactly one micro-step therefore
  contributes exactly `ca_lambda * grad mean(L_CA)` of one pair batch per optimizer step,
  whatever `gradient_accumulation_steps` is, and GRPO's own normalisation is never touched.
  One backward covers both terms (no second backward, which DDP would reject on the
  synchronising micro-step). The constructor checks the contract; a test checks the update
  against a hand-computed gradient for 1 and 3 accumulation steps.
- **No pairs, no term.** When the source has nothing, the step is plain GRPO and
  `ca/skipped` says so. With `ca_lambda = 0` no pair is drawn and no forward pass runs: the
  run is bit-for-bit GRPO on the same seed.
- **Baselines.** `grpo` (config raises the task batch, see `ContextRLConfig`), `da_sft`
  (cross-entropy on the correct letter in place of L_CA, same hook), `da_rl` (a fraction of
  the prompt groups in each generation batch is replaced by selection prompts before
  generation; a `selection_reward` 0/1 reward is appended and the task's reward functions
  are wrapped so they never see those rows).

Metrics (through GRPO's `self._metrics`, averaged per logging step): `ca/loss`,
`ca/accuracy`, `ca/margin`, `ca/clip_frac`, `ca/skipped`, `ca/num_pairs`, plus
`ca/sft_loss` in `da_sft` and `da_rl/pair_groups` in `da_rl`. In `da_sft`, `ca/loss` is
L_CA of the batch as a probe, not the optimised term. The logged `loss` includes the term.

Pair batches are per device (each rank draws its own; DDP averages the gradients).

Vision-language policies (`processing_class` a processor, e.g. Qwen2-VL's): the task rows are
TRL's VLM prompts (an `image`/`images` column), and image pairs are scored by the same
prompt-only forward pass with the processor's pixel tensors (`contextrl.trainer.vlm`). The pair
batch then holds `ca_image_pairs_per_step` pairs; `freeze_vision_tower` freezes the image encoder
before the optimizer is built. A pair batch, and in `da_rl` a generation batch, is never a mix
of image and text-only samples: image pairs go with image tasks, trajectory pairs with text tasks.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import nn
from trl import GRPOTrainer
from trl.data_utils import is_conversational

from contextrl.errors import ConfigError, ContextRLError
from contextrl.trainer.config import ContextRLConfig
from contextrl.trainer.loss import OptionTokens, ca_loss, ca_margin, selection_ce
from contextrl.trainer.pairs import (
    POSITIVE_OPTION_KEY,
    MixedPairSource,
    PairSource,
    as_pair_source,
    check_single_kind,
    encode_selection_batch,
    selection_logits,
    selection_reward,
    selection_row,
    task_rows_only,
)
from contextrl.trainer.vlm import as_images_column, freeze_vision_tower, is_vlm_processor, row_has_images


class ContextRLTrainer(GRPOTrainer):
    """GRPO with the context-awareness loss (or one of the paper's baselines, per `args.mode`).

    `pair_source`: the online source (e.g. a `PairBuffer`), anything `as_pair_source` takes.
    `offline_pairs`: a fixed pair set (list or JSONL path). Given both, each pair batch mixes
    them at `args.pair_mix_ratio` (online share). Other arguments are `GRPOTrainer`'s.
    """

    _tag_names = ["trl", "grpo", "contextrl"]
    _name = "ContextRL"

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: ContextRLConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        pair_source: Any = None,
        offline_pairs: Any = None,
        **kwargs: Any,
    ):
        if args is None:
            args = ContextRLConfig(output_dir="contextrl-output")
        if not isinstance(args, ContextRLConfig):
            raise ConfigError(f"ContextRLTrainer needs args=ContextRLConfig(...), got {type(args).__name__}; build a "
                              "ContextRLConfig with the same fields (mode='grpo' for plain GRPO)")
        self.pair_source: PairSource | None = _combine_sources(pair_source, offline_pairs, args)
        if self.pair_source is None and args.needs_pairs:
            raise ConfigError(f"ContextRLConfig.mode={args.mode!r} needs pairs: pass pair_source= (online) and/or "
                              "offline_pairs= (list or JSONL path), or use mode='grpo'")
        if args.mode == "da_rl":
            reward_funcs = _da_rl_rewards(reward_funcs, args)
        multimodal = is_vlm_processor(processing_class)
        if args.freeze_vision_tower and not multimodal:
            raise ConfigError("ContextRLConfig.freeze_vision_tower=True needs a vision-language policy with its processor "
                              "as processing_class; set it to false for a text-only policy")
        if multimodal:
            args.use_multimodal_pair_budget()
        super().__init__(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, **kwargs)
        if not getattr(self, "loss_is_scaled_for_ga", False):
            raise ContextRLError("GRPOTrainer no longer declares loss_is_scaled_for_ga=True; the L_CA term's "
                                 "accumulation scaling in ContextRLTrainer.compute_loss must be revisited")
        if args.freeze_vision_tower:
            freeze_vision_tower(self.model)  # before train() builds the optimizer, which skips frozen parameters
        self.pairs_per_step = args.pairs_per_step(multimodal)
        """Pairs drawn per optimizer step: `ca_image_pairs_per_step` for a VLM, else `ca_pairs_per_step`."""
        self.option_tokens: OptionTokens | None = OptionTokens.from_tokenizer(self._tokenizer) if args.uses_pair_batch else None
        self._pair_rng = random.Random(f"contextrl:{args.seed}:{self.accelerator.process_index}")
        self._pair_term_step = -1  # global_step whose pair batch has been scored

    # ------------------------------------------------------------------ the L_CA / SFT term

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """GRPO's loss (from `super()`), plus the pair term on the first micro-step of each
        optimizer step (see the module docstring for why this keeps accumulation exact)."""
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        args: ContextRLConfig = self.args
        if not (self.model.training and args.uses_pair_batch):
            return loss
        if args.mode == "da_sft" and self.state.global_step < args.da_sft_warmup_steps:
            loss = loss * 0.0  # SFT-first warm-up: the GRPO term is switched off, its graph kept
        if self._pair_term_step == self.state.global_step:
            return loss
        self._pair_term_step = self.state.global_step
        term = self._pair_term(model)
        return loss if term is None else loss + term

    def _pair_term(self, model: nn.Module) -> torch.Tensor | None:
        """Draw one pair batch, score it, log the metrics; the weighted term, or None when no
        pairs were available."""
        args: ContextRLConfig = self.args
        device = self.accelerator.device
        pairs = list(self.pair_source.sample(self.pairs_per_step)) if self.pair_source is not None else []
        # [L_CA sum, correct, margin sum, clipped, CE sum, pairs, ranks with pairs]: reduced on every rank, every time
        stats = torch.zeros(7, device=device)
        term = None
        if pairs:
            batch = encode_selection_batch(
                pairs, self.processing_class, self.option_tokens, rng=self._pair_rng,
                max_prompt_tokens=args.ca_max_prompt_tokens, chat_template_kwargs=self.chat_template_kwargs, device=device,
            )
            logits = selection_logits(model, batch)
            margin = ca_margin(logits, batch.pos_ids, batch.neg_ids)
            out = ca_loss(margin, args.ca_clip)
            n = float(len(pairs))
            ce = torch.zeros((), device=device)
            if args.mode == "contextrl":
                term = args.ca_lambda * out.loss
            else:  # da_sft
                ce = selection_ce(logits, batch.pos_ids)
                term = args.sft_lambda * ce
            stats = torch.stack([
                out.per_instance.detach().sum(), out.accuracy * n, out.margin * n, out.clip_frac * n,
                ce.detach() * n, torch.tensor(n, device=device), torch.tensor(1.0, device=device),
            ]).float()
        self._log_pair_stats(self.accelerator.reduce(stats, reduction="sum"))
        return term

    def _log_pair_stats(self, totals: torch.Tensor) -> None:
        metrics = self._metrics["train"]
        world = self.accelerator.num_processes
        metrics["ca/skipped"].append(1.0 - totals[6].item() / world)
        metrics["ca/num_pairs"].append(totals[5].item() / world)
        count = totals[5].item()
        if count <= 0:
            return
        metrics["ca/loss"].append(totals[0].item() / count)
        metrics["ca/accuracy"].append(totals[1].item() / count)
        metrics["ca/margin"].append(totals[2].item() / count)
        metrics["ca/clip_frac"].append(totals[3].item() / count)
        if self.args.mode == "da_sft":
            metrics["ca/sft_loss"].append(totals[4].item() / count)

    # ------------------------------------------------------------------ da_rl: pairs as RL prompts

    def _generate_and_score_completions(self, inputs):
        """In `da_rl`, swap some prompt groups for selection prompts, then generate as GRPO does."""
        if self.args.mode == "da_rl" and self.model.training:
            inputs = self._mix_selection_prompts(inputs)
        return super()._generate_and_score_completions(inputs)

    def _mix_selection_prompts(self, rows: list[dict]) -> list[dict]:
        """Replace about `da_rl_pair_fraction` of the prompt groups (stochastic rounding) by
        selection prompts. Groups are whole: the config guarantees each device's generation
        batch holds whole groups of `num_generations` consecutive rows."""
        args: ContextRLConfig = self.args
        g = self.num_generations
        n_groups = len(rows) // g
        k = min(n_groups, math.floor(args.da_rl_pair_fraction * n_groups + self._pair_rng.random()))
        pairs = list(self.pair_source.sample(k)) if k else []
        metrics = self._metrics["train"]
        metrics["da_rl/pair_groups"].append(float(len(pairs)))
        if k:
            metrics["ca/skipped"].append(0.0 if pairs else 1.0)
        if not pairs:
            return rows
        kind = check_single_kind(pairs, what="da_rl pair draw")
        if any(row_has_images(r) for r in rows) != (kind == "image"):
            mixed = "image pairs into a generation batch of text-only" if kind == "image" else \
                "text pairs into a generation batch of image"
            raise ContextRLError(f"da_rl would mix {mixed} prompts; use image pairs with image tasks and trajectory "
                                 "pairs with text tasks")
        if kind == "image":  # selection rows carry two pictures, so every row uses TRL's `images` column
            rows = [as_images_column(r) for r in rows]
        conversational = is_conversational({"prompt": rows[0]["prompt"]})
        keys = {key for r in rows for key in r}
        out = [{**dict.fromkeys(keys), **r, POSITIVE_OPTION_KEY: None} for r in rows]
        for group, pair in zip(self._pair_rng.sample(range(n_groups), len(pairs)), pairs):
            row = selection_row(pair, self.processing_class, self._pair_rng, max_prompt_tokens=args.ca_max_prompt_tokens,
                                conversational=conversational, chat_template_kwargs=self.chat_template_kwargs)
            for i in range(group * g, (group + 1) * g):
                out[i] = {**dict.fromkeys(keys), **row}
        return out


def _combine_sources(online: Any, offline: Any, args: ContextRLConfig) -> PairSource | None:
    """One source from the online source and/or the offline set (mixed at `pair_mix_ratio`)."""
    on = as_pair_source(online, seed=args.seed) if online is not None else None
    off = as_pair_source(offline, seed=args.seed) if offline is not None else None
    if on is not None and off is not None:
        return MixedPairSource(on, off, args.pair_mix_ratio, seed=args.seed)
    return on if on is not None else off


def _da_rl_rewards(reward_funcs: Any, args: ContextRLConfig) -> list:
    """Task rewards wrapped to skip selection rows, plus the 0/1 selection reward."""
    funcs = [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    for f in funcs:
        if isinstance(f, (str, nn.Module)):
            raise ConfigError("mode='da_rl' needs callable reward functions (reward models would also score the "
                              f"selection prompts); got {type(f).__name__}")
    if args.reward_weights is not None and len(args.reward_weights) == len(funcs):
        args.reward_weights = [*args.reward_weights, 1.0]  # the selection reward's weight
    return [task_rows_only(f) for f in funcs] + [selection_reward]
