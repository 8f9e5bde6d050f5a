"""Pairs into the trainer: where pair batches come from, and how they become model inputs.

Sources: anything with `sample(n) -> Sequence[ContrastivePair]` is a `PairSource` (the
online `PairBuffer` is one). `StaticPairSource` serves a fixed pair set in shuffled epochs;
`MixedPairSource` mixes an online source with an offline set at a ratio. A source may
return fewer pairs than asked (an online buffer that is still filling up), or none.

Inputs: `encode_selection_batch` renders each pair with `selection_prompt` (option order
randomised per instance, the positive letter recorded), applies the tokenizer's chat
template with the generation prompt, and left-pads the batch; `selection_logits` runs the
prompt-only forward pass and returns the logits at the last position, the answer position
under teacher forcing. Image pairs take the same path through the policy's processor
(`contextrl.trainer.vlm`: two images per prompt, the pixel tensors in `model_inputs`). A pair
batch is always of one kind: text-only and image pairs are never mixed (`check_single_kind`).

For the `da_rl` baseline the same prompts become RL prompts (`selection_row`), scored by
`selection_reward` (1 for the positive letter, 0 otherwise); `task_rows_only` keeps the
task's own reward functions off those rows.
"""

from __future__ import annotations

import functools
import inspect
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch

from contextrl.errors import ConfigError, ContextRLError
from contextrl.miner.pair import ContrastivePair, read_pairs
from contextrl.miner.render import SelectionPrompt, selection_prompt
from contextrl.trainer.loss import OptionTokens

POSITIVE_OPTION_KEY = "ca_positive_option"
"""Dataset/generation-batch column holding the positive letter of a selection prompt (None on task rows)."""


# --------------------------------------------------------------------------- sources


@runtime_checkable
class PairSource(Protocol):
    """Anything that hands out pair batches."""

    def sample(self, n: int) -> Sequence[ContrastivePair]:
        """Up to `n` pairs (fewer, or none, when not enough are available)."""
        ...


class CallablePairSource:
    """Adapts a function `n -> pairs` to `PairSource`."""

    def __init__(self, fn: Callable[[int], Sequence[ContrastivePair]]):
        self.fn = fn

    def sample(self, n: int) -> Sequence[ContrastivePair]:
        return list(self.fn(n))


class StaticPairSource:
    """A fixed pair set served in shuffled epochs: no pair repeats within one `sample` call,
    and every pair is served once per epoch. All pairs must be of one kind."""

    def __init__(self, pairs: Sequence[ContrastivePair], seed: int = 0):
        self.pairs = list(pairs)
        check_single_kind(self.pairs, what="StaticPairSource")
        self._rng = random.Random(seed)
        self._order: list[int] = []

    @classmethod
    def from_jsonl(cls, path: str | Path, seed: int = 0) -> "StaticPairSource":
        """Pairs from a JSONL file written by `write_pairs`."""
        return cls(list(read_pairs(path)), seed=seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def sample(self, n: int) -> list[ContrastivePair]:
        n = min(n, len(self.pairs))
        picked: list[int] = []
        while len(picked) < n:
            if not self._order:
                self._order = list(range(len(self.pairs)))
                self._rng.shuffle(self._order)
            # take from the epoch, deferring indices already picked in this call to the next epoch's front
            i = next((k for k, idx in enumerate(self._order) if idx not in picked), None)
            if i is None:
                self._order = []
                continue
            picked.append(self._order.pop(i))
        return [self.pairs[i] for i in picked]


class MixedPairSource:
    """Mixes an online source with an offline one: each of the `n` slots goes online with
    probability `ratio`; slots the online source cannot fill are filled offline."""

    def __init__(self, online: PairSource, offline: PairSource, ratio: float, seed: int = 0):
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"MixedPairSource ratio={ratio!r} must be a fraction in [0, 1]")
        self.online, self.offline, self.ratio = online, offline, ratio
        self._rng = random.Random(seed)
        self.last_online = 0
        """How many pairs of the last batch came from the online source."""

    def sample(self, n: int) -> list[ContrastivePair]:
        want = sum(self._rng.random() < self.ratio for _ in range(n))
        online = list(self.online.sample(want)) if want else []
        offline = list(self.offline.sample(n - len(online))) if n > len(online) else []
        self.last_online = len(online)
        return online + offline


