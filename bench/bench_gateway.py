"""RAG gateway figures: query latency over 1 and 8 domains, and under 1, 16 and 64 concurrent callers.

`python -m bench.bench_gateway [--docs 150] [--queries 128]` builds 8 small synthetic domains
(real embeddings, full-text and vector search as indexed by index-documents) in a temporary CONVEYOR_HOME and
prints one figure per line; errors and answers with failed domains are counted, never hidden.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from conveyor import corpus, gateway, knowledge
from conveyor.loaders import Document
from conveyor.settings import get_settings, reset_settings

TOPICS = {
    "astronomy": "planet orbit telescope comet galaxy nebula eclipse moon star crater",
    "cooking": "bread yeast oven pasta sauce garlic knead simmer butter flour",
    "gardening": "soil compost seed prune tomato mulch bloom root watering greenhouse",
    "finance": "bond equity dividend interest loan budget ledger invoice audit inflation",
    "medicine": "vaccine dose symptom diagnosis clinic fever antibiotic nurse surgery therapy",
    "networking": "router packet latency firewall socket bandwidth protocol switch subnet gateway",
    "geology": "basalt magma fault sediment quartz erosion glacier fossil mineral volcano",
    "music": "melody chord rhythm tempo violin guitar harmony choir scale concert",
}
COMMON = "the a of in with and for when how which every during after before about".split()
CALLERS = (1, 16, 64)


def synthetic_documents(topic: str, count: int, rng: random.Random) -> list[Document]:
    """`count` documents of 3-6 sentences mixing the topic's words with common ones."""
    words = TOPICS[topic].split()
    documents = []
    for n in range(count):
        sentences = [
            " ".join(rng.choice(words if rng.random() < 0.6 else COMMON) for _ in range(rng.randint(8, 14)))
            for _ in range(rng.randint(3, 6))
        ]
        title = f"{topic} {rng.choice(words)} {n}"
        documents.append(Document(id=f"{topic}-{n}", title=title, text=". ".join(sentences) + "."))
    return documents


def build_domain(topic: str, count: int, rng: random.Random) -> int:
    """The library steps of index-documents (chunk, embed, commit, index), without Prefect; returns rows."""
    signature = corpus.signature()
    rows = [
        row
        for document in synthetic_documents(topic, count, rng)
        for row in corpus.chunk_rows(document, document.content_hash(signature))
    ]
    knowledge.apply_changes(topic, corpus.embed_rows(rows), [], [])
    return knowledge.refresh_indexes(topic)["rows"]


@contextmanager
def temporary_home() -> Iterator[None]:
    """Settings (and so LanceDB) pointed at a throwaway CONVEYOR_HOME for the duration."""
    previous = os.environ.get("CONVEYOR_HOME")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as home:
        os.environ["CONVEYOR_HOME"] = home
        reset_settings()
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("CONVEYOR_HOME")
            else:
                os.environ["CONVEYOR_HOME"] = previous
            reset_settings()


def queries(count: int, rng: random.Random) -> list[str]:
    """Two-to-four-word questions over the topics' vocabulary."""
    vocabulary = " ".join(TOPICS.values()).split()
    return [" ".join(rng.sample(vocabulary, rng.randint(2, 4))) for _ in range(count)]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms"


def measure(domains: list[str], texts: list[str], callers: int) -> None:
    """Every text searched once over `domains` by `callers` threads; latency per search, errors counted."""
    latencies: list[float] = []
    errors: list[str] = []
    degraded = 0
    lock = threading.Lock()

    def one(text: str) -> None:
        nonlocal degraded
        started = time.perf_counter()
        try:
            found = gateway.retrieve(text, domains, k=10)
        except Exception as exc:  # counted and reported: any failure under load is a finding
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            latencies.append(time.perf_counter() - started)
            degraded += bool(found.failed_domains)

    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(one, texts))
    wall = time.perf_counter() - started
    figures = f"{percentiles(latencies)}, {len(latencies) / wall:.1f} queries/s" if latencies else "no answer"
    first_error = f" (first: {errors[0]})" if errors else ""
    print(
        f"gateway, {len(domains)} domain(s), {callers} caller(s): {figures}; {len(latencies)} answered, "
        f"{degraded} with failed domains, {len(errors)} errors{first_error}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=150, help="documents per domain")
    parser.add_argument("--queries", type=int, default=128, help="queries per figure")
    args = parser.parse_args(argv or [])
    rng = random.Random(0)
    with temporary_home():
        started = time.perf_counter()
        rows = sum(build_domain(topic, args.docs, rng) for topic in TOPICS)
        built_s = time.perf_counter() - started
        print(f"built {len(TOPICS)} domains, {rows} chunks, in {built_s:.1f} s", flush=True)
        print(f"per-domain timeout: {get_settings().gateway_domain_timeout_s:g} s per pass", flush=True)
        domains = sorted(TOPICS)
        gateway.retrieve("warm up", domains, k=10)
        measure(domains[:1], queries(args.queries, rng), callers=1)
        for callers in CALLERS:
            measure(domains, queries(args.queries, rng), callers)


if __name__ == "__main__":
    main(sys.argv[1:])
