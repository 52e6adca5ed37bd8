"""Agents benchmark: embedded LLM tokens/s, end-to-end example task latency (the router: bench_router.py).

Prints one JSON line per measurement. `python -m bench.bench_agents [--skip-e2e]`
"""

from __future__ import annotations

import argparse
import json
import time

from agents.llm import get_llm


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
    if not args.skip_e2e:
        print(json.dumps(bench_example_task()), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
