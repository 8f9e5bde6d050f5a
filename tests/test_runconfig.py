"""The YAML run config: strict typed loading, "did you mean", dotted overrides, cross-field checks."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

import pytest
import yaml

from contextrl.errors import ConfigError
from contextrl.trainer import runconfig as rc
from contextrl.trainer.runconfig import RunConfig, apply_overrides, load_run_config, parse_yaml_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["examples/cpu_smollm2.yaml", "examples/gpu_8b_vllm.yaml"]


def test_defaults_and_examples_load():
    cfg = RunConfig()
    assert cfg.trainer.mode == "contextrl" and cfg.trainer.ca_lambda == 0.005 and cfg.envs.ids == rc.DEFAULT_ENV_IDS
    cpu, gpu = (load_run_config(ROOT / p) for p in EXAMPLES)
    assert cpu.model.name_or_path == "smollm2-135m-instruct" and cpu.trainer.device == "cpu" and not cpu.vllm.enabled
    assert gpu.vllm.enabled and gpu.vllm.mode == "colocate" and gpu.lora.enabled and gpu.trainer.bf16
    assert gpu.trainer.extra["loss_type"] == "dapo"


def test_the_demo_embeds_the_cpu_example():
    from contextrl import demo

    assert demo.DEMO_CONFIG_YAML == (ROOT / "examples/cpu_smollm2.yaml").read_text()
    assert parse_yaml_config(demo.DEMO_CONFIG_YAML) == load_run_config(ROOT / "examples/cpu_smollm2.yaml")


def test_yaml_round_trip():
    cfg = load_run_config(ROOT / EXAMPLES[1])
    assert RunConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_mode_literal_matches_the_trainer():
    from contextrl.trainer.config import MODES

    assert typing.get_args(rc.Mode) == MODES


@pytest.mark.parametrize("data, match", [
    ({"trainer": {"ca_lamda": 0.1}}, r"unknown field 'trainer.ca_lamda'; did you mean 'ca_lambda'"),
    ({"trainr": {}}, r"unknown field 'trainr'; did you mean 'trainer'"),
    ({"trainer": {"mode": "contextr"}}, r"trainer.mode='contextr' is not one of .*did you mean 'contextrl'"),
    ({"trainer": {"ca_lambda": "big"}}, r"trainer.ca_lambda='big': expected a number"),
    ({"trainer": {"max_steps": 2.5}}, r"trainer.max_steps=2.5: expected an integer"),
    ({"trainer": {"max_steps": True}}, r"trainer.max_steps=True: expected an integer"),
    ({"model": {"gradient_checkpointing": "yes please"}}, r"model.gradient_checkpointing='yes please': expected true or false"),
    ({"envs": {"ids": [1, {"a": 2}]}}, r"envs.ids\[1\]"),
    ({"logging": {"report_to": ["tensorbord"]}}, r"logging.report_to\[0\]='tensorbord'.*did you mean 'tensorboard'"),
    ({"trainer": "fast"}, r"trainer: expected a mapping"),
    ({"trainer": {"num_generations": 1}}, r"trainer.num_generations: GRPO needs at least 2"),
    ({"trainer": {"learning_rate": -1.0}}, r"trainer.learning_rate"),
    ({"envs": {"ids": []}}, r"envs.ids: list at least one env id"),
    ({"envs": {"kwargs": {"contextrl/Task-v0": {}}}}, r"envs.kwargs: 'contextrl/Task-v0' is not in envs.ids"),
    ({"sandbox": {"warm": 9, "max_live": 4}}, r"sandbox.warm"),
    ({"miner": {"online": False}}, r"miner: trainer.mode='contextrl' needs pairs"),
    ({"vllm": {"enabled": True}, "trainer": {"device": "cpu"}}, r"vllm.enabled: vLLM generates on GPUs"),
    ({"vllm": {"enabled": True, "mode": "server"}}, r"vllm.server_base_url"),
    ({"trainer": {"bf16": True, "device": "cpu"}}, r"trainer.bf16"),
    ({"trainer": {"extra": {"warmup_step": 3}}}, r"trainer.extra.warmup_step: .*did you mean 'warmup_steps'"),
    ({"trainer": {"extra": {"learning_rate": 3}}}, r"trainer.extra.learning_rate: this setting has its own field"),
    ({"lora": {"dropout": 1.5}}, r"lora.r/alpha/dropout"),
    ({"eval": {"max_pairs": 0}}, r"eval.every_steps/max_pairs/batch_size"),
])
def test_bad_values_name_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(data)


def test_grpo_mode_needs_no_pairs():
    cfg = RunConfig.from_dict({"trainer": {"mode": "grpo"}, "miner": {"online": False}})
    assert cfg.trainer.mode == "grpo"


def test_overrides_are_typed_like_the_file():
    cfg = RunConfig().override([
        "trainer.ca_lambda=0.01", "trainer.max_steps=10", "envs.ids=[contextrl/HumanEval-v0]", "eval.pairs=null",
        "model.gradient_checkpointing=true", "miner.branch.max_forks_per_trajectory=2", "trainer.extra.warmup_steps=5",
        "logging.report_to=none", "envs.task_ids=HumanEval/0,HumanEval/1", "model.name_or_path=123",
    ])
    assert cfg.trainer.ca_lambda == 0.01 and cfg.trainer.max_steps == 10 and cfg.envs.ids == ["contextrl/HumanEval-v0"]
    assert cfg.eval.pairs is None and cfg.model.gradient_checkpointing is True
    assert cfg.miner.branch == {"max_forks_per_trajectory": 2} and cfg.trainer.extra == {"warmup_steps": 5}
    assert cfg.logging.report_to == ["none"] and cfg.envs.task_ids == ["HumanEval/0", "HumanEval/1"]
    assert cfg.model.name_or_path == "123"
    assert isinstance(RunConfig().override(["trainer.ca_lambda=1"]).trainer.ca_lambda, float)


@pytest.mark.parametrize("override, match", [
    ("trainer.ca_lamda=0.1", r"unknown field 'trainer.ca_lamda'; did you mean 'trainer.ca_lambda'"),
    ("trainr.mode=grpo", r"unknown field 'trainr'; did you mean 'trainer'"),
    ("trainer.ca_lambda", r"write it as section.field=value"),
    ("trainer.max_steps=ten", r"trainer.max_steps='ten': expected an integer"),
    ("trainer.mode=GRPO", r"did you mean 'grpo'"),
])
def test_bad_overrides_fail_with_the_field(override, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(ROOT / EXAMPLES[0], [override])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_run_config(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_run_config(tmp_path / "empty.yaml") == RunConfig()


def test_apply_overrides_does_not_touch_its_input():
    data = {"trainer": {"ca_lambda": 0.1}}
    out = apply_overrides(data, ["trainer.ca_lambda=0.2", "envs.max_turns=3"])
    assert data == {"trainer": {"ca_lambda": 0.1}} and out == {"trainer": {"ca_lambda": 0.2}, "envs": {"max_turns": 3}}


def test_every_field_is_documented():
    tree = ast.parse(inspect.getsource(rc))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for cls in (rc.ModelSection, rc.EnvSection, rc.SandboxSection, rc.MinerSection, rc.TrainerSection, rc.VLLMSection,
                rc.LoRASection, rc.LoggingSection, rc.EvalSection):
        body = classes[cls.__name__].body
        documented = {
            stmt.target.id for stmt, nxt in zip(body, body[1:] + [None])
            if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
        }
        assert documented == {f.name for f in dataclasses.fields(cls)}, cls.__name__
