"""Flow `index-documents`: a folder, glob, JSONL/BEIR corpus or posted documents into a domain's table.

Run locally: `python -m flows.index_documents --domain notes --source ~/notes`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from conveyor import knowledge, tracking
from conveyor.loaders import Skipped
from flows import task_runners
from tasks.indexing import (
    clear_staging,
    commit_changes,
    embed_batch,
    exclusive_domain,
    plan_changes,
    refresh_indexes,
    report_rows,
    stage_source,
)

EXPERIMENT = "index-documents"


class IndexReport(BaseModel):
    """What one run did to a domain's table."""

    domain: str
    added: int
    updated: int
    deleted: int
    unchanged: int
    skipped: list[Skipped] = Field(default_factory=list)
    chunks_embedded: int
    rows: int
    indexed_rows: int
    unindexed_rows: int
    table_version: int
    seconds: dict[str, float]


@flow(name="index-documents", log_prints=True, task_runner=task_runners.task_runner())
def index_documents(
    domain: str,
    source: str | None = None,
    documents: list[dict[str, Any]] | None = None,
    delete_missing: bool = False,
) -> IndexReport:
    """Stage the source, embed only new or changed documents (fanned out on the configured task runner),
    commit once, refresh indexes, report; one run at a time per domain, on every worker."""
    knowledge.validate_domain(domain)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    with exclusive_domain(domain):
        staged = stage_source(domain, source, documents)
        lap("load")
        plan = plan_changes(domain, staged, delete_missing)
        lap("chunk")
        embedded = embed_batch.map(plan.batches).result()
        lap("embed")
        version = commit_changes(domain, embedded, plan)
        lap("write")
        stats = refresh_indexes(domain)
        lap("index")
        clear_staging(domain)
    report = IndexReport(
        domain=domain,
        added=len(plan.added),
        updated=len(plan.updated),
        deleted=len(plan.deleted),
        unchanged=plan.unchanged,
        skipped=staged.skipped,
        chunks_embedded=plan.chunks,
        rows=stats["rows"],
        indexed_rows=stats["indexed_rows"],
        unindexed_rows=stats["unindexed_rows"],
        table_version=max(version, stats["version"]),
        seconds=seconds,
    )
    publish_report(report)
    return report


def publish_report(report: IndexReport) -> None:
    """The report as a Prefect table artifact and an MLflow run (metrics + the full JSON)."""
    counts = report.model_dump(exclude={"domain", "skipped", "seconds"})
    create_table_artifact(
        table=report_rows(report.model_dump()),
        key=f"index-report-{report.domain.replace('_', '-')}",
        description=f"index-documents on domain {report.domain}",
    )
    with tracking.start_run(EXPERIMENT, run_name=report.domain, tags={"domain": report.domain}):
        tracking.log_run_report(
            metrics={**counts, "skipped": len(report.skipped)}
            | {f"seconds_{stage}": value for stage, value in report.seconds.items()},
            artifacts={"index_report.json": report.model_dump()},
        )
    for item in report.skipped:
        print(f"skipped {item.source}: {item.reason}")


def main(argv: list[str] | None = None) -> IndexReport:
    parser = argparse.ArgumentParser(description="Index a folder, glob or JSONL/BEIR corpus into a domain.")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--source", required=True, help="folder, glob, JSONL file or BEIR directory")
    parser.add_argument("--delete-missing", action="store_true", help="drop documents gone from the source")
    args = parser.parse_args(argv)
    report = index_documents(domain=args.domain, source=args.source, delete_missing=args.delete_missing)
    print(report.model_dump_json(indent=2))
    return report


if __name__ == "__main__":
    main()
