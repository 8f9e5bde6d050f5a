"""Shared test helpers: a tiny Qwen2 policy and a ChatML tokenizer, both built locally.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in-process on a few
sentences (so any text encodes), wrapped in `PreTrainedTokenizerFast` with a ChatML chat
template; the model is `Qwen2ForCausalLM` from a 2-layer, 32-wide config. Both are saved
once per process to a temp dir (callers may load them from there, as a user would).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

from contextrl.miner.pair import Context, ContrastivePair, text_difference
from contextrl.miner.render import INSTRUCTION

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "You are given a question, an answer, and two contexts. Exactly one context supports the answer.",
    "Question: Answer: Context A: Context B:", INSTRUCTION, "A B A B (A) (B) Answer: A Answer: B",
    "def scale(shape, factor): if factor <= 0: raise ValueError('factor must be positive')",
    "python -m pytest tests -q FAILED PASSED 1 failed 2 passed exit 0 exit 1",
    "What is two plus two? Write a short poem. Name a colour. Count to three.",
]
TASK_PROMPTS = ["What is two plus two?", "Write a short poem.", "Name a colour.", "Count to three."]


@functools.lru_cache(maxsize=1)
def tiny_dir() -> str:
    """A temp dir holding the saved tokenizer (built once per process)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=CHATML, padding_side="left")
    path = Path(tempfile.mkdtemp(prefix="contextrl-tiny-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    fast.save_pretrained(path)
    return str(path)


def tiny_tokenizer():
    """The ChatML byte-level tokenizer (a fresh instance each call)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir())


def tiny_model(tokenizer=None, seed: int = 0):
    """A fresh 2-layer Qwen2 (hidden 32) sized to the tiny tokenizer, deterministic in `seed`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tokenizer or tiny_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_pairs(n: int = 4) -> list[ContrastivePair]:
    """`n` short, distinct trajectory pairs (contexts differ in one decisive line)."""
    out = []
    for i in range(n):
        pos = f"$ grep -n scale geom.py\n14: if factor < {i}:\n$ pytest -q\n{i + 2} passed\n"
        neg = f"$ grep -n scale geom.py\n14: if factor <= {i}:\n$ pytest -q\n1 failed, {i + 1} passed\n"
        out.append(ContrastivePair(
            kind="trajectory", query=f"scale(shape, {i}) raises; it should not.", answer=f"Use `factor < {i}`.",
            positive=Context(text=pos), negative=Context(text=neg), difference=text_difference(pos, neg),
        ))
    return out


def task_dataset(n: int = 8):
    """A conversational prompt dataset cycling over `TASK_PROMPTS`."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": TASK_PROMPTS[i % len(TASK_PROMPTS)]}] for i in range(n)]})


def token_sum_reward(completion_ids, **kwargs):
    """A deterministic reward with spread: (sum of completion token ids) mod 7."""
    return [float(sum(ids) % 7) for ids in completion_ids]


def constant_reward(completions, **kwargs):
    """Every completion scores 1: all GRPO advantages are 0, so GRPO's gradient is exactly 0."""
    return [1.0] * len(completions)
