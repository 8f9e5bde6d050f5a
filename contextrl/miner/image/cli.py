"""`contextrl mine --miner similarity|edit`: image mining from the command line.

`contextrl.cli` only dispatches here (`run_image_mining(args)`); this module owns the image
miners' inputs and outputs:

- `--input`: one or more of `easy-vqa` (`easy-vqa:train`, `easy-vqa:test`), `skimage` (the
  bundled scikit-image samples), or an image folder (with `--questions FILE.json[l]`);
  sources are chained and streamed;
- `--limit N`: read at most N items in all; `--alpha`: the similarity threshold; `--vlm DIR`:
  embed with that saved VLM's vision tower;
- writes `OUT/pairs.jsonl` (verified pairs) and `OUT/funnel.json`, the two files
  `contextrl report pairs OUT/pairs.jsonl` renders.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Iterable, Iterator

from contextrl.errors import MiningError
from contextrl.miner.image.data import VQAItem, easy_vqa_items, folder_items, skimage_items

IMAGE_MINERS: tuple[str, ...] = ("similarity", "edit")


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The `mine` options only the image miners read (one argument group)."""
    g = parser.add_argument_group("image miners (--miner similarity|edit)")
    g.add_argument("--limit", type=int, default=None, help="read at most this many (image, question) items")
    g.add_argument("--questions", default=None, help="questions sidecar (.json list or .jsonl) for an image-folder --input")
    g.add_argument("--alpha", type=float, default=None, help="similarity: cosine threshold (default 0.85)")
    g.add_argument("--vlm", default=None, help="similarity: a saved VLM directory whose vision tower embeds the images "
                                               "(default: no weights, the pixel baseline)")


def image_items(inputs: Iterable[str], questions: str | None = None, limit: int | None = None) -> Iterator[VQAItem]:
    """The items of `--input` values, chained and streamed (`limit`: at most that many)."""
    if limit is not None and limit < 1:
        raise MiningError(f"--limit {limit}: use a positive number of items")

    def one(spec: str) -> Iterator[VQAItem]:
        name, _, split = spec.partition(":")
        if name == "easy-vqa":
            return easy_vqa_items(split=split or "train")
        if spec == "skimage":
            return skimage_items()
        if Path(spec).is_dir():
            return folder_items(spec, questions=questions)
        raise MiningError(f"--input {spec!r}: use 'easy-vqa' ('easy-vqa:test'), 'skimage', or an image folder")

    stream = itertools.chain.from_iterable(one(s) for s in inputs)
    return itertools.islice(stream, limit) if limit is not None else stream


def run_image_mining(args: argparse.Namespace) -> int:
    """Run the image miner named by `args.miner` and write pairs.jsonl + funnel.json under `args.out`."""
    from contextrl.miner.pair import write_pairs

    if args.miner not in IMAGE_MINERS:
        raise MiningError(f"--miner {args.miner!r} is not an image miner ({list(IMAGE_MINERS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = image_items(args.input, getattr(args, "questions", None), getattr(args, "limit", None))
    progress = not getattr(args, "quiet", False)
    if args.miner == "similarity":
        from contextrl.miner.image.similarity import SimilarityConfig, SimilarityMiner

        given = {k: getattr(args, k, None) for k in ("alpha", "vlm")}
        config = SimilarityConfig(progress=progress, **{k: v for k, v in given.items() if v is not None})
        pairs, funnel = SimilarityMiner(config).mine(items)
    else:
        try:
            from contextrl.miner.image import edit_miner
            mine_edits = edit_miner.mine_edits
        except (ImportError, AttributeError) as e:
            raise MiningError(f"--miner edit: the edit miner is not available ({e}); "
                              "it lives in contextrl.miner.image.edit_miner.mine_edits") from None
        config_cls = getattr(edit_miner, "EditMinerConfig", None)
        if config_cls is not None:
            pairs, funnel = mine_edits(items, out, config_cls(progress=progress))
        else:
            pairs, funnel = mine_edits(items, out)
    n = write_pairs(out / "pairs.jsonl", pairs)
    funnel.save(out / "funnel.json")
    funnel.print()
    print(f"wrote {n} pair(s) to {out / 'pairs.jsonl'} and the funnel to {out / 'funnel.json'}")
    return 0 if n else 1


__all__ = ["IMAGE_MINERS", "add_image_arguments", "image_items", "run_image_mining"]
