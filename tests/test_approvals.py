"""A person in the loop: paused flow runs answered through Prefect's API while the flow runs in a thread."""

import contextvars
import threading
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.flow_runs import resume_flow_run
from prefect.input import keyset_from_paused_state
from prefect.input.actions import read_flow_run_input

from agents.planner import Plan, PlanStep
from conveyor import cli, registry, tracking
from conveyor.training.fit import ModelConfig
from flows.run_agent_task import run_agent_task
from flows.train_model import TrainModelParams, train_model
from flows.train_tabular import ForestConfig, TrainTabularParams, train_tabular
from serving.testing import poll

NOTE = "The ferry leaves every 40 minutes from pier 3; the market by the pier opens at 5 am on weekdays."
PLAN = Plan(
    task="Tell me about the ferry",
    steps=[
        PlanStep(id="facts", agent="research", instruction="Find the ferry timetable"),
        PlanStep(id="brief", agent="summary", instruction="Summarize the facts", inputs=["facts"]),
    ],
)
EDITED = Plan(
    task=PLAN.task,
    steps=[PlanStep(id="short", agent="summary", instruction=f"Summarize in one line: {NOTE}")],
)


class FlowInThread:
    """A flow called in a background thread (with this context: the test Prefect API), named to be found."""

    def __init__(self, flow, **parameters) -> None:
        self.name = f"approval-test-{uuid.uuid4().hex[:8]}"
        self.state = None
        named = flow.with_options(flow_run_name=self.name)

        def call() -> None:
            self.state = named(**parameters, return_state=True)

        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(call,), daemon=True)
        self._thread.start()

    def paused(self, after: FlowRun | None = None) -> FlowRun:
        """The run once it waits for input (a pause other than `after`'s)."""

        def probe() -> FlowRun | None:
            if not self._thread.is_alive():
                raise AssertionError(f"the flow ended without pausing: {self.state}")
            with get_client(sync_client=True) as client:
                found = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[self.name]))
                )
            run = found[0] if found else None
            if run is None or run.state is None or not run.state.is_paused():
                return None
            if after is not None and run.state.state_details.pause_key == after.state.state_details.pause_key:
                return None
            return run

        return poll(probe, 120, f"flow run {self.name} paused for input", every_s=0.3)

    def finished(self):
        self._thread.join(timeout=300)
        assert not self._thread.is_alive(), "the flow did not finish"
        return self.state


def form(run: FlowRun, part: str) -> object:
    """The paused run's form `description` or `schema` as Prefect stored it for the UI."""
    return read_flow_run_input(keyset_from_paused_state(run.state)[part], flow_run_id=run.id)


