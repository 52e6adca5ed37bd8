"""Agents benchmark: router accuracy and latency, embedded LLM tokens/s, end-to-end example task latency.

Prints one JSON line per measurement. `python -m bench.bench_agents [--skip-e2e]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from agents import router
from agents.llm import get_llm

CASES = Path(router.__file__).with_name("router_cases.jsonl")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def accuracy(picks: list[str | None], labels: list[str]) -> float:
    return round(sum(p == t for p, t in zip(picks, labels, strict=True)) / len(labels), 3)


def bench_router() -> dict:
    cases = [json.loads(line) for line in CASES.read_text().splitlines()]
    labels = [c["agent"] for c in cases]
    routes = [router.route(c["message"]) for c in cases]
    latencies = [r.latency_s for r in routes]
    by_agent = {
        agent: accuracy(
            [r.agent for r, t in zip(routes, labels, strict=True) if t == agent],
            [agent] * labels.count(agent),
        )
        for agent in sorted(set(labels))
    }
    return {
        "bench": "router",
        "messages": len(cases),
        "accuracy": accuracy([r.agent for r in routes], labels),
        "accuracy_model_only": accuracy([r.model_choice for r in routes], labels),
        "accuracy_keywords_only": accuracy([router.keyword_route(c["message"]) for c in cases], labels),
        "accuracy_by_agent": by_agent,
        "fallbacks": sum(r.method == "keywords" for r in routes),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(percentile(latencies, 0.95), 3),
    }


def bench_tokens(max_tokens: int = 128) -> dict:
    llm = get_llm()
    messages = [{"role": "user", "content": "Explain in detail how a hash map works, step by step."}]
    llm.complete([{"role": "user", "content": "hi"}], max_tokens=2)  # load and warm up
    started = time.perf_counter()
    first, chunks = None, 0
    for _ in llm.stream(messages, max_tokens=max_tokens, temperature=0.0):
        first = first or time.perf_counter() - started
        chunks += 1
    total = time.perf_counter() - started
    return {
        "bench": "llm",
        "backend": llm.name,
        "tokens": chunks,
        "first_token_s": round(first, 3),
        "tokens_per_s": round((chunks - 1) / (total - first), 1),
        "total_s": round(total, 2),
    }


def bench_example_task() -> dict:
    from flows.run_agent_task import EXAMPLE_TASK, run_agent_task

    started = time.perf_counter()
    summary = run_agent_task(EXAMPLE_TASK)
    return {
        "bench": "run-agent-task",
        "seconds": round(time.perf_counter() - started, 1),
        "plan_method": summary.plan_method,
        "steps": summary.steps,
        "success": summary.success,
        "report": summary.report,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end example task")
    args = parser.parse_args(argv or [])
    print(json.dumps(bench_tokens()), flush=True)
    print(json.dumps(bench_router()), flush=True)
    if not args.skip_e2e:
        print(json.dumps(bench_example_task()), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
