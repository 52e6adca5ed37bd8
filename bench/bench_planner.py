"""Planner benchmark: on the labelled tasks of data/benchmarks/planner, the share of plans accepted (the
model's plan kept, `method == "llm"`, and meeting the task's labels) and the seconds per plan.

Runs with an empty agent memory (a fresh clone's planner: no past plan as example) and the built-in
datasets. `--model fast|quality` plans with CONVEYOR_LLM_MODEL or CONVEYOR_LLM_QUALITY_MODEL (default: the
model the settings give the planning role).

`--memory-threshold` measures `planner_memory_min_similarity` instead, without the LLM, on the router's
labelled messages (agents/router_*.jsonl): for each message, its nearest other message (the past run memory
would show) and their embedding cosine; the neighbour fits when it needs the same agent on the same dataset.
Per threshold: the share of messages shown an example and the share of shown examples that fit; the choice
is the lowest threshold at which PRECISION_TARGET of the shown examples fit.

Prints one JSON line per task, then a summary line.
`python -m bench.bench_planner [--model fast|quality] [--tasks data/benchmarks/planner/heldout.jsonl]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

TASK_SETS = Path(__file__).resolve().parent.parent / "data" / "benchmarks" / "planner"
TASKS = TASK_SETS / "tasks.jsonl"
TARGETS = {"accepted": 0.8}
THRESHOLDS = [round(t, 2) for t in np.arange(0.3, 0.91, 0.05)]
PRECISION_TARGET = 0.9  # a wrong example misleads the model more than the worked examples do


def load_tasks(path: Path = TASKS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def label_problems(plan, labels: dict) -> list[str]:
    """What `plan` lacks against the task's labels (empty: it meets them)."""
    agents = {s.agent for s in plan.steps}
    problems = [f"no {a} step" for a in labels["agents"] if a not in agents]
    problems += [f"a {a} step" for a in labels["forbid"] if a in agents]
    dataset = labels["dataset"]
    if dataset and not any(s.agent == "data" and dataset in s.instruction for s in plan.steps):
        problems.append(f"no data step names {dataset}")
    return problems


def unasked_agents(plan, labels: dict) -> list[str]:
    """Agents the plan adds beyond the labels, a closing summary aside: allowed, but work nobody asked for."""
    return sorted({s.agent for s in plan.steps} - set(labels["agents"]) - {"summary"})


def steps_text(plan) -> list[str]:
    return [f"{s.id}:{s.agent}<{','.join(s.inputs)}> {s.instruction}" for s in plan.steps]


def labelled_datasets() -> set[str]:
    return {t["dataset"] for t in load_tasks() if t["dataset"]}


def isolate(model: str | None, scratch: Path) -> None:
    """An empty memory (under `scratch`), the built-in datasets, and the planning model asked for."""
    from conveyor.datasets import list_datasets
    from conveyor.settings import get_settings, reset_settings

    os.environ["CONVEYOR_LANCEDB_URI"] = str(scratch / "lancedb")
    if model:
        roles = get_settings().llm_quality_roles - {"planning"} | (
            {"planning"} if model == "quality" else set()
        )
        os.environ["CONVEYOR_LLM_QUALITY_ROLES"] = json.dumps(sorted(roles))
    reset_settings()
    if not labelled_datasets() <= {d.id for d in list_datasets()}:
        from data.prepare import main as prepare

        prepare(["--out", str(scratch / "data")])
        os.environ["CONVEYOR_DATA_DIR"] = str(scratch / "data")
        reset_settings()


