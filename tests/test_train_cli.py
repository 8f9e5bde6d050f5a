"""`contextrl train`: bad configs fail before any model loads, both example configs pass a dry
run, and a short real run (tiny local model, Docker) checkpoints, resumes, logs to
TensorBoard and writes its summary plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from contextrl import cli

ROOT = Path(__file__).resolve().parent.parent
CPU, GPU = ROOT / "examples/cpu_smollm2.yaml", ROOT / "examples/gpu_8b_vllm.yaml"


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load weights or a tokenizer fails the test."""
    import transformers

    from contextrl.trainer import models

    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model or tokenizer was loaded")

    for name in ("load_policy", "load_model", "load_tokenizer", "ensure_smollm2"):
        monkeypatch.setattr(models, name, forbidden)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(cls, "from_pretrained", forbidden)
    return calls


def _bugfix_available() -> bool:
    try:
        from contextrl.envs.bugfix import load_bugfix_tasks

        return len(load_bugfix_tasks()) > 0
    except Exception:  # noqa: BLE001
        return False


needs_bugfix = pytest.mark.skipif(not _bugfix_available(), reason="BugFix-v0 sources not fetched (`contextrl tasks fetch`)")


@pytest.mark.parametrize("args, field", [
    (["trainer.mode=contextr"], "trainer.mode"),
    (["trainer.ca_lambda=-1"], "trainer.ca_lambda"),
    (["trainer.ca_lamda=0.1"], "trainer.ca_lambda"),
    (["miner.branch.max_forks_per_trajectory=0"], "max_forks_per_trajectory"),
    (["miner.offline_pairs=/no/such/pairs.jsonl"], "miner.offline_pairs"),
    (["trainer.bf16=true"], "trainer.bf16"),
    (["envs.ids=[contextrl/HumanEvl-v0]"], "HumanEval-v0"),
    (["envs.task_ids=[NoSuch/1]", "envs.ids=[contextrl/HumanEval-v0]"], "envs.task_ids"),
    (["trainer.extra.loss_typ=dapo"], "loss_type"),
    (["trainer.num_generations=3"], "num_generations"),  # TRL's own check: the batch must hold whole groups
])
def test_a_bad_config_fails_fast_naming_the_field(no_model_loads, capsys, args, field):
    assert cli.main(["train", str(CPU), *args]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and field in err, err
    assert no_model_loads == []


def test_a_bad_config_file_fails_as_a_user_sees_it(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("trainer:\n  mode: contextrl\n  ca_lambda: lots\n")
    r = subprocess.run([sys.executable, "-m", "contextrl", "train", str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "trainer.ca_lambda='lots': expected a number" in r.stderr, r.stderr


@needs_bugfix
@pytest.mark.parametrize("path", [CPU, GPU], ids=["cpu_smollm2", "gpu_8b_vllm"])
def test_dry_run_of_the_example_configs(no_model_loads, capsys, path):
    assert cli.main(["train", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run OK" in out and "contextrl/HumanEval-v0: " in out and "contextrl/BugFix-v0: " in out
    assert no_model_loads == []
    if path == GPU:
        assert "vLLM colocate" in out and "lora         r=64" in out and "Qwen/Qwen3-8B" in out
    else:
        assert "SmolLM2-135M-Instruct" in out and "generation   transformers" in out


def test_dry_run_with_overrides_only(no_model_loads, capsys):
    assert cli.main(["train", "--dry-run", "envs.ids=[contextrl/HumanEval-v0]", "envs.tasks_per_env=3",
                     "trainer.device=cpu"]) == 0
    assert "contextrl/HumanEval-v0: 3 tasks" in capsys.readouterr().out


# --------------------------------------------------------------------------- a real run


def _tiny_model_dir(tmp_path: Path) -> Path:
    from contextrl.trainer.models import with_tool_template
    from tiny_models import tiny_model, tiny_tokenizer

    tok = with_tool_template(tiny_tokenizer())
    model = tiny_model(tok)
    model.config.max_position_embeddings = 32768
    path = tmp_path / "tiny"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.docker
@pytest.mark.slow
def test_train_checkpoints_resumes_and_reports(tmp_path):
    from contextrl.miner.pair import write_pairs
    from contextrl.trainer.run import train
    from contextrl.trainer.runconfig import RunConfig
    from tiny_models import tiny_pairs

    write_pairs(tmp_path / "pairs.jsonl", tiny_pairs(4))
    out = tmp_path / "run"
    base = {
        "model": {"name_or_path": str(_tiny_model_dir(tmp_path))},
        "envs": {"ids": ["contextrl/HumanEval-v0"], "tasks_per_env": 2, "max_turns": 2},
        "sandbox": {"kind": "docker", "warm": 1, "max_live": 4},
        "miner": {"online": True, "offline_pairs": str(tmp_path / "pairs.jsonl"), "drain_seconds": 5},
        "trainer": {"ca_pairs_per_step": 2, "ca_max_prompt_tokens": None, "learning_rate": 1e-3, "max_steps": 2,
                    "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8, "device": "cpu"},
        "logging": {"output_dir": str(out), "save_steps": 1, "save_total_limit": 2},
        "eval": {"pairs": str(tmp_path / "pairs.jsonl"), "max_pairs": 2, "batch_size": 2},
    }
    res = train(RunConfig.from_dict(base), log=lambda _: None)
    assert res.summary["steps"] == 2 and res.summary["rollouts"] == 4 and res.summary["rollouts_masked"] == 0
    assert res.summary["heldout_pairs"] == 2 and 0.0 <= res.summary["heldout_ca_accuracy_after"] <= 1.0
    assert (out / "checkpoint-2" / "online_pairs.jsonl").exists() and (out / "final" / "config.json").exists()
    assert res.plot == out / "summary.png" and res.plot.stat().st_size > 10_000
    assert res.tensorboard_dir is not None and list(res.tensorboard_dir.rglob("events.out.tfevents.*"))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert (out / "config.yaml").exists()
    history = res.log_history
    assert [h["ca/num_pairs"] for h in history if "ca/num_pairs" in h] == [2.0, 2.0]  # offline pairs fill the batch
    assert any("miner/submitted" in h for h in history) and any("probe/ca_accuracy" in h for h in history)

    # resume: the newest checkpoint is picked up and training continues to the new max_steps
    base["trainer"]["max_steps"] = 3
    res = train(RunConfig.from_dict(base), log=lambda _: None)
    assert res.summary["steps"] == 3 and res.summary["rollouts"] == 2  # only step 3 ran: 1-2 came from the checkpoint
    assert [h["step"] for h in res.log_history if "loss" in h] == [1, 2, 3]
