"""Image pairs on a tiny local Qwen2-VL: the selection prompt with two images, the CA margin
read from a forward pass with pixels, ContextRL training (vision tower free or frozen), the
kind rule (image and text samples never share a batch), and `contextrl probe` on image pairs.
The CA margin, `mode=contextrl` training, the frozen vision tower and the probe CLI also run
on a tiny Qwen2.5-VL (its own processor class, windowed vision tower and saved directory)."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from contextrl.errors import ConfigError, ContextRLError
from contextrl.miner.pair import write_pairs
from contextrl.trainer import ContextRLConfig, ContextRLTrainer, StaticPairSource
from contextrl.trainer.loss import OptionTokens, ca_margin
from contextrl.trainer.pairs import encode_selection_batch, selection_logits, selection_row
from contextrl.trainer.probe import FixedOrder, probe, probe_margins
from contextrl.trainer.vlm import load_images, vision_tower
from tiny_models import tiny_model, tiny_pairs, tiny_tokenizer, token_sum_reward
from tiny_vlm import FAMILIES, MODEL_CLASS_NAMES, image_pairs, image_task_dataset, tiny_processor, tiny_vlm

BASE = dict(
    per_device_train_batch_size=2, num_generations=2, max_completion_length=3, max_steps=2, learning_rate=1e-2,
    use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, bf16=False, gradient_checkpointing=False,
    seed=42, disable_tqdm=True, ca_image_pairs_per_step=2,
)


def _config(tmp_path, **kw):
    return ContextRLConfig(output_dir=str(tmp_path / "out"), **{**BASE, **kw})


def _vision_names(model) -> set[str]:
    tower = {id(p) for p in vision_tower(model).parameters()}
    return {n for n, p in model.named_parameters() if id(p) in tower}


def _train(tmp_path, family="qwen2_vl", **kw):
    proc = tiny_processor(family)
    model = tiny_vlm(proc, family=family)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = ContextRLTrainer(model, [token_sum_reward], _config(tmp_path, **kw), image_task_dataset(tmp_path / "tasks", 4),
                               processing_class=proc, pair_source=StaticPairSource(image_pairs(tmp_path / "pairs", 4)))
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    return trainer, set(before), changed


def _logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def test_image_selection_prompt_structure(tmp_path):
    proc, pairs = tiny_processor(), image_pairs(tmp_path, 8)
    tok = proc.tokenizer
    batch = encode_selection_batch(pairs, proc, OptionTokens.from_tokenizer(tok), rng=random.Random(3))
    assert set(batch.positive_options) == {"A", "B"}  # the order is drawn per instance
    start, pad = tok.convert_tokens_to_ids("<|vision_start|>"), tok.convert_tokens_to_ids("<|image_pad|>")
    grid = batch.model_inputs["image_grid_thw"]
    assert grid.shape == (16, 3)  # two images per prompt, in prompt order
    per_image = (grid.prod(-1) // 4).tolist()  # image tokens after the 2x2 merge
    for i, (pair, sp) in enumerate(zip(pairs, batch.prompts)):
        ids = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
        assert ids.count(start) == 2 and ids.count(pad) == per_image[2 * i] + per_image[2 * i + 1]
        text = tok.decode(ids)
        assert text.index(pair.query) < text.index(pair.answer) < text.index("Context A:<|vision_start|>") \
            < text.index("Context B:<|vision_start|>") < text.rindex("Answer with A or B.")
        assert text.endswith("<|im_start|>assistant\n")
        # the recorded letter is the one showing C+, and the pixels follow that order
        shown = [pair.positive.image_path, pair.negative.image_path][:: 1 if sp.positive_option == "A" else -1]
        assert list(sp.images) == shown
        assert (batch.pos_ids[i] == OptionTokens.from_tokenizer(tok).tensor([sp.positive_option])[0]).all()
    first = proc.image_processor(images=load_images([batch.prompts[0].images[0]]), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch.model_inputs["pixel_values"][: first.shape[0]], first)
    # an int seed makes the order a function of (seed, pair id), as for trajectory pairs
    again = encode_selection_batch(pairs, proc, OptionTokens.from_tokenizer(tok), rng=7)
    assert again.positive_options == encode_selection_batch(pairs, proc, OptionTokens.from_tokenizer(tok), rng=7).positive_options


def test_image_and_text_samples_never_share_a_batch(tmp_path):
    proc, tok = tiny_processor(), tiny_tokenizer()
    images, texts = image_pairs(tmp_path, 2), tiny_pairs(2)
    with pytest.raises(ContextRLError, match="never share a batch"):
        StaticPairSource(images + texts)
    with pytest.raises(ContextRLError, match="never share a batch"):
        encode_selection_batch([images[0], texts[0]], proc, OptionTokens.from_tokenizer(proc.tokenizer))
    with pytest.raises(ConfigError, match="processing_class"):  # image pairs with a text-only policy
        encode_selection_batch(images, tok, OptionTokens.from_tokenizer(tok))
    with pytest.raises(ConfigError, match="processing_class"):
        selection_row(images[0], tok, random.Random(0), max_prompt_tokens=None, conversational=True)
    # da_rl: image pairs into text task prompts (and the reverse) fail with a clear error
    cfg = _config(tmp_path, mode="da_rl", da_rl_pair_fraction=0.5, gradient_accumulation_steps=2)
    text_rows = [{"prompt": [{"role": "user", "content": "Name a colour."}]}] * 4
    trainer = ContextRLTrainer(tiny_model(tok), [token_sum_reward], cfg, image_task_dataset(tmp_path / "t", 2),
                               processing_class=tok, pair_source=images)
    trainer._pair_rng = random.Random(0)
    with pytest.raises(ContextRLError, match="image pairs into a generation batch of text-only"):
        trainer._mix_selection_prompts(text_rows)
    trainer = ContextRLTrainer(tiny_vlm(proc), [token_sum_reward], cfg, image_task_dataset(tmp_path / "t", 2),
                               processing_class=proc, pair_source=texts)
    image_rows = [dict(r) for r in image_task_dataset(tmp_path / "t", 4)]
    with pytest.raises(ContextRLError, match="text pairs into a generation batch of image"):
        trainer._mix_selection_prompts(image_rows)
    # image pairs into image task rows: whole groups replaced, every row in TRL's `images` form
    trainer.pair_source = StaticPairSource(images)
    mixed = trainer._mix_selection_prompts(image_rows)
    picked = [r for r in mixed if r["ca_positive_option"] is not None]
    assert len(mixed) == 4 and len(picked) == 2 and all("image" not in r and r["images"] for r in mixed)
    assert all(len(r["images"]) == 2 and sum(p.get("type") == "image" for p in r["prompt"][0]["content"]) == 2
               for r in picked)


@pytest.mark.parametrize("family", FAMILIES)
def test_ca_margin_on_image_pairs_matches_a_hand_computation(tmp_path, family):
    proc = tiny_processor(family)
    model = tiny_vlm(proc, seed=1, family=family).eval()
    pairs = image_pairs(tmp_path, 3)
    pairs[1] = dataclasses.replace(pairs[1], query=pairs[1].query + " Look closely at the picture.")
    opt = OptionTokens.from_tokenizer(proc.tokenizer)
    batch = encode_selection_batch(pairs, proc, opt, rng=random.Random(0))
    assert (batch.attention_mask == 0).any()  # prompts of different lengths: left padding is exercised
    with torch.no_grad():
        margin = ca_margin(selection_logits(model, batch), batch.pos_ids, batch.neg_ids)
    for i, (pair, sp) in enumerate(zip(pairs, batch.prompts)):
        # one prompt alone, no padding: processor -> full forward -> last position, max over each letter's tokens
        text = proc.apply_chat_template([{"role": "user", "content": [
            {"type": "image"} if part["type"] == "image" else part for part in sp.messages[0]["content"]]}],
            add_generation_prompt=True, tokenize=False)
        enc = proc(images=[load_images(sp.images)], text=[text], return_tensors="pt")
        with torch.no_grad():
            last = model(**enc).logits[0, -1]
        pos, neg = sp.positive_option, sp.negative_option
        want = max(last[t].item() for t in opt.ids[pos]) - max(last[t].item() for t in opt.ids[neg])
        assert margin[i].item() == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize(("mode", "family"), [("contextrl", "qwen2_vl"), ("grpo", "qwen2_vl"), ("da_rl", "qwen2_vl"),
                                             ("contextrl", "qwen2_5_vl")])
def test_a_tiny_vlm_trains_and_moves_every_parameter(tmp_path, mode, family):
    """GRPO's task rows are VLM prompts (grpo alone moves the vision tower), the image pair batch
    adds L_CA (contextrl, on both families), and image pairs become RL prompts with two pictures (da_rl)."""
    extra = {"contextrl": dict(ca_lambda=1.0), "grpo": dict(budget_matched_grpo=False),
             "da_rl": dict(da_rl_pair_fraction=0.5, gradient_accumulation_steps=2)}[mode]
    trainer, names, changed = _train(tmp_path, family, mode=mode, **extra)
    assert trainer.state.global_step == 2
    assert names - changed == set()
    if mode == "contextrl":
        assert trainer.pairs_per_step == 2
        assert _logged(trainer, "ca/num_pairs") == [2.0, 2.0] and _logged(trainer, "ca/skipped") == [0.0, 0.0]
        assert len(_logged(trainer, "ca/loss")) == 2
    else:
        assert _logged(trainer, "ca/loss") == []
    if mode == "da_rl":
        assert _logged(trainer, "da_rl/pair_groups") == [1.0, 1.0]
        assert len(_logged(trainer, "rewards/selection_reward/mean")) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_vision_tower_stays_fixed_and_the_rest_trains(tmp_path, family):
    trainer, names, changed = _train(tmp_path, family, mode="contextrl", ca_lambda=1.0, freeze_vision_tower=True)
    tower = _vision_names(trainer.model)
    assert tower and tower < names and any(n.startswith("model.visual.merger") or ".merger." in n for n in tower)
    assert changed & tower == set()
    assert names - tower - changed == set()
    with pytest.raises(ConfigError, match="freeze_vision_tower"):
        tok = tiny_tokenizer()
        ContextRLTrainer(tiny_model(tok), [token_sum_reward], _config(tmp_path, freeze_vision_tower=True),
                         image_task_dataset(tmp_path / "t", 2), processing_class=tok, pair_source=tiny_pairs(2))


def test_pair_batch_size_for_vlms_and_budget_matched_grpo(tmp_path):
    cfg = ContextRLConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=2,
                          num_generations=2, mode="grpo", ca_pairs_per_step=2)
    assert cfg.per_device_train_batch_size == 4 and cfg.pairs_per_step(multimodal=True) == 32
    cfg.use_multimodal_pair_budget()  # what the trainer does for a VLM policy
    assert cfg.per_device_train_batch_size == 2 + 32 and cfg.pair_budget_extra_completions == 32
    with pytest.raises(ConfigError, match="ca_image_pairs_per_step"):
        ContextRLConfig(output_dir=str(tmp_path), ca_image_pairs_per_step=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_probe_on_image_pairs(tmp_path, capsys, family):
    from contextrl.cli import main
    from contextrl.trainer.probe import load_policy

    proc = tiny_processor(family)
    tiny_vlm(proc, seed=2, family=family).save_pretrained(tmp_path / "vlm")
    proc.save_pretrained(tmp_path / "vlm")
    pairs = image_pairs(tmp_path / "img", 3)
    write_pairs(tmp_path / "pairs.jsonl", pairs)
    args = ["probe", "--model", str(tmp_path / "vlm"), "--pairs", str(tmp_path / "pairs.jsonl"), "--quiet"]
    assert main(args + ["--out", "json", "--batch-size", "2"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["n_pairs"] == 3 and d["n_evals"] == 6 and 0.0 <= d["position_consistency"] <= 1.0
    model, loaded = load_policy(str(tmp_path / "vlm"))
    assert type(model).__name__ == MODEL_CLASS_NAMES[family] and hasattr(loaded, "image_processor")
    margins = probe_margins(model, loaded, pairs, batch_size=3)
    opt = OptionTokens.from_tokenizer(loaded.tokenizer)
    for letter, col in (("A", 0), ("B", 1)):  # both orders, scored exactly like the CA loss
        batch = encode_selection_batch(pairs, loaded, opt, rng=FixedOrder(letter))
        assert batch.positive_options == [letter] * 3
        with torch.no_grad():
            want = ca_margin(selection_logits(model, batch), batch.pos_ids, batch.neg_ids)
        torch.testing.assert_close(torch.tensor([m[col] for m in margins]), want, rtol=1e-4, atol=1e-4)
    res = probe(model, loaded, pairs, batch_size=2)
    assert d["accuracy"] == round(res.accuracy, 6) and d["mean_margin"] == round(res.mean_margin, 6)
