"""L_CA on fixed logits (hand-computed, clipping included), option tokens, pair sources and
the encoding of pair batches for the prompt-only forward pass."""

from __future__ import annotations

import math
import random

import pytest
import torch

from contextrl.errors import ContextRLError
from contextrl.miner.pair import Context, ContrastivePair
from contextrl.trainer.loss import OptionTokens, ca_loss, ca_margin, selection_ce
from contextrl.trainer.pairs import (
    POSITIVE_OPTION_KEY,
    CallablePairSource,
    MixedPairSource,
    StaticPairSource,
    as_pair_source,
    encode_selection_batch,
    parse_option,
    selection_logits,
    selection_reward,
    task_rows_only,
)
from tiny_models import tiny_model, tiny_pairs, tiny_tokenizer

# vocab of 6; option A has two tokenizations (ids 1, 2), option B one (id 3)
A_IDS, B_IDS = [1, 2], [3, -1]
LOGITS = torch.tensor([
    [0.0, 2.0, 0.5, -1.0, 0.0, 0.0],   # positive A: max(2.0, 0.5) - (-1.0) = 3.0
    [0.0, -4.5, -5.0, 4.0, 0.0, 0.0],  # positive B: 4.0 - (-4.5) = 8.5   -> clipped at +5
    [0.0, 0.0, -7.0, 7.0, 0.0, 0.0],   # positive A: 0.0 - 7.0 = -7.0     -> clipped at -5
    [0.0, -3.0, 1.0, 2.0, 9.0, 0.0],   # positive A: 1.0 - 2.0 = -1.0 (id 4 is no option and is ignored)
])
POS = torch.tensor([A_IDS, B_IDS, A_IDS, A_IDS])
NEG = torch.tensor([B_IDS, A_IDS, B_IDS, B_IDS])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_margin_and_loss_match_hand_computed_values():
    logits = LOGITS.clone().requires_grad_(True)
    margin = ca_margin(logits, POS, NEG)
    assert margin.tolist() == [3.0, 8.5, -7.0, -1.0]
    out = ca_loss(margin, clip=5.0)
    # -log sigmoid(x) = log(1 + e^-x), on the clipped margins 3, 5, -5, -1
    expected = [softplus(-3.0), softplus(-5.0), softplus(5.0), softplus(1.0)]
    assert out.per_instance.tolist() == pytest.approx(expected, abs=1e-6)
    assert out.loss.item() == pytest.approx(sum(expected) / 4, abs=1e-6)
    assert out.accuracy.item() == 0.5
    assert out.margin.item() == pytest.approx((3.0 + 8.5 - 7.0 - 1.0) / 4)
    assert out.clip_frac.item() == 0.5

    out.loss.backward()
    g = logits.grad
    # beyond the clip the gradient is exactly zero
    assert torch.equal(g[1], torch.zeros(6)) and torch.equal(g[2], torch.zeros(6))
    # inside: dL/dmargin = -sigmoid(-margin) / N, on the arg-max candidate of each option only
    s0, s3 = 1 / (1 + math.exp(3.0)), 1 / (1 + math.exp(-1.0))  # sigmoid(-3), sigmoid(1)
    assert g[0].tolist() == pytest.approx([0, -s0 / 4, 0, s0 / 4, 0, 0], abs=1e-7)
    assert g[3].tolist() == pytest.approx([0, 0, -s3 / 4, s3 / 4, 0, 0], abs=1e-7)


def test_clip_boundary_counts_as_clipped_and_large_margins_stay_finite():
    out = ca_loss(torch.tensor([5.0, -5.0, 4.999, 1e4, -1e4]), clip=5.0)
    assert out.clip_frac.item() == pytest.approx(4 / 5)
    assert torch.isfinite(out.per_instance).all()
    assert out.per_instance[4].item() == pytest.approx(softplus(5.0), abs=1e-5)
    with pytest.raises(ValueError):
        ca_loss(torch.zeros(2), clip=0.0)


def test_shared_candidate_ids_and_selection_ce():
    margin = ca_margin(LOGITS[:1], torch.tensor([1, 2]), torch.tensor([3]))
    assert margin.tolist() == [3.0]
    # -log(p(1) + p(2)) over the whole vocabulary, padding (-1) adding nothing
    row = LOGITS[0]
    expected = torch.logsumexp(row, 0) - torch.logsumexp(row[[1, 2]], 0)
    assert selection_ce(LOGITS[:1], torch.tensor([A_IDS])).item() == pytest.approx(expected.item(), abs=1e-6)
    assert selection_ce(LOGITS[1:2], torch.tensor([B_IDS])).item() == pytest.approx(
        (torch.logsumexp(LOGITS[1], 0) - LOGITS[1, 3]).item(), abs=1e-6)


def test_option_tokens_cover_both_tokenizations():
    tok = tiny_tokenizer()
    ot = OptionTokens.from_tokenizer(tok)
    for letter in "AB":
        assert ot.ids[letter], letter
        assert all(tok.decode([t]).strip() == letter for t in ot.ids[letter])
        for text in (letter, " " + letter):  # both tokenizations are candidates
            assert tok(text, add_special_tokens=False)["input_ids"][-1] in ot.ids[letter]
    assert not set(ot.ids["A"]) & set(ot.ids["B"])
    t = ot.tensor(["A", "B", "A"])
    assert t.shape == (3, ot.width) and t[0].tolist()[: len(ot.ids["A"])] == list(ot.ids["A"])


