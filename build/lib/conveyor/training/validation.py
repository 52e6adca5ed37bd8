"""Checks a training frame before any fitting starts; every failure names the column and the problem."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Task = Literal["classification", "regression"]
MIN_ROWS = 10


class DataValidationError(ValueError):
    """The dataset cannot be trained on; the message lists every problem found."""


def check_training_frame(
    frame: pd.DataFrame,
    target: str,
    features: list[str] | None = None,
    *,
    task: Task = "classification",
    numeric_only: bool = False,
    integer_labels: bool = False,
) -> list[str]:
    """Validate `frame` for training and return the feature columns to use.

    Args:
        frame: the whole dataset.
        target: label column.
        features: feature columns; None = every column except the target.
        task: classification needs at least two classes; regression a numeric target.
        numeric_only: refuse non-numeric features (neural models).
        integer_labels: require class labels 0..K-1 (neural models).

    Raises:
        DataValidationError: naming each missing column, wrong type, NaN count or label problem.
    """
    if target not in frame.columns:
        raise DataValidationError(
            f"target column {target!r} is missing (columns: {', '.join(map(str, frame.columns))})"
        )
    features = [c for c in frame.columns if c != target] if features is None else list(features)
    problems = []
    missing = [c for c in features if c not in frame.columns]
    if missing:
        problems.append(f"missing feature columns: {', '.join(missing)}")
    if target in features:
        problems.append(f"target column {target!r} is also listed as a feature")
    present = [c for c in features if c in frame.columns and c != target]
    if not present and not missing:
        problems.append("no feature columns")
    if len(frame) < MIN_ROWS:
        problems.append(f"only {len(frame)} rows; at least {MIN_ROWS} are needed")
    problems += _type_problems(frame, present, numeric_only)
    nans = frame[[*present, target]].isna().sum()
    if nans.any():
        counts = ", ".join(f"{c} ({n})" for c, n in nans.items() if n)
        problems.append(f"missing values (NaN) in columns: {counts}")
    problems += _label_problems(frame[target].dropna(), target, task, integer_labels)
    if problems:
        raise DataValidationError("; ".join(problems))
    return present


def _type_problems(frame: pd.DataFrame, columns: list[str], numeric_only: bool) -> list[str]:
    problems = []
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            if np.isinf(series.to_numpy(dtype=float)).any():
                problems.append(f"column {column!r} has infinite values")
        elif numeric_only:
            problems.append(f"column {column!r} has type {series.dtype}, expected numbers")
        elif not (
            pd.api.types.is_object_dtype(series)
            or pd.api.types.is_string_dtype(series)
            or isinstance(series.dtype, pd.CategoricalDtype)
            or pd.api.types.is_bool_dtype(series)
        ):
            problems.append(f"column {column!r} has unsupported type {series.dtype}")
    return problems


def _label_problems(labels: pd.Series, target: str, task: Task, integer_labels: bool) -> list[str]:
    if task == "regression":
        return (
            []
            if pd.api.types.is_numeric_dtype(labels)
            else [f"target {target!r} has type {labels.dtype}; regression needs numbers"]
        )
    classes = labels.unique()
    if len(classes) < 2:
        return [
            f"target {target!r} has a single class ({classes[0] if len(classes) else 'none'}); "
            "classification needs at least two"
        ]
    if integer_labels:
        if not pd.api.types.is_integer_dtype(labels):
            return [f"target {target!r} has type {labels.dtype}; expected integer class labels 0..K-1"]
        if set(classes) != set(range(len(classes))):
            return [f"target {target!r} labels must be 0..{len(classes) - 1}, found {sorted(classes)[:10]}"]
    return []
