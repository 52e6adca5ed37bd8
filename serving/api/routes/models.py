"""Registered models: versions, the champion's lineage, and predictions from `models:/{name}@champion`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from conveyor import registry
from serving.api.deps import CurrentUser

router = APIRouter(prefix="/models", tags=["models"])
ModelName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
Scalar = float | int | str | bool | None


class PredictRequest(BaseModel):
    inputs: list[list[Scalar]] | list[dict[str, Scalar]] = Field(
        min_length=1, max_length=10_000, description="rows of values, or records for column-based models"
    )


class PredictResponse(BaseModel):
    name: str
    version: str
    predictions: list[Any]


@router.get("")
def list_models(_: CurrentUser) -> list[registry.ModelSummary]:
    """Every registered model with its versions, aliases and their runs' metrics."""
    return registry.list_models()


@router.get("/{name}", responses={404: {"description": "no such registered model"}})
def read_model(name: ModelName, _: CurrentUser) -> registry.ModelDetail:
    """One model's versions and what its champion came from: data (DVC md5 and revision), git commit,
    Prefect flow run, MLflow run, params and metrics."""
    try:
        return registry.model_detail(name)
    except registry.ModelNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


@router.post("/{name}/predict", responses={404: {"description": "no champion"}, 422: {}})
def predict(name: ModelName, body: PredictRequest, _: CurrentUser, request: Request) -> PredictResponse:
    """Predict with the current champion; inputs are checked against the model's signature."""
    try:
        version, model = request.app.state.champions.get(name)
    except registry.ModelNotFound as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
    try:
        predictions = registry.predict_rows(model, body.inputs)
    except (ValueError, TypeError, KeyError) as exc:  # registry.SignatureMismatch is a ValueError
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"inputs do not match the signature of {name} v{version}: {exc}"[:2000],
        ) from None
    return PredictResponse(name=name, version=version, predictions=predictions)
