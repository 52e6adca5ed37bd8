"""Tasks of `run-agent-task`: plan, run one agent step, write the report, track and remember the run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agents import memory
from agents.base import AgentResult
from agents.catalog import get_agent
from agents.llm import model_name
from agents.planner import Plan, PlanStep, plan_task, software_plan
from conveyor.lineage import Lineage


class StepFailed(RuntimeError):
    """An agent step returned a failed result; the message carries the agent's error, `result` the work
    (a failing test script and its output are what a review step needs)."""

    def __init__(self, message: str, result: AgentResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class StepOutcome(BaseModel):
    id: str
    agent: str
    status: Literal["completed", "failed", "skipped"]
    latency_s: float | None = None
    result: AgentResult | None = None
    error: str | None = None


@task(name="plan-agent-task", retries=1, cache_policy=NO_CACHE)
def make_plan(task_text: str, chain: Literal["planned", "software"] = "planned") -> Plan:
    """The meta-agent's checked plan, or the software chain (requirements -> modules -> tests -> review)."""
    return software_plan(task_text) if chain == "software" else plan_task(task_text)


@task(
    name="agent-step",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NO_CACHE,
    task_run_name="{step.id}-{step.agent}",
)
def run_agent_step(step: PlanStep, context: str, modules: dict[str, str] | None = None) -> AgentResult:
    """Run one step's agent (a code step gets the `modules` its inputs wrote); a failed result raises so
    Prefect retries it. Every attempt is remembered."""
    started = time.perf_counter()
    try:
        result = get_agent(step.agent)(step.instruction, context, **({"modules": modules} if modules else {}))
    except Exception as exc:  # an agent bug must fail this step only, with its cause
        result = AgentResult(agent=step.agent, answer="", ok=False, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - started
    result.data["latency_s"] = round(latency, 3)
    memory.record(
        "agent",
        step.agent,
        step.instruction,
        result.ok,
        latency,
        error=result.error or "",
        output=str(result.data.get("code") or result.answer),
    )
    if not result.ok:
        raise StepFailed(f"{step.agent} step {step.id!r} failed: {result.error}", result)
    return result


def step_modules(step: PlanStep, outcomes: dict[str, StepOutcome]) -> dict[str, str]:
    """The Python modules a code step's `code_<module>` inputs wrote, by module name (none for others)."""
    if step.agent != "code":
        return {}
    completed = {i: o.result for i, o in outcomes.items() if o.status == "completed" and o.result}
    return {
        i.removeprefix("code_"): completed[i].data["code"]
        for i in step.inputs
        if i.startswith("code_") and i in completed and completed[i].data.get("code")
    }


def step_context(
    task_text: str, step: PlanStep, outcomes: dict[str, StepOutcome], modules: dict[str, str]
) -> str:
    """The overall task and the outputs of the step's inputs, as text for its prompt (a module the step
    gets as a file, one of `modules`, is named, not shown: the model imports it instead of copying it)."""

    def output(i: str) -> str:
        if i.removeprefix("code_") in modules:
            return f"(module `{i.removeprefix('code_')}.py`, in the current folder: import it)"
        outcome = outcomes[i]
        failed = f"(did not complete: {outcome.error})" if outcome.status != "completed" else ""
        return "\n".join(filter(None, [failed, outcome.result.answer if outcome.result else ""]))

    parts = [f"Overall task: {task_text[:1000]}"]
    parts += [f"## {i} ({outcomes[i].agent})\n{output(i)}" for i in step.inputs]
    return "\n\n".join(parts)[:6000]


def _figure_markdown(result: AgentResult, run_dir: Path) -> list[str]:
    lines = []
    for source in result.figures:
        path = Path(source)
        if path.is_file():
            target = run_dir / "figures" / f"{result.agent}-{path.parent.name}-{path.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(path, target)
            lines.append(f"![{target.stem}](figures/{target.name})")
    return lines


def render_report(plan: Plan, outcomes: list[StepOutcome], run_dir: Path, run_lineage: Lineage) -> str:
    lines = [f"# Agent report\n\n**Task:** {plan.task}\n\n**Plan** ({plan.method}):\n"]
    lines += [
        f"{n}. `{s.id}` - {s.agent}: {s.instruction}" + (f" (uses {', '.join(s.inputs)})" if s.inputs else "")
        for n, s in enumerate(plan.steps, start=1)
    ]
    for outcome in outcomes:
        lines.append(f"\n## {outcome.id} ({outcome.agent}): {outcome.status}\n")
        if outcome.result:
            lines.append(outcome.result.answer)
            lines += _figure_markdown(outcome.result, run_dir)
            lines += [
                f"- [{s['n']}] {s.get('title') or s.get('doc_id')}"
                for s in outcome.result.sources
                if "n" in s
            ]
        if outcome.error:
            lines.append(f"**Error:** {outcome.error}")
    lines.append("\n## Lineage\n")
    data = run_lineage.data_revision
    lines += [
        f"- knowledge `{d.domain}`: table version {d.version} (index run {d.index_flow_run_id})"
        for d in run_lineage.domains
    ]
    lines += [f"- prompt `{p.name}` version {p.version}" for p in run_lineage.prompts]
    lines += [
        f"- models: {', '.join(sorted({f'{o.agent} {model_name(o.agent)}' for o in outcomes}))}; planner "
        f"{model_name('planning')}",
        f"- data: git {data.git_commit}, knowledge {data.knowledge_md5}",
        "- `lineage.json` in this folder has the whole record.",
    ]
    return "\n".join(lines) + "\n"


@task(name="write-agent-report", cache_policy=NO_CACHE)
def write_report(plan: Plan, outcomes: list[StepOutcome], run_dir: Path, run_lineage: Lineage) -> Path:
    """report.md (with charts and lineage), plan.json, lineage.json and one JSON per step in `run_dir`, plus
    Prefect artifacts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    (run_dir / "lineage.json").write_text(run_lineage.model_dump_json(indent=2))
    steps_dir = run_dir / "steps"
    steps_dir.mkdir(exist_ok=True)
    for outcome in outcomes:
        (steps_dir / f"{outcome.id}.json").write_text(outcome.model_dump_json(indent=2))
    report = render_report(plan, outcomes, run_dir, run_lineage)
    (run_dir / "report.md").write_text(report)
    create_markdown_artifact(
        key="agent-report",
        markdown=report.replace("](figures/", f"]({run_dir}/figures/"),
        description=f"Report of: {plan.task[:200]}",
    )
    create_table_artifact(
        key="agent-steps",
        table=[
            {
                "step": o.id,
                "agent": o.agent,
                "status": o.status,
                "latency_s": o.latency_s,
                "error": o.error or "",
            }
            for o in outcomes
        ],
    )
    return run_dir / "report.md"


@task(name="track-agent-run", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def track_run(plan: Plan, outcomes: list[StepOutcome], run_dir: Path) -> str:
    """An MLflow run: the plan as params, step latencies and success as metrics, the report as artifacts."""
    from conveyor import tracking

    latencies = {f"latency_s.{o.id}": o.latency_s for o in outcomes if o.latency_s is not None}
    completed = sum(o.status == "completed" for o in outcomes)
    with tracking.start_run(
        "agents", run_name="run-agent-task", tags={"conveyor.plan_method": plan.method}
    ) as run:
        tracking.log_run_report(
            params={
                "task": plan.task[:500],
                "plan_method": plan.method,
                "steps": len(plan.steps),
                "plan": json.dumps([s.model_dump() for s in plan.steps])[:6000],
            },
            metrics=latencies | {"steps_completed": completed, "success": float(completed == len(outcomes))},
            artifacts={"agent-run": run_dir},
        )
        return run.info.run_id


@task(name="remember-plan", retries=1, cache_policy=NO_CACHE)
def remember_plan(plan: Plan, outcomes: list[StepOutcome], latency_s: float) -> str:
    """Record the whole run in agent memory (successful plans become the planner's examples)."""
    errors = "; ".join(f"{o.id}: {o.error}" for o in outcomes if o.error)
    ok = all(o.status == "completed" for o in outcomes)
    return memory.record(
        "plan", "planner", plan.task, ok, latency_s, error=errors, plan=plan.model_dump(include={"steps"})
    )
