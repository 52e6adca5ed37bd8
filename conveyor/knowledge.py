"""The one door to LanceDB: connections, one chunk table per knowledge domain, atomic updates, indexes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import cache

import lancedb
import pyarrow as pa
from filelock import FileLock, Timeout
from lancedb.index import FTS, HnswSq

from conveyor.settings import get_settings

DOMAIN_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TABLE_PREFIX = "domain_"
SEARCH_COLUMN = "search_text"
TEXT_INDEX = f"{SEARCH_COLUMN}_idx"
VECTOR_INDEX = "vector_idx"
RUN_TAG = "index-run-"  # + the Prefect flow run id, on the table version that run committed
INDEX_RUNS_KEPT = 20  # index runs whose versions stay readable (answers' lineage); older tags are dropped
UNTAGGED_VERSIONS_KEPT = timedelta(days=1)
NO_PRUNING = timedelta(days=36_500)  # `optimize` prunes as well: this window leaves that to `_prune`
PAYLOAD_COLUMNS = ["chunk_id", "doc_id", "chunk_index", "title", "section", "text", "metadata"]


class DomainBusyError(RuntimeError):
    """Another run holds the domain's write lock."""

    def __init__(self, domain: str):
        self.domain = domain
        super().__init__(f"domain {domain!r} is being written by another run; retry later")

    def __reduce__(self):  # pickled by Prefect into a failed state: rebuilt from the domain, not the message
        return type(self), (self.domain,)


@cache
def _connect(uri: str) -> lancedb.DBConnection:
    return lancedb.connect(uri)


def connect() -> lancedb.DBConnection:
    """A connection to the configured LanceDB (folder under the state folder by default)."""
    return _connect(get_settings().knowledge_uri)


def validate_domain(domain: str) -> str:
    """The domain name if it is a safe word (lowercase letters, digits, '-' and '_'), else ValueError."""
    if not isinstance(domain, str) or not DOMAIN_PATTERN.match(domain):
        raise ValueError(f"invalid domain {domain!r}: use 1-64 lowercase letters, digits, '-' or '_'")
    return domain


def table_name(domain: str) -> str:
    return TABLE_PREFIX + validate_domain(domain)


def chunk_schema(dimensions: int) -> pa.Schema:
    """Rows of a domain table: one per chunk, with its document's content hash and embedding."""
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("doc_id", pa.string()),
            ("chunk_index", pa.int32()),
            ("title", pa.string()),
            ("section", pa.string()),
            ("text", pa.string()),
            (SEARCH_COLUMN, pa.string()),
            ("metadata", pa.string()),
            ("content_hash", pa.string()),
            ("vector", pa.list_(pa.float32(), dimensions)),
        ]
    )


def list_domains() -> list[str]:
    """Domains that have a table, sorted."""
    names = connect().list_tables().tables
    return sorted(n.removeprefix(TABLE_PREFIX) for n in names if n.startswith(TABLE_PREFIX))


def open_domain(domain: str) -> lancedb.table.Table | None:
    """The domain's table at its latest version, or None when the domain has never been indexed."""
    name = table_name(domain)
    if name not in connect().list_tables().tables:
        return None
    return connect().open_table(name)


def drop_domain(domain: str) -> None:
    """Delete a domain's table (no-op when it does not exist)."""
    if open_domain(domain) is not None:
        connect().drop_table(table_name(domain))


@contextmanager
def domain_lock(domain: str, timeout_s: float) -> Iterator[None]:
    """Serialise writers of one domain across processes; DomainBusyError after `timeout_s`."""
    folder = get_settings().state_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / f"{table_name(domain)}.lock")
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout:
        raise DomainBusyError(domain) from None
    try:
        yield
    finally:
        lock.release()


def document_hashes(domain: str) -> dict[str, str]:
    """doc_id -> content hash of every document stored in the domain."""
    table = open_domain(domain)
    if table is None:
        return {}
    rows = table.to_lance().to_table(columns=["doc_id", "content_hash"])
    return dict(zip(rows["doc_id"].to_pylist(), rows["content_hash"].to_pylist(), strict=True))


