"""Data API over the dataset catalog: list, paged rows, column summary, chart data, versioned CSV upload."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Path, Query, UploadFile, status
from pydantic import BaseModel

from conveyor import datasets
from serving import analytics
from serving.api.deps import CurrentUser, SettingsDep

router = APIRouter(prefix="/datasets", tags=["datasets"])
DatasetId = Annotated[str, Path(pattern=datasets.DATASET_ID.pattern)]
Version = Annotated[int | None, Query(ge=1, description="an uploaded version; latest when unset")]
Offset = Annotated[int, Query(ge=0, description="first row of the page")]
Limit = Annotated[int, Query(ge=1, le=1000, description="rows in the page")]


class Rows(BaseModel):
    id: str
    offset: int
    limit: int
    total: int
    columns: list[str]
    rows: list[dict[str, Any]]


class Uploaded(datasets.DatasetInfo):
    dtypes: dict[str, str]


def http_error(exc: datasets.DatasetError) -> HTTPException:
    code = status.HTTP_404_NOT_FOUND if isinstance(exc, datasets.DatasetNotFound) else 422
    return HTTPException(status_code=code, detail=str(exc))


@router.get("")
def list_datasets(_: CurrentUser) -> list[datasets.DatasetInfo]:
    """Built-in datasets and uploads (latest versions)."""
    return datasets.list_datasets()


@router.get("/{dataset_id}")
def read_rows(
    dataset_id: DatasetId,
    _: CurrentUser,
    offset: Offset = 0,
    limit: Limit = 100,
    version: Version = None,
) -> Rows:
    """A page of rows (missing values as null)."""
    try:
        frame = datasets.load(dataset_id, version)
    except datasets.DatasetError as exc:
        raise http_error(exc) from None
    page = frame.iloc[offset : offset + limit]
    return Rows(
        id=datasets.validate_id(dataset_id),
        offset=offset,
        limit=limit,
        total=len(frame),
        columns=[str(c) for c in frame.columns],
        rows=_json_safe(json.loads(page.to_json(orient="records"))),
    )


@router.get("/{dataset_id}/summary")
def read_summary(dataset_id: DatasetId, _: CurrentUser, version: Version = None) -> dict[str, Any]:
    """Per-column type, missing values and statistics."""
    try:
        return _json_safe(datasets.summary(dataset_id, version))
    except datasets.DatasetError as exc:
        raise http_error(exc) from None


@router.get("/{dataset_id}/charts")
def read_charts(
    dataset_id: DatasetId,
    _: CurrentUser,
    group_by: Annotated[
        str | None, Query(max_length=200, description="default: a column with few values")
    ] = None,
    value: Annotated[
        str | None, Query(max_length=200, description="numeric column totalled by group")
    ] = None,
    bins: Annotated[int, Query(ge=2, le=100)] = 20,
    version: Version = None,
) -> dict[str, Any]:
    """Chart data: each column's distribution, totals of `value` by `group_by`, numeric correlations."""
    try:
        frame = datasets.load(dataset_id, version)
        return _json_safe(analytics.charts(frame, group_by, value, bins))
    except datasets.DatasetError as exc:
        raise http_error(exc) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars unwrapped, NaN and infinities as null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


@router.post("", status_code=status.HTTP_201_CREATED, responses={413: {"description": "file too large"}})
def upload(
    file: UploadFile,
    dataset_id: Annotated[str, Form(alias="id", pattern=datasets.DATASET_ID.pattern)],
    _: CurrentUser,
    settings: SettingsDep,
) -> Uploaded:
    """Store a CSV as the next version of dataset `id`; returns its inferred column types."""
    content = file.file.read(settings.api_max_upload_bytes + 1)
    if len(content) > settings.api_max_upload_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"the limit is {settings.api_max_upload_bytes} bytes"
        )
    try:
        info = datasets.save_upload(dataset_id, content, max_bytes=settings.api_max_upload_bytes)
    except datasets.DatasetError as exc:
        raise http_error(exc) from None
    dtypes = {str(k): str(v) for k, v in datasets.load(info.id, info.version).dtypes.items()}
    return Uploaded(**info.model_dump(), dtypes=dtypes)
