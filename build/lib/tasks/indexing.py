"""Tasks of `index-documents`: stage the source, plan by content hash, embed batches, commit, index."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from conveyor import corpus, knowledge
from conveyor.loaders import Document, Skipped, iter_records, iter_source
from conveyor.settings import get_settings

BATCH_CHUNKS = 512


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
    else:
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
    added, updated, batches, pending = [], [], [], []
    seen: set[str] = set()
    chunks = unchanged = 0
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
            if len(pending) >= BATCH_CHUNKS:
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
    """Apply every insert, replacement and delete in one table commit; returns the new table version."""
    if not embedded and not plan.deleted:
        table = knowledge.open_domain(domain)
        return table.version if table is not None else 0
    rows = pa.concat_tables([pq.read_table(path) for path in embedded]) if embedded else None
    return knowledge.apply_changes(domain, rows, plan.updated, plan.deleted)


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
    return [{"field": key, "value": json.dumps(value) if not isinstance(value, str) else value}
            for key, value in report.items()]
