"""Multimodal pair mining: image contexts (DESIGN.md, "How pairs are made - Multimodal").

- similarity search: `embed` (image embedders), `search` (near-duplicate pair search),
  `data` (streaming VQA sources), `similarity` (`SimilarityMiner`), `cli` (`contextrl mine
  --miner similarity|edit`);
- generative editing: `edit`, `ssim`, `edit_miner`.

Nothing heavy is imported here: names load on first use from the module listed in
`LAZY_EXPORTS` (add a name -> module entry there to export more).
"""

from __future__ import annotations

import importlib
from typing import Any

LAZY_EXPORTS: dict[str, str] = {
    # similarity search
    "ImageEmbedder": "contextrl.miner.image.embed",
    "PixelEmbedder": "contextrl.miner.image.embed",
    "HashEmbedder": "contextrl.miner.image.embed",
    "VisionTowerEmbedder": "contextrl.miner.image.embed",
    "make_embedder": "contextrl.miner.image.embed",
    "SearchConfig": "contextrl.miner.image.search",
    "NeighbourPairs": "contextrl.miner.image.search",
    "find_pairs": "contextrl.miner.image.search",
    "top_k": "contextrl.miner.image.search",
    "recall": "contextrl.miner.image.search",
    "VQAItem": "contextrl.miner.image.data",
    "easy_vqa_items": "contextrl.miner.image.data",
    "folder_items": "contextrl.miner.image.data",
    "skimage_items": "contextrl.miner.image.data",
    "SimilarityConfig": "contextrl.miner.image.similarity",
    "SimilarityMiner": "contextrl.miner.image.similarity",
    "image_difference": "contextrl.miner.image.similarity",
    "run_image_mining": "contextrl.miner.image.cli",
    # generative editing
    "ImageEditor": "contextrl.miner.image.edit",
    "ProceduralEditor": "contextrl.miner.image.edit",
    "DiffusersEditor": "contextrl.miner.image.edit",
    "EditInstruction": "contextrl.miner.image.instruction",
    "EditResult": "contextrl.miner.image.instruction",
    "EditFilterConfig": "contextrl.miner.image.ssim",
    "check_edit": "contextrl.miner.image.ssim",
    "EditMinerConfig": "contextrl.miner.image.edit_miner",
    "mine_edits": "contextrl.miner.image.edit_miner",
    "easy_vqa_sample": "contextrl.miner.image.edit_sources",
}

__all__ = sorted(LAZY_EXPORTS)


def __getattr__(name: str) -> Any:
    module = LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'contextrl.miner.image' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY_EXPORTS))
