"""The RAG gateway: one query over the requested knowledge domains in parallel, fused into ranked passages.

Each query fans out flat: its caller submits every per-domain search itself and waits for them at most the
per-domain timeout, so no pool job ever waits on another job (a nested fan-out deadlocks its pool once the
callers outnumber the workers). Each domain has its own few workers, so a hung domain ties up only those;
a domain that fails or times out is reported in the result while the others answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import cache
from typing import Any

import numpy as np
from lancedb.table import Table
from pydantic import BaseModel, Field

from conveyor import knowledge, lineage, retrieval, tracking
from conveyor.embeddings import embed
from conveyor.lineage import DomainRead
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
    """Ranked passages from the domains that answered, the table version read in each, and the domains
    that did not answer."""

    passages: list[Passage]
    failed_domains: list[DomainFailure] = Field(default_factory=list)
    reads: list[DomainRead] = Field(default_factory=list)


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


def _open(domain: str) -> tuple[Table, DomainRead]:
    """The domain's table as of now (every pass of the query reads this version), what it is, and the
    index run that wrote it."""
    table = retrieval.open_table(domain)
    version = table.version
    run_id = knowledge.index_run_id(table, version)
    return table, DomainRead(domain=domain, table=table.name, version=version, index_flow_run_id=run_id)


class _FanOut:
    """One query's per-domain jobs, submitted by the caller only; each pass gives a domain `timeout_s`.

    `open` pins each domain's table version first; the passes then search those tables."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.failed: dict[str, str] = {}
        self.opened: dict[str, tuple[Table, DomainRead]] = {}
        self.timings: list[tuple[str, int, int]] = []  # (domain, start, end) of each finished job, in ns

    def open(self, domains: list[str]) -> None:
        [self.opened] = self.gather({d: _pool(d).submit(self._timed, _open, d) for d in domains})

    def submit(self, function: Callable[..., list[retrieval.Candidate]], *args) -> dict[str, Future]:
        """`function(domain, *args, table=...)` on every opened domain that has not failed yet."""
        return {
            d: _pool(d).submit(self._timed, function, d, *args, table=table)
            for d, (table, _) in self.opened.items()
            if d not in self.failed
        }

    def _timed(self, function: Callable, domain: str, *args, **kwargs) -> Any:
        started = time.time_ns()
        try:
            return function(domain, *args, **kwargs)
        finally:
            self.timings.append((domain, started, time.time_ns()))

    def gather(self, *passes: dict[str, Future]) -> list[dict[str, Any]]:
        """Each pass's results per domain, waiting `timeout_s` at most; a job that raised or did not
        finish in time fails its domain (the passes gathered together share the wait)."""
        wait([job for jobs in passes for job in jobs.values()], timeout=self.timeout_s)
        return [self._results(jobs) for jobs in passes]

    def _results(self, jobs: dict[str, Future]) -> dict[str, Any]:
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

    def reads(self) -> list[DomainRead]:
        return [read for d, (_, read) in self.opened.items() if d not in self.failed]

    def _fail(self, domain: str, error: str) -> None:
        if domain not in self.failed:
            log.warning("gateway: domain %r failed: %s", domain, error)
            self.failed[domain] = error

    def trace(self, names: list[str], started: int, passages: list[Passage]) -> None:
        """One span per domain in the answer's trace: its jobs' time, the version read, and its passages'
        ids and scores (or why it failed)."""
        for domain in names:
            times = [(start, end) for d, start, end in self.timings if d == domain]
            span = tracking.start_span(
                f"retrieve:{domain}",
                "RETRIEVER",
                inputs=self.opened[domain][1].model_dump() if domain in self.opened else {"domain": domain},
                start_ns=min((start for start, _ in times), default=started),
            )
            hits = [
                {"doc_id": p.doc_id, "chunk_id": p.chunk_id, "score": p.score}
                for p in passages
                if p.domain == domain
            ]
            end = max((end for _, end in times), default=None)
            span.end({"passages": hits}, error=self.failed.get(domain), end_ns=end)


def _feedback_vector(vector: np.ndarray, top: list[retrieval.Candidate]) -> np.ndarray:
    """The query embedding moved towards the stored embeddings of the top documents' passages."""
    feedback = np.asarray([candidate.row["vector"] for candidate in top], dtype=np.float32)
    return retrieval.rocchio(vector, feedback, get_settings().retrieval_feedback_weight)


def retrieve(query: str, domains: list[str] | None = None, k: int = 10) -> SearchResult:
    """The `k` best documents for `query` across `domains` (default: all), each as its best passage, the
    table version read in each domain, and the domains that failed or did not answer a pass within
    `gateway_domain_timeout_s`.

    Each domain's table is opened once, so every pass reads the same version. Dense and full-text
    candidates of every domain are fetched in parallel and pooled, so scores are comparable across domains;
    the fused top documents then refine the dense query (pseudo-relevance feedback) for a second dense pass
    that is fused with the same full-text candidates. A failed domain contributes nothing; when every domain
    fails, DomainsUnavailableError names them all. Within a traced answer, the query is a span with one
    child per domain; within a recorded lineage, the versions read are noted.
    """
    names = _check(query, domains, k)
    if not names:
        return SearchResult(passages=[])
    with tracking.span("retrieve", "RETRIEVER", {"query": query, "domains": names, "k": k}) as span:
        found = _retrieve(query, names, k)
        failed = [failure.model_dump() for failure in found.failed_domains]
        span.set_outputs({"passages": [p.doc_id for p in found.passages], "failed_domains": failed})
    lineage.note_reads(found.reads)
    return found


def _retrieve(query: str, names: list[str], k: int) -> SearchResult:
    settings = get_settings()
    started = time.time_ns()
    depth = retrieval.candidate_depth(k)
    vector = embed([query])[0]
    fan_out = _FanOut(settings.gateway_domain_timeout_s)
    fan_out.open(names)
    text_jobs = fan_out.submit(retrieval.text_candidates, query, depth)
    dense_jobs = fan_out.submit(retrieval.dense_candidates, vector, depth)
    text_found, dense_found = fan_out.gather(text_jobs, dense_jobs)
    fusion = settings.retrieval_fusion
    fused = retrieval.fuse(fan_out.pooled(dense_found), fan_out.pooled(text_found), fusion)
    if settings.retrieval_feedback_docs and fused:
        moved = _feedback_vector(vector, fused[: settings.retrieval_feedback_docs])
        [dense_found] = fan_out.gather(fan_out.submit(retrieval.dense_candidates, moved, depth))
        fused = retrieval.fuse(fan_out.pooled(dense_found), fan_out.pooled(text_found), fusion)
    failures = fan_out.failures(names)
    passages = [_passage(c) for c in fused[:k]]
    fan_out.trace(names, started, passages)
    if len(failures) == len(names):
        raise DomainsUnavailableError(failures)
    return SearchResult(passages=passages, failed_domains=failures, reads=fan_out.reads())


def search(query: str, domains: list[str] | None = None, k: int = 10) -> list[Passage]:
    """`retrieve(...)`'s passages only: a failed domain is logged, not shown (callers that show it use
    `retrieve`)."""
    return retrieve(query, domains, k).passages
