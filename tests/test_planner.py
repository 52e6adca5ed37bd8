"""The meta-agent's planner: a reply schema whose inputs can only name earlier steps, memory examples only
from similar tasks, and the default planning model's own plan for the example task."""

import json

import jsonschema
import pytest
from pydantic import ValidationError

from agents import memory, planner
from agents.catalog import AGENTS
from agents.planner import check_plan, plan_schema, plan_task
from flows.run_agent_task import EXAMPLE_TASK

BREAST_CANCER_TASK = (
    "Compare the mean radius of malignant and benign tumours in breast_cancer.csv and summarize it"
)
BREAST_CANCER_PLAN = {
    "steps": [
        {
            "id": "analyze",
            "agent": "data",
            "instruction": "Mean radius by diagnosis in breast_cancer.csv",
            "inputs": [],
        },
        {
            "id": "summarize",
            "agent": "summary",
            "instruction": "Summarise the difference",
            "inputs": ["analyze"],
        },
    ]
}


def reply(*steps: tuple[str, str, list[str] | None]) -> dict:
    return {
        "steps": [
            {"id": i, "agent": a, "instruction": f"do {i}"} | ({} if inputs is None else {"inputs": inputs})
            for i, a, inputs in steps
        ]
    }


class TestPlanSchema:
    """Both the pydantic model and the JSON schema the backends constrain decoding with (llama.cpp grammar,
    an OpenAI-compatible server's json_schema) refuse what check_plan would reject."""

    def validate(self, instance: dict, agents=tuple(AGENTS)) -> None:
        schema = plan_schema(agents)
        schema.model_validate(instance)
        jsonschema.validate(instance, schema.model_json_schema())

    def test_a_plan_whose_inputs_name_earlier_steps_is_valid(self):
        self.validate(reply(("s1", "data", None), ("s2", "code", ["s1"]), ("s3", "summary", ["s1", "s2"])))

    @pytest.mark.parametrize("inputs", [["s2"], ["s3"], ["s1", "s4"], ["analyze"]])
    def test_inputs_naming_a_later_or_unknown_step_are_refused(self, inputs):
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(
                reply(("s1", "data", None), ("s2", "code", inputs), ("s3", "summary", ["s1", "s2"]))
            )

    def test_steps_are_numbered_in_order(self):
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s2", "code", None)))
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s1", "code", None), ("s3", "summary", ["s1"])))

    def test_the_first_step_has_no_inputs_and_plans_have_at_most_five_steps(self):
        schema = plan_schema().model_json_schema()
        assert "inputs" not in schema["$defs"]["Step1"]["properties"]
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(*[(f"s{n}", "code", [] if n > 1 else None) for n in range(1, 7)]))

    def test_one_summary_step_at_most_and_it_ends_the_plan(self):
        self.validate(reply(("s1", "summary", None)))
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s1", "summary", None), ("s2", "code", ["s1"])))
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s1", "data", None), ("s2", "summary", ["s1"]), ("s3", "summary", ["s2"])))

    def test_only_the_agents_given_can_be_picked(self):
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s1", "data", None)), agents=("research", "code", "summary"))
        with pytest.raises((ValidationError, jsonschema.ValidationError)):
            self.validate(reply(("s1", "oracle", None)))

    def test_the_json_schema_converts_to_a_llama_cpp_grammar(self):
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        grammar = json_schema_to_gbnf(json.dumps(plan_schema().model_json_schema()))
        step2_inputs = next(line for line in grammar.splitlines() if line.startswith("Step2-inputs-item ::="))
        assert '\\"s1\\"' in step2_inputs and "s2" not in step2_inputs.split("::=")[1]


class TestCoverage:
    """What makes the planner refuse a model's plan that check_plan would run."""

    def plan(self, task: str, *steps: tuple[str, str]) -> planner.Plan:
        return planner.Plan(
            task=task,
            steps=[
                planner.PlanStep(id=f"s{n}", agent=a, instruction=i, inputs=[f"s{n - 1}"] if n > 1 else [])
                for n, (a, i) in enumerate(steps, start=1)
            ],
        )

    def test_a_step_naming_a_file_the_task_does_not_is_refused(self, settings):
        task = "Plot monthly revenue from sales_2024.csv as a line chart"
        copied = self.plan(task, ("data", "Plot orders per month from orders.csv"))
        assert "orders.csv" in planner.coverage_problem(copied, task)
        own = self.plan(task, ("data", "Plot monthly revenue from sales_2024.csv as a line chart"))
        assert planner.coverage_problem(own, task) is None

    def test_a_step_far_from_every_part_of_the_task_is_refused(self, settings):
        task = "What is LanceDB, and why does Conveyor use it?"
        plan = self.plan(
            task, ("research", "Explain LanceDB"), ("code", "Write a decorator that times a function")
        )
        assert "step s2 is off the task" in planner.coverage_problem(plan, task)

    def test_a_generic_summary_step_is_on_the_task(self, settings):
        task = "Summarize: Prefect flows are Python functions decorated with @flow; tasks are smaller units."
        assert (
            planner.coverage_problem(self.plan(task, ("summary", "Summarise the given text")), task) is None
        )

    def test_a_named_dataset_must_be_analysed_by_a_data_step(self, settings):
        task = "Chart units sold per region in sales_2024.csv"
        plan = self.plan(task, ("code", "Chart units sold per region in sales_2024.csv"))
        assert planner.coverage_problem(plan, task) == "no data step analyses sales_2024.csv"


class TestMemoryExamples:
    @pytest.fixture
    def remembered(self, configure, tmp_path, settings):
        """An agent memory of its own holding one successful breast-cancer plan."""
        configure(lancedb_uri=str(tmp_path / "lancedb"))
        memory.record("plan", "planner", BREAST_CANCER_TASK, True, 1.0, plan=BREAST_CANCER_PLAN)

    def test_an_unrelated_past_plan_is_not_shown(self, remembered):
        task = "Write a haiku generator in Python"
        assert memory.similar(task, "planner", k=5)  # without the threshold it would be the nearest plan
        assert planner.remembered_example(task, list(AGENTS)) is None
        assert BREAST_CANCER_TASK not in json.dumps(planner.plan_prompt(task))

    def test_a_similar_past_plan_is_shown_renumbered(self, remembered):
        task = "How does the mean radius differ between malignant and benign tumours in breast_cancer.csv?"
        example = planner.remembered_example(task, list(AGENTS))
        assert example is not None and example[0] == BREAST_CANCER_TASK
        assert [(s["id"], s["agent"], s.get("inputs")) for s in example[1]] == [
            ("s1", "data", None),
            ("s2", "summary", ["s1"]),
        ]
        assert planner.plan_prompt(task)[-3]["content"] == f"Task: {BREAST_CANCER_TASK}"

    def test_a_past_plan_with_an_agent_the_task_cannot_use_is_not_shown(self, remembered):
        task = "How does the mean radius differ between malignant and benign tumours?"
        assert planner.remembered_example(task, ["research", "code", "summary"]) is None


def test_the_default_planning_model_plans_the_example_task(configure, tmp_path):
    """The quality model (the planning role's default) makes the example task's plan itself: an empty memory
    (no remembered plan to copy) and no template fallback (method "llm")."""
    configure(llm_quality_roles='["planning"]', lancedb_uri=str(tmp_path / "lancedb"))
    plan = plan_task(EXAMPLE_TASK)
    assert plan.method == "llm", plan
    assert not check_plan(plan).problems
    assert any(s.agent == "data" and "sales_2024" in s.instruction for s in plan.steps), plan
