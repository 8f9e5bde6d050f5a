"""The context-awareness loss L_CA and the option-letter token ids it is read from.

For a pair instance z the policy reads the selection prompt and, by teacher forcing at the
answer position (the last prompt position, after the chat template's generation prompt),
assigns a logit to each option letter. With C+ shown as option `p` and C- as `n`:

    margin(z) = max_{t in tok(p)} logit[t] - max_{t in tok(n)} logit[t]
    L_CA(z)   = -log sigmoid(clip(margin(z), -c, c))

`tok(letter)` is the set of single tokens the chat template can produce for the letter
("A" at the start of the assistant turn, " A" after a space), so the margin takes the best
over tokenizations. Beyond the clip the loss is constant and its gradient exactly 0.

Candidate ids are passed as LongTensors, either shared `(K,)` or per instance `(N, K)`,
padded with -1 (padding never wins a max and adds nothing to a log-sum-exp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from contextrl.errors import ContextRLError

OPTION_LETTERS: tuple[str, str] = ("A", "B")


@dataclass(frozen=True)
class OptionTokens:
    """Candidate single-token ids per option letter, e.g. {"A": (32, 362), "B": (33, 425)}."""

    ids: dict[str, tuple[int, ...]]

    @classmethod
    def from_tokenizer(cls, tokenizer, letters: Iterable[str] = OPTION_LETTERS) -> "OptionTokens":
        """Collect, per letter, the last token of encoding `" X"` and `"X"` (no special tokens),
        keeping those that decode to the letter. Fails when a letter has no such token or when
        two letters share one."""
        ids: dict[str, tuple[int, ...]] = {}
        for letter in letters:
            cands: list[int] = []
            for text in (" " + letter, letter):
                enc = tokenizer(text, add_special_tokens=False)["input_ids"]
                if enc and tokenizer.decode([enc[-1]]).strip() == letter and enc[-1] not in cands:
                    cands.append(int(enc[-1]))
            if not cands:
                raise ContextRLError(f"the tokenizer has no single token for option {letter!r} (neither ' {letter}' nor "
                                     f"'{letter}' ends in a token decoding to it); the A/B margin cannot be read")
            ids[letter] = tuple(cands)
        seen: dict[int, str] = {}
        for letter, cands in ids.items():
            for t in cands:
                if t in seen:
                    raise ContextRLError(f"options {seen[t]!r} and {letter!r} share token id {t}")
                seen[t] = letter
        return cls(ids)

    @property
    def width(self) -> int:
        """The largest number of candidates of any letter (the padded width)."""
        return max(len(v) for v in self.ids.values())

    def tensor(self, letters: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """`(N, K)` candidate ids for each letter in `letters`, padded with -1."""
        k = self.width
        rows = [list(self.ids[x]) + [-1] * (k - len(self.ids[x])) for x in letters]
        return torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), k)


def _gather(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Logits at candidate ids: `(N, K)`, padding (-1) set to -inf."""
    if ids.dim() == 1:
        ids = ids.unsqueeze(0).expand(logits.size(0), -1)
    if ids.size(0) != logits.size(0):
        raise ValueError(f"candidate ids cover {ids.size(0)} rows, logits have {logits.size(0)}")
    valid = ids >= 0
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every row needs at least one candidate id")
    got = logits.gather(1, ids.clamp(min=0))
    return got.masked_fill(~valid, float("-inf"))


def ca_margin(logits_last: torch.Tensor, pos_ids: torch.Tensor, neg_ids: torch.Tensor) -> torch.Tensor:
    """Margin per instance: max logit over the positive option's candidates minus the max over
    the negative option's. `logits_last`: `(N, V)` logits at the answer position."""
    logits = logits_last.float()
    return _gather(logits, pos_ids).max(dim=1).values - _gather(logits, neg_ids).max(dim=1).values


@dataclass(frozen=True)
class CALossOutput:
    """L_CA over a batch: the mean loss (differentiable) and detached statistics."""

    loss: torch.Tensor
    """Mean over instances of -log sigmoid(clip(margin, -c, c)); differentiable."""
    per_instance: torch.Tensor
    """`(N,)` loss per instance; differentiable."""
    accuracy: torch.Tensor
    """Fraction of instances with margin > 0 (detached)."""
    margin: torch.Tensor
    """Mean margin (detached, unclipped)."""
    clip_frac: torch.Tensor
    """Fraction of instances with |margin| >= c, whose gradient is switched off (detached)."""


def ca_loss(margin: torch.Tensor, clip: float = 5.0) -> CALossOutput:
    """L_CA = -log sigmoid(clip(margin, -c, c)), computed stably with `F.logsigmoid`."""
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    m = margin.float()
    per = -F.logsigmoid(m.clamp(-clip, clip))
    d = m.detach()
    return CALossOutput(
        loss=per.mean(),
        per_instance=per,
        accuracy=(d > 0).float().mean(),
        margin=d.mean(),
        clip_frac=(d.abs() >= clip).float().mean(),
    )


def selection_ce(logits_last: torch.Tensor, pos_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of answering with the positive letter (the `da_sft` term):
    -log sum_{t in tok(positive)} softmax(logits)[t], i.e. over every tokenization of the letter."""
    logits = logits_last.float()
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(_gather(logits, pos_ids), dim=1)).mean()
