"""Flow `evaluate-retrieval`: index a BEIR collection into a scratch domain, score the default retriever.

Run locally: `python -m flows.evaluate_retrieval --beir-dir ../shared/benchmarks/cranfield --json`
(the last stdout line is the metrics as JSON).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import ir_measures
import mlflow
from ir_measures import AP, RR, R, nDCG
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from conveyor import beir, gateway, tracking
from conveyor.settings import get_settings
from flows.index_documents import index_documents

EXPERIMENT = "evaluate-retrieval"
MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10, "map@100": AP @ 100}
DEPTH = 100


def scratch_domain(beir_dir: Path) -> str:
    """`beir-<folder name>`: re-evaluating the same collection re-uses its index (incremental by content)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", beir_dir.resolve().name.lower()).strip("-_")[:50] or "collection"
    return f"beir-{slug}"


@task(cache_policy=NO_CACHE, retries=0)
def retrieve(domain: str, queries: dict[str, str], run_path: str) -> str:
    """Rank the top DEPTH documents of every query with the gateway; write a TREC run file."""
    started = time.perf_counter()
    with open(run_path, "w", encoding="utf-8") as run:
        for query_id, text in queries.items():
            for rank, passage in enumerate(gateway.search(text, domains=[domain], k=DEPTH), start=1):
                run.write(f"{query_id} Q0 {passage.doc_id} {rank} {passage.score:.6f} conveyor\n")
    print(f"{len(queries)} queries in {time.perf_counter() - started:.1f} s")
    return run_path


@task(cache_policy=NO_CACHE, retries=0)
def score(run_path: str, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Standard measures (ir-measures over pytrec_eval), averaged over judged queries."""
    run = list(ir_measures.read_trec_run(run_path))
    qrel_rows = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    values = ir_measures.calc_aggregate(list(MEASURES.values()), qrel_rows, run)
    return {name: round(float(values[measure]), 4) for name, measure in MEASURES.items()}


@flow(name="evaluate-retrieval", log_prints=True)
def evaluate_retrieval(beir_dir: str, split: str = "test", domain: str | None = None) -> dict:
    """Index the corpus, run every judged query through the default retriever, score, log to MLflow."""
    folder = Path(beir_dir).expanduser()
    beir.validate_layout(folder)
    qrels = beir.read_qrels(folder, split)
    queries = {q: text for q, text in beir.read_queries(folder).items() if q in qrels and text.strip()}
    if not queries:
        raise ValueError(f"{folder}: no query has judgments in qrels/{split}.tsv")
    domain = domain or scratch_domain(folder)
    report = index_documents(domain=domain, source=str(folder), delete_missing=True)
    run_dir = get_settings().state_dir / "runs"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_path = retrieve(domain, queries, str(run_dir / f"{domain}.trec"))
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
        mlflow.log_params(
            {
                "collection": str(folder),
                "embedding_model": settings.embedding_model,
                "chunk_tokens": settings.chunk_tokens,
                "chunk_overlap_tokens": settings.chunk_overlap_tokens,
                "fusion": settings.retrieval_fusion,
            }
        )
        mlflow.log_metrics({name.replace("@", "_at_"): result[name] for name in [*MEASURES, "n_queries"]})
        mlflow.log_artifact(run_path)


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
