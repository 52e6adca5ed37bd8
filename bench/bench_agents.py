"""Agents benchmark: each local model's time to first token and tokens/s, the example task end to end
with the quality model in its roles and with the fast model everywhere, and the software chain on
SOFTWARE_TASKS (how many of its tests pass in the end, which functions failing tests had rewritten) (the
router: bench_router.py; the planner: bench_planner.py; chat time to first token over HTTP: bench_api.py).

Prints one JSON line per measurement. `python -m bench.bench_agents [--skip-e2e] [--skip-software]`
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from agents.llm import LOCAL_MODELS, EmbeddedLLM, reset_llm
from conveyor.settings import reset_settings


def bench_tokens(name: str, max_tokens: int = 128) -> dict:
    llm = EmbeddedLLM(name)
    llm.complete([{"role": "user", "content": "hi"}], max_tokens=2)  # warm up
    messages = [{"role": "user", "content": "Explain in detail how a hash map works, step by step."}]
    started = time.perf_counter()
    first, chunks = 0.0, 0
    for _ in llm.stream(messages, max_tokens=max_tokens, temperature=0.0):
        first = first or time.perf_counter() - started
        chunks += 1
    total = time.perf_counter() - started
    return {
        "bench": "llm",
        "model": name,
        "tokens": chunks,
        "first_token_s": round(first, 3),
        "tokens_per_s": round((chunks - 1) / (total - first), 1),
        "total_s": round(total, 2),
    }


def bench_example_task(quality_roles: str) -> dict:
    """`run-agent-task` on the example task with CONVEYOR_LLM_QUALITY_ROLES=`quality_roles`."""
    from flows.run_agent_task import EXAMPLE_TASK, run_agent_task
    from tasks.agent_steps import StepOutcome

    os.environ["CONVEYOR_LLM_QUALITY_ROLES"] = quality_roles
    reset_settings()
    reset_llm()
    started = time.perf_counter()
    summary = run_agent_task(EXAMPLE_TASK)
    steps = [
        StepOutcome.model_validate_json(p.read_text()) for p in Path(summary.run_dir).glob("steps/*.json")
    ]
    return {
        "bench": "run-agent-task",
        "quality_roles": quality_roles,
        "seconds": round(time.perf_counter() - started, 1),
        "plan_method": summary.plan_method,
        "steps": summary.steps,
        "success": summary.success,
        "data_spec_method": next(
            (s.result.data.get("spec_method") for s in steps if s.agent == "data" and s.result), None
        ),
        "summary_unsupported_numbers": next(
            (s.result.data.get("unsupported_numbers") for s in steps if s.agent == "summary" and s.result),
            None,
        ),
        "code_repairs": [
            s.result.data.get("attempts", 1) - 1 for s in steps if s.agent == "code" and s.result
        ],
        "report": summary.report,
    }


SOFTWARE_TASKS = [
    "A small Python library for temperatures: convert between Celsius and Fahrenheit and classify a "
    "temperature as freezing, mild or hot",
    "A text utility library: count the words of a text, find the most frequent word and make a title-case "
    "headline",
    "A shopping cart: add items with a price and a quantity, compute the total with a percentage discount",
]


def bench_software_chain(task: str) -> dict:
    """`run-agent-task --software` on `task` with the default model roles."""
    from flows.run_agent_task import run_agent_task
    from tasks.agent_steps import StepOutcome

    os.environ.pop("CONVEYOR_LLM_QUALITY_ROLES", None)
    reset_settings()
    started = time.perf_counter()
    summary = run_agent_task(task, chain="software")
    outcomes = {
        p.stem: StepOutcome.model_validate_json(p.read_text())
        for p in Path(summary.run_dir).glob("steps/*.json")
    }
    tests = outcomes.get("tests")
    data = tests.result.data if tests and tests.result else {}
    results = data.get("tests") or {}
    return {
        "bench": "software-chain",
        "task": task[:60],
        "seconds": round(time.perf_counter() - started, 1),
        "steps": summary.steps,
        "tests_passed": len(results.get("passed", [])),
        "tests_failed": len(results.get("failed", [])),
        "rewritten_modules": sorted(data.get("fixed_modules", {})),
        "report": summary.report,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end example task")
    parser.add_argument("--skip-software", action="store_true", help="skip the software chain")
    args = parser.parse_args(argv or [])
    for name in LOCAL_MODELS:
        print(json.dumps(bench_tokens(name)), flush=True)
    if not args.skip_e2e:
        for roles in ('["planning", "data", "code", "summary"]', "[]"):
            print(json.dumps(bench_example_task(roles)), flush=True)
    if not args.skip_software:
        for task in SOFTWARE_TASKS:
            print(json.dumps(bench_software_chain(task)), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
