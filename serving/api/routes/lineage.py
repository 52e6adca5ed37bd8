"""Lineage of your stored answers: what produced each one, with links to its index runs and trace."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel

from conveyor import lineage
from conveyor.lineage import Lineage, Links
from serving import crud
from serving.api.deps import CurrentUser, SessionDep

router = APIRouter(prefix="/lineage", tags=["chat"])
AnswerId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


class AnswerLineage(BaseModel):
    conversation_id: str
    lineage: Lineage
    links: Links


@router.get("/{answer_id}", responses={404: {"description": "no such answer of yours"}})
def read_lineage(answer_id: AnswerId, user: CurrentUser, session: SessionDep) -> AnswerLineage:
    """One of your answers' lineage, each id resolved to its Prefect or MLflow UI page."""
    try:
        message = crud.get_answer(session, user, answer_id)
    except LookupError as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    stored = Lineage.model_validate(message.lineage)
    return AnswerLineage(conversation_id=message.conversation_id, lineage=stored, links=lineage.links(stored))
