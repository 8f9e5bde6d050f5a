"""Shared test helpers: a tiny Qwen2-VL or Qwen2.5-VL policy, its processor, and image pairs,
all built locally.

Nothing is downloaded. Every builder takes `family`: `"qwen2_vl"` (the default) or
`"qwen2_5_vl"`. The tokenizer is a byte-level BPE trained in-process (as in `tiny_models`)
plus the Qwen2-VL special tokens (Qwen2.5-VL uses the same ones); the chat template is their
shared shape (ChatML turns, an image block rendered as `<|vision_start|><|image_pad|><|vision_end|>`);
the image processor is `Qwen2VLImageProcessorPil` (Qwen2.5-VL's too) limited to 56x56..84x84
pixels (4 to 9 image tokens per image after the 2x2 merge); the processor is `Qwen2VLProcessor`
or `Qwen2_5_VLProcessor`. The model is `Qwen2VLForConditionalGeneration` (a 1-block, 32-wide
vision tower) or `Qwen2_5_VLForConditionalGeneration` (a 2-block, 32-wide vision tower: a
windowed-attention block with 28-pixel windows, then a full-attention block), each on a
2-layer, 32-wide text config. The processor is saved once per process and family to a temp dir, so
tests can load it the way a user would (`AutoProcessor`).

`image_pairs` draws small PNGs that differ in one region (a coloured square whose colour is
the answer) and returns `kind="image"` pairs pointing at them.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

from contextrl.miner.pair import Context, ContrastivePair, Difference
from contextrl.miner.render import INSTRUCTION

VLM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                "<|video_pad|>"]
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "You are given a question, an answer, and two contexts. Exactly one context supports the answer.",
    "Question: Answer: Context A: Context B:", INSTRUCTION, "A B A B (A) (B) Answer: A Answer: B",
    "What colour is the square? red green blue yellow. Which shape is shown? Describe the picture.",
]
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
TASK_QUESTIONS = ["What colour is the square?", "Describe the picture.", "Which shape is shown?", "Name a colour."]
IMAGE_SIDE = 56
FAMILIES = ("qwen2_vl", "qwen2_5_vl")
"""The VLM families the builders know; `qwen2_vl` is the default."""
_CLASS_NAMES = {  # family -> (processor, config, model) class names in `transformers`
    "qwen2_vl": ("Qwen2VLProcessor", "Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
}
MODEL_CLASS_NAMES = {family: names[2] for family, names in _CLASS_NAMES.items()}


def _classes(family: str) -> tuple[type, type, type]:
    """The (processor, config, model) classes of `family`."""
    import transformers

    if family not in _CLASS_NAMES:
        raise ValueError(f"unknown tiny VLM family {family!r}; expected one of {FAMILIES}")
    return tuple(getattr(transformers, name) for name in _CLASS_NAMES[family])


@functools.lru_cache(maxsize=None)
def tiny_vlm_dir(family: str = "qwen2_vl") -> str:
    """A temp dir holding the saved tiny processor of `family` (built once per process and family)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

    from contextrl.trainer.vlm import image_only_processor_class

    processor_class = _classes(family)[0]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=VLM_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=VLM_SPECIALS[1:], chat_template=QWEN2_VL_TEMPLATE,
                                   padding_side="left")
    images = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=84 * 84, patch_size=14, temporal_patch_size=2,
                                   merge_size=2)
    # no video processor: transformers builds Qwen2(.5)-VL's only with torchvision, which ContextRL does not need
    processor = image_only_processor_class(processor_class)(image_processor=images, tokenizer=fast,
                                                            chat_template=QWEN2_VL_TEMPLATE)
    path = Path(tempfile.mkdtemp(prefix=f"contextrl-tiny-{family.replace('_', '-')}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    processor.save_pretrained(path)
    return str(path)


def tiny_processor(family: str = "qwen2_vl"):
    """The tiny processor of `family`, loaded as a user would (`vlm.load_processor`: `AutoProcessor`,
    or without a video processor when torchvision is missing); a fresh instance each call."""
    from contextrl.trainer.vlm import load_processor

    return load_processor(tiny_vlm_dir(family))


# the vision towers: same patching (14-pixel patches, 2 frames, 2x2 merge) as the image processor
_VISION = {
    # Qwen2VLVisionConfig: `embed_dim` wide blocks, an `mlp_ratio` MLP, a merger to `hidden_size`
    "qwen2_vl": dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                     spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
    # Qwen2_5_VLVisionConfig: `hidden_size` wide blocks, an `intermediate_size` MLP, a merger to
    # `out_hidden_size` (the text width); block 0 attends within 28-pixel windows (one merged token,
    # so a 56x56 image has 4 and the window reordering is exercised), block 1 attends fully
    "qwen2_5_vl": dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=2,
                       window_size=28, fullatt_block_indexes=[1], patch_size=14, spatial_merge_size=2,
                       temporal_patch_size=2, in_channels=3),
}


def tiny_vlm(processor=None, seed: int = 0, family: str = "qwen2_vl"):
    """A fresh tiny `Qwen2VLForConditionalGeneration` / `Qwen2_5_VLForConditionalGeneration`
    (`family`) sized to the processor, deterministic in `seed`."""
    _, config_class, model_class = _classes(family)
    processor = processor or tiny_processor(family)
    tok = processor.tokenizer
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    cfg = config_class(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(_VISION[family]), tie_word_embeddings=False, **ids,
    )
    torch.manual_seed(seed)
    model = model_class(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def draw(path: Path, colour: str, region: tuple[int, int, int, int] = (16, 16, 40, 40), side: int = IMAGE_SIDE) -> str:
    """A grey `side`x`side` PNG with a `colour` square at `region`; returns the path."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), (128, 128, 128))
    ImageDraw.Draw(img).rectangle(region, fill=COLOURS[colour])
    img.save(path)
    return str(path)


def image_pairs(root: Path, n: int = 4) -> list[ContrastivePair]:
    """`n` image pairs whose two images differ only in the square's colour (the answer)."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    out = []
    for i in range(n):
        yes, no = names[i % len(names)], names[(i + 1) % len(names)]
        region = (8 + 2 * i, 8, 32 + 2 * i, 32)
        pos = draw(root / f"pair{i}_pos.png", yes, region)
        neg = draw(root / f"pair{i}_neg.png", no, region)
        out.append(ContrastivePair(
            kind="image", query=f"What colour is square {i}?", answer=yes,
            positive=Context(image_path=pos, supported_answer=yes), negative=Context(image_path=neg, supported_answer=no),
            difference=Difference(positive=(region,), negative=(region,)),
        ))
    return out


def image_task_dataset(root: Path, n: int = 4):
    """A conversational VLM prompt dataset: a string question per row plus an `image` column."""
    from datasets import Dataset
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    images = [Image.open(draw(root / f"task{i}.png", names[i % len(names)])).convert("RGB") for i in range(n)]
    prompts = [[{"role": "user", "content": TASK_QUESTIONS[i % len(TASK_QUESTIONS)]}] for i in range(n)]
    return Dataset.from_dict({"prompt": prompts, "image": images})
