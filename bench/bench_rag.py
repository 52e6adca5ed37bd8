"""RAG figures: indexing vs raw encode, 1% re-index cost, query latency at ~10k chunks, retrieval quality.

`python -m bench.bench_rag` prints throughput and latency; `--quality DIR...` compares retrievers on BEIR
directories; `--build-readmes DIR` / `--build-debian DIR` write the offline test collections of docs/rag.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from conveyor import beir, corpus, gateway, knowledge, retrieval
from conveyor.embeddings import embed, get_encoder
from conveyor.loaders import Document, iter_source
from conveyor.settings import get_settings

DOMAIN = "bench-rag"
README_CHARS = 5000
RAW_SAMPLE = 2000


def package_readmes(limit_chars: int | None) -> list[tuple[str, str, str]]:
    """(name, summary, long description without the summary) of every installed distribution with a README."""
    found: dict[str, tuple[str, str, str]] = {}
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower()
        summary = (dist.metadata.get("Summary") or "").strip()
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        body = body.replace(summary, " ") if summary else body
        if name and summary and len(body.split()) >= 50 and name not in found:
            found[name] = (name, summary, body[:limit_chars] if limit_chars else body)
    return [found[name] for name in sorted(found)]


def write_known_item(out: Path, items: list[tuple[str, str, str]]) -> None:
    """A BEIR directory where each query (a one-line summary) has exactly one relevant document."""
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (
        (out / "corpus.jsonl").open("w") as docs,
        (out / "queries.jsonl").open("w") as queries,
        (out / "qrels" / "test.tsv").open("w") as qrels,
    ):
        qrels.write("query-id\tcorpus-id\tscore\n")
        for n, (doc_id, summary, body) in enumerate(items):
            docs.write(json.dumps({"_id": doc_id, "title": "", "text": body}) + "\n")
            queries.write(json.dumps({"_id": f"q{n}", "text": summary}) + "\n")
            qrels.write(f"q{n}\t{doc_id}\t1\n")


def debian_descriptions(translation_lz4: Path, documents: int, queries: int) -> tuple[list, list]:
    """Debian's English package descriptions (synopsis -> long description), deduplicated, sampled."""
    unpacked = subprocess.run(["lz4", "-dc", str(translation_lz4)], capture_output=True, check=True)
    raw = unpacked.stdout.decode()
    entries: dict[str, tuple[str, str]] = {}
    for block in raw.split("\n\n"):
        package, lines = None, []
        for line in block.splitlines():
            if line.startswith("Package: "):
                package = line[9:]
            elif line.startswith("Description-en: "):
                lines = [line[16:]]
            elif line.startswith(" ") and lines:
                lines.append("" if line.strip() == "." else line.strip())
        body = " ".join(lines[1:]).strip()
        if package and len(body.split()) >= 20 and body not in entries:
            entries[body] = (package, lines[0])
    rng = random.Random(42)
    bodies = sorted(entries)
    rng.shuffle(bodies)
    bodies = bodies[:documents]
    judged = set(rng.sample(bodies, queries))
    return [(entries[b][0], entries[b][1], b) for b in bodies], judged


def build_debian(out: Path) -> None:
    lists = Path("/var/lib/apt/lists")
    found = sorted(lists.glob("*_debian_dists_*_main_i18n_Translation-en.lz4"))
    if not found:
        sys.exit("no Translation-en list: run `apt-get update -o Acquire::Languages=en` first")
    main_list = max(found, key=lambda path: path.stat().st_size)  # the release, not its small updates list
    items, judged = debian_descriptions(main_list, 3000, 300)
    write_known_item(out, [item for item in items if item[2] in judged])
    with (out / "corpus.jsonl").open("w") as docs:  # all 3000 documents, only 300 of them judged
        for doc_id, _, body in items:
            docs.write(json.dumps({"_id": doc_id, "title": "", "text": body}) + "\n")


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def bench_corpus(folder: Path, max_docs: int | None) -> Path:
    """About 10k chunks: Cranfield abstracts plus the full READMEs of the installed packages."""
    cranfield = get_settings().benchmarks_dir / "cranfield" / "corpus.jsonl"
    lines = cranfield.read_text().splitlines()
    for name, _, body in package_readmes(None):
        lines.append(json.dumps({"_id": f"pkg-{name}", "title": name, "text": body}))
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(lines[:max_docs]) + "\n")
    return path


