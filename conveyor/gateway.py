"""The RAG gateway: one query over the requested knowledge domains in parallel, fused into ranked passages.

Each query fans out flat: its caller submits every per-domain search itself and waits for them at most the
per-domain timeout, so no pool job ever waits on another job (a nested fan-out deadlocks its pool once the
callers outnumber the workers). Each domain has its own few workers, so a hung domain ties up only those;
a domain that fails or times out is reported in the result while the others answer.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import cache
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from conveyor import knowledge, retrieval
from conveyor.embeddings import embed
from conveyor.settings import get_settings

log = logging.getLogger(__name__)
MAX_K = 100
MAX_QUERY_CHARS = 4000
WORKERS_PER_DOMAIN = 4
MAX_ERROR_CHARS = 300


class UnknownDomainError(ValueError):
    """A requested domain has no table."""


class DomainFailure(BaseModel):
    """A domain that could not be searched for this query, and why."""

    domain: str
    error: str


class DomainsUnavailableError(RuntimeError):
    """Every requested domain failed or timed out."""

    def __init__(self, failures: list[DomainFailure]):
        self.failures = failures
        listed = "; ".join(f"{f.domain}: {f.error}" for f in failures)
        super().__init__(f"no domain could be searched ({listed})")


class Passage(BaseModel):
    """A ranked passage: the best chunk of a retrieved document."""

    doc_id: str
    chunk_id: str
    domain: str
    score: float
    text: str
    title: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchResult(BaseModel):
    """Ranked passages from the domains that answered, and the domains that did not."""

    passages: list[Passage]
    failed_domains: list[DomainFailure] = Field(default_factory=list)


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


@cache
def _pool(domain: str) -> ThreadPoolExecutor:
    """The domain's own workers: a domain that hangs can only exhaust these."""
    return ThreadPoolExecutor(WORKERS_PER_DOMAIN, thread_name_prefix=f"gateway-{domain}")


def _describe(error: BaseException) -> str:
    """The error's type and first line, with the store's location left out (callers show it to users)."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    first_line = first_line.replace(get_settings().knowledge_uri, "<knowledge>")
    return f"{type(error).__name__}: {first_line}"[:MAX_ERROR_CHARS]


class _FanOut:
    """One query's per-domain jobs, submitted by the caller only; each pass gives a domain `timeout_s`."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.failed: dict[str, str] = {}

    def submit(self, function, domains: list[str], *args) -> dict[str, Future]:
        """`function(domain, *args)` for every domain that has not failed yet."""
        return {d: _pool(d).submit(function, d, *args) for d in domains if d not in self.failed}

    def gather(self, *passes: dict[str, Future]) -> list[dict[str, list[retrieval.Candidate]]]:
        """Each pass's candidates per domain, waiting `timeout_s` at most; a job that raised or did not
        finish in time fails its domain (the passes gathered together share the wait)."""
        wait([job for jobs in passes for job in jobs.values()], timeout=self.timeout_s)
        return [self._results(jobs) for jobs in passes]

    def _results(self, jobs: dict[str, Future]) -> dict[str, list[retrieval.Candidate]]:
        found = {}
        for domain, job in jobs.items():
            if not job.done():
                job.cancel()  # still queued: free the worker; already running: its result is ignored
                self._fail(domain, f"no answer within {self.timeout_s:g} s")
            elif (error := job.exception()) is not None:
                self._fail(domain, _describe(error))
            else:
                found[domain] = job.result()
        return found

    def pooled(self, found: dict[str, list[retrieval.Candidate]]) -> list[retrieval.Candidate]:
        """The candidates of the domains that have not failed, best first (scores compare across domains)."""
        ok = (c for domain, candidates in found.items() if domain not in self.failed for c in candidates)
        return sorted(ok, key=lambda c: -c.score)

    def failures(self, names: list[str]) -> list[DomainFailure]:
        return [DomainFailure(domain=d, error=self.failed[d]) for d in names if d in self.failed]

    def _fail(self, domain: str, error: str) -> None:
        if domain not in self.failed:
            log.warning("gateway: domain %r failed: %s", domain, error)
            self.failed[domain] = error


def _feedback_vector(vector: np.ndarray, top: list[retrieval.Candidate]) -> np.ndarray:
    """The query embedding moved towards the stored embeddings of the top documents' passages."""
    feedback = np.asarray([candidate.row["vector"] for candidate in top], dtype=np.float32)
    return retrieval.rocchio(vector, feedback, get_settings().retrieval_feedback_weight)


def retrieve(query: str, domains: list[str] | None = None, k: int = 10) -> SearchResult:
    """The `k` best documents for `query` across `domains` (default: all), each as its best passage, and
    the domains that failed or did not answer a pass within `gateway_domain_timeout_s`.

    Dense and full-text candidates of every domain are fetched in parallel and pooled, so scores are
    comparable across domains; the fused top documents then refine the dense query (pseudo-relevance
    feedback) for a second dense pass that is fused with the same full-text candidates. A failed domain
    contributes nothing; when every domain fails, DomainsUnavailableError names them all.
    """
    names = _check(query, domains, k)
    if not names:
        return SearchResult(passages=[])
    settings = get_settings()
    depth = retrieval.candidate_depth(k)
    vector = embed([query])[0]
    fan_out = _FanOut(settings.gateway_domain_timeout_s)
    text_jobs = fan_out.submit(retrieval.text_candidates, names, query, depth)
    dense_jobs = fan_out.submit(retrieval.dense_candidates, names, vector, depth)
    text_found, dense_found = fan_out.gather(text_jobs, dense_jobs)
    fusion = settings.retrieval_fusion
    fused = retrieval.fuse(fan_out.pooled(dense_found), fan_out.pooled(text_found), fusion)
    if settings.retrieval_feedback_docs and fused:
        moved = _feedback_vector(vector, fused[: settings.retrieval_feedback_docs])
        [dense_found] = fan_out.gather(fan_out.submit(retrieval.dense_candidates, names, moved, depth))
        fused = retrieval.fuse(fan_out.pooled(dense_found), fan_out.pooled(text_found), fusion)
    failures = fan_out.failures(names)
    if len(failures) == len(names):
        raise DomainsUnavailableError(failures)
    return SearchResult(passages=[_passage(c) for c in fused[:k]], failed_domains=failures)


def search(query: str, domains: list[str] | None = None, k: int = 10) -> list[Passage]:
    """`retrieve(...)`'s passages only: a failed domain is logged, not shown (callers that show it use
    `retrieve`)."""
    return retrieve(query, domains, k).passages
