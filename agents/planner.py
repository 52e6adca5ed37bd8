"""Meta-agent: plans agent steps for a task and checks the plan (known agents, inputs, no cycles)."""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, Field, create_model

from agents import memory
from agents.catalog import AGENTS, agent_name_type
from agents.data import CHART_WORDS, DatasetMissing, find_dataset
from agents.llm import LLMUnavailable, StructuredOutputError, get_llm

STEP_ID = r"^[a-z0-9][a-z0-9_-]{0,39}$"
MAX_STEPS = 8


class PlanStep(BaseModel):
    id: str = Field(pattern=STEP_ID)
    agent: str
    instruction: str = Field(min_length=1)
    inputs: list[str] = Field([], description="Ids of earlier steps whose outputs this step uses.")


class Plan(BaseModel):
    task: str
    steps: list[PlanStep] = Field(min_length=1, max_length=MAX_STEPS)
    method: Literal["llm", "template", "software", "given"] = "given"


class CheckedPlan(BaseModel):
    waves: list[list[str]] = Field(description="Step ids in run order; steps of one wave are independent.")
    problems: dict[str, str] = Field({}, description="Step id -> why it cannot run.")


def check_plan(plan: Plan) -> CheckedPlan:
    """Order the steps in waves; steps with an unknown agent, a missing input or in a cycle become problems
    (and so do the steps that depend on them), the others still run."""
    steps = {s.id: s for s in plan.steps}
    problems: dict[str, str] = {}
    if len(steps) != len(plan.steps):
        problems |= {
            s.id: "duplicate step id" for s in plan.steps if [t.id for t in plan.steps].count(s.id) > 1
        }
    for step in plan.steps:
        if step.agent not in AGENTS:
            problems[step.id] = f"unknown agent {step.agent!r} (known: {', '.join(AGENTS)})"
        elif missing := [i for i in step.inputs if i not in steps]:
            problems[step.id] = f"inputs name no step: {', '.join(missing)}"
    waves, done = [], set()
    pending = [s for s in steps if s not in problems]
    while pending:
        ready = [s for s in pending if all(i in done for i in steps[s].inputs)]
        blocked = [s for s in pending if any(i in problems for i in steps[s].inputs)]
        for step_id in blocked:
            bad = next(i for i in steps[step_id].inputs if i in problems)
            problems[step_id] = f"depends on step {bad!r}, which cannot run"
        if not ready and not blocked:
            problems |= dict.fromkeys(pending, "part of a dependency cycle")
            break
        if ready:
            waves.append(ready)
        done |= set(ready)
        pending = [s for s in pending if s not in done and s not in problems]
    return CheckedPlan(waves=waves, problems=problems)


def template_plan(task: str) -> Plan:
    """A deterministic plan from the task's words: analyse a named dataset, write code, summarise."""
    steps: list[PlanStep] = []
    try:
        dataset = find_dataset(task)
    except DatasetMissing:
        dataset = None
    if dataset:
        chart = " and draw a chart of the main total by group" if CHART_WORDS.search(task) else ""
        steps.append(
            PlanStep(
                id="analyze",
                agent="data",
                instruction=f"Analyse {dataset}.csv: row count, "
                f"column statistics and totals by the main category{chart}.",
            )
        )
    if re.search(r"\b(code|script|program|function|implement)\b", task, re.IGNORECASE):
        source = f"reads {dataset}.csv with pandas and " if dataset else ""
        steps.append(
            PlanStep(
                id="code",
                agent="code",
                inputs=[s.id for s in steps],
                instruction=f"Write a Python script that {source}does the coding part of this task: {task}",
            )
        )
    if not steps:
        steps.append(PlanStep(id="research", agent="research", instruction=task))
    if re.search(r"\b(summar\w*|insights?|report|conclusions?)\b", task, re.IGNORECASE) or len(steps) > 1:
        steps.append(
            PlanStep(
                id="summarize",
                agent="summary",
                inputs=[s.id for s in steps],
                instruction="Summarise the insights of the earlier steps for a short report.",
            )
        )
    return Plan(task=task, steps=steps, method="template")


class StepList(BaseModel):
    """The planner's structured reply; `_plan_schema` gives the steps their fields."""

    steps: list[BaseModel]


def _plan_schema() -> type[StepList]:
    step = create_model(
        "Step",
        id=(str, Field(pattern=r"^[a-z][a-z0-9_]{0,19}$")),
        agent=(agent_name_type(), ...),
        instruction=(str, ...),
        inputs=(list[str], []),
    )
    return create_model("StepList", __base__=StepList, steps=(list[step], Field(min_length=1, max_length=5)))


