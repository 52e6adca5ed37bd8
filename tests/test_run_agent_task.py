"""Flow `run-agent-task`: plan checks, the example task end to end, and failing steps that keep the rest."""

import json
from pathlib import Path

from test_agents import numbers_in

from agents.planner import Plan, PlanStep, check_plan, software_plan, template_plan
from conveyor import tracking
from conveyor.datasets import load
from flows.run_agent_task import EXAMPLE_TASK, run_agent_task


def dataset_facts(frame) -> list[float]:
    """Statistics a correct analysis may report: size, column aggregates, per-group sums and means."""
    numeric = frame.select_dtypes("number")
    facts = [len(frame)] + [
        getattr(numeric[c], f)() for c in numeric for f in ("sum", "mean", "median", "max")
    ]
    for group in ("region", "category", "product", "channel"):
        facts += [*frame.groupby(group)[list(numeric)].sum().to_numpy().ravel()]
        facts += [*frame.groupby(group)[list(numeric)].mean().to_numpy().ravel()]
    return [float(f) for f in facts]


def plan_of(*steps: tuple[str, str, list[str]]) -> Plan:
    return Plan(
        task="t", steps=[PlanStep(id=i, agent=a, instruction=f"do {i}", inputs=n) for i, a, n in steps]
    )


class TestCheckPlan:
    def test_independent_steps_share_a_wave(self):
        checked = check_plan(plan_of(("a", "data", []), ("b", "research", []), ("c", "summary", ["a", "b"])))
        assert checked.waves == [["a", "b"], ["c"]] and not checked.problems

    def test_unknown_agent_fails_its_step_and_dependents_only(self):
        checked = check_plan(plan_of(("a", "oracle", []), ("b", "summary", ["a"]), ("c", "research", [])))
        assert "unknown agent" in checked.problems["a"] and "depends on step 'a'" in checked.problems["b"]
        assert checked.waves == [["c"]]

    def test_cycle_and_missing_inputs(self):
        checked = check_plan(plan_of(("a", "code", ["b"]), ("b", "code", ["a"]), ("c", "summary", ["zz"])))
        assert checked.problems["a"] == checked.problems["b"] == "part of a dependency cycle"
        assert "zz" in checked.problems["c"] and checked.waves == []

    def test_template_plan_for_the_example_task(self, settings):
        plan = template_plan(EXAMPLE_TASK)
        assert [s.agent for s in plan.steps] == ["data", "code", "summary"]
        assert plan.steps[-1].inputs == ["analyze", "code"] and not check_plan(plan).problems


def test_software_chain_fans_out_per_module_and_back_in(settings):
    plan = software_plan("A command-line to-do list: add, list and complete tasks stored in a JSON file")
    checked = check_plan(plan)
    code_steps = [s.id for s in plan.steps if s.id.startswith("code_")]
    assert plan.method == "software" and not checked.problems and code_steps
    assert checked.waves == [["requirements"], code_steps, ["tests"], ["review"]]
    assert plan.steps[-1].inputs == [*code_steps, "tests"]


def test_example_task_end_to_end(settings):
    summary = run_agent_task(EXAMPLE_TASK)
    run_dir = Path(summary.run_dir)
    plan = Plan.model_validate_json((run_dir / "plan.json").read_text())
    assert not check_plan(plan).problems
    assert any(s.agent == "data" and "sales_2024" in s.instruction for s in plan.steps)
    outcomes = {p.stem: json.loads(p.read_text()) for p in (run_dir / "steps").glob("*.json")}
    assert set(outcomes) == {s.id for s in plan.steps}
    assert summary.steps == {i: o["status"] for i, o in outcomes.items()}
    data_step = next(o for o in outcomes.values() if o["agent"] == "data" and o["status"] == "completed")
    computed = numbers_in(data_step["result"]["data"]["result"])
    truths = dataset_facts(load("sales_2024"))
    assert any(abs(n - t) <= 0.005 * abs(t) for n in computed for t in truths if t), computed
    report = Path(summary.report).read_text()
    assert report.startswith("# Agent report") and all(f"## {s.id} (" in report for s in plan.steps)
    charts = list((run_dir / "figures").glob("*.png"))
    assert charts and all(f"figures/{c.name}" in report for c in charts)
    run = tracking.client().get_run(summary.mlflow_run_id)
    assert json.loads(run.data.params["plan"])[0]["id"] == plan.steps[0].id
    assert run.data.metrics["steps_completed"] == sum(s == "completed" for s in summary.steps.values())
    assert run.data.metrics["success"] == float(summary.success)


def test_failing_steps_keep_the_other_results(settings):
    plan = Plan(
        task="mixed plan",
        steps=[
            PlanStep(id="stats", agent="data", instruction="Row count and mean units of sales_2024.csv"),
            PlanStep(id="bogus", agent="oracle", instruction="predict the future"),
            PlanStep(id="missing", agent="data", instruction="Average of column x in no_such_file.csv"),
            PlanStep(id="after", agent="summary", instruction="Summarise", inputs=["missing"]),
        ],
    )
    summary = run_agent_task("mixed plan", plan=plan)
    assert summary.steps == {"stats": "completed", "bogus": "failed", "missing": "failed", "after": "skipped"}
    assert not summary.success
    steps = Path(summary.run_dir) / "steps"
    assert "no known dataset" in json.loads((steps / "missing.json").read_text())["error"]
    assert "no input step completed" in json.loads((steps / "after.json").read_text())["error"]
    assert "unknown agent" in json.loads((steps / "bogus.json").read_text())["error"]