def bench_acceptance(model: str | None, scratch: Path, tasks: Path) -> dict:
    from agents import planner
    from agents.llm import LLMUnavailable, get_llm, model_name, reset_llm

    isolate(model, scratch)
    reset_llm()
    started = time.perf_counter()
    get_llm("planning").complete([{"role": "user", "content": "hi"}], max_tokens=1)
    planner.covers_task(planner.template_plan("warm-up"), "warm-up")  # loads the embedding model
    cold_s = time.perf_counter() - started
    rows = []
    for labels in load_tasks(tasks):
        started = time.perf_counter()
        proposed = None
        try:
            plan, rejected = planner.llm_plan(labels["task"]), None
        except (planner.PlanRejected, LLMUnavailable) as exc:
            plan, rejected = planner.template_plan(labels["task"]), f"{type(exc).__name__}: {exc}"[:300]
            proposed = getattr(exc, "plan", None)
        elapsed = time.perf_counter() - started
        problems = label_problems(plan, labels)
        row = {
            "bench": "planner-task",
            "id": labels["id"],
            "kind": labels["kind"],
            "method": plan.method,
            "accepted": plan.method == "llm" and not problems,
            "seconds": round(elapsed, 1),
            "rejected": rejected,
            "label_problems": problems,
            "unasked_agents": unasked_agents(plan, labels),
            "steps": steps_text(plan),
            "rejected_plan": steps_text(proposed) if proposed else None,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    seconds = [r["seconds"] for r in rows]
    return {
        "bench": "planner",
        "model": model_name("planning"),
        "task_set": tasks.name,
        "tasks": len(rows),
        "accepted": round(float(np.mean([r["accepted"] for r in rows])), 3),
        "llm_plans": round(float(np.mean([r["method"] == "llm" for r in rows])), 3),
        "accepted_without_unasked_agents": round(
            float(np.mean([r["accepted"] and not r["unasked_agents"] for r in rows])), 3
        ),
        "accepted_by_kind": {
            kind: round(float(np.mean([r["accepted"] for r in rows if r["kind"] == kind])), 3)
            for kind in sorted({r["kind"] for r in rows})
        },
        "seconds_p50": round(statistics.median(seconds), 1),
        "seconds_max": round(max(seconds), 1),
        "seconds_total": round(sum(seconds), 1),
        "cold_start_s": round(cold_s, 1),
        "targets": TARGETS,
    }


def named_datasets(text: str, datasets: set[str]) -> frozenset[str]:
    """The `datasets` a text names, by id or by the id's words ("the 2024 sales data")."""
    lowered = text.lower()
    return frozenset(d for d in datasets if all(word in lowered for word in d.split("_")))


def bench_memory_threshold() -> list[dict]:
    """Nearest neighbours among the router's labelled messages (not the planner's evaluation tasks): a
    neighbour's plan is a fitting example when it needs the same agent for the same dataset."""
    from agents import router_model
    from conveyor.embeddings import embed

    files = [router_model.TRAINING_FILE, router_model.TRAINING_FILE.with_name("router_cases.jsonl")]
    messages = [example for path in files for example in router_model.load_examples(path)]
    vectors = embed([m.message for m in messages])
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    closest = similarity[np.arange(len(messages)), nearest]
    datasets = labelled_datasets()
    needs = [(m.agent, named_datasets(m.message, datasets)) for m in messages]
    fitting = np.array([needs[i] == needs[j] for i, j in enumerate(nearest)])
    rows = []
    for threshold in THRESHOLDS:
        shown = closest >= threshold
        rows.append(
            {
                "bench": "planner-memory-threshold",
                "messages": len(messages),
                "threshold": threshold,
                "shown": round(float(shown.mean()), 3),
                "fitting_of_shown": round(float(fitting[shown].mean()), 3) if shown.any() else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["fast", "quality"], help="the planning model (default: settings)")
    parser.add_argument(
        "--tasks", type=Path, default=TASKS, help="labelled tasks (heldout.jsonl: nothing tuned on it)"
    )
    parser.add_argument("--memory-threshold", action="store_true", help="measure the memory threshold")
    args = parser.parse_args(argv or [])
    if args.memory_threshold:
        rows = bench_memory_threshold()
        for row in rows:
            print(json.dumps(row), flush=True)
        # the lowest threshold whose shown examples are (almost) all related: the most help without misleading
        good = [r["threshold"] for r in rows if (r["fitting_of_shown"] or 0) >= PRECISION_TARGET]
        print(json.dumps({"bench": "planner-memory-threshold-choice", "threshold": min(good, default=None)}))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-planner-") as scratch:
            print(json.dumps(bench_acceptance(args.model, Path(scratch), args.tasks)), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
