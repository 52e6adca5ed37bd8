"""Lineage and tracing benchmark: what an answer's MLflow trace and lineage add to a chat answer.

`python -m bench lineage` (or `python -m bench.bench_lineage [--answers 5]`) indexes docs/ into the domain
`bench-lineage`, then prints one JSON line per figure:
- `chat-tracing`: chat answers (agents.chat.reply) traced and untraced (tracing disabled: no spans),
  each question both ways in alternating order after an untimed answer that leaves its prompt in
  llama.cpp's cache; median seconds each way and the median of the paired differences. Once for
  questions the knowledge base cannot answer (routing and retrieval, no generation: little noise), once
  for questions it answers (the LLM's sampling makes answers differ by more than tracing costs);
- `lineage`: median time to assemble an answer's lineage (digests cached) and to find the index run of a
  table version (one LanceDB tag listing per domain and query, inside the gateway's domain jobs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from agents import chat
from agents.llm import get_llm, identity
from conveyor import knowledge, lineage, tracking
from flows.index_documents import index_documents

DOMAIN = "bench-lineage"
DOCS = Path(__file__).resolve().parent.parent / "docs"
ANSWERED = [
    "How does Conveyor decide which chunks to re-embed when a document changes?",
    "What does the sandbox do to keep model-written code from reaching the network?",
    "How does the planner agent split a task into steps?",
    "Is LanceDB an in-process database or a server?",
    "What are Prefect task caching policies?",
]
UNANSWERED = ["What is the boiling point of ethanol?", "Explain the difference between a violin and a viola."]


def answer_seconds(question: str, traced: bool) -> float:
    """One chat answer's wall time, traced or not."""
    with nullcontext() if traced else tracking.tracing_disabled():
        started = time.perf_counter()
        reply = chat.reply(question, [])
        seconds = time.perf_counter() - started
    assert reply.lineage is not None and (reply.lineage.trace_id is not None) == traced
    return seconds


def bench_tracing(questions: list[str], answers: int) -> dict:
    traced, untraced = [], []
    for n, question in enumerate((questions * answers)[:answers]):
        chat.reply(question, [])  # untimed: warms the caches both timed answers then find alike
        order = (True, False) if n % 2 == 0 else (False, True)
        timed = {mode: answer_seconds(question, traced=mode) for mode in order}
        traced.append(timed[True])
        untraced.append(timed[False])
    return {
        "bench": "chat-tracing",
        "generation": questions is ANSWERED,
        "answers": answers,
        "traced_median_s": round(statistics.median(traced), 4),
        "untraced_median_s": round(statistics.median(untraced), 4),
        "paired_difference_median_ms": round(
            1000 * statistics.median(t - u for t, u in zip(traced, untraced, strict=True)), 2
        ),
    }


def median_ms(work: Callable[[], object], repeat: int = 200) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


def bench_lineage() -> dict:
    table = knowledge.open_domain(DOMAIN)
    assert table is not None
    read = lineage.DomainRead(
        domain=DOMAIN,
        table=table.name,
        version=table.version,
        index_flow_run_id=knowledge.index_run_id(table, table.version),
    )
    decision = lineage.RouteDecision(agent="research", method="classifier", score=0.9)
    return {
        "bench": "lineage",
        "build_median_ms": median_ms(lambda: lineage.build([read], identity(), decision, "tr-0")),
        "index_run_lookup_median_ms": median_ms(lambda: knowledge.index_run_id(table, table.version)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--answers", type=int, default=5, help="questions answered each way")
    args = parser.parse_args(argv or [])
    index_documents(domain=DOMAIN, source=str(DOCS))
    get_llm()
    print(json.dumps(bench_tracing(UNANSWERED, 4 * args.answers)), flush=True)
    print(json.dumps(bench_tracing(ANSWERED, args.answers)), flush=True)
    print(json.dumps(bench_lineage()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
