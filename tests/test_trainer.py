"""ContextRLTrainer on a tiny local Qwen2 (TRL-style: a few real optimizer steps on CPU).

Every mode trains and moves every parameter; the pair term's update is exactly
lambda x grad mean(L_CA) of one pair batch per optimizer step whatever the accumulation;
lambda = 0 is bit-for-bit GRPOTrainer; bad configs fail before a model loads.
"""

from __future__ import annotations

import copy

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

import contextrl.trainer.trainer as trainer_module
from contextrl.errors import ConfigError
from contextrl.trainer import CallablePairSource, ContextRLConfig, ContextRLTrainer, StaticPairSource
from contextrl.trainer.loss import ca_loss, ca_margin
from contextrl.trainer.pairs import selection_logits
from tiny_models import constant_reward, task_dataset, tiny_model, tiny_pairs, tiny_tokenizer, token_sum_reward

BASE = dict(
    per_device_train_batch_size=2, num_generations=2, max_completion_length=4, max_steps=2, learning_rate=1e-2,
    use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, bf16=False, gradient_checkpointing=False,
    seed=42, disable_tqdm=True,
)
CA = dict(ca_pairs_per_step=2, ca_max_prompt_tokens=None)


def _config(tmp_path, cls=ContextRLConfig, **kw):
    return cls(output_dir=str(tmp_path), **{**BASE, **(CA if cls is ContextRLConfig else {}), **kw})


def _train(tmp_path, reward=token_sum_reward, pairs=True, **kw):
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    source = StaticPairSource(tiny_pairs(4), seed=0) if pairs is True else pairs
    trainer = ContextRLTrainer(model, [reward], _config(tmp_path, **kw), task_dataset(8), processing_class=tok,
                               pair_source=source)
    trainer.train()
    return trainer, before


def _logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def _unchanged(trainer, before):
    return [n for n, p in trainer.model.named_parameters() if torch.equal(p.detach(), before[n])]


@pytest.mark.parametrize("mode", ["contextrl", "grpo", "da_rl", "da_sft"])
def test_every_mode_trains_and_moves_every_parameter(tmp_path, mode):
    extra = {"gradient_accumulation_steps": 2, "da_rl_pair_fraction": 0.5} if mode == "da_rl" else {}
    if mode == "contextrl":
        extra = {"gradient_checkpointing": True}  # GRPOConfig's default: the pair forward runs under it too
    trainer, before = _train(tmp_path, mode=mode, **extra)
    assert trainer.state.global_step == 2
    assert _unchanged(trainer, before) == []
    if mode in ("contextrl", "da_sft"):
        for key in ("ca/loss", "ca/accuracy", "ca/margin", "ca/clip_frac"):
            assert len(_logged(trainer, key)) == 2, key
        assert _logged(trainer, "ca/skipped") == [0.0, 0.0]
        assert _logged(trainer, "ca/num_pairs") == [2.0, 2.0]
        if mode == "da_sft":
            assert all(v > 0 for v in _logged(trainer, "ca/sft_loss"))
    else:
        assert _logged(trainer, "ca/loss") == []
    if mode == "da_rl":
        assert _logged(trainer, "da_rl/pair_groups") == [1.0, 1.0]  # 2 groups per generation batch, fraction 0.5
        assert len(_logged(trainer, "rewards/selection_reward/mean")) == 2
    if mode == "grpo":  # the pair budget went to task prompts: 2 pairs -> 2 more completions per step
        assert trainer.args.per_device_train_batch_size == 4 and trainer.args.pair_budget_extra_completions == 2


def test_with_zero_advantages_only_the_pair_term_moves_the_policy(tmp_path):
    """A constant reward zeroes GRPO's gradient; every parameter still moves under L_CA (lambda
    large enough to see it), and none moves under plain GRPO."""
    trainer, before = _train(tmp_path / "ca", reward=constant_reward, mode="contextrl", ca_lambda=1.0)
    assert _unchanged(trainer, before) == []
    trainer, before = _train(tmp_path / "grpo", reward=constant_reward, mode="grpo", budget_matched_grpo=False)
    assert len(_unchanged(trainer, before)) == len(before)


@pytest.mark.parametrize("accumulation", [1, 3])
def test_pair_term_update_is_exactly_lambda_grad_of_one_batch(tmp_path, monkeypatch, accumulation):
    """SGD, one optimizer step, constant reward (GRPO gradient 0): the update must equal
    -lr * lambda * grad mean L_CA on the one recorded pair batch, for any accumulation."""
    batches = []
    real = trainer_module.encode_selection_batch
    monkeypatch.setattr(trainer_module, "encode_selection_batch", lambda *a, **k: batches.append(real(*a, **k)) or batches[-1])
    tok = tiny_tokenizer()
    model = tiny_model(tok)
    reference = copy.deepcopy(model)
    lr, lam = 0.5, 0.3
    cfg = _config(tmp_path, mode="contextrl", ca_lambda=lam, learning_rate=lr, optim="sgd", max_grad_norm=0.0,
                  lr_scheduler_type="constant", max_steps=1, gradient_accumulation_steps=accumulation)
    trainer = ContextRLTrainer(model, [constant_reward], cfg, task_dataset(8), processing_class=tok,
                               pair_source=StaticPairSource(tiny_pairs(4), seed=0))
    trainer.train()
    assert len(batches) == 1  # one pair batch per optimizer step, not per micro-step

    reference.train()
    loss = lam * ca_loss(ca_margin(selection_logits(reference, batches[0]), batches[0].pos_ids, batches[0].neg_ids), 5.0).loss
    loss.backward()
    assert _logged(trainer, "ca/loss")[0] == pytest.approx(loss.item() / lam, rel=1e-5)
    updated = dict(trainer.model.named_parameters())
    for name, p in reference.named_parameters():
        assert torch.allclose(updated[name].detach(), p.detach() - lr * p.grad, atol=1e-6, rtol=1e-5), name


