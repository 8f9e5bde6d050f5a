"""Similarity-search image miner: embedders, pair search, streaming sources, the miner, the CLI.

Real parts throughout: easy-VQA and scikit-image images from their packages, faiss and numpy
search, a tiny Qwen2-VL built locally (no download) for the vision-tower embedder.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from contextrl.errors import ConfigError, MiningError
from contextrl.miner.image import search
from contextrl.miner.image.data import SKIMAGE_BUNDLED, VQAItem, easy_vqa_items, folder_items, skimage_items
from contextrl.miner.image.embed import HashEmbedder, PixelEmbedder, VisionTowerEmbedder, make_embedder
from contextrl.miner.image.search import NeighbourPairs, SearchConfig, exact_pairs_for_rows, find_pairs, recall, top_k
from contextrl.miner.image.similarity import STAGES, SimilarityConfig, SimilarityMiner, image_difference
from contextrl.miner.pair import read_pairs


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit rows in small look-alike groups (cosines spread around 0.85) over random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 3, d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.uniform(0.2, 0.7, (n, 1)).astype(np.float32) * \
        rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d).astype(np.float32) * np.linalg.norm(centres, axis=1).mean()
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(x: np.ndarray, alpha: float) -> set[tuple[int, int]]:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    i, j = np.nonzero(np.triu(s >= alpha, 1))
    return set(zip(i.tolist(), j.tolist()))


# --------------------------------------------------------------------------- embedders


def test_pixel_embedder_on_real_photos_finds_the_stereo_pair():
    items = list(skimage_items())
    images = [Image.open(i.image_path) for i in items]
    emb = PixelEmbedder(side=16).embed(images)
    assert emb.dtype == np.float32 and emb.shape == (len(items), 16 * 16 * 3)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T - 2 * np.eye(len(items))
    best = np.unravel_index(np.argmax(sims), sims.shape)
    assert {items[best[0]].image_id, items[best[1]].image_id} == {"skimage/motorcycle_left", "skimage/motorcycle_right"}
    # a uniform brightness shift (no clipping) leaves the mean-centred thumbnail unchanged
    cam = np.asarray(Image.open(items[[i.answer for i in items].index("camera")].image_path), dtype=np.int16)
    darker = Image.fromarray((np.clip(cam, 40, 215) - 30).astype(np.uint8))
    base = Image.fromarray(np.clip(cam, 40, 215).astype(np.uint8))
    a, b = PixelEmbedder().embed([base, darker])
    assert float(a @ b) > 0.9999


def test_hash_embedder_is_plus_minus_one_and_self_similar():
    ims = [Image.open(i.image_path) for i in skimage_items(["astronaut", "coffee"])]
    emb = HashEmbedder(side=8).embed(ims + ims[:1])
    assert emb.shape == (3, 64)
    assert set(np.round(np.abs(emb) * 8, 6).ravel().tolist()) == {1.0}
    assert float(emb[0] @ emb[2]) == pytest.approx(1.0) and float(emb[0] @ emb[1]) < 0.9
    with pytest.raises(ConfigError, match="embedder='clip'"):
        make_embedder("clip")
    with pytest.raises(ConfigError, match="PixelEmbedder.side"):
        PixelEmbedder(side=1)


def _tiny_qwen2_vl():
    import torch
    import transformers
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, bos_token_id=None, eos_token_id=1, pad_token_id=0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=120, video_token_id=121, vision_start_token_id=122, vision_end_token_id=123,
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    proc_cls = getattr(transformers, "Qwen2VLImageProcessorPil", None) or transformers.Qwen2VLImageProcessor
    processor = proc_cls(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, temporal_patch_size=2, merge_size=2)
    return model, processor


def test_vision_tower_embedder_mean_pools_the_tiny_qwen2_vl():
    import torch

    model, processor = _tiny_qwen2_vl()
    ims = [Image.open(i.image_path).convert("RGB") for i in skimage_items(["astronaut", "coffee", "chelsea"])]
    emb = VisionTowerEmbedder(model, processor, batch_size=2).embed(ims)
    assert emb.shape == (3, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the same as pooling get_image_features by hand, one image at a time (batching changes nothing)
    for k, im in enumerate(ims):
        batch = processor(images=[im], return_tensors="pt")
        with torch.inference_mode():
            feats = model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output[0]
        ref = feats.mean(0).numpy()
        np.testing.assert_allclose(emb[k], ref / np.linalg.norm(ref), atol=1e-5)
    assert float(emb[0] @ emb[1]) < 0.99999  # different photos, different vectors
    with pytest.raises(ConfigError, match="get_image_features"):
        VisionTowerEmbedder(torch.nn.Linear(2, 2), processor)


# --------------------------------------------------------------------------- search


def test_numpy_and_faiss_exact_search_return_the_same_pairs_as_brute_force():
    x = clustered(3000, 64)
    truth = brute_force(x, 0.85)
    assert 100 < len(truth) < 20_000
    by_faiss = find_pairs(x, SearchConfig(backend="faiss", method="exact", block_rows=700, block_cols=1100, progress=False))
    by_numpy = find_pairs(x, SearchConfig(backend="numpy", method="exact", block_rows=700, block_cols=1100, progress=False))
    assert isinstance(by_faiss, NeighbourPairs) and by_faiss.backend == "faiss" and by_numpy.backend == "numpy"
    np.testing.assert_array_equal(by_faiss.i, by_numpy.i)
    np.testing.assert_array_equal(by_faiss.j, by_numpy.j)
    np.testing.assert_array_equal(by_faiss.cos, by_numpy.cos)
    # the float64 brute force can only disagree on pairs within float32 rounding of alpha
    got = set(zip(by_numpy.i.tolist(), by_numpy.j.tolist()))
    for a, b in got ^ truth:
        assert abs(float(x[a].astype(np.float64) @ x[b]) - 0.85) < 1e-5
    assert np.all(by_numpy.i < by_numpy.j) and np.all(by_numpy.cos >= 0.85)
    ordered = by_numpy.by_cos()
    assert np.all(np.diff(ordered.cos) <= 0) and len(ordered) == len(by_numpy)


def test_alpha_threshold_is_monotone_and_inclusive():
    x = clustered(1500, 32, seed=3)
    loose = find_pairs(x, alpha=0.8, backend="numpy", method="exact", progress=False)
    tight = find_pairs(x, alpha=0.9, backend="numpy", method="exact", progress=False)
    assert 0 < len(tight) < len(loose)
    assert np.isin(tight.keys(), loose.keys()).all()
    # alpha exactly at a pair's cosine keeps it (>=), a hair above drops it
    c = float(tight.cos[0])
    at = find_pairs(x, alpha=c, backend="faiss", method="exact", progress=False)
    above = find_pairs(x, alpha=float(np.nextafter(np.float32(c), np.float32(2))), backend="faiss", method="exact", progress=False)
    key = tight.keys()[0]
    assert key in at.keys() and key not in above.keys()


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
def test_ivf_join_recall_against_exact(backend):
    from benchmarks.images import synthetic_embeddings

    x, _ = synthetic_embeddings(12_000, d=128, topics=32, show=False)
    exact = find_pairs(x, method="exact", backend="numpy", progress=False)
    approx = find_pairs(x, method="ivf", backend=backend, progress=False)
    assert approx.method == "ivf" and len(exact) > 1000
    assert np.isin(approx.keys(), exact.keys()).all()  # never a pair below alpha
    assert recall(approx, exact) >= 0.95
    assert approx.stats["nlist"] > 1 and approx.stats["join_seconds"] >= 0
    rows = np.arange(0, 12_000, 37)
    sample = exact_pairs_for_rows(x, rows)
    np.testing.assert_array_equal(sample.keys(), exact.touching(rows).keys())


def test_top_k_matches_brute_force():
    x = clustered(800, 16, seed=5)
    for backend in ("faiss", "numpy"):
        cos, idx = top_k(x, 3, backend=backend)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        ref = np.sort(sims, axis=1)[:, ::-1][:, :3]
        np.testing.assert_allclose(cos, ref, atol=1e-5)
        assert not (idx == np.arange(800)[:, None]).any()


def test_search_config_errors_name_the_field(monkeypatch):
    with pytest.raises(ConfigError, match=r"SearchConfig.alpha=1.5"):
        SearchConfig(alpha=1.5)
    with pytest.raises(ConfigError, match=r"SearchConfig.backend='fais'.*choose one of"):
        SearchConfig(backend="fais")
    with pytest.raises(ConfigError, match="float32"):
        find_pairs(np.eye(4))
    with pytest.raises(ConfigError, match="unknown SearchConfig field 'alhpa'"):
        find_pairs(np.eye(4, dtype=np.float32), alhpa=0.9)
    monkeypatch.setattr(search, "faiss_available", lambda: False)
    with pytest.raises(ConfigError, match=r"SearchConfig.backend='faiss': faiss is not installed: `pip install faiss-cpu`"):
        SearchConfig(backend="faiss")
    with pytest.raises(ConfigError, match="SearchConfig.backend='faiss'"):
        SimilarityConfig(backend="faiss")
    assert SearchConfig().resolved_backend() == "numpy"  # auto falls back


# --------------------------------------------------------------------------- data sources


def test_easy_vqa_source_streams_items_with_real_files():
    it = easy_vqa_items()
    first = next(it)
    assert isinstance(first, VQAItem) and Path(first.image_path).is_file() and first.question.endswith("?")
    assert len(list(easy_vqa_items(split="test", limit=25))) == 25
    with pytest.raises(MiningError, match="split='val'"):
        next(easy_vqa_items(split="val"))


def test_skimage_source_uses_bundled_files_only():
    items = list(skimage_items())
    assert len(items) == sum(len(v) for v in SKIMAGE_BUNDLED.values())
    assert all(Path(i.image_path).is_file() for i in items)
    with pytest.raises(MiningError, match="'eagle' is not bundled offline"):
        list(skimage_items(["eagle"]))


def _shape_image(path: Path, colour: str, box=(20, 20, 44, 44), shape: str = "rect") -> str:
    img = Image.new("RGB", (64, 64), (245, 240, 235))
    draw = ImageDraw.Draw(img)
    (draw.rectangle if shape == "rect" else draw.ellipse)(box, fill=colour)
    img.save(path)
    return path.name


def test_folder_source_with_sidecars_and_clear_errors(tmp_path):
    names = [_shape_image(tmp_path / f"{k}.png", c) for k, c in enumerate(["red", "blue"])]
    (tmp_path / "notes.txt").write_text("not an image")
    assert [i.image_id for i in folder_items(tmp_path)] == names
    side = tmp_path / "q.jsonl"
    side.write_text("\n".join(json.dumps({"image": n, "question": "what color?", "answer": c})
                              for n, c in zip(names, ["red", "blue"])) + "\n")
    items = list(folder_items(tmp_path, questions=side))
    assert [(i.answer, Path(i.image_path).name) for i in items] == [("red", "0.png"), ("blue", "1.png")]
    side.write_text(json.dumps({"image": names[0], "question": "q"}) + "\n")
    with pytest.raises(MiningError, match=r"q.jsonl:1: field 'answer' is missing"):
        list(folder_items(tmp_path, questions=side))
    side.write_text('{"image": "0.png", "question": "q", "answer": 3}\n')
    with pytest.raises(MiningError, match=r"q.jsonl:1: field 'answer' must be a string"):
        list(folder_items(tmp_path, questions=side))
    bad = tmp_path / "q.json"
    bad.write_text(json.dumps([{"image": "missing.png", "question": "q", "answer": "a"}]))
    with pytest.raises(MiningError, match=r"q.json\[0\]: field 'image'.*missing.png does not exist"):
        list(folder_items(tmp_path, questions=bad))
    bad.write_text("{not json")
    with pytest.raises(MiningError, match="q.json: not valid JSON"):
        list(folder_items(tmp_path, questions=bad))


# --------------------------------------------------------------------------- miner


def test_image_difference_boxes_the_changed_blob():
    a = np.full((40, 50, 3), 200, np.uint8)
    b = a.copy()
    b[10:20, 5:15] = (255, 0, 0)
    regions, frac = image_difference(a, b)
    assert regions == ((5, 10, 15, 20),) and frac == pytest.approx(100 / 2000)
    for k in range(6):  # six separate specks > max_regions: one box around all
        b[30:33, 2 + 8 * k:5 + 8 * k] = 0
    regions, _ = image_difference(a, b, max_regions=4)
    assert regions == ((2, 10, 45, 33),)
    with pytest.raises(MiningError, match="sizes differ"):
        image_difference(a, a[:10])


def test_miner_on_easy_vqa_yields_verified_pairs_with_consistent_funnel():
    limit = 12_000
    truth: dict[str, dict[str, str]] = {}
    for it in easy_vqa_items(limit=limit):
        truth.setdefault(it.image_path, {})[it.question] = it.answer
    cfg = SimilarityConfig(progress=False, max_pairs_per_image=2)
    pairs, funnel = SimilarityMiner(cfg).mine(easy_vqa_items(limit=limit))
    assert len(pairs) >= 10 and funnel["verified"] == len(pairs)
    assert funnel["items"] == limit and funnel["images"] == funnel["embedded"] == len(truth)
    for unit in {u for _, u in STAGES}:  # counts never grow along stages of the same unit
        counts = [funnel[s] for s, u in STAGES if u == unit]
        assert counts == sorted(counts, reverse=True), (unit, counts)
    uses = Counter()
    for p in pairs:
        assert p.kind == "image" and p.verdict is not None and p.verdict.ok
        pos, neg = truth[p.positive.image_path], truth[p.negative.image_path]
        assert pos[p.query] == p.answer == p.positive.supported_answer
        assert neg[p.query] == p.negative.supported_answer != p.answer  # the answer-differs rule
        assert p.provenance.miner == "similarity" and p.provenance.params["cos"] >= 0.85
        for x0, y0, x1, y1 in p.difference.positive:
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        uses.update([p.positive.image_path, p.negative.image_path])
    assert max(uses.values()) <= 2
    assert funnel.notes["search"]["method"] == "exact"


def test_answer_rule_and_alpha_on_drawn_images(tmp_path):
    # 0/1: same square, red vs brown (answers differ); 2/3: same circle, same answer; 4: elsewhere
    specs = [("0.png", "red", (20, 20, 44, 44), "rect", "red"), ("1.png", "brown", (20, 20, 44, 44), "rect", "brown"),
             ("2.png", "green", (2, 2, 18, 18), "ellipse", "green"), ("3.png", "green", (2, 2, 19, 19), "ellipse", "green"),
             ("4.png", "black", (46, 46, 62, 62), "rect", "black")]
    rows = []
    for name, colour, box, shape, answer in specs:
        _shape_image(tmp_path / name, colour, box, shape)
        rows.append({"image": name, "question": "What color is the shape?", "answer": answer})
    (tmp_path / "q.json").write_text(json.dumps(rows))
    items = list(folder_items(tmp_path, questions=tmp_path / "q.json"))
    emb = PixelEmbedder().embed([Image.open(i.image_path) for i in items])
    cos01, cos23 = float(emb[0] @ emb[1]), float(emb[2] @ emb[3])
    assert cos01 >= 0.85 and cos23 >= 0.85
    pairs, funnel = SimilarityMiner(SimilarityConfig(progress=False)).mine(items)
    assert funnel["neighbour_pairs"] >= 2 and funnel["same_question"] >= 2
    assert [(Path(p.positive.image_path).name, Path(p.negative.image_path).name, p.answer) for p in pairs] == [("0.png", "1.png", "red")]
    assert pairs[0].difference.positive == ((20, 20, 45, 45),)
    above = SimilarityMiner(SimilarityConfig(progress=False, alpha=min(1.0, cos01 + 1e-4))).mine(items)[0]
    assert above == []


class CountingEmbedder:
    """A real PixelEmbedder that records how far the item stream had been read at each call."""

    def __init__(self, pulled: list[int]):
        self.inner, self.pulled, self.calls = PixelEmbedder(), pulled, []
        self.name, self.dim = self.inner.name, self.inner.dim

    def embed(self, images):
        self.calls.append((self.pulled[0], len(images)))
        return self.inner.embed(images)


def test_miner_consumes_the_stream_lazily_and_embeds_each_image_once():
    pulled = [0]

    def stream():
        for it in easy_vqa_items(limit=2000):
            pulled[0] += 1
            yield it

    emb = CountingEmbedder(pulled)
    _, funnel = SimilarityMiner(SimilarityConfig(progress=False, batch_size=8), embedder=emb).mine(stream())
    assert pulled[0] == 2000 and funnel["items"] == 2000
    assert emb.calls[0][0] < 200  # the first batch was embedded long before the stream ended
    assert all(n <= 8 for _, n in emb.calls)
    assert sum(n for _, n in emb.calls) == funnel["images"]  # each distinct image embedded once


def test_similarity_config_validation():
    with pytest.raises(ConfigError, match=r"SimilarityConfig.alpha=-1: use a cosine threshold in \(-1, 1\]"):
        SimilarityConfig(alpha=-1)
    with pytest.raises(ConfigError, match=r"SimilarityConfig.max_pairs_per_image=0"):
        SimilarityConfig(max_pairs_per_image=0)
    with pytest.raises(ConfigError, match=r"unknown field 'alhpa' \(did you mean 'alpha'\?\)"):
        SimilarityConfig.from_dict({"alhpa": 0.9})
    with pytest.raises(ConfigError, match=r"SimilarityConfig.embedder='clip'"):
        SimilarityConfig(embedder="clip")
    assert SimilarityConfig.from_dict({"verify": {"max_length_ratio": 2.0}}).verify.max_length_ratio == 2.0


# --------------------------------------------------------------------------- CLI


def test_cli_mines_easy_vqa_and_the_report_renders(tmp_path, capsys):
    from contextrl.cli import main

    out = tmp_path / "run"
    assert main(["mine", "--miner", "similarity", "--input", "easy-vqa", "--limit", "8000", "--out", str(out), "--quiet"]) == 0
    pairs = list(read_pairs(out / "pairs.jsonl"))
    funnel = json.loads((out / "funnel.json").read_text())
    assert pairs and funnel["stages"]["verified"] == len(pairs) and funnel["stages"]["items"] == 8000
    assert all(p.kind == "image" and p.verdict.ok for p in pairs)
    assert main(["report", "pairs", str(out / "pairs.jsonl")]) == 0
    html = (out / "pairs.html").read_text()
    assert "data:image/png;base64" in html and pairs[0].query in html
    assert main(["mine", "--miner", "similarity", "--input", "no-such-source", "--out", str(tmp_path / "x")]) == 2
    assert "--input 'no-such-source'" in capsys.readouterr().err


def test_cli_items_chain_sources_and_limit():
    from contextrl.miner.image.cli import image_items

    items = list(image_items(["skimage", "easy-vqa:test"], limit=30))
    assert len(items) == 30 and items[0].image_id.startswith("skimage/") and items[-1].image_id.startswith("easy-vqa/test/")
    assert list(itertools.islice(image_items(["easy-vqa"]), 1))[0].image_id.startswith("easy-vqa/train/")
    with pytest.raises(MiningError, match="--limit 0"):
        image_items(["easy-vqa"], limit=0)


def test_the_vlm_vision_tower_is_the_default_embedder_when_a_vlm_is_named(tmp_path):
    from tests.tiny_vlm import tiny_processor, tiny_vlm

    from contextrl.miner.image.similarity import SimilarityConfig, SimilarityMiner

    model_dir = tmp_path / "vlm"
    tiny_vlm().save_pretrained(model_dir)
    tiny_processor().save_pretrained(model_dir)
    miner = SimilarityMiner(SimilarityConfig(vlm=str(model_dir), progress=False))
    assert isinstance(miner.embedder, VisionTowerEmbedder) and miner.embedder.name == "vision-tower:vlm"
    pairs, funnel = miner.mine(easy_vqa_items(limit=60))
    assert funnel["embedded"] > 0 and funnel.notes["embedder"] == "vision-tower:vlm"
    assert all(p.provenance.params["embedder"] == "vision-tower:vlm" for p in pairs)
    # without a VLM, "auto" falls back to the weight-free pixel baseline
    assert isinstance(SimilarityMiner(SimilarityConfig(progress=False)).embedder, PixelEmbedder)
    with pytest.raises(ConfigError, match="embedder.*vlm"):
        SimilarityConfig(embedder="vision_tower")
    with pytest.raises(ConfigError, match="not a saved vision-language model"):
        SimilarityMiner(SimilarityConfig(vlm=str(tmp_path), progress=False))
