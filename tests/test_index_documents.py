"""index-documents with the real model, LanceDB and Prefect: formats, bad input, increments, safety."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from prefect.concurrency.sync import concurrency
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from pypdf import PdfWriter

from conveyor import gateway, knowledge
from conveyor.loaders import iter_source
from conveyor.settings import get_settings
from flows import task_runners
from flows.index_documents import index_documents
from tasks.indexing import domain_limit, embed_batch, plan_changes, stage_source

POOLS = (
    "# Work pools\n\nA work pool routes flow runs to workers.\n\n"
    "## Kubernetes\n\nEach flow run becomes a Job.\n"
)


def _rows(domain: str, columns: tuple[str, ...] = ("chunk_id", "doc_id", "content_hash")) -> list[dict]:
    table = knowledge.open_domain(domain)
    return table.to_lance().to_table(columns=list(columns)).to_pylist()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    (folder / "guides").mkdir(parents=True)
    (folder / "pools.md").write_text(POOLS)
    (folder / "lance.txt").write_text("LanceDB keeps a full-text index next to the vectors.")
    (folder / "guides" / "mlflow.html").write_text(
        "<html><head><title>MLflow registry</title><script>var hidden = 1;</script></head>"
        "<body><h1>Aliases</h1><p>An alias such as champion points at one model version.</p></body></html>"
    )
    (folder / "empty.txt").write_text("  \n")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    (folder / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (folder / "picture.png").write_bytes(b"\x89PNG")
    return folder


class TestLoading:
    def test_formats_sections_and_reasons(self, source: Path):
        items = list(iter_source(str(source), max_bytes=10_000))
        docs = {item.id: item for item in items if hasattr(item, "text")}
        reasons = {Path(item.source).name: item.reason for item in items if hasattr(item, "reason")}
        assert set(docs) == {"pools.md", "lance.txt", "guides/mlflow.html"}
        assert docs["pools.md"].title == "Work pools"
        assert docs["guides/mlflow.html"].title == "MLflow registry"
        assert "hidden" not in docs["guides/mlflow.html"].text
        assert reasons == {
            "empty.txt": "empty document",
            "binary.txt": "binary content",
            "latin1.md": "not UTF-8 text (byte 3)",
            "broken.pdf": reasons["broken.pdf"],
            "picture.png": "unsupported file type .png",
        }
        assert reasons["broken.pdf"].startswith("unreadable PDF")

    def test_pdf_without_text_is_reported(self, tmp_path: Path):
        writer = PdfWriter()
        writer.add_blank_page(width=200, height=200)
        writer.add_metadata({"/Title": "Blank"})
        path = tmp_path / "blank.pdf"
        with path.open("wb") as out:
            writer.write(out)
        [item] = list(iter_source(str(path), max_bytes=10_000))
        assert item.reason == "empty document"  # a page without text is reported, not indexed

    def test_huge_files_and_bad_jsonl_lines_are_skipped(self, tmp_path: Path):
        (tmp_path / "big.txt").write_text("word " * 1000)
        corpus = tmp_path / "corpus.jsonl"
        corpus.write_text('{"_id": "a", "title": "T", "text": "fine"}\n{not json}\n{"_id": "b"}\n[1]\n')
        [big] = list(iter_source(str(tmp_path / "big.txt"), max_bytes=100))
        assert big.reason == "larger than 100 bytes (5000)"
        items = list(iter_source(str(corpus), max_bytes=10_000))
        assert [i.id for i in items if hasattr(i, "id")] == ["a"]
        assert [i.reason.split(":")[0] for i in items if hasattr(i, "reason")] == [
            "invalid JSON",
            "missing text",
            "expected a JSON object",
        ]


@pytest.fixture
def vector_index_from_4_rows(configure):
    configure(vector_index_min_rows=4)


class TestIndexDocuments:
    def test_index_search_reindex_update_delete(self, source: Path):
        first = index_documents(domain="docs-flow", source=str(source))
        assert (first.added, first.updated, first.unchanged, first.deleted) == (3, 0, 0, 0)
        assert len(first.skipped) == 5
        assert first.rows == first.indexed_rows and first.unindexed_rows == 0
        top = gateway.search("which model version does the champion alias point to", ["docs-flow"], k=1)[0]
        assert top.doc_id == "guides/mlflow.html" and top.metadata["section"] == "Aliases"

        again = index_documents(domain="docs-flow", source=str(source))
        assert (again.unchanged, again.chunks_embedded, again.table_version) == (3, 0, first.table_version)

        (source / "lance.txt").write_text("Tantivy tokenizes text for keyword search with stemming.")
        (source / "pools.md").unlink()
        changed = index_documents(domain="docs-flow", source=str(source))
        assert (changed.added, changed.updated, changed.unchanged, changed.deleted) == (0, 1, 1, 0)
        lance_rows = [r for r in _rows("docs-flow") if r["doc_id"] == "lance.txt"]
        assert len(lance_rows) == 1 and len({r["content_hash"] for r in lance_rows}) == 1
        # new rows are full-text searchable at once: a word only the new text has
        assert gateway.search("tokenizes", ["docs-flow"], k=1)[0].doc_id == "lance.txt"
        assert "pools.md" in {r["doc_id"] for r in _rows("docs-flow")}

        pruned = index_documents(domain="docs-flow", source=str(source), delete_missing=True)
        assert pruned.deleted == 1 and pruned.unchanged == 2
        assert "pools.md" not in {r["doc_id"] for r in _rows("docs-flow")}
        assert pruned.rows == len(_rows("docs-flow")) == pruned.indexed_rows

    def test_a_large_domain_gets_a_vector_index_kept_up_to_date(self, source: Path, vector_index_from_4_rows):
        (source / "more.md").write_text(
            "# More\n\n" + "\n\n".join(f"## Part {n}\n\nPart {n} of {n * 7}." for n in range(6))
        )
        first = index_documents(domain="docs-ann", source=str(source))
        table = knowledge.open_domain("docs-ann")
        assert first.rows >= 4 and knowledge.VECTOR_INDEX in {i.name for i in table.list_indices()}
        top = gateway.search("which model version does the champion alias point to", ["docs-ann"], k=1)[0]
        assert top.doc_id == "guides/mlflow.html"

        (source / "lance.txt").write_text("Tantivy tokenizes text for keyword search with stemming.")
        index_documents(domain="docs-ann", source=str(source))
        stats = knowledge.open_domain("docs-ann").index_stats(knowledge.VECTOR_INDEX)
        assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows == len(_rows("docs-ann"))
        assert gateway.search("tantivy stemming", ["docs-ann"], k=1)[0].doc_id == "lance.txt"

    def test_a_small_domain_is_searched_exhaustively(self, source: Path):
        index_documents(domain="docs-flat", source=str(source))
        assert knowledge.VECTOR_INDEX not in {
            i.name for i in knowledge.open_domain("docs-flat").list_indices()
        }

    def test_posted_documents_with_bad_entries(self):
        report = index_documents(
            domain="posted",
            documents=[
                {"id": "faq-1", "text": "Reset a password on the account page.", "metadata": {"lang": "en"}},
                {"id": "faq-1", "text": "a duplicate id"},
                {"text": "no id"},
                {"id": "faq-2", "text": 42},
            ],
        )
        assert report.added == 1
        assert sorted(s.reason for s in report.skipped) == [
            "duplicate document id (first one kept)",
            "missing id",
            "missing text",
        ]
        [hit] = gateway.search("forgot my password", ["posted"], k=1)
        assert hit.metadata["lang"] == "en"

    def test_invalid_domain_and_source_fail_clearly(self, tmp_path: Path):
        with pytest.raises(ValueError, match="invalid domain"):
            index_documents(domain="../etc", documents=[])
        with pytest.raises(FileNotFoundError, match="neither a folder"):
            index_documents(domain="missing", source=str(tmp_path / "nope"))
        with pytest.raises(ValueError, match="exactly one"):
            index_documents(domain="both", source=str(tmp_path), documents=[])


class TestSafety:
    def test_crash_before_commit_keeps_previous_version_and_rerun_completes(self, source: Path):
        index_documents(domain="crashy", source=str(source))
        before = knowledge.open_domain("crashy").version
        (source / "lance.txt").write_text("Vector search compares embeddings by cosine distance.")
        # a run that dies after embedding, before its single commit
        staged = stage_source.fn("crashy", str(source), None)
        plan = plan_changes.fn("crashy", staged, False)
        embedded = [embed_batch.fn(batch) for batch in plan.batches]
        assert knowledge.open_domain("crashy").version == before
        assert gateway.search("full-text index", ["crashy"], k=1)[0].doc_id == "lance.txt"

        rerun = index_documents(domain="crashy", source=str(source))
        assert rerun.updated == 1 and rerun.rows == len(_rows("crashy"))
        ids = [r["chunk_id"] for r in _rows("crashy")]
        assert len(ids) == len(set(ids))
        assert all(not Path(path).exists() for path in embedded)  # staging cleared after the commit

    def test_concurrent_runs_on_a_domain_are_serialised(self, source: Path, settings, monkeypatch):
        reports = []

        def run() -> None:
            reports.append(index_documents(domain="shared", source=str(source)))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r.added for r in reports) == [0, 3]
        ids = [r["chunk_id"] for r in _rows("shared")]
        assert len(ids) == len(set(ids))

        monkeypatch.setattr(get_settings(), "index_lock_timeout_s", 0.0)  # the current settings object
        with knowledge.domain_lock("shared", timeout_s=0), pytest.raises(knowledge.DomainBusyError):
            index_documents(domain="shared", source=str(source))
        # the domain's Prefect limit (one slot) held elsewhere refuses the run just the same
        with concurrency(domain_limit("shared"), strict=True), pytest.raises(knowledge.DomainBusyError):
            index_documents(domain="shared", source=str(source))
        index_documents(domain="shared", source=str(source))  # both released: the next run gets in


@pytest.fixture
def embedding_tasks_of_4_chunks(configure):
    configure(embedding_task_chunks=4)


class TestFanOut:
    def test_a_dask_cluster_gives_the_same_index_as_threads(self, source: Path, embedding_tasks_of_4_chunks):
        """`CONVEYOR_TASK_RUNNER=dask`: a LocalCluster of 2 worker processes (1 thread each) per flow run."""
        for n in range(8):
            (source / f"part-{n}.md").write_text(f"# Part {n}\n\nStage {n} hands batch {n * 3} to queue {n}.")
        assert isinstance(index_documents.task_runner, ThreadPoolTaskRunner)  # the default
        on_threads = index_documents(domain="fan-threads", source=str(source))
        runner = task_runners.task_runner(get_settings().model_copy(update={"task_runner": "dask"}))
        assert isinstance(runner, DaskTaskRunner) and runner.cluster_class == "distributed.LocalCluster"
        on_dask = index_documents.with_options(task_runner=runner)(domain="fan-dask", source=str(source))

        assert on_threads.chunks_embedded >= 8  # several embedding tasks of 4 chunks for the 2 workers
        same = {"domain", "seconds", "table_version"}
        assert on_dask.model_dump(exclude=same) == on_threads.model_dump(exclude=same)
        columns = ("chunk_id", "doc_id", "content_hash", "search_text", "vector")
        threads_rows = sorted(_rows("fan-threads", columns), key=lambda r: r["chunk_id"])
        dask_rows = sorted(_rows("fan-dask", columns), key=lambda r: r["chunk_id"])
        assert [r["chunk_id"] for r in dask_rows] == [r["chunk_id"] for r in threads_rows]
        assert [r["search_text"] for r in dask_rows] == [r["search_text"] for r in threads_rows]
        np.testing.assert_allclose(
            [r["vector"] for r in dask_rows], [r["vector"] for r in threads_rows], rtol=0, atol=1e-6
        )
