"""The TRL `environment_factory` adapter over `CodingEnv`, and the tool-calling chat template.

The template round-trips through TRL's own parser (`trl.chat_template_utils.parse_response`)
on the tiny test tokenizer and on SmolLM2's real tokenizer. The adapter runs real multi-turn
episodes in Docker: its tools called directly (a real task resolved, a killed container
masked), then through TRL: one training step with the random tiny policy, and one whose
completions are scripted tool calls, so TRL's parser, tool loop, our tools, the test reward
and the masking of a failed sandbox all run for real.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile

import pytest

from contextrl.envs.sources import load_humaneval
from contextrl.errors import ConfigError
from contextrl.patches import parse_patch
from contextrl.trainer.envs import CodingEnvFactory, CodingToolEnv
from contextrl.trainer.models import TOOL_CHAT_TEMPLATE, with_tool_template
from tiny_models import tiny_model, tiny_pairs, tiny_tokenizer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
HE = "contextrl/HumanEval-v0"


def bash(command: str) -> str:
    """Run a command.

    Args:
        command: The command.
    """


def view(path: str, view_range: list[int] | None = None) -> str:
    """Show a file.

    Args:
        path: The file.
        view_range: Lines to show.
    """


@functools.lru_cache(maxsize=1)
def _smollm2_source() -> str:
    """Where SmolLM2's tokenizer loads from: the dequantised cache copy when present, else the
    package's GGUF itself (slow to parse, so once per session)."""
    from transformers import AutoTokenizer

    from contextrl.trainer.models import smollm2_dir, smollm2_gguf

    if (smollm2_dir() / "tokenizer.json").exists():
        return str(smollm2_dir())
    gguf = smollm2_gguf()
    target = tempfile.mkdtemp(prefix="smollm2-tok-")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(target)
    return target


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_smollm2_source())
    except ConfigError as e:
        pytest.skip(str(e))


CALLS = [
    [{"type": "function", "function": {"name": "bash", "arguments": {"command": "ls -la && echo \"done\""}}}],
    [{"type": "function", "function": {"name": "view", "arguments": {"path": "a.py", "view_range": [1, -1]}}},
     {"type": "function", "function": {"name": "bash", "arguments": {"command": "python -c 'print(1)\n'"}}}],
]


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
@pytest.mark.parametrize("content, calls", [("", CALLS[0]), ("", CALLS[1]), ("Let me look first.", CALLS[0]),
                                            ("The answer is 4.", None)])
def test_tool_template_round_trips_through_trls_parser(which, content, calls):
    from trl.chat_template_utils import parse_response

    tok = with_tool_template(tiny_tokenizer() if which == "tiny" else _smollm2_tokenizer())
    user = [{"role": "user", "content": "Fix the bug."}]
    msg = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
    prompt = tok.apply_chat_template(user, tools=[bash, view], add_generation_prompt=True, tokenize=True, return_dict=False)
    full = tok.apply_chat_template(user + [msg], tools=[bash, view], tokenize=True, return_dict=False)
    assert full[: len(prompt)] == prompt
    completion = full[len(prompt):]
    completion = completion[: completion.index(tok.eos_token_id) + 1]  # what generation yields: up to <|im_end|>
    parsed = parse_response(tok, completion, prefix=prompt, tools=[bash, view])
    assert parsed["role"] == "assistant" and parsed["content"] == content
    assert parsed.get("tool_calls") == calls


def test_tool_template_is_what_trl_needs_for_multi_turn():
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_prefix_preserving, supports_tool_calling

    tok = with_tool_template(tiny_tokenizer())
    assert tok.chat_template == TOOL_CHAT_TEMPLATE and tok.response_template is not None
    assert supports_tool_calling(tok) and is_chat_template_prefix_preserving(tok)
    assert get_training_chat_template(tok) is None  # prefix-preserving with generation markers: used as is
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tools=[bash], tokenize=False, add_generation_prompt=True)
    assert '"name": "bash"' in text and "<tool_call>" in text and text.endswith("<|im_start|>assistant\n")
    tool_turn = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": CALLS[0]},
         {"role": "tool", "name": "bash", "content": "a.py"}, {"role": "tool", "name": "bash", "content": "b.py"}],
        tokenize=False)
    assert tool_turn.endswith("<|im_start|>user\n<tool_response>\na.py\n</tool_response>\n<tool_response>\nb.py\n"
                              "</tool_response><|im_end|>\n")


