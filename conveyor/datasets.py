"""The dataset catalog shared by the data agent, the data API and tabular training.

Built-in datasets are the CSVs under `<data_dir>/tabular`; uploads are versioned under
`<state>/datasets/<id>/v<N>.csv`. An id is a file-name-safe word: never a path.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from conveyor.settings import get_settings

DATASET_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetError(ValueError):
    """A dataset id, file or upload is unusable; the message says why."""


class DatasetNotFound(DatasetError):
    """No dataset has this id."""


class DatasetInfo(BaseModel):
    id: str
    version: int
    source: str  # "builtin" or "upload"
    rows: int
    columns: list[str]
    sha256: str


def validate_id(dataset_id: str) -> str:
    """Return the id without a `.csv` suffix, refusing anything that could name a path."""
    stem = dataset_id.removesuffix(".csv")
    if not DATASET_ID.match(stem) or ".." in stem:
        raise DatasetError(f"invalid dataset id {dataset_id!r}: use letters, digits, '_', '-', '.'")
    return stem


def _builtin_dir() -> Path:
    return get_settings().data_dir / "tabular"


def _upload_dir(dataset_id: str) -> Path:
    return get_settings().state_dir / "datasets" / dataset_id


def _versions(dataset_id: str) -> list[Path]:
    folder = _upload_dir(dataset_id)
    files = folder.glob("v*.csv") if folder.is_dir() else []
    return sorted(files, key=lambda p: int(p.stem[1:]))


def dataset_path(dataset_id: str, version: int | None = None) -> Path:
    """The CSV file of a dataset (latest upload version, else the built-in file)."""
    stem = validate_id(dataset_id)
    uploads = _versions(stem)
    if version is not None:
        if not 1 <= version <= len(uploads):
            raise DatasetNotFound(f"dataset {stem!r} has no version {version}")
        return uploads[version - 1]
    if uploads:
        return uploads[-1]
    builtin = _builtin_dir() / f"{stem}.csv"
    if builtin.is_file():
        return builtin
    raise DatasetNotFound(
        f"no dataset {stem!r} (known: {', '.join(d.id for d in list_datasets()) or 'none'})"
    )


def load(dataset_id: str, version: int | None = None) -> pd.DataFrame:
    return pd.read_csv(dataset_path(dataset_id, version))


def describe(dataset_id: str, version: int | None = None) -> DatasetInfo:
    path = dataset_path(dataset_id, version)
    frame = pd.read_csv(path)
    is_upload = path.parent.parent == get_settings().state_dir / "datasets"
    return DatasetInfo(
        id=validate_id(dataset_id),
        version=int(path.stem[1:]) if is_upload else 0,
        source="upload" if is_upload else "builtin",
        rows=len(frame),
        columns=[str(c) for c in frame.columns],
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def list_datasets() -> list[DatasetInfo]:
    ids = {p.stem for p in _builtin_dir().glob("*.csv")}
    uploads = get_settings().state_dir / "datasets"
    if uploads.is_dir():
        ids |= {p.name for p in uploads.iterdir() if _versions(p.name)}
    return [describe(i) for i in sorted(ids)]


def summary(dataset_id: str, version: int | None = None) -> dict:
    """Per-column type, missing values and statistics."""
    frame = load(dataset_id, version)
    columns = {}
    for name in frame.columns:
        series = frame[name]
        stats = (
            series.describe().to_dict()
            if series.dtype.kind in "iuf"
            else {
                "unique": int(series.nunique()),
                "top": None if series.dropna().empty else str(series.mode().iloc[0]),
            }
        )
        columns[str(name)] = {
            "dtype": str(series.dtype),
            "missing": int(series.isna().sum()),
            "stats": {k: (None if pd.isna(v) else v) for k, v in stats.items()},
        }
    return {"id": validate_id(dataset_id), "rows": len(frame), "columns": columns}


def save_upload(dataset_id: str, content: bytes, max_bytes: int = 20_000_000) -> DatasetInfo:
    """Store an uploaded CSV as the next version of `dataset_id` after checking it parses."""
    stem = validate_id(dataset_id)
    if len(content) > max_bytes:
        raise DatasetError(f"upload is {len(content)} bytes; the limit is {max_bytes}")
    try:
        frame = pd.read_csv(io.BytesIO(content))
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"not a readable CSV: {exc}") from None
    if frame.empty or len(frame.columns) == 0:
        raise DatasetError("the CSV has no rows or no columns")
    folder = _upload_dir(stem)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"v{len(_versions(stem)) + 1}.csv"
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(content)
    tmp.replace(target)
    return describe(stem)
