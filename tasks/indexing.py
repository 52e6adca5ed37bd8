"""Tasks of `index-documents`: stage the source, plan by content hash, embed batches, commit, index."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, Field

from conveyor import corpus, knowledge
from conveyor.loaders import Document, Skipped, iter_records, iter_source
from conveyor.settings import get_settings


class StagedSource(BaseModel):
    """The source's documents, normalised into a JSONL file, and what was skipped."""

    path: str
    documents: int
    skipped: list[Skipped] = Field(default_factory=list)


class ChangePlan(BaseModel):
    """What a run must do to the domain table: the work is in content-addressed batch files."""

    batches: list[str]
    added: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: int
    chunks: int


def domain_limit(domain: str) -> str:
    """The Prefect global concurrency limit (one slot) that admits one writer of the domain at a time."""
    return f"index-domain-{knowledge.validate_domain(domain)}"


def _create_limit(name: str) -> None:
    """Create the one-slot limit, or set an existing one back to one slot."""
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)
        except ObjectAlreadyExists:  # another worker created it between the read and the create
            pass


def _slot_taken(error: ConcurrencySlotAcquisitionError) -> bool:
    cause = error.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == httpx.codes.LOCKED


@contextmanager
def exclusive_domain(domain: str) -> Iterator[None]:
    """Admit one writer of the domain: its file lock serialises the runs of this machine, then (against a
    shared Prefect server) the domain's one-slot global concurrency limit serialises every worker. The slot
    is leased: a worker that dies stops renewing it and the server frees it when the lease ends. Each waits
    up to `index_lock_timeout_s` (0: one try), then DomainBusyError.

    An embedded (ephemeral) Prefect server serves one process and revokes no lease: there the file lock
    alone serialises, as every writer is on this machine."""
    settings = get_settings()
    timeout = settings.index_lock_timeout_s
    with knowledge.domain_lock(domain, timeout), ExitStack() as held:
        if PREFECT_API_URL.value():
            name = domain_limit(domain)
            _create_limit(name)
            slot = concurrency(
                name,
                timeout_seconds=timeout or None,
                max_retries=0 if timeout == 0 else None,
                lease_duration=settings.index_lock_lease_s,
                strict=True,
                raise_on_lease_renewal_failure=True,
            )
            try:
                held.enter_context(slot)
            except TimeoutError:
                raise knowledge.DomainBusyError(domain) from None
            except ConcurrencySlotAcquisitionError as error:
                if not _slot_taken(error):
                    raise
                raise knowledge.DomainBusyError(domain) from None
        yield


def staging_dir(domain: str) -> Path:
    """Per-domain scratch space; batch files are named by content, so a re-run after a crash reuses them."""
    return get_settings().state_dir / "staging" / knowledge.table_name(domain)


@task(cache_policy=NO_CACHE, retries=0)
def stage_source(domain: str, source: str | None, documents: list[dict[str, Any]] | None) -> StagedSource:
    """Load, validate and normalise every document once; duplicates and bad items become `skipped`."""
    if (source is None) == (documents is None):
        raise ValueError("give exactly one of `source` (folder, glob, JSONL) or `documents`")
    if documents is not None:
        items = iter_records(documents)
    elif source is not None:
        items = iter_source(source, get_settings().max_document_bytes)
    folder = staging_dir(domain)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "documents.jsonl"
    seen: set[str] = set()
    skipped: list[Skipped] = []
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            if isinstance(item, Skipped):
                skipped.append(item)
            elif item.id in seen:
                skipped.append(Skipped(source=item.id, reason="duplicate document id (first one kept)"))
            else:
                seen.add(item.id)
                out.write(item.model_dump_json() + "\n")
    return StagedSource(path=str(path), documents=len(seen), skipped=skipped)


def _write_batch(folder: Path, rows: list[dict]) -> str:
    digest = hashlib.sha256("\n".join(r["chunk_id"] for r in rows).encode()).hexdigest()[:24]
    path = folder / f"batch-{digest}.parquet"
    if not path.exists():
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@task(cache_policy=NO_CACHE, retries=1)
def plan_changes(domain: str, staged: StagedSource, delete_missing: bool) -> ChangePlan:
    """Compare content hashes with the table; chunk only new and changed documents into batch files."""
    stored = knowledge.document_hashes(domain)
    signature = corpus.signature()
    folder = staging_dir(domain)
    added: list[str] = []
    updated: list[str] = []
    batches: list[str] = []
    pending: list[dict] = []
    seen: set[str] = set()
    chunks = unchanged = 0
    batch_chunks = get_settings().embedding_task_chunks
    with open(staged.path, encoding="utf-8") as lines:
        for line in lines:
            document = Document.model_validate_json(line)
            seen.add(document.id)
            content_hash = document.content_hash(signature)
            if stored.get(document.id) == content_hash:
                unchanged += 1
                continue
            (updated if document.id in stored else added).append(document.id)
            pending.extend(corpus.chunk_rows(document, content_hash))
            if len(pending) >= batch_chunks:
                batches.append(_write_batch(folder, pending))
                chunks, pending = chunks + len(pending), []
    if pending:
        batches.append(_write_batch(folder, pending))
        chunks += len(pending)
    deleted = sorted(set(stored) - seen) if delete_missing else []
    return ChangePlan(
        batches=batches, added=added, updated=updated, deleted=deleted, unchanged=unchanged, chunks=chunks
    )


@task(cache_policy=NO_CACHE, retries=1)
def embed_batch(batch: str) -> str:
    """Embed one batch of chunks into a sibling `.vectors.parquet` file (kept if already there)."""
    target = Path(batch).with_suffix(".vectors.parquet")
    if not target.exists():
        table = corpus.embed_rows(pq.read_table(batch).to_pylist())
        partial = target.with_suffix(".tmp")
        pq.write_table(table, partial)
        partial.replace(target)
    return str(target)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def commit_changes(domain: str, embedded: list[str], plan: ChangePlan) -> int:
    """Apply every insert, replacement and delete in one table commit, tagged with this flow run's id;
    returns the new table version."""
    if not embedded and not plan.deleted:
        table = knowledge.open_domain(domain)
        return table.version if table is not None else 0
    rows = pa.concat_tables([pq.read_table(path) for path in embedded]) if embedded else None
    return knowledge.apply_changes(domain, rows, plan.updated, plan.deleted, run_id=flow_run.id)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def refresh_indexes(domain: str) -> dict[str, int]:
    """Bring the full-text index up to date so that every committed row is searchable."""
    return knowledge.refresh_indexes(domain)


@task(cache_policy=NO_CACHE)
def clear_staging(domain: str) -> None:
    """Drop the run's scratch files once its changes are committed."""
    shutil.rmtree(staging_dir(domain), ignore_errors=True)


def report_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """A report as two-column rows for a Prefect table artifact."""
    return [
        {"field": key, "value": json.dumps(value) if not isinstance(value, str) else value}
        for key, value in report.items()
    ]
