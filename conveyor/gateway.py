"""The RAG gateway: one query over the requested knowledge domains in parallel, fused into ranked passages."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from conveyor import knowledge, retrieval
from conveyor.embeddings import embed
from conveyor.settings import get_settings

MAX_K = 100
MAX_QUERY_CHARS = 4000
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gateway")


class UnknownDomainError(ValueError):
    """A requested domain has no table."""


class Passage(BaseModel):
    """A ranked passage: the best chunk of a retrieved document."""

    doc_id: str
    chunk_id: str
    domain: str
    score: float
    text: str
    title: str
    metadata: dict[str, Any] = Field(default_factory=dict)


def list_domains() -> list[str]:
    """Knowledge domains that can be searched."""
    return knowledge.list_domains()


def _check(query: str, domains: list[str] | None, k: int) -> list[str]:
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"query is longer than {MAX_QUERY_CHARS} characters")
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    known = list_domains()
    if domains is None:
        return known
    if not domains:
        raise ValueError("domains must be a non-empty list, or omitted to search every domain")
    unknown = sorted(set(domains) - set(known))
    if unknown:
        listed = ", ".join(known) or "none"
        raise UnknownDomainError(f"unknown domain(s) {', '.join(unknown)}; known: {listed}")
    return list(dict.fromkeys(domains))


def _passage(candidate: retrieval.Candidate) -> Passage:
    row = candidate.row
    return Passage(
        doc_id=candidate.doc_id,
        chunk_id=row["chunk_id"],
        domain=candidate.domain,
        score=candidate.score,
        text=row["text"],
        title=row["title"],
        metadata=json.loads(row["metadata"] or "{}")
        | {"section": row["section"], "chunk_index": row["chunk_index"]},
    )


def _each_domain(function, names: list[str], *args) -> list[retrieval.Candidate]:
    """Run a per-domain candidate function on every domain in parallel; pool the results best first."""
    jobs = [_POOL.submit(function, name, *args) for name in names]
    return sorted((c for job in jobs for c in job.result()), key=lambda c: -c.score)


def _feedback_vector(vector: np.ndarray, top: list[retrieval.Candidate]) -> np.ndarray:
    """The query embedding moved towards the stored embeddings of the top documents' passages."""
    feedback = np.asarray([candidate.row["vector"] for candidate in top], dtype=np.float32)
    return retrieval.rocchio(vector, feedback, get_settings().retrieval_feedback_weight)


def search(query: str, domains: list[str] | None = None, k: int = 10) -> list[Passage]:
    """The `k` best documents for `query` across `domains` (default: all), each as its best passage.

    Dense and full-text candidates of every domain are fetched in parallel and pooled, so scores are
    comparable across domains; the fused top documents then refine the dense query (pseudo-relevance
    feedback) for a second dense pass that is fused with the same full-text candidates.
    """
    names = _check(query, domains, k)
    if not names:
        return []
    settings = get_settings()
    depth = retrieval.candidate_depth(k)
    vector = embed([query])[0]
    text_job = _POOL.submit(_each_domain, retrieval.text_candidates, names, query, depth)
    dense = _each_domain(retrieval.dense_candidates, names, vector, depth)
    text = text_job.result()
    fused = retrieval.fuse(dense, text, settings.retrieval_fusion)
    if settings.retrieval_feedback_docs and fused:
        moved = _feedback_vector(vector, fused[: settings.retrieval_feedback_docs])
        dense = _each_domain(retrieval.dense_candidates, names, moved, depth)
        fused = retrieval.fuse(dense, text, settings.retrieval_fusion)
    return [_passage(candidate) for candidate in fused[:k]]
