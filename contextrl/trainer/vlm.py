"""Image pairs for vision-language policies: selection prompts with two images, the CA
forward pass with pixels, the vision tower, and loading a VLM from a directory.

An image pair `z = (Q, A, I+, I-)` is shown exactly as a trajectory pair is
(`contextrl.miner.render.selection_prompt`): one user turn with the question and the answer
in the text, then "Context A:" <image> "Context B:" <image>, then the instruction; the order
is drawn per instance and the positive letter recorded. Here that turn becomes model inputs
through the policy's *processor* (Qwen2-VL / Qwen2.5-VL style: a chat template that renders
each `{"type": "image"}` block as the model's image placeholder, and an image processor):

- `encode_image_selection_batch`: chat template (with the generation prompt) -> the
  processor call with the two images of every prompt -> a left-padded `SelectionBatch`
  whose `model_inputs` carry what the processor returned besides the text (`pixel_values`,
  `image_grid_thw`, `mm_token_type_ids`, ...). `selection_logits` then runs the same
  prompt-only forward pass as for text and reads the last-position logits; `ca_margin` /
  `ca_loss` are unchanged. Position ids are left to the model (Qwen2-VL builds its 3-D
  multimodal positions from the attention mask and the image grid). Image prompts are never
  truncated (`ca_max_prompt_tokens` does not apply to them).
- `image_selection_row`: the `da_rl` RL prompt for an image pair, in TRL's VLM dataset
  form (image placeholders in the prompt, the pictures in an `images` column).
- `vision_tower` / `freeze_vision_tower`: the module `get_encoder("image")` names (for
  Qwen2-VL `model.visual`, patch merger included); frozen, it gets no gradient and the
  optimizer never sees it.
- `load_processor` / `is_vlm_dir` / `load_vlm_policy`: a saved VLM directory back as
  `(model, processor)`. When the processor's video processor cannot be built (transformers
  needs torchvision for it), the processor is rebuilt without one: ContextRL only feeds
  images.

Batches are of one kind: an image pair batch needs a processor (a plain tokenizer raises
`ConfigError`), and text and image pairs never share a batch (`check_single_kind`).
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from contextrl.errors import ConfigError, ContextRLError
from contextrl.miner.render import SelectionPrompt

if TYPE_CHECKING:
    from PIL.Image import Image

    from contextrl.trainer.loss import OptionTokens
    from contextrl.trainer.pairs import SelectionBatch

IMAGES_KEY = "images"
"""Dataset/generation-batch column TRL's `GRPOTrainer` reads a row's pictures from (a list)."""


# --------------------------------------------------------------------------- processors


def is_vlm_processor(processing_class: Any) -> bool:
    """Whether `processing_class` is a multimodal processor with an image processor (not a tokenizer)."""
    from transformers import ProcessorMixin

    return isinstance(processing_class, ProcessorMixin) and getattr(processing_class, "image_processor", None) is not None


def require_vlm_processor(processing_class: Any, what: str = "image pairs") -> None:
    """Raise `ConfigError` unless `processing_class` can turn images into model inputs."""
    if not is_vlm_processor(processing_class):
        raise ConfigError(
            f"{what} need a vision-language policy: pass its processor (e.g. AutoProcessor.from_pretrained(...) of a "
            f"Qwen2-VL / Qwen2.5-VL model) as processing_class, not a {type(processing_class).__name__}; or use "
            "trajectory pairs with a text-only policy"
        )


def load_images(paths: Sequence[str]) -> list["Image"]:
    """Open image files as RGB PIL images (fully read, files closed)."""
    from PIL import Image

    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                out.append(img.convert("RGB"))
        except (OSError, ValueError) as e:
            raise ContextRLError(f"cannot read the image of an image pair: {path} ({e})") from e
    return out


def _check_prompts(prompts: Sequence[SelectionPrompt]) -> None:
    for p in prompts:
        if len(p.images) != 2 or not all(p.images):
            raise ContextRLError(f"image pair {p.pair_id}: both contexts need an image_path (got {list(p.images)})")


def _placeholder_messages(prompt: SelectionPrompt) -> list[dict[str, Any]]:
    """The prompt's messages with image blocks reduced to `{"type": "image"}` placeholders."""
    out = []
    for m in prompt.messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image"} if part.get("type") == "image" else dict(part) for part in content]
        out.append({**m, "content": content})
    return out


