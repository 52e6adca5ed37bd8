"""Flow `run-agent-task`: plan checks, the example task end to end, and failing steps that keep the rest."""

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from agents.analysis import Analysis, unreadable
from agents.codegen import SuiteResults
from agents.planner import (
    Design,
    Module,
    Plan,
    PlanStep,
    check_plan,
    module_instruction,
    software_plan,
    template_plan,
)
from agents.sandbox import Chart
from conveyor import tracking
from conveyor.datasets import load
from conveyor.lineage import Lineage
from flows.run_agent_task import EXAMPLE_TASK, run_agent_task
from tasks.agent_steps import StepOutcome


def pandas_findings(frame: pd.DataFrame, spec: dict) -> tuple[dict, dict]:
    """The findings and tables an analysis of `spec` must report, computed here with plain pandas."""
    measure, how, group, date = spec["measure"], spec["aggregation"], spec["group_by"], spec["date"]
    what = {"sum": f"total {measure}", "mean": f"average {measure}", "count": "number of rows"}[how]

    def agg(grouped):
        return grouped.size() if how == "count" else grouped[measure].agg(how)

    found = {
        "rows": len(frame),
        f"{what} over all rows": len(frame) if how == "count" else frame[measure].agg(how),
    }
    tables = {}
    if group:
        by = agg(frame.groupby(group)).sort_values(ascending=False)
        tables[f"{what} by {group}"] = {str(k): v for k, v in by.items()}
        found |= {
            f"largest {group} by {what}": str(by.index[0]),
            f"{what} of the largest {group}": by.iloc[0],
            f"smallest {group} by {what}": str(by.index[-1]),
            f"{what} of the smallest {group}": by.iloc[-1],
        }
        if how != "mean":
            found[f"share of the largest {group} in {what}"] = 100 * by.iloc[0] / by.sum()
    if date:
        when = pd.to_datetime(frame[date])
        # One year of days: weeks (53) are too many for a readable chart, so weeks become months.
        period = "quarter" if spec["period"] == "quarter" else "month"
        per = agg(frame.groupby(when.dt.to_period(period[0].upper())))
        per.index = per.index.to_timestamp().strftime("%Y-%m")
        tables[f"{what} per {period}"] = per.to_dict()
        daily = agg(frame.groupby(when.dt.date))
        q1, q3 = daily.quantile([0.25, 0.75])
        high = daily[daily > q3 + 1.5 * (q3 - q1)].sort_values(ascending=False)
        slope = np.polyfit(range(len(per)), per, 1)[0]
        found |= {
            "first date": str(when.min().date()),
            "last date": str(when.max().date()),
            f"{what} in the first {period} ({per.index[0]})": per.iloc[0],
            f"{what} in the last {period} ({per.index[-1]})": per.iloc[-1],
            f"change of {what} from the first to the last {period}": 100 * (per.iloc[-1] / per.iloc[0] - 1),
            f"{period} with the highest {what}": per.idxmax(),
            f"highest {what} in one {period}": per.max(),
            f"{period} with the lowest {what}": per.idxmin(),
            f"lowest {what} in one {period}": per.min(),
            **({f"trend of {what} per {period} (least-squares slope)": slope} if len(per) > 2 else {}),
            f"outlier days (daily {what} above Q3 + 1.5 IQR)": len(high),
        }
        if len(high):
            found |= {f"day with the highest {what}": str(high.index[0]), f"{what} on that day": high.iloc[0]}
    elif how != "count":
        q1, q3 = frame[measure].quantile([0.25, 0.75])
        found[f"outlier rows ({measure} above Q3 + 1.5 IQR)"] = int(
            (frame[measure] > q3 + 1.5 * (q3 - q1)).sum()
        )
    corr = frame.select_dtypes("number").corr().abs().where(lambda c: np.triu(np.ones(c.shape, bool), 1))
    (a, b) = corr.stack().idxmax()
    found[f"strongest correlation between numeric columns ({a} and {b}, Pearson r)"] = frame[a].corr(frame[b])
    return found, tables


def assert_matches(reported, expected) -> None:
    if isinstance(expected, str):
        assert reported == expected
    else:
        assert reported == pytest.approx(float(expected), abs=0.006), (reported, expected)


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
    """The model's design names each module's functions (the fallback `core` module names none)."""
    plan = software_plan("A command-line to-do list: add, list and complete tasks stored in a JSON file")
    checked = check_plan(plan)
    code_steps = [s.id for s in plan.steps if s.id.startswith("code_")]
    assert plan.method == "software" and not checked.problems and code_steps
    named = [s.instruction for s in plan.steps if s.id in code_steps]
    assert all("Define these module-level functions: `" in i for i in named), named
    assert checked.waves == [["requirements"], code_steps, ["tests"], ["review"]]
    assert plan.steps[-1].inputs == ["tests", *code_steps]


def test_a_design_naming_a_function_twice_is_not_used():
    todo = Module(name="todo", description="tasks in a JSON file", functions=["add(tasks, title)"])
    store = Module(name="store", description="reads and writes the file", functions=["load(path)"])
    assert Design(modules=[todo, store]).usable()
    assert not Design(modules=[todo, store.model_copy(update={"functions": ["add(path)"]})]).usable()
    assert not Design(modules=[todo, todo]).usable()
    assert "`add(tasks, title)` (no classes)" in module_instruction(todo)


