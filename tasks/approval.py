"""A person in the loop: a flow run pauses with a form in the Prefect UI (Prefect's `pause_flow_run` with a
`RunInput`) until someone approves, edits or rejects; no answer within the timeout rejects.

Answer in the UI (the paused run's "Resume" button shows the form) or through Prefect's API:
`prefect.flow_runs.resume_flow_run(flow_run_id, run_input={"approve": True, "comment": "..."})`, or
`POST {PREFECT_API_URL}/flow_runs/{id}/resume` with `{"run_input": {...}}`; Prefect refuses input that
does not fit the form's schema. The plan's form is in tasks/plan_approval.py.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import BaseModel, Field

from conveyor import registry

APPROVAL_TIMEOUT_S = 3600
POLL_S = 2  # how often a paused run looks for its answer
Review = TypeVar("Review", bound=RunInput)


class ApprovalTimeout(RuntimeError):
    """Nobody answered within the timeout: the same as a rejection."""


class PromotionReview(RunInput):
    """The form of a paused training run whose model would become `@champion`."""

    approve: bool = Field(False, description="Move @champion to this version; unticked keeps @challenger.")
    comment: str = Field("", max_length=2000, description="Why (kept on the model version).")


class PromotionApproval(BaseModel):
    """Training flows' approval parameters (a mixin of their parameter models)."""

    approve_promotion: bool = Field(
        False, description="Pause before @champion moves until a person approves (Prefect UI form)."
    )
    approval_timeout_s: int = Field(
        APPROVAL_TIMEOUT_S, ge=1, description="Seconds to wait for the approval; then @challenger stays."
    )


def ask(form: type[Review], description: str, timeout_s: float, what: str, **initial: Any) -> Review:
    """Pause this flow run with `form` (pre-filled with `initial`) until a person answers.

    Raises:
        ApprovalTimeout: nobody answered within `timeout_s` (the run can then only end).
    """
    pre_filled = form.with_initial_data(description=description, **initial)
    try:
        return pause_flow_run(
            wait_for_input=pre_filled, timeout=max(1, round(timeout_s)), poll_interval=POLL_S
        )
    except FlowPauseTimeout:
        message = f"{what}: no answer within {timeout_s:.0f} s, so it counts as rejected"
        get_run_logger().error(message)
        raise ApprovalTimeout(message) from None


def review_promotion(
    decision: registry.PromotionDecision, params: PromotionApproval
) -> registry.PromotionDecision:
    """Ask a person whether a held model becomes `@champion` (when `params` ask for approval and it beat
    the champion); the final decision is recorded on the version and its run like any other.

    Raises:
        ApprovalTimeout: nobody answered in time (the version stays `@challenger`, the run fails).
    """
    if not params.approve_promotion or not decision.reason.startswith(registry.AWAITING_APPROVAL):
        return decision
    try:
        review = ask(
            PromotionReview,
            promotion_description(decision),
            params.approval_timeout_s,
            f"promotion of {decision.name} v{decision.version}",
        )
    except ApprovalTimeout as exc:
        registry.settle(decision, False, f"{exc}; stays @{registry.CHALLENGER}")
        raise
    note = f" ({review.comment})" if review.comment else ""
    if review.approve:
        return promote_approved(decision, note)
    return registry.settle(decision, False, f"rejected by the reviewer{note}; stays @{registry.CHALLENGER}")


@task(cache_policy=NO_CACHE)
def promote_approved(decision: registry.PromotionDecision, note: str = "") -> registry.PromotionDecision:
    """Move `@champion` to the approved version, unless the champion changed while it waited."""
    current = registry.champion_version(decision.name)
    if current != decision.champion_version:
        return registry.settle(
            decision,
            False,
            f"approved{note}, but @{registry.CHAMPION} moved to v{current} meanwhile: train again to compare",
        )
    judged = decision.reason.removeprefix(registry.AWAITING_APPROVAL)
    return registry.settle(decision, True, f"approved by the reviewer{note}; {judged}")


def promotion_description(decision: registry.PromotionDecision) -> str:
    champion = (
        f"champion v{decision.champion_version}'s {decision.champion_value:.6g}"
        if decision.champion_version and decision.champion_value is not None
        else "no champion yet"
    )
    return (
        f"### Promote {decision.name} v{decision.version} to @{registry.CHAMPION}?\n\n"
        f"On the held-out split its {decision.metric} is {decision.challenger_value:.6g} against {champion} "
        f"(MLflow run `{decision.run_id}`).\n\nTick **approve** to make it @{registry.CHAMPION}; leave it "
        f"unticked (or let the timeout pass) and it stays @{registry.CHALLENGER}."
    )