def task_runs(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def log_text(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def version_tags(name: str, version: str) -> dict[str, str]:
    return tracking.client().get_model_version(name, version).tags


def alias(name: str, which: str) -> str | None:
    version = tracking.client().get_registered_model(name).aliases.get(which)
    return None if version is None else str(version)


class TestPlanApproval:
    def test_a_checked_edit_runs_instead_of_the_plan(self, settings):
        flow = FlowInThread(run_agent_task, task=PLAN.task, plan=PLAN, approve_plan=True)
        run = flow.paused()
        assert "| facts | research |" in str(form(run, "description"))
        assert form(run, "schema")["properties"]["plan"]["default"]["steps"][0]["id"] == "facts"  # pre-filled

        # Input that does not fit the form is refused by Prefect; the run stays paused.
        with pytest.raises(RuntimeError, match="Cannot resume"):
            resume_flow_run(run.id, run_input={"approve": "maybe"})
        # An edit check_plan finds a problem in is refused with the reason, and asked again.
        bad = EDITED.model_copy(update={"steps": [EDITED.steps[0].model_copy(update={"agent": "oracle"})]})
        resume_flow_run(run.id, run_input={"approve": True, "plan": bad.model_dump()})
        again = flow.paused(after=run)
        assert "unknown agent 'oracle'" in str(form(again, "description"))
        assert form(again, "schema")["properties"]["plan"]["default"]["steps"][0]["agent"] == "oracle"

        resume_flow_run(
            again.id, run_input={"approve": True, "plan": EDITED.model_dump(), "comment": "shorter"}
        )
        state = flow.finished()
        assert state.is_completed(), state
        summary = state.result()
        assert summary.steps == {"short": "completed"} and summary.plan_method == "given"
        names = [t.name for t in task_runs(run.id)]
        assert any(n.startswith("short-") for n in names), names
        assert not [n for n in names if n.startswith(("facts-", "brief-"))], names

    def test_a_rejected_plan_runs_nothing(self, settings, capsys):
        flow = FlowInThread(run_agent_task, task=PLAN.task, plan=PLAN, approve_plan=True)
        run = flow.paused()
        cli.main(["approve", str(run.id), "--reject", "--comment", "not today"])  # `conveyor approve`
        assert f"rejected: flow run {run.id}" in capsys.readouterr().out
        state = flow.finished()
        assert (
            state.is_cancelled() and "not today" in state.message and "none of its steps ran" in state.message
        )
        assert task_runs(run.id) == []

    def test_the_cli_names_a_run_that_is_not_paused(self, settings, capsys):
        with pytest.raises(SystemExit):
            cli.main(["approve", str(uuid.uuid4())])
        assert "no flow run" in capsys.readouterr().err

    def test_no_answer_in_time_rejects(self, settings):
        flow = FlowInThread(
            run_agent_task, task=PLAN.task, plan=PLAN, approve_plan=True, approval_timeout_s=2
        )
        state = flow.finished()
        assert state.is_failed(), state
        run_id = state.state_details.flow_run_id
        assert task_runs(run_id) == []
        message = "plan approval: no answer within 2 s, so it counts as rejected"
        poll(lambda: message in log_text(run_id), 30, "the timeout's reason in the run's logs", every_s=0.5)


def tabular(name: str, **approval) -> TrainTabularParams:
    return TrainTabularParams(model_name=name, forest=ForestConfig(n_estimators=5), **approval)


class TestPromotionApproval:
    def test_approved_model_becomes_champion_and_one_no_better_is_not_asked(self):
        name = f"approved-{uuid.uuid4().hex[:6]}"
        flow = FlowInThread(train_tabular, params=tabular(name, approve_promotion=True))
        run = flow.paused()
        assert alias(name, registry.CHAMPION) is None and alias(name, registry.CHALLENGER) == "1"
        assert f"Promote {name} v1 to @champion" in str(form(run, "description"))
        resume_flow_run(run.id, run_input={"approve": True, "comment": "checked the numbers"})
        state = flow.finished()
        assert state.is_completed(), state
        decision = state.result().decision
        assert decision.promoted and "approved by the reviewer (checked the numbers)" in decision.reason
        assert registry.champion_version(name) == "1"
        assert version_tags(name, "1")["conveyor.promotion.promoted"] == "True"

        # The same model again does not beat the champion: nothing to approve, so no pause.
        again = train_tabular(tabular(name, approve_promotion=True, approval_timeout_s=5))
        assert not again.decision.promoted and registry.champion_version(name) == "1"

    def test_rejected_or_unanswered_model_stays_challenger(self):
        name = f"rejected-{uuid.uuid4().hex[:6]}"
        flow = FlowInThread(train_tabular, params=tabular(name, approve_promotion=True))
        resume_flow_run(flow.paused().id, run_input={"approve": False})
        decision = flow.finished().result().decision
        assert not decision.promoted and decision.reason.startswith("rejected by the reviewer")
        assert registry.champion_version(name) is None and alias(name, registry.CHALLENGER) == "1"

        unanswered = FlowInThread(
            train_tabular, params=tabular(name, approve_promotion=True, approval_timeout_s=2)
        )
        state = unanswered.finished()
        assert state.is_failed(), state
        assert registry.champion_version(name) is None and alias(name, registry.CHALLENGER) == "2"
        reason = version_tags(name, "2")["conveyor.promotion.reason"]
        assert "no answer within 2 s" in reason and "stays @challenger" in reason

    def test_train_model_waits_for_approval_too(self):
        name = f"mlp-approved-{uuid.uuid4().hex[:6]}"
        params = TrainModelParams(
            model_name=name, epochs=2, model=ModelConfig(hidden=16, layers=1), approve_promotion=True
        )
        flow = FlowInThread(train_model, params=params)
        run = flow.paused()
        assert registry.champion_version(name) is None
        resume_flow_run(run.id, run_input={"approve": True})
        result = flow.finished().result()
        assert result.decision.promoted and registry.champion_version(name) == result.decision.version
