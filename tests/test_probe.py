"""The contrastive context probe: its statistics, its agreement with the CA-loss scoring, a
policy rigged to one letter, and `contextrl probe` end to end (tiny Qwen2, real pairs)."""

from __future__ import annotations

import json

import pytest
import torch

from contextrl.miner.pair import write_pairs
from contextrl.trainer.loss import OptionTokens, ca_margin
from contextrl.trainer.pairs import encode_selection_batch, selection_logits
from contextrl.trainer.probe import FixedOrder, ProbeResult, probe, probe_margins
from tests.tiny_models import tiny_model, tiny_pairs, tiny_tokenizer

FIELDS = {"n_pairs", "n_evals", "accuracy", "accuracy_positive_a", "accuracy_positive_b", "position_consistency",
          "both_correct", "p_choose_a", "position_bias", "mean_margin", "mean_margin_positive_a", "mean_margin_positive_b"}


def rigged(letter: str, tok, seed: int = 0):
    """A tiny Qwen2 whose lm_head bias makes every candidate token of `letter` win by far."""
    model = tiny_model(tok, seed=seed)
    bias = torch.zeros(model.lm_head.out_features)
    bias[list(OptionTokens.from_tokenizer(tok).ids[letter])] = 1e3
    model.lm_head.bias = torch.nn.Parameter(bias)
    return model


def test_statistics_from_margins():
    # pair 0: right both times; pair 1: always answers "A"; pair 2: wrong both times (chooses C- in both orders)
    res = ProbeResult.from_margins([(2.0, 1.0), (3.0, -1.0), (-1.0, -2.0)], ["p0", "p1", "p2"])
    assert res.n_pairs == 3 and res.n_evals == 6
    assert res.accuracy == pytest.approx(3 / 6)
    assert res.accuracy_positive_a == pytest.approx(2 / 3) and res.accuracy_positive_b == pytest.approx(1 / 3)
    assert res.position_consistency == pytest.approx(2 / 3)  # pairs 0 and 2 pick the same context in both orders
    assert res.both_correct == pytest.approx(1 / 3)
    # chosen letters: A,B | A,A | B,A  -> 4 of 6 are "A"
    assert res.p_choose_a == pytest.approx(4 / 6) and res.position_bias == pytest.approx(4 / 6 - 0.5)
    assert res.mean_margin == pytest.approx(2.0 / 6)
    assert res.mean_margin_positive_a == pytest.approx(4 / 3) and res.mean_margin_positive_b == pytest.approx(-2 / 3)
    # a tie is a wrong answer (as in ca_loss's accuracy) and so picks the other letter
    tie = ProbeResult.from_margins([(0.0, 0.0)])
    assert tie.accuracy == 0.0 and tie.p_choose_a == 0.5 and tie.position_consistency == 1.0
    d = res.to_dict(per_pair=True)
    assert FIELDS <= set(d) and d["per_pair"][1] == {"id": "p1", "margin_positive_a": 3.0, "margin_positive_b": -1.0}
    json.dumps(d)
    with pytest.raises(Exception, match="at least one"):
        ProbeResult.from_margins([])


def test_balanced_statistics_leave_consistency_undefined():
    res = ProbeResult.from_margins([(1.0, None), (None, -1.0)])
    assert res.n_evals == 2 and res.accuracy == 0.5 and res.position_consistency is None and res.both_correct is None
    assert res.p_choose_a == 1.0  # right on the A-shown pair, wrong (so "A") on the B-shown pair
    assert "n/a" in res.table()


def test_probe_scores_exactly_like_the_ca_loss():
    tok, pairs = tiny_tokenizer(), tiny_pairs(5)
    model = tiny_model(tok)
    margins = probe_margins(model, tok, pairs, batch_size=2, max_prompt_tokens=None)
    opt = OptionTokens.from_tokenizer(tok)
    for letter, col in (("A", 0), ("B", 1)):
        batch = encode_selection_batch(pairs, tok, opt, rng=FixedOrder(letter))
        assert batch.positive_options == [letter] * len(pairs)
        with torch.no_grad():
            want = ca_margin(selection_logits(model, batch), batch.pos_ids, batch.neg_ids)
        got = torch.tensor([m[col] for m in margins])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # padding differs between batchings
    assert model.training  # restored


