"""Flow `run-agent-task`: a meta-agent plans agent steps; Prefect runs them, independent ones concurrently.

With `approve_plan`, the run pauses until a person approves, edits or rejects the plan (tasks/approval.py).
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Cancelled, State
from pydantic import BaseModel

from agents import memory
from agents.llm import identity
from agents.planner import CheckedPlan, Plan, check_plan
from conveyor import lineage
from conveyor.lineage import Lineage
from conveyor.settings import get_settings
from tasks.agent_steps import (
    StepOutcome,
    make_plan,
    remember_plan,
    run_agent_step,
    step_context,
    step_modules,
    track_run,
    write_report,
)
from tasks.approval import APPROVAL_TIMEOUT_S
from tasks.plan_approval import PlanRejected, review_plan

EXAMPLE_TASK = (
    "Analyze the dataset sales_2024.csv, generate Python code for a visualization, summarize the "
    "insights and write a report with charts"
)


class AgentRunSummary(BaseModel):
    task: str
    plan_method: str
    steps: dict[str, str]
    success: bool
    report: str
    run_dir: str
    mlflow_run_id: str
    memory_id: str
    lineage: Lineage


def run_plan(plan: Plan, checked: CheckedPlan) -> list[StepOutcome]:
    """Submit each wave's steps together; a step none of whose inputs completed is skipped, others go on."""
    steps = {s.id: s for s in plan.steps}
    outcomes = {
        sid: StepOutcome(id=sid, agent=steps[sid].agent, status="failed", error=why)
        for sid, why in checked.problems.items()
    }
    for wave in checked.waves:
        futures = {}
        for sid in wave:
            inputs = steps[sid].inputs
            if inputs and all(outcomes[i].status != "completed" for i in inputs):
                outcomes[sid] = StepOutcome(
                    id=sid,
                    agent=steps[sid].agent,
                    status="skipped",
                    error=f"no input step completed ({', '.join(inputs)})",
                )
            else:
                modules = step_modules(steps[sid], outcomes)
                futures[sid] = run_agent_step.submit(
                    steps[sid], step_context(plan.task, steps[sid], outcomes, modules), modules
                )
        for sid, future in futures.items():
            result = future.result(raise_on_failure=False)
            if isinstance(result, BaseException):
                outcomes[sid] = StepOutcome(
                    id=sid,
                    agent=steps[sid].agent,
                    status="failed",
                    error=str(result),
                    result=getattr(result, "result", None),  # a failed step's work, kept for the report
                )
            else:
                outcomes[sid] = StepOutcome(
                    id=sid,
                    agent=steps[sid].agent,
                    status="completed",
                    result=result,
                    latency_s=result.data.get("latency_s"),
                )
    return [outcomes[s.id] for s in plan.steps]


@task(name="publish-agent-performance", cache_policy=NO_CACHE)
def publish_performance() -> None:
    """Per-agent runs, success rate, p50/p95 latency and common errors, as a table artifact."""
    rows = [
        r | {"common_errors": "; ".join(e["error"] for e in r["common_errors"])}
        for r in memory.performance_report()
    ]
    create_table_artifact(
        key="agent-performance", table=rows, description="Agent memory: performance per agent"
    )


@flow(name="run-agent-task", log_prints=True)
def run_agent_task(
    task: str = EXAMPLE_TASK,
    plan: Plan | None = None,
    chain: Literal["planned", "software"] = "planned",
    approve_plan: bool = False,
    approval_timeout_s: int = APPROVAL_TIMEOUT_S,
) -> AgentRunSummary | State:
    """Plan `task` (or take `plan`), have it approved if asked, run its steps as tasks, then report, track
    and remember the run.

    Args:
        approve_plan: pause until a person approves, edits or rejects the plan (a form in the Prefect UI);
            a rejected plan ends the run Cancelled, none of it run.
        approval_timeout_s: seconds to wait for that answer; then the plan counts as rejected (run fails).
    """
    started = time.perf_counter()
    with lineage.recording() as reads:  # the steps' knowledge reads and prompt versions
        plan = plan or make_plan(task, chain)
        if approve_plan:
            asked = time.perf_counter()
            try:
                plan = review_plan(plan, approval_timeout_s)
            except PlanRejected as exc:
                return Cancelled(message=str(exc))
            started += time.perf_counter() - asked  # waiting for a person is not the run's latency
        outcomes = run_plan(plan, check_plan(plan))
    run_lineage = lineage.build(reads, llm=identity("planning"))
    run_dir = get_settings().state_dir / "agent-runs" / str(flow_run.id or uuid.uuid4())
    report = write_report(plan, outcomes, run_dir, run_lineage)
    mlflow_run_id = track_run(plan, outcomes, run_dir)
    memory_id = remember_plan(plan, outcomes, time.perf_counter() - started)
    publish_performance()
    statuses = {o.id: o.status for o in outcomes}
    print(f"plan ({plan.method}): {statuses}; report: {report}")
    return AgentRunSummary(
        task=task,
        plan_method=plan.method,
        steps=statuses,
        success=all(s == "completed" for s in statuses.values()),
        report=str(report),
        run_dir=str(run_dir),
        mlflow_run_id=mlflow_run_id,
        memory_id=memory_id,
        lineage=run_lineage,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plan and run agent steps for a task.")
    parser.add_argument("task", nargs="?", default=EXAMPLE_TASK)
    parser.add_argument("--software", action="store_true", help="the software-development chain")
    parser.add_argument("--approve-plan", action="store_true", help="wait for a person to approve the plan")
    args = parser.parse_args(argv)
    chain: Literal["planned", "software"] = "software" if args.software else "planned"
    summary = run_agent_task(args.task, chain=chain, approve_plan=args.approve_plan)
    if isinstance(summary, State):
        raise SystemExit(f"not run: {summary.message}")
    print(summary.model_dump_json(indent=2))
    print(f"report: {Path(summary.report)}")


if __name__ == "__main__":
    main()