def test_tool_template_needs_chatml_tokens():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    with pytest.raises(ConfigError, match=r"ChatML tokenizer.*<\|im_start\|>"):
        with_tool_template(plain)


def test_adapter_methods_are_exactly_the_tools():
    import inspect

    public = sorted(n for n, _ in inspect.getmembers(CodingToolEnv, predicate=inspect.isfunction) if not n.startswith("_"))
    assert public == ["bash", "edit", "get_reward", "reset", "submit", "view"]


def test_reset_failure_is_masked_not_scored(monkeypatch):
    from contextrl.errors import SandboxError

    task = load_humaneval(limit=1)[0]
    factory = CodingEnvFactory([HE], sandbox="local", tasks={HE: [task]})

    class Broken:
        def reset(self, **kw):
            raise SandboxError("no sandbox free")

    monkeypatch.setattr(factory, "make_env", lambda env_id: Broken())
    env = factory()
    prompt = env.reset(env_id=HE, task_id=task.id)
    assert "could not be set up" in prompt and task.problem_statement.strip()[:40] in prompt
    assert env.bash(command="ls").startswith("[sandbox error]")
    assert env.get_reward() is None and env.masked and env.failure.boundary == "sandbox"
    assert factory.sink.counts["masked"] == 1 and factory.sink.drain()[0].reward is None
    factory.close()


# --------------------------------------------------------------------------- real episodes (Docker)


def _task():
    return load_humaneval(limit=1)[0]  # HumanEval/0


def _solution(task):
    (fp,) = parse_patch(task.reference_patch)
    (hunk,) = fp.hunks
    return fp.new_path, hunk.old_text, hunk.new_text


@pytest.mark.docker
def test_adapter_runs_a_real_multi_turn_episode():
    task = _task()
    path, old, new = _solution(task)
    with CodingEnvFactory([HE], sandbox="docker", tasks={HE: [task]}) as factory:
        env = factory()
        prompt = env.reset(env_id=HE, task_id=task.id, prompt=[{"role": "user", "content": ""}])
        assert "has_close_elements" in prompt and "/workspace" in prompt
        assert '{"tool": "bash"' not in prompt  # the JSON action format is replaced by the model's tools
        assert env.sandbox is not None and env.sandbox.backend == "docker"
        assert "solution.py" in env.bash(command="ls")
        assert "raise NotImplementedError" in env.view(path=path)
        assert env.edit(command="str_replace", path=path, old_str="no such text", new_str="x").startswith("[error]")
        assert "Edited" in env.edit(command="str_replace", path=path, old_str=old, new_str=new)
        assert env.bash(command="python3 -c 'import solution; print(solution.has_close_elements([1.0, 1.05], 0.1))'").strip() == "True"
        assert "[tests] reward=1.000 resolved=True" in env.submit()
        assert env.bash(command="ls").startswith("[episode over]")
        assert env.get_reward() == 1.0 and env.get_reward() == 1.0  # scored once
        traj = env.trajectory
        assert [s.tool for s in traj.steps] == ["bash", "view", "edit", "edit", "bash", "submit"] and traj.resolved
        (rollout,) = factory.sink.drain()
        assert rollout.reward == 1.0 and rollout.acted and not rollout.auto_submitted and rollout.task.id == task.id

        # the same adapter, a second episode: no submit, so it is scored at the end
        env.reset(env_id=HE, task_id=task.id)
        assert env.get_reward() == 0.0
        (rollout,) = factory.sink.drain()
        assert rollout.auto_submitted and not rollout.acted and rollout.trajectory.steps[-1].tool == "submit"
        assert factory.sink.counts["rollouts"] == 2 and factory.sink.counts["resolved"] == 1


@pytest.mark.docker
def test_a_killed_sandbox_masks_the_rollout_instead_of_scoring_it_zero():
    task = _task()
    with CodingEnvFactory([HE], sandbox="docker", tasks={HE: [task]}) as factory:
        env = factory()
        env.reset(env_id=HE, task_id=task.id)
        assert env.bash(command="echo alive").strip() == "alive"
        subprocess.run(["docker", "kill", env.sandbox.container_id], check=True, capture_output=True)
        assert env.bash(command="echo alive").startswith("[sandbox error]")
        assert env.masked and env.failure.boundary == "sandbox"
        assert env.view(path="solution.py").startswith("[sandbox error]")
        assert env.get_reward() is None
        assert factory.sink.counts["masked"] == 1 and factory.sink.drain()[0].failure.boundary == "sandbox"