def test_probe_fields_on_a_tiny_policy():
    tok, pairs = tiny_tokenizer(), tiny_pairs(6)
    res = probe(tiny_model(tok), tok, pairs, batch_size=4)
    d = res.to_dict()
    assert FIELDS <= set(d) and d["n_pairs"] == 6 and d["n_evals"] == 12
    for key in ("accuracy", "position_consistency", "both_correct", "p_choose_a"):
        assert 0.0 <= d[key] <= 1.0
    assert -0.5 <= d["position_bias"] <= 0.5
    assert res.both_correct <= res.position_consistency
    assert len(res.margins) == 6 and res.pair_ids == tuple(p.id for p in pairs)


@pytest.mark.parametrize("letter", ["A", "B"])
def test_a_policy_rigged_to_one_letter(letter):
    tok, pairs = tiny_tokenizer(), tiny_pairs(4)
    res = probe(rigged(letter, tok), tok, pairs, batch_size=3)
    assert res.accuracy == 0.5
    assert res.position_consistency == 0.0 and res.both_correct == 0.0
    assert res.p_choose_a == (1.0 if letter == "A" else 0.0)
    assert res.position_bias == (0.5 if letter == "A" else -0.5)  # the extreme of [-0.5, 0.5]
    assert (res.accuracy_positive_a, res.accuracy_positive_b) == ((1.0, 0.0) if letter == "A" else (0.0, 1.0))
    assert abs(res.mean_margin) < 1.0 and res.mean_margin_positive_a * (1 if letter == "A" else -1) > 100


def test_balanced_orders_show_each_pair_once():
    tok, pairs = tiny_tokenizer(), tiny_pairs(5)
    margins = probe_margins(rigged("A", tok), tok, pairs, orders="balanced")
    assert [m[0] is not None for m in margins] == [True, False, True, False, True]
    assert [m[1] is not None for m in margins] == [False, True, False, True, False]
    res = probe(rigged("A", tok), tok, pairs, orders="balanced")
    assert res.n_evals == 5 and res.p_choose_a == 1.0 and res.accuracy == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="orders"):
        probe_margins(rigged("A", tok), tok, pairs, orders="one")


def test_cli_probe(tmp_path, capsys):
    from contextrl.cli import main
    from contextrl.trainer.probe import load_policy

    tok = tiny_tokenizer()
    tiny_model(tok, seed=3).save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    write_pairs(tmp_path / "pairs.jsonl", tiny_pairs(6))
    args = ["probe", "--model", str(tmp_path / "model"), "--pairs", str(tmp_path / "pairs.jsonl"), "--quiet"]
    assert main(args + ["--out", "json", "--limit", "4", "--save", str(tmp_path / "probe.json")]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert FIELDS <= set(d) and d["n_pairs"] == 4 and d["n_evals"] == 8 and d["model"] == str(tmp_path / "model")
    model, loaded_tok = load_policy(str(tmp_path / "model"))
    want = probe(model, loaded_tok, tiny_pairs(4), max_prompt_tokens=8192)
    assert d["accuracy"] == round(want.accuracy, 6) and d["position_bias"] == round(want.position_bias, 6)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert len(saved["per_pair"]) == 4 and saved["orders"] == "both"
    assert main(args + ["--orders", "balanced"]) == 0
    out = capsys.readouterr().out
    assert "position bias" in out and "n/a" in out  # consistency needs both orders
    assert main(["probe", "--model", str(tmp_path / "nope"), "--pairs", str(tmp_path / "pairs.jsonl")]) == 2