def test_pair_batches_follow_optimizer_steps_under_accumulation(tmp_path, monkeypatch):
    calls = []
    real = trainer_module.encode_selection_batch
    monkeypatch.setattr(trainer_module, "encode_selection_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainer, _ = _train(tmp_path, mode="contextrl", gradient_accumulation_steps=3, max_steps=2)
    assert trainer.state.global_step == 2 and len(calls) == 2
    assert len(_logged(trainer, "ca/loss")) == 2


@pytest.mark.parametrize("kw", [dict(mode="contextrl", ca_lambda=0.0), dict(mode="grpo", budget_matched_grpo=False)])
def test_lambda_zero_is_exactly_grpo(tmp_path, kw):
    tok = tiny_tokenizer()
    grpo = GRPOTrainer(tiny_model(tok), [token_sum_reward], _config(tmp_path / "g", cls=GRPOConfig, max_steps=3),
                       task_dataset(8), processing_class=tok)
    grpo.train()
    ours = ContextRLTrainer(tiny_model(tok), [token_sum_reward], _config(tmp_path / "c", max_steps=3, **kw),
                            task_dataset(8), processing_class=tiny_tokenizer(), pair_source=StaticPairSource(tiny_pairs(4)))
    ours.train()
    assert _logged(ours, "loss") == _logged(grpo, "loss") and len(_logged(grpo, "loss")) == 3
    assert _logged(ours, "reward") == _logged(grpo, "reward")
    theirs = dict(grpo.model.named_parameters())
    for name, p in ours.model.named_parameters():
        assert torch.equal(p, theirs[name]), name
    assert _logged(ours, "ca/loss") == []


def test_da_sft_warmup_switches_the_grpo_term_off(tmp_path):
    """With the SFT weight at 0 and every step inside the warm-up, nothing may move."""
    trainer, before = _train(tmp_path, mode="da_sft", sft_lambda=0.0, da_sft_warmup_steps=2)
    assert len(_unchanged(trainer, before)) == len(before)
    assert len(_logged(trainer, "ca/sft_loss")) == 2


def test_no_pairs_available_runs_plain_grpo_and_says_so(tmp_path):
    trainer, before = _train(tmp_path, pairs=CallablePairSource(lambda n: []), mode="contextrl")
    assert _logged(trainer, "ca/skipped") == [1.0, 1.0]
    assert _logged(trainer, "ca/loss") == []
    assert _unchanged(trainer, before) == []  # GRPO still trained


@pytest.mark.parametrize("kw, field", [
    (dict(mode="contextr"), "mode"),
    (dict(ca_lambda=-1), "ca_lambda"),
    (dict(ca_lambda=float("nan")), "ca_lambda"),
    (dict(ca_clip=0.0), "ca_clip"),
    (dict(ca_pairs_per_step=0), "ca_pairs_per_step"),
    (dict(pair_mix_ratio=1.5), "pair_mix_ratio"),
    (dict(ca_max_prompt_tokens=4), "ca_max_prompt_tokens"),
    (dict(da_rl_pair_fraction=1.0), "da_rl_pair_fraction"),
    (dict(da_sft_warmup_steps=3), "da_sft_warmup_steps"),
])
def test_bad_config_fails_fast_naming_the_field(tmp_path, kw, field):
    with pytest.raises(ConfigError, match=field) as err:
        _config(tmp_path, **kw)
    if field == "mode":
        assert "did you mean 'contextrl'" in str(err.value)


def test_trainer_refuses_missing_pairs_and_foreign_configs(tmp_path):
    with pytest.raises(ConfigError, match="needs pairs"):
        ContextRLTrainer(None, [token_sum_reward], _config(tmp_path, mode="contextrl"), task_dataset(2))
    with pytest.raises(ConfigError, match="ContextRLConfig"):
        ContextRLTrainer(None, [token_sum_reward], _config(tmp_path, cls=GRPOConfig), task_dataset(2))
    with pytest.raises(ConfigError, match="callable reward"):
        ContextRLTrainer(None, [torch.nn.Linear(1, 1)], _config(tmp_path, mode="da_rl"), task_dataset(2),
                         pair_source=tiny_pairs(2))


def test_budget_matched_grpo_rounds_up_to_whole_groups(tmp_path):
    cfg = _config(tmp_path, mode="grpo", ca_pairs_per_step=3)
    assert cfg.per_device_train_batch_size == 6 and cfg.generation_batch_size == 6  # 2 + 3 -> 5 -> 6 (groups of 2)
    cfg = _config(tmp_path, mode="grpo", ca_pairs_per_step=8, gradient_accumulation_steps=4)
    assert cfg.per_device_train_batch_size == 4 and cfg.pair_budget_extra_completions == 8
    assert _config(tmp_path, mode="contextrl").per_device_train_batch_size == 2