def in_list(column: str, values: list[str]) -> str:
    """A SQL filter `column IN (...)` with the values quoted."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def apply_changes(
    domain: str,
    rows: pa.Table | None,
    replace_doc_ids: list[str],
    delete_doc_ids: list[str],
    run_id: str | None = None,
) -> int:
    """Upsert `rows` and drop the old chunks of replaced and deleted documents in ONE commit, so a
    crash leaves the previous version intact; returns the table version after the commit, tagged with
    the index run `run_id` that wrote it."""
    table = open_domain(domain)
    if table is None:
        if rows is None:
            return 0
        table = connect().create_table(table_name(domain), data=rows, schema=rows.schema)
    else:
        gone = sorted(set(replace_doc_ids) | set(delete_doc_ids))
        if rows is not None and rows.num_rows:
            merge = table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all()
            if gone:
                merge = merge.when_not_matched_by_source_delete(in_list("doc_id", gone))
            merge.execute(rows)
        elif gone:
            table.delete(in_list("doc_id", gone))
        else:
            return table.version
    if run_id is not None:
        tag = RUN_TAG + run_id
        if tag in table.tags.list():  # a retried run: its tag moves to the version it committed last
            table.tags.update(tag, table.version)
        else:
            table.tags.create(tag, table.version)
    return table.version


def _run_tags(table: lancedb.table.Table) -> dict[int, str]:
    """Table version -> id of the index run that committed it, for the versions still tagged."""
    return {
        tag["version"]: name.removeprefix(RUN_TAG)
        for name, tag in table.tags.list().items()
        if name.startswith(RUN_TAG)
    }


def index_run_id(table: lancedb.table.Table, version: int) -> str | None:
    """The index run that wrote `version` of a domain's table: the one that tagged it, or else the newest
    tagged version before it (index upkeep adds versions of the same rows); None when no kept tag says."""
    runs = _run_tags(table)
    written = [tagged for tagged in runs if tagged <= version]
    return runs[max(written)] if written else None


def _prune(table: lancedb.table.Table) -> None:
    """Keep the versions of the last INDEX_RUNS_KEPT index runs (tagged) and any version younger than
    UNTAGGED_VERSIONS_KEPT; the rest of the table's history is deleted."""
    runs = _run_tags(table)
    for version in sorted(runs, reverse=True)[INDEX_RUNS_KEPT:]:
        table.tags.delete(RUN_TAG + runs[version])
    table.to_lance().cleanup_old_versions(UNTAGGED_VERSIONS_KEPT, error_if_tagged_old_versions=False)


def refresh_indexes(domain: str) -> dict[str, int]:
    """Make every row full-text searchable (build or incrementally update the FTS index), add an ANN vector
    index once the domain is large enough for it to pay, compact, drop old versions (`_prune`); returns
    row, full-text index coverage and version figures."""
    table = open_domain(domain)
    if table is None:
        return {"rows": 0, "indexed_rows": 0, "unindexed_rows": 0, "version": 0}
    existing = {index.name for index in table.list_indices()}
    rows = table.count_rows()
    if TEXT_INDEX not in existing:
        table.create_index(SEARCH_COLUMN, config=FTS(), name=TEXT_INDEX)
    if VECTOR_INDEX not in existing and rows >= get_settings().vector_index_min_rows:
        table.create_index("vector", config=HnswSq(distance_type="cosine"), name=VECTOR_INDEX)
    if existing:  # folds rows added since into the existing indexes
        table.optimize(cleanup_older_than=NO_PRUNING)  # its pruning would fail on old tagged versions
    _prune(table)
    stats = table.index_stats(TEXT_INDEX)
    return {
        "rows": rows,
        "indexed_rows": stats.num_indexed_rows if stats else 0,
        "unindexed_rows": stats.num_unindexed_rows if stats else rows,
        "version": table.version,
    }