def encode_image_selection_batch(
    prompts: Sequence[SelectionPrompt],
    processor: Any,
    option_tokens: "OptionTokens",
    *,
    chat_template_kwargs: dict | None = None,
    device: torch.device | str | None = None,
) -> "SelectionBatch":
    """Image selection prompts -> chat template -> processor (text + both images of each
    prompt) -> a left-padded `SelectionBatch` with the processor's image tensors in `model_inputs`."""
    from contextrl.trainer.pairs import SelectionBatch

    require_vlm_processor(processor)
    _check_prompts(prompts)
    texts = [processor.apply_chat_template(_placeholder_messages(p), add_generation_prompt=True, tokenize=False,
                                           **(chat_template_kwargs or {})) for p in prompts]
    images = [load_images(p.images) for p in prompts]
    enc = processor(images=images, text=texts, padding=True, padding_side="left", return_tensors="pt")
    extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()
             if k not in ("input_ids", "attention_mask")}
    return SelectionBatch(
        input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device), position_ids=None,
        pos_ids=option_tokens.tensor([p.positive_option for p in prompts], device=device),
        neg_ids=option_tokens.tensor([p.negative_option for p in prompts], device=device),
        prompts=list(prompts), model_inputs=extra,
    )


def image_selection_row(prompt: SelectionPrompt) -> dict[str, Any]:
    """The `da_rl` row of an image selection prompt, in TRL's VLM form: the conversational
    prompt with two image placeholders and the two pictures (option order) under `images`."""
    _check_prompts([prompt])
    return {"prompt": _placeholder_messages(prompt), IMAGES_KEY: load_images(prompt.images)}


def row_has_images(row: dict[str, Any]) -> bool:
    """Whether a dataset row carries pictures (TRL's `image` or `images` column)."""
    return row.get("image") is not None or bool(row.get(IMAGES_KEY))


def as_images_column(row: dict[str, Any]) -> dict[str, Any]:
    """A task row with its picture(s) under `images` (TRL reads `images` when the first row has
    that column, so a batch mixing rows must use it everywhere)."""
    if "image" not in row:
        return row
    out = {k: v for k, v in row.items() if k != "image"}
    if out.get(IMAGES_KEY) is None:
        out[IMAGES_KEY] = [row["image"]] if row["image"] is not None else None
    return out


# --------------------------------------------------------------------------- the vision tower


def vision_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The image encoder of a VLM (`get_encoder("image")`: e.g. Qwen2-VL's `model.visual`)."""
    unwrapped = getattr(model, "module", model)
    get = getattr(unwrapped, "get_encoder", None)
    tower = None
    if get is not None:
        try:
            tower = get(modality="image")
        except (TypeError, ValueError):
            tower = None
    if tower is None or tower is unwrapped or tower is getattr(unwrapped, "base_model", None) \
            or tower is getattr(unwrapped, "model", None):
        raise ConfigError(f"freeze_vision_tower=True, but {type(unwrapped).__name__} has no vision tower "
                          "(get_encoder('image') finds none); set freeze_vision_tower=False for a text-only policy")
    return tower


def freeze_vision_tower(model: torch.nn.Module) -> int:
    """Stop gradients into the vision tower; returns how many parameters were frozen."""
    params = list(vision_tower(model).parameters())
    for p in params:
        p.requires_grad_(False)
    return len(params)


# --------------------------------------------------------------------------- loading


def is_vlm_dir(path: str | Path) -> bool:
    """Whether a saved model directory holds a vision-language model (its config has a vision part)."""
    cfg = Path(path).expanduser() / "config.json"
    if not cfg.exists():
        return False
    data = json.loads(cfg.read_text())
    return "vision_config" in data or "vision_tower" in data


@functools.lru_cache(maxsize=None)
def image_only_processor_class(cls: type) -> type:
    """`cls` (a processor class taking a video processor, e.g. `Qwen2VLProcessor`) as a subclass of
    the same name without one: it takes `(image_processor, tokenizer, chat_template)` and saves
    and loads like `cls` (for environments without torchvision, which transformers needs for
    Qwen2-VL's video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: N807
        cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": __name__,
                                       "__doc__": f"{cls.__name__} for images only (no video processor)."})


def load_processor(path: str | Path) -> Any:
    """The processor of a saved VLM; without a video processor when transformers cannot build one."""
    import transformers
    from transformers import AutoProcessor

    path = str(Path(path).expanduser())
    try:
        return AutoProcessor.from_pretrained(path)
    except (OSError, ImportError, TypeError, ValueError) as first:
        name = None
        for fname in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
            f = Path(path) / fname
            if f.exists():
                name = json.loads(f.read_text()).get("processor_class") or name
        cls = getattr(transformers, name, None) if name else None
        if cls is None or "video_processor" not in inspect.signature(cls.__init__).parameters:
            raise ConfigError(f"{path}: cannot load the processor ({first}); save it next to the model with "
                              "processor.save_pretrained(DIR)") from first
        return image_only_processor_class(cls).from_pretrained(path)


def load_vlm_policy(path: str | Path, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, processor) of a saved VLM directory (`AutoModelForImageTextToText`), with
    generation ending at the tokenizer's EOS and left padding (as GRPO requires)."""
    from transformers import AutoModelForImageTextToText

    processor = load_processor(path)
    tok = processor.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForImageTextToText.from_pretrained(str(Path(path).expanduser()), dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, processor
