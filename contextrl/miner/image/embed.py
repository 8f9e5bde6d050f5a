"""Image embedders for similarity search: images -> float32 rows of unit L2 norm.

- `PixelEmbedder`: model-free perceptual baseline, no weights. The image is converted to
  RGB (or grayscale), resized to `side` x `side` with a box filter (area average), flattened,
  **mean-centred** (one mean over all values, so a uniform brightness shift is ignored but
  colour differences are kept) and L2-normalised. A dot product is then the Pearson
  correlation of the two thumbnails: 1.0 for the same picture, about 0 for unrelated ones.
  On easy-VQA (64x64 shapes on near-white backgrounds) `side=16` RGB at alpha 0.85 links
  images whose shape overlaps in place and size; pairs whose colour or shape differ survive
  the answer filter (see `similarity`). A flat image (zero variance) embeds to zeros, which
  is similar to nothing.
- `HashEmbedder`: difference hash (dHash) as a +-1 vector: `side` x (`side`+1) grayscale,
  sign of horizontal gradients, scaled to unit norm; cos = 1 - 2 * Hamming / bits.
- `VisionTowerEmbedder`: the VLM's own vision tower (Qwen2-VL, Qwen2.5-VL and other models with
  `get_image_features(pixel_values, image_grid_thw)`), patch embeddings after the merger,
  mean-pooled per image and L2-normalised. This is what the paper's "f(I)" means when the
  policy is the VLM being trained; it needs the loaded model and its image processor.

`make_embedder("pixel" | "hash")` builds the weight-free ones by name (the CLI uses it).
Every `embed` runs in batches of `batch_size` (a tqdm bar past a few batches) and returns a
(len(images), dim) float32 array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from contextrl.errors import ConfigError, MiningError

EmbedderName = Literal["auto", "vision_tower", "pixel", "hash"]
EMBEDDERS: tuple[str, ...] = ("auto", "vision_tower", "pixel", "hash")


@runtime_checkable
class ImageEmbedder(Protocol):
    """Maps PIL images to unit-norm float32 rows `(len(images), dim)`; dot product = cosine."""

    name: str
    dim: int

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray: ...


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (all-zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _positive_int(owner: str, name: str, value: Any, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{owner}.{name}={value!r}: use an integer >= {low}")


def _progress(n: int, batch: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=desc, disable=not enabled or n <= 4 * batch, leave=False)


class PixelEmbedder:
    """Mean-centred, L2-normalised `side` x `side` thumbnails (see the module docstring)."""

    def __init__(self, side: int = 16, mode: Literal["RGB", "L"] = "RGB", batch_size: int = 256, progress: bool = True):
        _positive_int("PixelEmbedder", "side", side, 2)
        _positive_int("PixelEmbedder", "batch_size", batch_size)
        if mode not in ("RGB", "L"):
            raise ConfigError(f"PixelEmbedder.mode={mode!r}: use 'RGB' (colour) or 'L' (grayscale)")
        self.side, self.mode, self.batch_size, self.progress = side, mode, batch_size, progress
        self.dim = side * side * (3 if mode == "RGB" else 1)
        self.name = f"pixel-{mode.lower()}{side}"

    def _vector(self, im: Image.Image) -> np.ndarray:
        thumb = im.convert(self.mode).resize((self.side, self.side), Image.Resampling.BOX)
        v = np.asarray(thumb, dtype=np.float32).reshape(-1)
        return v - v.mean()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), self.dim), np.float32)
        with _progress(len(images), self.batch_size, f"embed ({self.name})", self.progress) as bar:
            for s in range(0, len(images), self.batch_size):
                batch = images[s:s + self.batch_size]
                out[s:s + len(batch)] = l2_normalise(np.stack([self._vector(im) for im in batch]))
                bar.update(len(batch))
        return out


class HashEmbedder:
    """Difference hash (dHash) as a unit-norm +-1 vector of `side` * `side` bits."""

    def __init__(self, side: int = 16, batch_size: int = 256, progress: bool = True):
        _positive_int("HashEmbedder", "side", side, 2)
        _positive_int("HashEmbedder", "batch_size", batch_size)
        self.side, self.batch_size, self.progress = side, batch_size, progress
        self.dim = side * side
        self.name = f"dhash{side}"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), self.dim), np.float32)
        scale = np.float32(1.0 / np.sqrt(self.dim))
        for k, im in enumerate(images):
            g = np.asarray(im.convert("L").resize((self.side + 1, self.side), Image.Resampling.BOX), dtype=np.int16)
            out[k] = np.where(g[:, 1:] > g[:, :-1], scale, -scale).reshape(-1)
        return out


class VisionTowerEmbedder:
    """Mean-pooled patch embeddings of a VLM's vision tower (after its patch merger).

    `model`: a loaded Qwen2-VL / Qwen2.5-VL model (`...ForConditionalGeneration` or the bare
    `...Model`: anything with `get_image_features(pixel_values, image_grid_thw)`);
    `image_processor`: its image processor (or a processor with `.image_processor`).
    """

    def __init__(self, model: Any, image_processor: Any, batch_size: int = 16, progress: bool = True, name: str | None = None):
        _positive_int("VisionTowerEmbedder", "batch_size", batch_size)
        if not callable(getattr(model, "get_image_features", None)):
            raise ConfigError(f"VisionTowerEmbedder.model: {type(model).__name__} has no get_image_features(); pass a "
                              "Qwen2-VL / Qwen2.5-VL model (e.g. Qwen2VLForConditionalGeneration)")
        self.image_processor = getattr(image_processor, "image_processor", image_processor)
        if not callable(self.image_processor):
            raise ConfigError("VisionTowerEmbedder.image_processor: pass the model's image processor "
                              "(e.g. Qwen2VLImageProcessor) or its processor")
        self.model, self.batch_size, self.progress = model, batch_size, progress
        config = getattr(model, "config", None)
        text = getattr(config, "text_config", config)
        vision = getattr(config, "vision_config", None)
        self.dim = int(getattr(vision, "out_hidden_size", None) or getattr(text, "hidden_size", 0) or getattr(vision, "hidden_size"))
        self.name = name or f"vision-tower:{type(model).__name__}"

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> "VisionTowerEmbedder":
        """The vision tower of a saved VLM directory (the policy's own checkpoint, e.g. one
        `contextrl train` wrote), loaded with its processor; `kwargs` go to the constructor."""
        from contextrl.trainer.vlm import is_vlm_dir, load_vlm_policy

        if not is_vlm_dir(path):
            raise ConfigError(f"vlm={path!r}: not a saved vision-language model directory (config.json with a "
                              "vision_config); pass the VLM policy's directory, or use embedder='pixel'")
        model, processor = load_vlm_policy(path)
        return cls(model.eval(), processor, name=kwargs.pop("name", f"vision-tower:{Path(path).name}"), **kwargs)

    def _pool(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        batch = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        param = next(self.model.parameters())
        pixel_values = batch["pixel_values"].to(device=param.device, dtype=param.dtype)
        grid = batch["image_grid_thw"].to(param.device)
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values, grid)
        per_image = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(per_image, torch.Tensor):  # some versions return the concatenation
            merge = getattr(getattr(self.model.config, "vision_config", None), "spatial_merge_size", 2)
            per_image = torch.split(per_image, (grid.prod(-1) // merge**2).tolist())
        if len(per_image) != len(images):
            raise MiningError(f"VisionTowerEmbedder: the vision tower returned {len(per_image)} images for {len(images)}")
        return torch.stack([t.float().mean(dim=0) for t in per_image]).cpu().numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), self.dim), np.float32)
        with _progress(len(images), self.batch_size, f"embed ({self.name})", self.progress) as bar:
            for s in range(0, len(images), self.batch_size):
                batch = images[s:s + self.batch_size]
                pooled = self._pool(batch)
                if pooled.shape[1] != self.dim:
                    raise MiningError(f"VisionTowerEmbedder: pooled width {pooled.shape[1]} != dim {self.dim}")
                out[s:s + len(batch)] = l2_normalise(pooled)
                bar.update(len(batch))
        return out


def make_embedder(name: str, side: int = 16, batch_size: int = 256, progress: bool = True,
                  vlm: str | None = None) -> ImageEmbedder:
    """An embedder by name: "auto" (the vision tower of `vlm` when one is given, else pixel),
    "vision_tower" (needs `vlm`, a saved VLM directory), "pixel" (RGB thumbnails) or "hash" (dHash)."""
    if name in ("auto", "vision_tower") and vlm:
        return VisionTowerEmbedder.from_pretrained(vlm, progress=progress)
    if name == "vision_tower":
        raise ConfigError("embedder='vision_tower' needs vlm= (a saved VLM directory, e.g. the policy's checkpoint); "
                          "or use embedder='pixel' (no weights)")
    if name == "auto":
        name = "pixel"
    if name == "pixel":
        return PixelEmbedder(side=side, batch_size=batch_size, progress=progress)
    if name == "hash":
        return HashEmbedder(side=side, batch_size=batch_size, progress=progress)
    raise ConfigError(f"embedder={name!r}: choose one of {list(EMBEDDERS)}, or pass a VisionTowerEmbedder "
                      "built from your VLM to SimilarityMiner")


__all__ = ["EMBEDDERS", "EmbedderName", "HashEmbedder", "ImageEmbedder", "PixelEmbedder", "VisionTowerEmbedder",
           "l2_normalise", "make_embedder"]
