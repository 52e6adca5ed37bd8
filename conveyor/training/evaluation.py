"""Scoring a logged model on held-out data, the same way for every model flavour (used for promotion)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, root_mean_squared_error

from conveyor import registry, tracking

Metric = Literal["accuracy", "rmse"]
GREATER_IS_BETTER: dict[str, bool] = {"accuracy": True, "rmse": False}


def score(predictions: np.ndarray, truth: pd.Series, metric: Metric) -> float:
    """`accuracy` of labels (or of the most probable class for probability rows), or `rmse`."""
    predictions = np.asarray(predictions)
    if metric == "rmse":
        return float(root_mean_squared_error(truth.to_numpy(dtype=float), predictions.reshape(-1)))
    labels = predictions.argmax(axis=1) if predictions.ndim == 2 and predictions.shape[1] > 1 else predictions
    return float(accuracy_score(truth.to_numpy(), labels.reshape(-1)))


def model_scorer(
    held_out: pd.DataFrame, target: str, features: list[str], metric: Metric
) -> Callable[[str], float]:
    """A function that loads a model URI as pyfunc and scores it on `held_out`."""

    def evaluate(model_uri: str) -> float:
        model = tracking.load_model(model_uri)
        return score(model.predict(registry.model_input(model, held_out[features])), held_out[target], metric)

    return evaluate