def as_pair_source(obj: Any, seed: int = 0) -> PairSource:
    """A `PairSource` from a source, a function `n -> pairs`, a pair sequence or a JSONL path."""
    if isinstance(obj, PairSource):
        return obj
    if isinstance(obj, (str, Path)):
        return StaticPairSource.from_jsonl(obj, seed=seed)
    if isinstance(obj, Sequence):
        return StaticPairSource(obj, seed=seed)
    if callable(obj):
        return CallablePairSource(obj)
    raise ConfigError(f"cannot use a {type(obj).__name__} as a pair source: pass an object with sample(n), a function "
                      "n -> pairs, a list of ContrastivePair, or a JSONL path")


def check_single_kind(pairs: Sequence[ContrastivePair], what: str = "pair batch") -> str | None:
    """The one kind of `pairs` (None when empty); raises when text and image pairs are mixed."""
    kinds = {p.kind for p in pairs}
    if len(kinds) > 1:
        raise ContextRLError(f"{what} mixes pair kinds {sorted(kinds)}: text-only and image pairs must never share a "
                             "batch; keep one source per kind")
    return next(iter(kinds), None)


# --------------------------------------------------------------------------- model inputs


@dataclass
class SelectionBatch:
    """A left-padded batch of selection prompts with the answer key."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    """Positions under left padding; None for image batches (the VLM builds its own)."""
    pos_ids: torch.Tensor
    """`(N, K)` candidate token ids of each instance's positive letter (-1 padded)."""
    neg_ids: torch.Tensor
    """`(N, K)` candidate token ids of each instance's negative letter (-1 padded)."""
    prompts: list[SelectionPrompt]
    model_inputs: dict[str, Any] = field(default_factory=dict)
    """Further forward-pass inputs from the processor (`pixel_values`, `image_grid_thw`, ...); empty for text."""

    @property
    def positive_options(self) -> list[str]:
        """The positive letter of each instance."""
        return [p.positive_option for p in self.prompts]


def _text_tokenizer(processing_class: Any) -> Any:
    return getattr(processing_class, "tokenizer", processing_class)


def token_counter(processing_class: Any) -> Callable[[str], int]:
    """`str -> number of tokens` under the policy's tokenizer (for selection-prompt budgets)."""
    tok = _text_tokenizer(processing_class)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def render_selection(pairs: Sequence[ContrastivePair], processing_class: Any, rng: random.Random | int | None,
                     max_prompt_tokens: int | None) -> list[SelectionPrompt]:
    """Selection prompts for a single-kind pair batch; text contexts are truncated to the token
    budget, image prompts are not (and need a VLM processor)."""
    kind = check_single_kind(pairs)
    if kind == "image":
        from contextrl.trainer.vlm import require_vlm_processor

        require_vlm_processor(processing_class)
        return [selection_prompt(p, rng) for p in pairs]
    count = token_counter(processing_class)
    return [selection_prompt(p, rng, max_tokens=max_prompt_tokens, count_tokens=count) for p in pairs]


def encode_selection_batch(
    pairs: Sequence[ContrastivePair],
    processing_class: Any,
    option_tokens: OptionTokens,
    *,
    rng: random.Random | int | None = None,
    max_prompt_tokens: int | None = None,
    chat_template_kwargs: dict | None = None,
    device: torch.device | str | None = None,
) -> SelectionBatch:
    """Selection prompts -> chat template (with the generation prompt) -> left-padded tensors.
    Image pairs go through the processor (`vlm.encode_image_selection_batch`)."""
    prompts = render_selection(pairs, processing_class, rng, max_prompt_tokens)
    if pairs and pairs[0].kind == "image":
        from contextrl.trainer.vlm import encode_image_selection_batch

        return encode_image_selection_batch(prompts, processing_class, option_tokens,
                                            chat_template_kwargs=chat_template_kwargs, device=device)
    conversations = [[dict(m) for m in p.messages] for p in prompts]
    enc = processing_class.apply_chat_template(
        conversation=conversations, add_generation_prompt=True, tokenize=True, return_dict=True,
        **(chat_template_kwargs or {}),
    )
    rows = [list(r) for r in enc["input_ids"]]
    pad = _text_tokenizer(processing_class).pad_token_id
    if pad is None:
        pad = _text_tokenizer(processing_class).eos_token_id
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    pos = option_tokens.tensor([p.positive_option for p in prompts], device=device)
    neg = option_tokens.tensor([p.negative_option for p in prompts], device=device)
    return SelectionBatch(ids, mask, positions, pos, neg, prompts)


