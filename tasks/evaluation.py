"""Tasks of `evaluate-retrieval`: rank judged queries with the default retriever, write the run, score it."""

from __future__ import annotations

import time

import ir_measures
from ir_measures import AP, RR, R, nDCG
from prefect import task
from prefect.cache_policies import NO_CACHE

from conveyor import gateway

MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10, "map@100": AP @ 100}
DEPTH = 100


def shards(queries: dict[str, str], size: int) -> list[dict[str, str]]:
    """The queries in groups of `size` (the fan-out unit of `retrieve`), in their order."""
    items = list(queries.items())
    return [dict(items[start : start + size]) for start in range(0, len(items), size)]


@task(cache_policy=NO_CACHE, retries=0)
def retrieve(domain: str, queries: dict[str, str]) -> list[str]:
    """TREC run lines of the top DEPTH documents of every query, ranked by the gateway."""
    started = time.perf_counter()
    lines = [
        f"{query_id} Q0 {passage.doc_id} {rank} {passage.score:.6f} conveyor"
        for query_id, text in queries.items()
        for rank, passage in enumerate(gateway.search(text, domains=[domain], k=DEPTH), start=1)
    ]
    print(f"{len(queries)} queries in {time.perf_counter() - started:.1f} s")
    return lines


@task(cache_policy=NO_CACHE)
def write_run(parts: list[list[str]], run_path: str) -> str:
    """The retrieved lines of every shard as one TREC run file."""
    with open(run_path, "w", encoding="utf-8") as run:
        run.writelines(f"{line}\n" for lines in parts for line in lines)
    return run_path


@task(cache_policy=NO_CACHE, retries=0)
def score(run_path: str, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """Standard measures (ir-measures over pytrec_eval), averaged over judged queries."""
    run = list(ir_measures.read_trec_run(run_path))
    qrel_rows = [ir_measures.Qrel(q, d, g) for q, docs in qrels.items() for d, g in docs.items()]
    values = ir_measures.calc_aggregate(list(MEASURES.values()), qrel_rows, run)
    return {name: round(float(values[measure]), 4) for name, measure in MEASURES.items()}
