"""Chart data for the web app's analytics screen: distributions, totals by group, correlations of a frame."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_COLUMNS = 60  # columns charted (the rest are listed but not computed)
MAX_GROUPS = 30  # a grouping column has 2..MAX_GROUPS distinct values; totals keep the largest groups
TOP_CATEGORIES = 12
CORRELATION_COLUMNS = 20


def _numeric(frame: pd.DataFrame) -> list[str]:
    return [
        str(c)
        for c in frame.columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]


def _distribution(series: pd.Series, numeric: bool, bins: int) -> dict[str, Any]:
    values = series.dropna()
    if numeric and pd.api.types.is_integer_dtype(series) and values.nunique() <= bins:
        counted = values.value_counts().sort_index()  # a few whole numbers: one bar per value
        return {
            "kind": "values",
            "labels": [str(v) for v in counted.index],
            "counts": counted.tolist(),
            "missing": int(series.isna().sum()),
        }
    if numeric:
        if values.empty:
            return {"kind": "histogram", "edges": [], "counts": [], "missing": int(series.isna().sum())}
        counts, edges = np.histogram(values.to_numpy(dtype=float), bins=bins)
        return {
            "kind": "histogram",
            "edges": edges.tolist(),
            "counts": counts.tolist(),
            "missing": int(series.isna().sum()),
        }
    top = values.astype(str).value_counts().head(TOP_CATEGORIES)
    return {
        "kind": "categories",
        "labels": list(top.index),
        "counts": list(top.to_numpy()),
        "other": int(len(values) - top.sum()),
        "missing": int(series.isna().sum()),
    }


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns worth grouping by: 2..MAX_GROUPS distinct values; text columns first."""
    found = [str(c) for c in frame.columns[:MAX_COLUMNS] if 2 <= frame[c].nunique() <= MAX_GROUPS]
    return sorted(found, key=lambda c: pd.api.types.is_numeric_dtype(frame[c]))


def totals(frame: pd.DataFrame, group_by: str, value: str | None) -> dict[str, Any]:
    """Row count, and sum and mean of `value`, per value of `group_by` (the largest MAX_GROUPS groups)."""
    keys = frame[group_by].astype(str).where(frame[group_by].notna(), "(missing)")
    grouped = frame.assign(_key=keys).groupby("_key", sort=False)
    counts = grouped.size().sort_values(ascending=False).head(MAX_GROUPS)
    out: dict[str, Any] = {
        "group_by": group_by,
        "value": value,
        "groups": list(counts.index),
        "count": list(counts),
    }
    if value is not None:
        column = grouped[value]
        out["sum"] = list(column.sum().reindex(counts.index))
        out["mean"] = list(column.mean().reindex(counts.index))
    return out


def charts(
    frame: pd.DataFrame, group_by: str | None = None, value: str | None = None, bins: int = 20
) -> dict:
    """Distributions of every column, totals of `value` by `group_by` (defaults picked from the data) and
    the Pearson correlations of the numeric columns.

    Raises:
        ValueError: `group_by` or `value` is not a column (or `value` is not numeric).
    """
    numeric = _numeric(frame)
    candidates = group_columns(frame)
    for name, allowed, what in ((group_by, frame.columns, "a column"), (value, numeric, "a numeric column")):
        if name is not None and name not in {str(c) for c in allowed}:
            raise ValueError(f"{name!r} is not {what} of the dataset")
    group_by = group_by or (candidates[0] if candidates else None)
    if value is None:
        value = next((c for c in numeric if c != group_by), None)
    correlated = numeric[:CORRELATION_COLUMNS]
    matrix = frame[correlated].corr().to_numpy() if len(correlated) >= 2 else np.empty((0, 0))
    return {
        "rows": len(frame),
        "numeric": numeric,
        "group_candidates": candidates,
        "distributions": {
            str(c): _distribution(frame[c], str(c) in numeric, bins) for c in frame.columns[:MAX_COLUMNS]
        },
        "totals": totals(frame, group_by, value) if group_by else None,
        "correlations": {"columns": correlated, "matrix": matrix.round(4).tolist()},
    }
