"""Flow `evaluate-retrieval`: index a BEIR collection into a scratch domain, score the default retriever.

Run locally: `python -m flows.evaluate_retrieval --beir-dir data/benchmarks/cranfield --json`
(the last stdout line is the metrics as JSON).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from prefect import flow, unmapped
from prefect.artifacts import create_table_artifact

from conveyor import beir, tracking
from conveyor.settings import get_settings
from flows import task_runners
from flows.index_documents import index_documents
from tasks.evaluation import MEASURES, retrieve, score, shards, write_run

EXPERIMENT = "evaluate-retrieval"


def scratch_domain(beir_dir: Path) -> str:
    """`beir-<folder name>`: re-evaluating the same collection re-uses its index (incremental by content)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", beir_dir.resolve().name.lower()).strip("-_")[:50] or "collection"
    return f"beir-{slug}"


@flow(name="evaluate-retrieval", log_prints=True, task_runner=task_runners.task_runner())
def evaluate_retrieval(beir_dir: str, split: str = "test", domain: str | None = None) -> dict:
    """Index the corpus, rank every judged query with the default retriever (groups of queries fanned out on
    the configured task runner), score, log to MLflow."""
    folder = Path(beir_dir).expanduser()
    beir.validate_layout(folder)
    qrels = beir.read_qrels(folder, split)
    queries = {q: text for q, text in beir.read_queries(folder).items() if q in qrels and text.strip()}
    if not queries:
        raise ValueError(f"{folder}: no query has judgments in qrels/{split}.tsv")
    domain = domain or scratch_domain(folder)
    report = index_documents(domain=domain, source=str(folder), delete_missing=True)
    settings = get_settings()
    run_dir = settings.state_dir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = retrieve.map(unmapped(domain), shards(queries, settings.evaluation_task_queries))
    run_path = write_run(parts, str(run_dir / f"{domain}.trec"))
    metrics = score(run_path, {q: qrels[q] for q in queries})
    documents = report.added + report.updated + report.unchanged
    result = {**metrics, "n_queries": len(queries), "n_documents": documents, "domain": domain}
    publish(folder, result, run_path)
    return result


def publish(folder: Path, result: dict, run_path: str) -> None:
    """Metrics as a Prefect table artifact and an MLflow run with the retriever's configuration."""
    settings = get_settings()
    create_table_artifact(
        table=[{"measure": name, "value": result[name]} for name in [*MEASURES, "n_queries"]],
        key=f"retrieval-metrics-{result['domain'].replace('_', '-')}",
        description=f"evaluate-retrieval on {folder}",
    )
    with tracking.start_run(EXPERIMENT, run_name=folder.name, tags={"collection": str(folder)}):
        tracking.log_run_report(
            params={
                "collection": str(folder),
                "embedding_model": settings.embedding_model,
                "chunk_tokens": settings.chunk_tokens,
                "chunk_overlap_tokens": settings.chunk_overlap_tokens,
                "fusion": settings.retrieval_fusion,
            },
            metrics={name.replace("@", "_at_"): result[name] for name in [*MEASURES, "n_queries"]},
            artifacts={"": run_path},
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Evaluate the default retriever on a BEIR-layout directory.")
    parser.add_argument("--beir-dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of metrics")
    args = parser.parse_args(argv)
    result = evaluate_retrieval(beir_dir=args.beir_dir, split=args.split)
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>12} {value}")
    return result


if __name__ == "__main__":
    main()
