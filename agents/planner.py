"""Meta-agent: plans agent steps for a task and checks the plan (known agents, inputs, no cycles)."""

from __future__ import annotations

import json
import logging
import operator
import re
from collections.abc import Sequence
from functools import reduce
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, create_model

from agents import memory
from agents.catalog import AGENTS
from agents.data import CHART_WORDS, DatasetMissing, find_dataset
from agents.llm import LLMUnavailable, StructuredOutputError, get_llm
from conveyor import prompts
from conveyor.settings import get_settings

log = logging.getLogger(__name__)

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


def named_dataset(task: str) -> str | None:
    """The dataset id the task names, if any."""
    try:
        return find_dataset(task)
    except DatasetMissing:
        return None


def template_plan(task: str) -> Plan:
    """A deterministic plan from the task's words: analyse a named dataset, write code, summarise."""
    steps: list[PlanStep] = []
    if dataset := named_dataset(task):
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
    """The planner's structured reply; `plan_schema` gives the steps their fields."""

    steps: Sequence[BaseModel]


# The model numbers its steps s1, s2, ...: fixed ids let the schema say which ids a step may take as inputs.
LLM_STEPS = 5
LLM_STEP_IDS = tuple(f"s{n}" for n in range(1, LLM_STEPS + 1))
PLAN_TOKENS = 320  # 5 steps of ~25-word instructions; a reply cut short is invalid JSON (the template plan)


def plan_schema(agents: Sequence[str] = tuple(AGENTS)) -> type[StepList]:
    """The planner's reply schema: 1 to LLM_STEPS steps, the n-th with id `sn`, one of `agents`, and inputs
    that can only name earlier steps, so a grammar-constrained model cannot write a forward or unknown id.
    A summary step condenses the others' results (the report then collects everything), so there is at most
    one, and it ends the plan.

    JSON Schema cannot tie an item's fields to its position in a variable-length array, so `steps` is a
    union of fixed-length tuples (`prefixItems`) of per-position step models: per plan length, one tuple
    without a summary step and one ending with it."""
    doers = [a for a in agents if a != "summary"]

    def position(n: int, names: Sequence[str], suffix: str = "") -> type[BaseModel]:
        agent: Any = Literal[tuple(names)]
        fields: dict[str, Any] = {
            "id": (Literal[LLM_STEP_IDS[n]], ...),
            "agent": (agent, ...),
            "instruction": (str, Field(min_length=1)),
        }
        if n:
            earlier: Any = Literal[LLM_STEP_IDS[:n]]
            fields["inputs"] = (list[earlier], Field(max_length=n))
        return create_model(f"Step{n + 1}{suffix}", **fields)

    steps = [position(n, doers) for n in range(LLM_STEPS)] if doers else []
    summaries = [position(n, ["summary"], "Summary") for n in range(LLM_STEPS)] if "summary" in agents else []
    plans: list[Any] = []
    for length in range(1, LLM_STEPS + 1):
        if steps:
            plans.append(tuple.__class_getitem__(tuple(steps[:length])))
        if summaries and (length == 1 or steps):
            plans.append(tuple.__class_getitem__((*steps[: length - 1], summaries[length - 1])))
    return create_model("StepList", __base__=StepList, steps=(reduce(operator.or_, plans), ...))


# Worked examples every planning prompt shows (tasks unlike those of data/benchmarks/planner).
PROMPT_EXAMPLES: list[tuple[str, list[dict]]] = [
    (
        "Analyze orders.csv, write code that plots orders per month, and summarize the findings",
        [
            {"id": "s1", "agent": "data", "instruction": "Analyse orders.csv: orders and revenue per shop"},
            {
                "id": "s2",
                "agent": "code",
                "instruction": "Write Python that plots orders per month from orders.csv",
                "inputs": ["s1"],
            },
            {"id": "s3", "agent": "summary", "instruction": "Summarise the findings", "inputs": ["s1", "s2"]},
        ],
    ),
    (
        "Chart the number of orders per month in orders.csv",
        [
            {
                "id": "s1",
                "agent": "data",
                "instruction": "Count orders per month in orders.csv; draw a bar chart",
            }
        ],
    ),
    (
        "What is a Python decorator? Write one that times a function.",
        [
            {"id": "s1", "agent": "research", "instruction": "Explain what a Python decorator is"},
            {
                "id": "s2",
                "agent": "code",
                "instruction": "Write a decorator that prints how long a function takes",
                "inputs": ["s1"],
            },
        ],
    ),
]
# MiniLM cosine between a step's instruction and the task (or a part of it): below it, the step is off-task.
RELEVANCE_MIN = 0.2
TASK_CLAUSE = re.compile(r"[.;:!?,](?:\s|$)|\b(?:and|then)\b")
FILE_NAME = re.compile(
    r"\b[\w-]+(?:\.[\w-]+)*\.(?:csv|tsv|json|jsonl|txt|md|py|parquet|xlsx)\b", re.IGNORECASE
)


