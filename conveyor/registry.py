"""Model registry: register versions, promote by alias (`@challenger` -> `@champion`), load the champion.

Promotion is by alias only: every new version becomes `@challenger`; it becomes `@champion` only when
its metric on the caller's held-out data beats the current champion's on the same data. Every decision
is recorded as tags on the version and its run (so the champion history survives) and, inside a Prefect
flow, as a table artifact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel

from conveyor import tracking

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "conveyor.promotion."


class ModelNotFound(LookupError):
    """The registered model, or its `@champion`, does not exist."""


class SignatureMismatch(ValueError):
    """Inputs that do not fit the model's signature."""


class PromotionError(RuntimeError):
    """The current champion could not be evaluated, so nothing was promoted."""


class PromotionDecision(BaseModel):
    """What happened to one new model version."""

    name: str
    version: str
    run_id: str
    metric: str
    greater_is_better: bool
    challenger_value: float
    champion_version: str | None  # champion before the decision
    champion_value: float | None
    promoted: bool
    reason: str
    decided_at: str

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.name}@{CHAMPION}"


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def champion_version(name: str) -> str | None:
    """The version number behind `models:/{name}@champion`, or None when there is none."""
    found = _alias_version(name, CHAMPION)
    return str(found.version) if found else None


def load_champion(name: str) -> tuple[str, PyFuncModel]:
    """Load the champion as a pyfunc model; returns (version, model).

    Raises:
        ModelNotFound: no registered model `name` or no `@champion` alias on it.
    """
    version = champion_version(name)
    if version is None:
        raise ModelNotFound(f"model {name!r} has no @{CHAMPION} version in the registry")
    return version, tracking.load_model(version_uri(name, version))


def register_and_promote(
    *,
    run_id: str,
    model_uri: str,
    name: str,
    metric: str,
    evaluate: Callable[[str], float],
    greater_is_better: bool = True,
) -> PromotionDecision:
    """Register `model_uri` as a new version of `name` and promote it if it beats the champion.

    Args:
        run_id: the MLflow run that produced the model (receives the decision tags).
        model_uri: the logged model (`runs:/...` or `models:/m-...`).
        name: registered model name.
        metric: name of the metric `evaluate` returns (recorded with the decision).
        evaluate: scores a model URI on held-out data; called for the challenger and the champion.
        greater_is_better: direction of `metric`.

    Returns:
        The decision, also stored as tags and (inside a flow) as a Prefect artifact.

    Raises:
        PromotionError: the current champion could not be evaluated (no alias moved).
    """
    mlflow_client = tracking.client()
    registered = mlflow.register_model(model_uri, name, tags={"conveyor.run_id": run_id})
    version = str(registered.version)
    mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    challenger_value = float(evaluate(version_uri(name, version)))

    champion = _alias_version(name, CHAMPION)
    champion_value = None
    if champion is not None:
        try:
            champion_value = float(evaluate(version_uri(name, champion.version)))
        except Exception as exc:
            raise PromotionError(
                f"champion {name} v{champion.version} could not be evaluated on this data, "
                f"so v{version} stays @{CHALLENGER}: {exc}"
            ) from exc
    promoted, reason = _judge(challenger_value, champion_value, greater_is_better, metric)
    if promoted:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)

    decision = PromotionDecision(
        name=name,
        version=version,
        run_id=run_id,
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_value=challenger_value,
        champion_version=str(champion.version) if champion else None,
        champion_value=champion_value,
        promoted=promoted,
        reason=reason,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _record(decision)
    return decision


def _judge(
    challenger: float, champion: float | None, greater_is_better: bool, metric: str
) -> tuple[bool, str]:
    if not math.isfinite(challenger):
        return False, f"challenger {metric} is {challenger}: never promoted"
    if champion is None:
        return True, "no champion yet"
    if not math.isfinite(champion):
        return True, f"champion {metric} is {champion}"
    better = challenger > champion if greater_is_better else challenger < champion
    relation = "better than" if better else "not better than"
    return better, f"challenger {metric} {challenger:.6g} is {relation} champion's {champion:.6g}"


def _alias_version(name: str, alias: str) -> ModelVersion | None:
    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def decision_tags(decision: PromotionDecision) -> dict[str, str]:
    fields = decision.model_dump(exclude={"name", "run_id"})
    return {f"{TAG_PREFIX}{key}": "" if value is None else str(value) for key, value in fields.items()}


def _record(decision: PromotionDecision) -> None:
    mlflow_client = tracking.client()
    for key, value in decision_tags(decision).items():
        mlflow_client.set_model_version_tag(decision.name, decision.version, key, value)
        mlflow_client.set_tag(decision.run_id, key, value)
    _publish_artifact(decision)


def _publish_artifact(decision: PromotionDecision) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return
    verdict = (
        "promoted to @champion" if decision.promoted else f"kept v{decision.champion_version} as @champion"
    )
    create_table_artifact(
        key="promotion-" + re.sub(r"[^a-z0-9-]+", "-", decision.name.lower()).strip("-"),
        table=[decision.model_dump()],
        description=f"{decision.name} v{decision.version}: {verdict} ({decision.reason})",
    )


def model_input(model: PyFuncModel, frame: pd.DataFrame) -> pd.DataFrame | np.ndarray:
    """`frame` in the form the model's signature takes: an array of its dtype for tensor-signature
    models (Lightning), the frame itself for column-based ones (scikit-learn)."""
    schema = model.metadata.get_input_schema()
    if schema is not None and schema.is_tensor_spec():
        return frame.to_numpy(dtype=schema.numpy_types()[0])
    return frame


def predict_rows(model: PyFuncModel, inputs: list) -> list:
    """Predictions for JSON-like `inputs` (rows of numbers, or records with column names) as a list.

    Raises:
        SignatureMismatch: MLflow's schema enforcement refused the inputs.
    """
    schema = model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    is_rows = bool(inputs) and not isinstance(inputs[0], dict)
    frame = pd.DataFrame(inputs, columns=names if is_rows and names else None)
    try:
        predictions = model.predict(model_input(model, frame))
    except MlflowException as exc:
        raise SignatureMismatch(exc.message) from exc
    return np.asarray(predictions).tolist()