def bench_indexing(folder: Path, max_docs: int | None) -> None:
    from flows.index_documents import index_documents

    source = bench_corpus(folder, max_docs)
    items = iter_source(str(source), get_settings().max_document_bytes)
    documents = [d for d in items if isinstance(d, Document)]
    signature = corpus.signature()
    texts = [row["search_text"] for d in documents for row in corpus.chunk_rows(d, d.content_hash(signature))]
    sample = random.Random(0).sample(texts, min(RAW_SAMPLE, len(texts)))
    get_encoder()
    started = time.perf_counter()
    embed(sample)
    raw_rate = len(sample) / (time.perf_counter() - started)
    raw = len(texts) / raw_rate
    print(
        f"raw encode: {raw_rate:.0f} chunks/s over {len(sample)} of the {len(texts)} chunk texts "
        f"= {raw:.1f} s for all, {len(documents) / raw:.1f} docs/s"
    )

    knowledge.drop_domain(DOMAIN)
    started = time.perf_counter()
    full = index_documents(domain=DOMAIN, source=str(source))
    full_s = time.perf_counter() - started
    print(
        f"index-documents full: {full.rows} chunks in {full_s:.1f} s ({len(documents) / full_s:.1f} docs/s,"
        f" {100 * raw / full_s:.0f}% of raw encode throughput); stages {full.seconds}"
    )

    lines = source.read_text().splitlines()
    changed = random.Random(0).sample(range(len(lines)), max(1, len(lines) // 100))
    for n in changed:
        record = json.loads(lines[n])
        record["text"] += " Revised."
        lines[n] = json.dumps(record)
    source.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    again = index_documents(domain=DOMAIN, source=str(source))
    again_s = time.perf_counter() - started
    print(
        f"re-index after {len(changed)} changed docs (1%): {again_s:.1f} s = {100 * again_s / full_s:.1f}% "
        f"of the full index (updated {again.updated}, unchanged {again.unchanged}); stages {again.seconds}"
    )


def bench_queries(domain: str, rounds: int = 200, callers: int = 16) -> None:
    queries = list(beir.read_queries(get_settings().benchmarks_dir / "cranfield").values())
    rows = knowledge.open_domain(domain).count_rows()
    gateway.search(queries[0], [domain], k=10)

    def timed(query: str) -> float:
        started = time.perf_counter()
        gateway.search(query, [domain], k=10)
        return time.perf_counter() - started

    sequential = [timed(queries[n % len(queries)]) for n in range(rounds)]
    print(f"query latency at {rows} chunks, 1 caller, k=10: {percentiles(sequential)}")
    encode_only = []
    for n in range(rounds):
        started = time.perf_counter()
        embed([queries[n % len(queries)]])
        encode_only.append(time.perf_counter() - started)
    print(f"  of which the query embedding alone: {percentiles(encode_only)}")
    errors = 0
    with ThreadPoolExecutor(max_workers=callers) as pool:
        futures = [pool.submit(timed, queries[n % len(queries)]) for n in range(rounds)]
        concurrent = []
        for future in futures:
            try:
                concurrent.append(future.result())
            except Exception:  # counted and reported: any failure under load is a finding
                errors += 1
    print(
        f"query latency at {rows} chunks, {callers} concurrent callers: {percentiles(concurrent)}, "
        f"{errors} errors"
    )


def _lancedb_hybrid(domain: str, query: str, vector, depth: int) -> list[str]:
    """LanceDB's own hybrid search with its RRF reranker (the baseline to beat), first chunk per document."""
    from lancedb.rerankers import RRFReranker

    table = knowledge.open_domain(domain)
    rows = (
        table.search(query_type="hybrid", fts_columns=knowledge.SEARCH_COLUMN)
        .vector(vector)
        .text(query)
        .rerank(RRFReranker())
        .select(["doc_id"])
        .limit(depth)
        .to_list()
    )
    return list(dict.fromkeys(row["doc_id"] for row in rows))


def bench_quality(beir_dir: Path) -> None:
    """nDCG@10 and friends of each retriever on one BEIR directory (indexed by evaluate-retrieval)."""
    import ir_measures

    from flows.evaluate_retrieval import MEASURES, evaluate_retrieval

    default = evaluate_retrieval(beir_dir=str(beir_dir))
    domain = default["domain"]
    qrels = beir.read_qrels(beir_dir)
    queries = {q: t for q, t in beir.read_queries(beir_dir).items() if q in qrels}
    vectors = embed(list(queries.values()))
    runs: dict[str, dict[str, list[str]]] = {
        "bm25": {},
        "dense": {},
        "lancedb-hybrid-rrf": {},
        "rrf": {},
        "convex": {},
    }
    for (query_id, text), vector in zip(queries.items(), vectors, strict=True):
        dense = retrieval.dense_candidates(domain, vector, 400)
        text_hits = retrieval.text_candidates(domain, text, 400)
        runs["bm25"][query_id] = [c.doc_id for c in text_hits]
        runs["dense"][query_id] = [c.doc_id for c in dense]
        runs["lancedb-hybrid-rrf"][query_id] = _lancedb_hybrid(domain, text, vector, 400)
        runs["rrf"][query_id] = [c.doc_id for c in retrieval.fuse(dense, text_hits, "rrf")]
        runs["convex"][query_id] = [c.doc_id for c in retrieval.fuse(dense, text_hits, "convex")]
    qrel_rows = [ir_measures.Qrel(q, d, g) for q in queries for d, g in qrels[q].items()]
    print(f"{beir_dir.name}: {len(queries)} judged queries")
    for name, run in runs.items():
        scored = [
            ir_measures.ScoredDoc(q, d, -rank) for q, docs in run.items() for rank, d in enumerate(docs[:100])
        ]
        values = ir_measures.calc_aggregate(list(MEASURES.values()), qrel_rows, scored)
        print(f"  {name:20s} " + "  ".join(f"{m} {values[MEASURES[m]]:.4f}" for m in MEASURES))
    print(f"  {'default (conveyor)':20s} " + "  ".join(f"{m} {default[m]:.4f}" for m in MEASURES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quality", nargs="*", type=Path, help="BEIR directories to compare retrievers on")
    parser.add_argument("--build-readmes", type=Path, help="write the installed-package README collection")
    parser.add_argument("--build-debian", type=Path, help="write the Debian package description collection")
    parser.add_argument("--max-docs", type=int, help="index only the first N documents of the bench corpus")
    parser.add_argument("--latency-domain", help="measure query latency on this existing domain only")
    args = parser.parse_args(argv or [])
    if args.build_readmes:
        write_known_item(args.build_readmes, package_readmes(README_CHARS))
        return
    if args.build_debian:
        build_debian(args.build_debian)
        return
    if args.quality:
        for folder in args.quality:
            bench_quality(folder)
        return
    if not args.latency_domain:
        with tempfile.TemporaryDirectory() as folder:
            bench_indexing(Path(folder), args.max_docs)
    bench_queries(args.latency_domain or DOMAIN)


if __name__ == "__main__":
    main(sys.argv[1:])