def numbered(steps: list[dict]) -> list[dict] | None:
    """A past plan's steps renumbered s1, s2, ... as the schema wants them; None when it has too many."""
    if not 1 <= len(steps) <= LLM_STEPS:
        return None
    ids = {s["id"]: LLM_STEP_IDS[n] for n, s in enumerate(steps)}
    return [
        {"id": ids[s["id"]], "agent": s["agent"], "instruction": s["instruction"]}
        | ({"inputs": [ids[i] for i in s.get("inputs", []) if i in ids]} if n else {})
        for n, s in enumerate(steps)
    ]


def remembered_example(task: str, agents: Sequence[str]) -> tuple[str, list[dict]] | None:
    """The most similar successful past plan, when it is close enough to `task` (setting
    planner_memory_min_similarity) and uses only `agents`; an unrelated plan would only mislead the model."""
    threshold = get_settings().planner_memory_min_similarity
    for past in memory.similar(task, "planner", k=1, min_similarity=threshold):
        steps = numbered(json.loads(past["plan"]).get("steps", []))
        if steps and all(s["agent"] in agents for s in steps):
            return past["task"], steps
    return None


def plan_prompt(task: str, agents: Sequence[str] = tuple(AGENTS)) -> list[dict]:
    """System rules, the worked examples, a remembered similar plan if any, then the task. Everything before
    the remembered plan is the same for every task, so llama.cpp reuses its evaluated prefix."""
    catalogue = "\n".join(f"- {name}: {agent.description}" for name, agent in AGENTS.items())
    rules = (
        "You plan how agents solve a task. Split the task into 1 to 5 steps s1, s2, ... in order; each step "
        "has one agent, a short precise instruction that names the files it uses, and `inputs`: the earlier "
        "steps whose results it needs. Plan only the steps the task asks for (the data agent draws charts "
        "itself). After the last step, a Markdown report with every step's results and charts is written "
        "automatically: plan no step for the report.\n"
        "Agents:\n{catalogue}"
    )
    system = prompts.system_prompt("planner", rules).text.format(catalogue=catalogue)
    messages = [{"role": "system", "content": system}]
    remembered = remembered_example(task, agents)
    for example_task, steps in [*PROMPT_EXAMPLES, *([remembered] if remembered else [])]:
        messages += [
            {"role": "user", "content": f"Task: {example_task}"},
            {"role": "assistant", "content": json.dumps({"steps": steps})},
        ]
    return [*messages, {"role": "user", "content": f"Task: {task}"}]


class PlanRejected(ValueError):
    """The model's plan cannot be used; the message says why (`plan`: the rejected plan, if it parsed)."""

    def __init__(self, message: str, plan: Plan | None = None) -> None:
        super().__init__(message)
        self.plan = plan


def llm_plan(task: str) -> Plan:
    """The planning model's plan for `task`, checked: runnable (`check_plan`) and on the task (`covers_task`).

    Raises:
        PlanRejected: the reply is not a plan, or the plan fails a check.
        LLMUnavailable: the model is down or timed out.
    """
    # The data agent needs a dataset the task names: without one, the model may not pick it.
    agents = [name for name in AGENTS if name != "data" or named_dataset(task)]
    try:
        proposal = get_llm("planning").structured(
            plan_prompt(task, agents), plan_schema(agents), max_tokens=PLAN_TOKENS
        )
    except StructuredOutputError as exc:
        raise PlanRejected(str(exc)[:300]) from None
    steps = [
        PlanStep(
            id=s.id,  # type: ignore[attr-defined]
            agent=s.agent,  # type: ignore[attr-defined]
            instruction=s.instruction,  # type: ignore[attr-defined]
            inputs=list(dict.fromkeys(getattr(s, "inputs", []))),
        )
        for s in proposal.steps
    ]
    plan = Plan(task=task, steps=steps, method="llm")
    if problems := check_plan(plan).problems:
        raise PlanRejected("; ".join(f"{step}: {why}" for step, why in problems.items()), plan)
    if problem := coverage_problem(plan, task):
        raise PlanRejected(problem, plan)
    return plan


def plan_task(task: str) -> Plan:
    """An LLM plan that passes `check_plan` and stays on the task, else the deterministic template plan."""
    try:
        return llm_plan(task)
    except (LLMUnavailable, PlanRejected) as exc:
        log.info("planning %r with the template: %s", task[:80], exc)
        return template_plan(task)


def covers_task(plan: Plan, task: str) -> bool:
    """Every step is about the task and names only its files; a named dataset is analysed by `data`."""
    return coverage_problem(plan, task) is None


def task_parts(task: str) -> list[str]:
    """The task and its clauses ("analyse X, write code for Y and summarise it"): a step often does one."""
    clauses = (c.strip() for c in TASK_CLAUSE.split(task))
    return [task, *(c for c in clauses if len(c.split()) >= 2)]