def test_the_software_chain_writes_modules_tests_them_in_the_sandbox_and_reviews(configure, output_dir):
    """The chain on the default models: modules that run, a test script run on them in the sandbox with each
    test reported, the module functions failing tests show wrong written again, and a review. Whether every
    test ends up passing is the model's quality: `python -m bench.bench_agents` (software-chain lines)."""
    configure(llm_quality_roles='["planning", "code", "summary"]')  # the defaults for these roles
    summary = run_agent_task(
        "A small Python library for temperatures: convert between Celsius and Fahrenheit and classify a "
        "temperature as freezing, mild or hot",
        chain="software",
    )
    shutil.copyfile(summary.report, output_dir / "software-chain-report.md")
    steps = {
        p.stem: StepOutcome.model_validate_json(p.read_text())
        for p in (Path(summary.run_dir) / "steps").glob("*.json")
    }
    failed = {i: (s.error, s.result and s.result.data.get("code")) for i, s in steps.items() if s.error}
    modules = {i.removeprefix("code_"): s for i, s in steps.items() if i.startswith("code_")}
    assert summary.plan_method == "software" and modules, failed
    assert all(s.status == "completed" and s.result.data["run_ok"] for s in modules.values()), failed
    tests = steps["tests"]
    assert tests.result and tests.result.data["isolation"] == "bubblewrap", failed
    results = SuiteResults.model_validate(tests.result.data["tests"])  # the runner ran the test functions
    assert results.passed or results.failed, tests.result.data["code"]
    assert f"Test results (run in the sandbox): {results.summary()}." in tests.result.answer
    assert tests.status == ("failed" if results.failed else "completed"), tests.error
    for name, source in tests.result.data["fixed_modules"].items():
        assert source != modules[name].result.data["code"] and f"Fixed `{name}.py`" in tests.result.answer
    assert steps["review"].status == "completed" and steps["review"].result.answer.strip()


def test_example_task_end_to_end(configure):
    """The flagship task on the default models: the model's plan runs; every figure of the data step is
    recomputed with pandas; every number of the summary is one the earlier steps computed; charts are
    readable PNGs."""
    configure(llm_quality_roles='["planning", "data", "code", "summary"]')  # the defaults
    summary = run_agent_task(EXAMPLE_TASK)
    run_dir = Path(summary.run_dir)
    plan = Plan.model_validate_json((run_dir / "plan.json").read_text())
    assert summary.plan_method == "llm" and not check_plan(plan).problems
    assert any(s.agent == "data" and "sales_2024" in s.instruction for s in plan.steps)
    outcomes = {
        p.stem: StepOutcome.model_validate_json(p.read_text()) for p in (run_dir / "steps").glob("*.json")
    }
    assert set(outcomes) == {s.id for s in plan.steps}
    assert summary.success and set(summary.steps.values()) == {"completed"}, summary.steps

    [data_step] = [o.result for o in outcomes.values() if o.agent == "data"]
    analysis = Analysis.model_validate(data_step.data["result"])
    expected, tables = pandas_findings(load("sales_2024"), data_step.data["spec"])
    assert {f.label for f in analysis.findings} == set(expected)
    for finding in analysis.findings:
        assert_matches(finding.value, expected[finding.label])
    assert set(analysis.tables) == set(tables)
    for title, table in tables.items():
        assert set(analysis.tables[title]) == set(table)
        for key, value in table.items():
            assert_matches(analysis.tables[title][key], value)

    [summary_step] = [o.result for o in outcomes.values() if o.agent == "summary"]
    assert summary_step.answer.strip() and summary_step.data["unsupported_numbers"] == []

    charts = [Chart.model_validate(c) for o in outcomes.values() for c in o.result.data.get("charts", [])]
    assert charts and all(unreadable(c) is None for c in charts), charts
    report = Path(summary.report).read_text()
    assert report.startswith("# Agent report") and all(f"## {s.id} (" in report for s in plan.steps)
    pngs = list((run_dir / "figures").glob("*.png"))
    assert pngs and all(f"figures/{c.name}" in report for c in pngs)
    for png in pngs:
        height, width, _ = plt.imread(png).shape
        assert width >= 500 and height >= 300, (png.name, width, height)

    run = tracking.client().get_run(summary.mlflow_run_id)
    assert json.loads(run.data.params["plan"])[0]["id"] == plan.steps[0].id
    assert run.data.metrics["steps_completed"] == len(plan.steps) and run.data.metrics["success"] == 1.0


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
    # The run's lineage: prompt versions its steps used (noted from the task threads), also in the report.
    assert "conveyor-data-system" in {p.name for p in summary.lineage.prompts}
    report = Path(summary.report).read_text()
    assert "## Lineage" in report and "prompt `conveyor-data-system` version" in report
    assert Lineage.model_validate_json((steps.parent / "lineage.json").read_text()) == summary.lineage