def selection_logits(model: torch.nn.Module, batch: SelectionBatch) -> torch.Tensor:
    """Prompt-only forward pass (no generation): float32 logits `(N, V)` at the last position,
    where the answer letter would be generated."""
    positions = {} if batch.position_ids is None else {"position_ids": batch.position_ids}
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **positions, **batch.model_inputs,
                logits_to_keep=1, use_cache=False)
    return out.logits[:, -1, :].float()


# --------------------------------------------------------------------------- da_rl baseline

_OPTION_RE = re.compile(r"(?<![A-Za-z0-9])([AB])(?![A-Za-z0-9])")


def parse_option(text: str) -> str | None:
    """The first standalone letter A or B in a completion ("B", " (A).", "Context B"), else None."""
    m = _OPTION_RE.search(text)
    return m.group(1) if m else None


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: a list of messages
        return "".join(m["content"] for m in completion if isinstance(m, dict) and isinstance(m.get("content"), str))
    return str(completion)


def selection_reward(completions: list, **kwargs: Any) -> list[float | None]:
    """0/1 reward of a selection prompt's completion: 1 when it names the positive letter.
    Rows without a recorded positive letter (task rows) get None (TRL skips them)."""
    options = kwargs.get(POSITIVE_OPTION_KEY) or [None] * len(completions)
    return [None if opt is None else float(parse_option(_completion_text(c)) == opt)
            for c, opt in zip(completions, options)]


def task_rows_only(func: Callable) -> Callable:
    """Wrap a task reward function so it only sees task rows; selection-prompt rows get None."""

    def split(kwargs: dict) -> tuple[list[int], int, dict]:
        options = kwargs.get(POSITIVE_OPTION_KEY)
        n = len(kwargs["completions"])
        if not options or all(o is None for o in options):
            return list(range(n)), n, kwargs
        keep = [i for i, o in enumerate(options) if o is None]
        sub = {k: ([v[i] for i in keep] if isinstance(v, (list, tuple)) and len(v) == n else v) for k, v in kwargs.items()}
        return keep, n, sub

    def scatter(keep: list[int], n: int, values: list) -> list:
        out: list = [None] * n
        for i, v in zip(keep, values):
            out[i] = v
        return out

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(**kwargs: Any) -> list:
            keep, n, sub = split(kwargs)
            return scatter(keep, n, list(await func(**sub)) if keep else [])

        return async_wrapper

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> list:
        keep, n, sub = split(kwargs)
        return scatter(keep, n, list(func(**sub)) if keep else [])

    return wrapper


def selection_row(pair: ContrastivePair, processing_class: Any, rng: random.Random, *, max_prompt_tokens: int | None,
                  conversational: bool, chat_template_kwargs: dict | None = None) -> dict[str, Any]:
    """A generation-batch row for `da_rl`: the selection prompt as the RL prompt and the
    positive letter under `POSITIVE_OPTION_KEY` (image pairs: TRL's VLM form, `vlm.image_selection_row`)."""
    sp = render_selection([pair], processing_class, rng, max_prompt_tokens)[0]
    if pair.kind == "image":
        from contextrl.trainer.vlm import image_selection_row

        if not conversational:
            raise ContextRLError("da_rl: image selection prompts need conversational task prompts (TRL's VLM format)")
        return {**image_selection_row(sp), POSITIVE_OPTION_KEY: sp.positive_option}
    messages = [dict(m) for m in sp.messages]
    if conversational:
        prompt: Any = messages
    else:  # plain-text task prompts are not templated by TRL, so hand over the templated text
        prompt = processing_class.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                      **(chat_template_kwargs or {}))
    return {"prompt": prompt, POSITIVE_OPTION_KEY: sp.positive_option}
