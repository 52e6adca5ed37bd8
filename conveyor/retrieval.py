"""Hybrid retrieval: chunk-level dense and BM25 candidates, best chunk per document (MaxP), score fusion,
dense pseudo-relevance feedback (Rocchio on embeddings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import pyarrow as pa
from lancedb.query import LanceVectorQueryBuilder
from lancedb.table import Table

from conveyor import knowledge

Fusion = Literal["rrf", "convex"]
CANDIDATE_COLUMNS = [*knowledge.PAYLOAD_COLUMNS, "vector"]  # the stored embedding serves feedback


@dataclass
class Candidate:
    """One document seen by a retriever side, represented by its best chunk on that side."""

    domain: str
    doc_id: str
    score: float
    row: dict = field(repr=False)


def candidate_depth(k: int) -> int:
    """Chunks fetched per side: enough for `k` distinct documents when documents span several chunks."""
    return min(max(4 * k, 100), 1000)


def _best_per_document(domain: str, rows: list[dict], scores: list[float]) -> list[Candidate]:
    """MaxP: a document scores as its best chunk; returned best first."""
    best: dict[str, Candidate] = {}
    for row, score in zip(rows, scores, strict=True):
        seen = best.get(row["doc_id"])
        if seen is None or score > seen.score:
            best[row["doc_id"]] = Candidate(domain, row["doc_id"], float(score), row)
    return sorted(best.values(), key=lambda c: -c.score)


def _rows(found: pa.Table) -> list[dict]:
    """Result rows as dicts; the embedding stays a numpy row (a Python list of 384 floats costs more)."""
    vectors = found["vector"].combine_chunks()
    matrix = vectors.flatten().to_numpy().reshape(len(vectors), vectors.type.list_size)
    rows = found.drop(["vector"]).to_pylist()
    return [row | {"vector": vector} for row, vector in zip(rows, matrix, strict=True)]


def open_table(domain: str) -> Table:
    """The domain's table at its latest version; LookupError when it has none (e.g. dropped meanwhile)."""
    table = knowledge.open_domain(domain)
    if table is None:
        raise LookupError(f"domain {domain!r} has no table")
    return table


def dense_candidates(
    domain: str, query_vector: np.ndarray, depth: int, table: Table | None = None
) -> list[Candidate]:
    """Documents by the cosine similarity of their best chunk to the query, in `table` (the version a
    caller opened) or else the domain's latest version."""
    search = (table if table is not None else open_table(domain)).search(query_vector, "vector")
    rows = (
        cast(LanceVectorQueryBuilder, search)  # what a vector query gives
        .distance_type("cosine")
        .select([*CANDIDATE_COLUMNS, "_distance"])
        .limit(depth)
        .to_arrow()
    )
    return _best_per_document(domain, _rows(rows), [1.0 - d for d in rows["_distance"].to_pylist()])


def text_candidates(domain: str, query: str, depth: int, table: Table | None = None) -> list[Candidate]:
    """Documents by the BM25 score of their best chunk (LanceDB native full-text index), in `table` or
    else the domain's latest version."""
    rows = (
        (table if table is not None else open_table(domain))
        .search(query, query_type="fts", fts_columns=knowledge.SEARCH_COLUMN)
        .select([*CANDIDATE_COLUMNS, "_score"])
        .limit(depth)
        .to_arrow()
    )
    return _best_per_document(domain, _rows(rows), rows["_score"].to_pylist())


def rocchio(query_vector: np.ndarray, feedback: np.ndarray, weight: float) -> np.ndarray:
    """Unit-normalised q + weight * mean(feedback): the query moved towards its top-ranked passages."""
    moved = query_vector + weight * feedback.mean(axis=0)
    return (moved / np.linalg.norm(moved)).astype(np.float32)


def _key(candidate: Candidate) -> tuple[str, str]:
    return candidate.domain, candidate.doc_id


def rrf(rankings: list[list[Candidate]], k: int = 60) -> dict[tuple[str, str], float]:
    """Reciprocal rank fusion (Cormack et al., 2009): sum of 1 / (k + rank)."""
    fused: dict[tuple[str, str], float] = {}
    for ranking in rankings:
        for rank, candidate in enumerate(ranking, start=1):
            fused[_key(candidate)] = fused.get(_key(candidate), 0.0) + 1.0 / (k + rank)
    return fused


def convex(rankings: list[list[Candidate]], weights: list[float]) -> dict[tuple[str, str], float]:
    """Convex combination of min-max normalised scores (Bruch et al., 2023); unseen = 0 on that side."""
    fused: dict[tuple[str, str], float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        scores = np.array([c.score for c in ranking])
        low, span = scores.min(), scores.max() - scores.min()
        for candidate, score in zip(ranking, scores, strict=True):
            normalised = (score - low) / span if span > 0 else 1.0
            fused[_key(candidate)] = fused.get(_key(candidate), 0.0) + weight * float(normalised)
    return fused


def fuse(
    dense: list[Candidate], text: list[Candidate], fusion: Fusion = "rrf", dense_weight: float = 0.5
) -> list[Candidate]:
    """Documents ranked by fused score, each represented by its best dense chunk (else best text chunk)."""
    if fusion == "rrf":
        scores = rrf([dense, text])
    else:
        scores = convex([dense, text], [dense_weight, 1.0 - dense_weight])
    representative = {_key(c): c for c in text} | {_key(c): c for c in dense}
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Candidate(key[0], key[1], score, representative[key].row) for key, score in ranked]