def test_encode_selection_batch_left_pads_and_records_the_positive_option():
    tok = tiny_tokenizer()
    ot = OptionTokens.from_tokenizer(tok)
    pairs = tiny_pairs(6)
    batch = encode_selection_batch(pairs, tok, ot, rng=random.Random(1))
    gen_prompt = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    letters = set()
    for i, (pair, sp) in enumerate(zip(pairs, batch.prompts)):
        n = int(batch.attention_mask[i].sum())
        row = batch.input_ids[i]
        assert (row[: row.numel() - n] == tok.pad_token_id).all()  # left padding
        assert row[-len(gen_prompt):].tolist() == gen_prompt  # the answer position is the last one
        assert batch.position_ids[i, -1].item() == n - 1
        # the recorded letter shows C+
        shown = sp.text.split(f"Context {sp.positive_option}:\n")[1]
        assert shown.startswith(pair.positive.text.rstrip("\n"))
        assert batch.pos_ids[i].tolist() == ot.tensor([sp.positive_option])[0].tolist()
        assert batch.neg_ids[i].tolist() == ot.tensor([sp.negative_option])[0].tolist()
        letters.add(sp.positive_option)
    assert letters == {"A", "B"}  # the order is randomised per instance


def test_selection_logits_read_the_last_position_regardless_of_padding():
    tok = tiny_tokenizer()
    ot = OptionTokens.from_tokenizer(tok)
    model = tiny_model(tok).eval()
    pairs = tiny_pairs(3)
    batch = encode_selection_batch(pairs, tok, ot, rng=3)
    with torch.no_grad():
        got = selection_logits(model, batch)
        for i in range(3):
            ids = batch.input_ids[i][batch.attention_mask[i].bool()].unsqueeze(0)
            alone = model(input_ids=ids).logits[0, -1].float()
            assert torch.allclose(got[i], alone, atol=1e-5)


def _image_pair() -> ContrastivePair:
    return ContrastivePair(kind="image", query="What colour?", answer="red",
                           positive=Context(image_path="a.png"), negative=Context(image_path="b.png"))


def test_text_and_image_pairs_are_never_batched_together():
    tok = tiny_tokenizer()
    ot = OptionTokens.from_tokenizer(tok)
    with pytest.raises(ContextRLError, match="mixes pair kinds"):
        encode_selection_batch([*tiny_pairs(1), _image_pair()], tok, ot)
    with pytest.raises(ContextRLError, match="mixes pair kinds"):
        StaticPairSource([*tiny_pairs(1), _image_pair()])
    with pytest.raises(ContextRLError, match="need a vision-language policy"):  # image pairs need a VLM processor
        encode_selection_batch([_image_pair()], tok, ot)


def test_static_source_serves_epochs_without_repeats_in_a_call():
    pairs = tiny_pairs(5)
    src = StaticPairSource(pairs, seed=0)
    seen = []
    for _ in range(5):
        batch = src.sample(3)
        assert len(batch) == 3 and len({p.id for p in batch}) == 3
        seen.extend(p.id for p in batch)
    assert {p.id for p in pairs} == set(seen)
    assert len(src.sample(50)) == 5
    assert [p.id for p in StaticPairSource(pairs, seed=7).sample(5)] == [p.id for p in StaticPairSource(pairs, seed=7).sample(5)]


def test_mixed_source_fills_from_offline_when_online_runs_short():
    online, offline = tiny_pairs(2), tiny_pairs(6)[2:]
    empty = MixedPairSource(CallablePairSource(lambda n: []), StaticPairSource(offline), ratio=1.0)
    assert len(empty.sample(4)) == 4 and empty.last_online == 0
    full = MixedPairSource(StaticPairSource(online), StaticPairSource(offline), ratio=1.0)
    got = full.sample(2)
    assert {p.id for p in got} == {p.id for p in online} and full.last_online == 2
    half = MixedPairSource(StaticPairSource(tiny_pairs(40)), StaticPairSource(offline), ratio=0.5, seed=1)
    shares = [len(half.sample(8)) and half.last_online for _ in range(50)]
    assert 2.5 < sum(shares) / 50 < 5.5
    assert isinstance(as_pair_source(online), StaticPairSource)
    assert isinstance(as_pair_source(lambda n: online[:n]), CallablePairSource)


def test_selection_reward_and_task_reward_wrapping():
    assert parse_option("B") == "B" and parse_option(" (A).") == "A" and parse_option("Context B") == "B"
    assert parse_option("ABBA") is None and parse_option("") is None
    comps = [[{"role": "assistant", "content": "A"}], [{"role": "assistant", "content": "B"}], "A", "B"]
    opts = ["A", "A", None, None]
    assert selection_reward(comps, **{POSITIVE_OPTION_KEY: opts}) == [1.0, 0.0, None, None]
    assert selection_reward(comps) == [None] * 4

    calls = []

    def task_reward(completions, prompts, **kw):
        calls.append(len(completions))
        return [len(p) for p in prompts]

    wrapped = task_rows_only(task_reward)
    assert wrapped.__name__ == "task_reward"
    out = wrapped(completions=comps, prompts=["a", "bb", "ccc", "dddd"], trainer_state=None, **{POSITIVE_OPTION_KEY: opts})
    assert out == [None, None, 3, 4] and calls == [2]
    assert wrapped(completions=comps, prompts=["a", "bb", "ccc", "dddd"]) == [1, 2, 3, 4]