def _trainer(tmp_path, factory, tok, model, **kw):
    from contextrl.trainer import ContextRLConfig
    from contextrl.trainer.run import make_trainer_class

    args = ContextRLConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1, learning_rate=1e-2,
        use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, bf16=False, gradient_checkpointing=False,
        ca_pairs_per_step=2, ca_max_prompt_tokens=None, disable_tqdm=True, seed=0, **kw)
    return make_trainer_class()(model, None, args=args, train_dataset=factory.dataset(), processing_class=tok,
                                pair_source=tiny_pairs(2), environment_factory=factory)


@pytest.mark.docker
def test_one_trl_step_through_environment_factory_with_the_tiny_policy(tmp_path):
    tok = with_tool_template(tiny_tokenizer())
    with CodingEnvFactory([HE], sandbox="docker", tasks={HE: [_task()]}) as factory:
        trainer = _trainer(tmp_path, factory, tok, tiny_model(tok), max_completion_length=8)
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        (log, _) = trainer.state.log_history
        assert trainer.state.global_step == 1
        assert log["rewards/CodingToolEnv/mean"] == 0.0 and log["env/masked"] == 0.0 and log["env/auto_submitted"] == 1.0
        assert log["ca/num_pairs"] == 2.0 and "tools/call_frequency" in log
        assert factory.sink.counts["rollouts"] == 2 and factory.sink.counts["auto_submitted"] == 2
        assert any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters())


@pytest.mark.docker
def test_trl_tool_loop_runs_our_tools_scores_and_masks_a_failed_sandbox(tmp_path):
    """Scripted completions (the policy's tokens) drive TRL's own tool loop: view, edit with the
    reference solution, submit. Rollout 1's container is killed before its first tool runs."""
    task = _task()
    path, old, new = _solution(task)
    script = [
        {"name": "view", "arguments": {"path": path}},
        {"name": "edit", "arguments": {"command": "str_replace", "path": path, "old_str": old, "new_str": new}},
        {"name": "submit", "arguments": {}},
    ]
    tok = with_tool_template(tiny_tokenizer())
    model = tiny_model(tok)
    model.config.max_position_embeddings = 32768  # TRL drops tool results past it; the tiny BPE makes long prompts
    captured = {}
    with CodingEnvFactory([HE], sandbox="docker", tasks={HE: [task]}) as factory:
        trainer = _trainer(tmp_path, factory, tok, model, max_completion_length=4096, mode="grpo", budget_matched_grpo=False)

        def scripted(prompt_ids, *args, **kwargs):
            if not captured.get("killed"):
                captured["killed"] = True
                subprocess.run(["docker", "kill", trainer.environments[1].sandbox.container_id], check=True, capture_output=True)
            out = []
            for ids in prompt_ids:
                turn = tok.decode(ids).count("<tool_response>")
                text = (f"<tool_call>\n{json.dumps(script[turn])}\n</tool_call>" if turn < len(script) else "Done.") + "<|im_end|>"
                out.append(tok(text, add_special_tokens=False)["input_ids"])
            return out, None

        trainer._generate_single_turn = scripted
        real = trainer._generate_and_score_completions
        trainer._generate_and_score_completions = lambda inputs: captured.setdefault("out", real(inputs))
        trainer.train()
        log = trainer.state.log_history[0]
        envs = trainer.environments
        assert envs[0].trajectory.resolved and [s.tool for s in envs[0].trajectory.steps] == ["view", "edit", "submit"]
        assert envs[1].masked and envs[1].failure.boundary == "sandbox"
        assert log["rewards/CodingToolEnv/mean"] == 1.0  # the masked rollout is not scored 0: it is not scored
        assert log["env/masked"] == 1.0 and log["env/masked_frac"] == 0.5 and log["env/resolved"] == 1.0
        assert log["tools/call_frequency"] >= 2.0
        out = captured["out"]
        loss_mask = out["completion_mask"] * out["tool_mask"]
        assert loss_mask[1].sum() == 0 and loss_mask[0].sum() > 0
        assert out["num_items_in_batch"] == loss_mask[0].sum()
        rollouts = factory.sink.drain()
        assert sorted(r.reward is None for r in rollouts) == [False, True]