# The worked example the prompt shows the model when memory holds no similar past plan.
PROMPT_EXAMPLE_TASK = "Analyze orders.csv, write code that plots orders per month, and summarize the findings"
PROMPT_EXAMPLE_STEPS = [
    {
        "id": "analyze",
        "agent": "data",
        "instruction": "Analyse orders.csv: totals and averages by shop",
        "inputs": [],
    },
    {
        "id": "plot",
        "agent": "code",
        "instruction": "Write Python that plots orders per month from orders.csv",
        "inputs": ["analyze"],
    },
    {
        "id": "summarize",
        "agent": "summary",
        "instruction": "Summarise the findings",
        "inputs": ["analyze", "plot"],
    },
]
RELEVANCE_MIN = 0.2  # MiniLM cosine between a step's instruction and the task; below it the step is off-task


def plan_prompt(task: str) -> list[dict]:
    catalogue = "\n".join(f"- {name}: {agent.description}" for name, agent in AGENTS.items())
    past = memory.similar(task, "planner", k=1)
    example_task, example_steps = (
        (past[0]["task"], json.loads(past[0]["plan"])["steps"])
        if past
        else (PROMPT_EXAMPLE_TASK, PROMPT_EXAMPLE_STEPS)
    )
    return [
        {
            "role": "system",
            "content": (
                "You plan how agents solve a task. Split the task into 1 to 5 steps; each step has a short "
                "id, one agent, a precise instruction that names the files it uses, and `inputs`: ids of "
                "earlier steps whose results it needs. A Markdown report of all results is written "
                f"automatically: plan no step for it.\nAgents:\n{catalogue}\n"
                f"Example task: {example_task}\nExample plan: {json.dumps({'steps': example_steps})}"
            ),
        },
        {"role": "user", "content": f"Task: {task}"},
    ]


def plan_task(task: str) -> Plan:
    """An LLM plan that passes `check_plan` and stays on the task, else the deterministic template plan."""
    try:
        proposal = get_llm().structured(plan_prompt(task), _plan_schema(), max_tokens=400)
        plan = Plan(task=task, steps=[PlanStep(**s.model_dump()) for s in proposal.steps], method="llm")
        if not check_plan(plan).problems and covers_task(plan, task):
            return plan
    except (LLMUnavailable, StructuredOutputError, ValueError):
        pass
    return template_plan(task)


def covers_task(plan: Plan, task: str) -> bool:
    """Every step is about the task (embedding similarity), and a named dataset is analysed by `data`."""
    from conveyor.embeddings import embed

    vectors = embed([task, *[s.instruction for s in plan.steps]])
    if (vectors[1:] @ vectors[0]).min() < RELEVANCE_MIN:
        return False
    try:
        dataset = find_dataset(task)
    except DatasetMissing:
        return True
    return any(s.agent == "data" and dataset in s.instruction for s in plan.steps)


class Module(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,29}$")
    purpose: str = Field(min_length=3, max_length=300)


class Design(BaseModel):
    modules: list[Module] = Field(min_length=1, max_length=4)


def design_modules(task: str) -> Design:
    """The model splits a software task into modules; one `core` module when its design is unusable."""
    messages = [
        {
            "role": "system",
            "content": "Split the software task into 2 to 4 small Python modules. Give each a "
            "snake_case name and a one-sentence purpose.",
        },
        {"role": "user", "content": task},
    ]
    try:
        design = get_llm().structured(messages, Design, max_tokens=200)
        if len({m.name for m in design.modules}) == len(design.modules):
            return design
    except (LLMUnavailable, StructuredOutputError):
        pass
    return Design(modules=[Module(name="core", purpose=task[:300])])


def software_plan(task: str) -> Plan:
    """Requirements -> one code step per designed module (in parallel) -> tests in the sandbox -> review."""
    modules = design_modules(task).modules
    code_steps = [
        PlanStep(
            id=f"code_{m.name}",
            agent="code",
            inputs=["requirements"],
            instruction=f"Write the Python module `{m.name}`: {m.purpose}. End with a short demo that prints "
            f"what it computes.",
        )
        for m in modules
    ]
    code_ids = [s.id for s in code_steps]
    steps = [
        PlanStep(
            id="requirements", agent="summary", instruction=f"List the requirements of this software: {task}"
        ),
        *code_steps,
        PlanStep(
            id="tests",
            agent="code",
            inputs=code_ids,
            instruction="Write one script that contains the modules' code from the earlier results and "
            "assert-based tests of their functions; print 'all tests passed' at the end.",
        ),
        PlanStep(
            id="review",
            agent="summary",
            inputs=[*code_ids, "tests"],
            instruction="Review the modules and the test results: what works, what fails, what to fix next.",
        ),
    ]
    return Plan(task=task, steps=steps, method="software")