def coverage_problem(plan: Plan, task: str) -> str | None:
    """Why `plan` does not cover `task`: a step naming a file the task does not (the model copying an
    example's), a step far from every part of the task, or a named dataset that no data step analyses."""
    from conveyor.embeddings import embed

    dataset = named_dataset(task)
    known_files = {f.lower() for f in FILE_NAME.findall(task)} | ({f"{dataset}.csv"} if dataset else set())
    for step in plan.steps:
        if foreign := [f for f in FILE_NAME.findall(step.instruction) if f.lower() not in known_files]:
            return f"step {step.id} names {', '.join(foreign)}, which the task does not"
    # A summary step shortens what it is given (the task's text, its inputs' results), so "Summarise the
    # findings" is on the task whatever its words; the other agents act on their instruction's own content.
    acting = [s for s in plan.steps if s.agent != "summary"]
    parts = task_parts(task)
    vectors = embed([*parts, *[s.instruction for s in acting]])
    relevance = (vectors[len(parts) :] @ vectors[: len(parts)].T).max(axis=1)
    if acting and relevance.min() < RELEVANCE_MIN:
        step = acting[int(relevance.argmin())]
        return f"step {step.id} is off the task (similarity {relevance.min():.2f} < {RELEVANCE_MIN})"
    if dataset and not any(s.agent == "data" and dataset in s.instruction for s in plan.steps):
        return f"no data step analyses {dataset}.csv"
    return None


# A function's signature as the design names it: `add_item(cart, name, price)` (enforced by the grammar).
Signature = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*\([a-z0-9_, ]*\)$")]


class Module(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,29}$")
    description: str = Field(min_length=3, max_length=300)
    functions: list[Signature] = Field(max_length=4)


class Design(BaseModel):
    modules: list[Module] = Field(min_length=1, max_length=4)

    def usable(self) -> bool:
        """Each module and each function named once: a function in two modules makes the tests import
        one over the other."""
        functions = [f.partition("(")[0] for m in self.modules for f in m.functions]
        names = [m.name for m in self.modules]
        return len(set(names)) == len(names) and len(set(functions)) == len(functions)


# Asked for names and purposes only, the 1.5B gave each module of "count words, find the most frequent word,
# make a headline" all three functions, and modules with classes; asked for signatures too, it gave each
# function to one module on 5 software tasks probed. Fields in the order name, description, functions: with
# `purpose` before `functions` it wrote description-like junk (`description_converter(celsius, fahrenheit)`)
# or no functions; an example signature from one of the tasks was copied into the others' designs.
# The names are asked for, not enforced: sent back for defining them in a class, the 1.5B kept its
# `ShoppingCart` through two repairs and the chain stopped; unenforced, the tests use the class.
DESIGN_SYSTEM = (
    "Split the software task into 2 to 4 small Python modules. Give each a snake_case name, a one-sentence "
    "description and the signatures of the plain functions it defines (no classes), for example "
    "`average(numbers)`. A function takes the data it works on as arguments. Each function belongs to one "
    "module only."
)


def design_modules(task: str) -> Design:
    """The model splits a software task into modules and their functions; one `core` module (functions
    left to its code step) when its design is unusable."""
    messages = [{"role": "system", "content": DESIGN_SYSTEM}, {"role": "user", "content": task}]
    try:
        design = get_llm("planning").structured(messages, Design, max_tokens=300)
        if design.usable():
            return design
    except (LLMUnavailable, StructuredOutputError):
        pass
    return Design(modules=[Module(name="core", description=task[:300], functions=[])])


def module_instruction(module: Module) -> str:
    functions = (
        f"Define these module-level functions: {', '.join(f'`{f}`' for f in module.functions)} (no classes)"
        if module.functions
        else "Define plain module-level functions (no classes)"
    )
    return (
        f"Write the Python module `{module.name}`: {module.description.rstrip('.')}. {functions}. End with a "
        "short demo under `if __name__ == '__main__':` that prints what it computes."
    )


def software_plan(task: str) -> Plan:
    """Requirements -> one code step per designed module (in parallel) -> tests in the sandbox -> review."""
    modules = design_modules(task).modules
    code_steps = [
        PlanStep(
            id=f"code_{m.name}", agent="code", inputs=["requirements"], instruction=module_instruction(m)
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
            instruction="Write a test script that imports the modules (their files are in the current "
            "folder) and checks their functions in `test_...` functions with assert statements (every "
            "`test_` function is run; a module function a failing assert shows wrong is written again).",
        ),
        PlanStep(
            id="review",
            agent="summary",
            inputs=["tests", *code_ids],  # first: the results must not be what a long context cuts off
            instruction="Review the modules and the test results (the tests step's 'Test results' line is "
            "what ran): what works, what fails, what to fix next.",
        ),
    ]
    return Plan(task=task, steps=steps, method="software")
