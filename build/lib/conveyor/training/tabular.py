"""The scikit-learn pipeline for tabular data: one-hot categoricals, pass-through numbers, a forest."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from conveyor.training.validation import Task

# The one type of this pipeline that skops (MLflow's safe sklearn format) does not trust by default.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def build_pipeline(
    frame: pd.DataFrame,
    features: list[str],
    task: Task,
    *,
    n_estimators: int = 100,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    seed: int = 0,
) -> Pipeline:
    """A forest behind a column transformer that one-hot encodes the non-numeric `features` of `frame`."""
    categorical = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    numeric = [c for c in features if c not in categorical]
    columns = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", "passthrough", numeric),
        ]
    )
    forest_type = RandomForestClassifier if task == "classification" else RandomForestRegressor
    forest = forest_type(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        random_state=seed,
        n_jobs=1,
    )
    return Pipeline([("columns", columns), ("forest", forest)])
