"""Feedback on answers and agent runs: a rating, the answer wanted, the agent that should have answered."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy.orm import Session

from agents import memory
from agents.catalog import AGENTS
from serving import crud
from serving.api.deps import CurrentUser, SessionDep
from serving.db import User

router = APIRouter(tags=["feedback"])
Hex32 = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
ERRORS: dict[int | str, dict] = {
    404: {"description": "no such conversation, answer or agent run of yours"},
    422: {"description": "a malformed body, or an agent correction that does not apply"},
}


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: Literal[-1, 1] = Field(description="-1: bad, 1: good.")
    correction: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)] | None
    ) = Field(None, description="The answer you wanted.")
    agent: str | None = Field(
        None,
        description="The agent that should have answered (wrong routing); the router learns it.",
        json_schema_extra={"enum": [*AGENTS, None]},
    )

    @field_validator("rating", mode="before")
    @classmethod
    def _whole_number(cls, rating: object) -> object:
        if type(rating) is not int:  # Literal alone lets true and 1.0 through
            raise ValueError("rating must be the number -1 or 1")
        return rating

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, agent: str | None) -> str | None:
        if agent is not None and agent not in AGENTS:
            raise ValueError(f"unknown agent {agent!r} (known: {', '.join(AGENTS)})")
        return agent


class AnswerFeedbackIn(FeedbackIn):
    answer_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="The answer rated (its lineage id); default the latest."
    )


class FeedbackOut(BaseModel):
    feedback_id: str
    run_id: str = Field(description="The rated agent-memory run.")
    agent: str = Field(description="The agent (or planner) that ran.")
    rating: int
    correction: str | None
    correct_agent: str | None
    answer_id: str | None = None
    created_at: str


def _record(run_id: str, body: FeedbackIn) -> FeedbackOut:
    try:
        row = memory.add_feedback(run_id, body.rating, body.correction, body.agent)
    except KeyError:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND, detail=f"no agent run {run_id!r}"
        ) from None
    except ValueError as exc:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    return FeedbackOut(
        feedback_id=row["id"],
        run_id=run_id,
        agent=row["agent"],
        rating=row["rating"],
        correction=row["correction"] or None,
        correct_agent=row["correct_agent"] or None,
        created_at=row["created_at"],
    )


@router.post("/chat/{conversation_id}/feedback", status_code=status.HTTP_201_CREATED, responses=ERRORS)
def answer_feedback(
    conversation_id: Hex32, body: AnswerFeedbackIn, user: CurrentUser, session: SessionDep
) -> FeedbackOut:
    """Rate an answer of your conversation (the latest unless `answer_id`), with a correction or the agent
    that should have answered."""
    try:
        answer = crud.answer_in(session, user, conversation_id, body.answer_id)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    if answer.run_id is None:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"answer {answer.answer_id!r} has no agent run to rate (agent memory was unavailable)",
        )
    return _record(answer.run_id, body).model_copy(update={"answer_id": answer.answer_id})


@router.post("/agent-runs/{run_id}/feedback", status_code=status.HTTP_201_CREATED, responses=ERRORS)
def agent_run_feedback(
    run_id: Hex32, body: FeedbackIn, user: CurrentUser, session: SessionDep
) -> FeedbackOut:
    """Rate an agent run by its memory id (`memory_id` of run-agent-task, `run_id` of a chat answer):
    a chat answer's run only in your own conversation."""
    _check_owner(session, user, run_id)
    return _record(run_id, body)


def _check_owner(session: Session, user: User, run_id: str) -> None:
    owner = crud.run_owner(session, run_id)
    if owner is not None and owner != user.id:  # someone else's answer does not exist for you
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no agent run {run_id!r}")
