"""evaluate-retrieval on a small BEIR directory built from Cranfield documents (string ids, graded qrels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from distributed import Client, LocalCluster, get_task_stream

from conveyor.settings import get_settings
from flows import task_runners
from flows.evaluate_retrieval import evaluate_retrieval, main

CRANFIELD = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "cranfield" / "corpus.jsonl"
KEYS = {"ndcg@10", "recall@100", "mrr@10", "map@100", "n_queries"}


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory) -> Path:
    """60 documents; each of 8 queries is a document's title (grade 2) with its neighbour judged grade 1."""
    folder = tmp_path_factory.mktemp("known-item")
    docs = [json.loads(line) for line in CRANFIELD.read_text().splitlines()[:60]]
    with (folder / "corpus.jsonl").open("w") as corpus:
        for doc in docs:
            corpus.write(json.dumps({"_id": f"doc-{doc['_id']}", "title": "", "text": doc["text"]}) + "\n")
        corpus.write("{broken line\n")
    (folder / "qrels").mkdir()
    with (folder / "queries.jsonl").open("w") as queries, (folder / "qrels" / "test.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n, doc in enumerate(docs[:8]):
            queries.write(json.dumps({"_id": f"q-{n}", "text": doc["title"]}) + "\n")
            qrels.write(f"q-{n}\tdoc-{doc['_id']}\t2\nq-{n}\tdoc-{docs[n + 20]['_id']}\t0\n")
        queries.write(json.dumps({"_id": "unjudged", "text": "a query without judgments"}) + "\n")
    return folder


def test_metrics_of_a_known_item_collection(beir_dir: Path):
    result = evaluate_retrieval(beir_dir=str(beir_dir))
    assert KEYS <= set(result)
    assert result["n_queries"] == 8 and result["n_documents"] == 60
    # titles find their own abstracts: a broken ranking or id mapping would score near 0
    assert result["mrr@10"] >= 0.75 and result["ndcg@10"] >= 0.75
    assert result["recall@100"] == 1.0


def test_cli_last_line_is_json(beir_dir: Path, capsys):
    main(["--beir-dir", str(beir_dir), "--json"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert KEYS <= set(json.loads(last))


def test_not_a_beir_directory(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        evaluate_retrieval(beir_dir=str(tmp_path))


@pytest.fixture
def retrieval_tasks_of_3_queries(configure):
    # fresh worker processes open the tables cold: the comparison is about results, not the gateway's timeout
    configure(evaluation_task_queries=3, gateway_domain_timeout_s=120)


def test_a_dask_cluster_gives_the_same_metrics(beir_dir: Path, retrieval_tasks_of_3_queries):
    """`CONVEYOR_DASK_ADDRESS`: the retrieval tasks run on the workers of a running cluster (2 processes)."""
    on_threads = evaluate_retrieval(beir_dir=str(beir_dir))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        settings = get_settings().model_copy(
            update={"task_runner": "dask", "dask_address": cluster.scheduler_address}
        )
        with get_task_stream(client) as stream:
            on_dask = evaluate_retrieval.with_options(task_runner=task_runners.task_runner(settings))(
                beir_dir=str(beir_dir)
            )
        workers = set(cluster.scheduler_info["workers"])
    assert on_dask == on_threads
    # 8 queries in groups of 3: three retrieval tasks, run by the cluster's worker processes
    assert len(stream.data) == 3 and {task["worker"] for task in stream.data} <= workers
