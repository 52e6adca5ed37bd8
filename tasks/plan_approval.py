"""A person approves, edits or rejects `run-agent-task`'s plan before any step runs (tasks/approval.py)."""

from __future__ import annotations

import time

from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from agents.planner import Plan, check_plan
from tasks.approval import ask


class PlanRejected(RuntimeError):
    """The reviewer rejected the plan; none of it ran."""


class PlanReview(RunInput):
    """The form of a paused `run-agent-task`."""

    approve: bool = Field(False, description="Run the plan below; leave unticked to reject it.")
    plan: Plan | None = Field(None, description="The plan to run: edit it to change what runs.")
    comment: str = Field("", max_length=2000, description="Why (kept in the run's logs).")


def review_plan(plan: Plan, timeout_s: int) -> Plan:
    """The plan a person approved: `plan` or their edit of it. An edit `check_plan` finds problems in is
    refused, with the reasons, and asked again (within the same timeout).

    Raises:
        PlanRejected: the reviewer said no. ApprovalTimeout: nobody answered in time.
    """
    deadline = time.monotonic() + timeout_s
    shown, refused = plan, ""
    while True:
        review = ask(
            PlanReview,
            plan_description(shown, refused),
            deadline - time.monotonic(),
            "plan approval",
            plan=shown,
        )
        note = f" ({review.comment})" if review.comment else ""
        if not review.approve:
            raise PlanRejected(f"plan rejected by the reviewer{note}: none of its steps ran")
        edited = review.plan or plan
        problems = check_plan(edited).problems
        if not problems:
            get_run_logger().info("plan approved%s%s", " with edits" if edited != plan else "", note)
            return edited if edited == plan else edited.model_copy(update={"method": "given"})
        shown, refused = edited, "; ".join(f"step {sid}: {why}" for sid, why in problems.items())
        get_run_logger().warning("edited plan refused: %s", refused)


def plan_description(plan: Plan, refused: str = "") -> str:
    """The form's text: the plan as a table, and why the last edit (this plan) was refused."""
    rows = "\n".join(
        f"| {s.id} | {_cell(s.agent)} | {', '.join(s.inputs) or '-'} | {_cell(s.instruction[:200])} |"
        for s in plan.steps
    )
    warning = f"**Your edit was refused:** {refused}. Fix the plan and answer again.\n\n" if refused else ""
    return (
        f"{warning}### Plan for: {plan.task[:300]}\n\n"
        f"| step | agent | inputs | instruction |\n|---|---|---|---|\n{rows}\n\n"
        "Tick **approve** to run it, edit **plan** first to run your version (the steps' agents and "
        "inputs are checked), or leave approve unticked to reject it."
    )


def _cell(text: str) -> str:
    """`text` safe inside one markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
