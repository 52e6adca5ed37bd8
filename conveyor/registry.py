"""Model registry: register versions, promote by alias (`@challenger` -> `@champion`), load the champion,
and say what each version came from.

Promotion is by alias only: every new version becomes `@challenger`; it becomes `@champion` only when
its metric on the caller's held-out data beats the current champion's on the same data. Every decision
is recorded as tags on the version and its run (so the champion history survives) and, inside a Prefect
flow, as a table artifact.

Lineage: a new version carries, as tags copied from its training run, the data it read (path, sha256, the
md5 DVC hashes it by, whether `dvc.lock` pins it and the git revision at which DVC does), the Prefect flow
run and the git commit that trained it, and the run's params; `model_detail` reads them back with links.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field

from conveyor import pipeline, tracking
from conveyor.settings import get_settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

CHAMPION = "champion"
CHALLENGER = "challenger"
AWAITING_APPROVAL = "awaiting approval: "  # a held decision's reason, until a person answers
TAG_PREFIX = "conveyor.promotion."
PARAMS_TAG = "conveyor.params"
DVC_REV_TAG = "dvc.rev"
# Tags of a training run that its registered versions carry (tracking.provenance_tags and the training
# flows' DatasetRef.tags set them on the run).
LINEAGE_TAGS = (
    "conveyor.git_commit",
    "conveyor.git_dirty",
    "prefect.flow_run_id",
    "prefect.flow_name",
    "prefect.deployment_id",
    "conveyor.dataset_id",
    "conveyor.dataset_version",
    "conveyor.dataset_path",
    "conveyor.dataset_sha256",
    "dvc.md5",
    "dvc.tracked",
)


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
    hold: bool = False,
) -> PromotionDecision:
    """Register `model_uri` as a new version of `name` and promote it if it beats the champion.

    Args:
        run_id: the MLflow run that produced the model (receives the decision tags).
        model_uri: the logged model (`runs:/...` or `models:/m-...`).
        name: registered model name.
        metric: name of the metric `evaluate` returns (recorded with the decision).
        evaluate: scores a model URI on held-out data; called for the challenger and the champion.
        greater_is_better: direction of `metric`.
        hold: leave `@champion` where it is; a better version's reason starts with `AWAITING_APPROVAL`
            and `settle` moves the alias once a person approves (tasks/approval.py).

    Returns:
        The decision, also stored as tags and (inside a flow) as a Prefect artifact.

    Raises:
        PromotionError: the current champion could not be evaluated (no alias moved).
    """
    mlflow_client = tracking.client()
    tags = {"conveyor.run_id": run_id, **lineage_tags(run_id)}
    registered = mlflow.register_model(model_uri, name, tags=tags)
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
    better, reason = _judge(challenger_value, champion_value, greater_is_better, metric)
    decision = PromotionDecision(
        name=name,
        version=version,
        run_id=run_id,
        metric=metric,
        greater_is_better=greater_is_better,
        challenger_value=challenger_value,
        champion_version=str(champion.version) if champion else None,
        champion_value=champion_value,
        promoted=False,
        reason=reason,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if better and hold:
        return settle(decision, False, AWAITING_APPROVAL + reason)
    return settle(decision, better, reason)


def settle(decision: PromotionDecision, promoted: bool, reason: str) -> PromotionDecision:
    """Decide `decision`'s version: move `@champion` to it when `promoted`, and record the outcome (tags on
    the version and its run, a Prefect artifact inside a flow)."""
    if promoted:
        tracking.client().set_registered_model_alias(decision.name, CHAMPION, decision.version)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    settled = decision.model_copy(update={"promoted": promoted, "reason": reason, "decided_at": now})
    _record(settled)
    return settled


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


class VersionSummary(BaseModel):
    version: str
    aliases: list[str]
    metrics: dict[str, float] = Field(description="The training run's metrics (last value of each).")
    run_id: str | None
    created_at: str


class ModelSummary(BaseModel):
    name: str
    champion: str | None = Field(description="The version behind @champion.")
    challenger: str | None = Field(description="The version behind @challenger.")
    versions: list[VersionSummary] = Field(description="Newest first.")
    mlflow_url: str


class TrainingData(BaseModel):
    dataset_id: str | None
    dataset_version: str | None
    path: str | None
    sha256: str | None
    dvc_md5: str | None = Field(description="md5 of the file: the hash DVC 3 keeps it under.")
    dvc_tracked: bool | None = Field(description="Whether dvc.lock pinned these bytes when it was trained.")
    dvc_rev: str | None = Field(description="The git revision whose dvc.lock pins these bytes.")


class FlowRunRef(BaseModel):
    id: str
    flow_name: str | None
    deployment_id: str | None
    url: str = Field(description="Its Prefect UI page.")


class ModelLineage(BaseModel):
    """What one registered version came from."""

    version: str
    run_id: str | None
    data: TrainingData
    git_commit: str | None
    git_dirty: bool | None = Field(description="The checkout had uncommitted changes to tracked files.")
    flow_run: FlowRunRef | None = Field(description="The Prefect flow run that trained it.")
    mlflow_run_url: str | None
    params: dict[str, str]
    metrics: dict[str, float]


class ModelDetail(ModelSummary):
    lineage: ModelLineage | None = Field(description="The champion's lineage; null without a champion.")


def lineage_tags(run_id: str) -> dict[str, str]:
    """The lineage a version of `run_id`'s model carries: the run's provenance and data tags, the git
    revision at which DVC pins its data (when one does) and its params as JSON."""
    run = tracking.client().get_run(run_id)
    tags = {key: value for key, value in run.data.tags.items() if key in LINEAGE_TAGS and value}
    revision = dvc_revision(
        tags.get("conveyor.dataset_path"), tags.get("dvc.md5"), tags.get("conveyor.git_commit")
    )
    if revision:
        tags[DVC_REV_TAG] = revision
    tags[PARAMS_TAG] = json.dumps(run.data.params, sort_keys=True)
    return tags


def list_models() -> list[ModelSummary]:
    """Every registered model (prompts excluded), by name, with its versions and aliases."""
    mlflow_client = tracking.client()
    models: list[RegisteredModel] = []
    token = None
    while True:
        page = mlflow_client.search_registered_models(max_results=100, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            break
    runs = _RunCache()
    return [_summary(model, runs) for model in sorted(models, key=lambda m: m.name)]


def model_detail(name: str) -> ModelDetail:
    """One registered model's versions and its champion's lineage.

    Raises:
        ModelNotFound: no registered model `name` (the store keeps prompts apart: a prompt's name is none).
    """
    try:
        model = tracking.client().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            raise ModelNotFound(f"no registered model {name!r}") from None
        raise
    runs = _RunCache()
    summary = _summary(model, runs)
    champion = version_lineage(name, summary.champion, runs) if summary.champion else None
    return ModelDetail(**summary.model_dump(), lineage=champion)


def version_lineage(name: str, version: str, runs: _RunCache | None = None) -> ModelLineage:
    """What version `version` of `name` came from: its own tags, else (versions registered before they
    carried them) its training run's."""
    found = tracking.client().get_model_version(name, version)
    run_id = found.tags.get("conveyor.run_id") or found.run_id or None
    run = (runs or _RunCache()).get(run_id)
    tags = (dict(run.data.tags) if run else {}) | dict(found.tags)
    params = dict(run.data.params) if run else json.loads(tags.get(PARAMS_TAG, "{}"))
    flow_run_id = tags.get("prefect.flow_run_id")
    flow_run = None
    if flow_run_id:
        flow_run = FlowRunRef(
            id=flow_run_id,
            flow_name=tags.get("prefect.flow_name"),
            deployment_id=tags.get("prefect.deployment_id"),
            url=_flow_run_url(flow_run_id),
        )
    return ModelLineage(
        version=str(found.version),
        run_id=run_id,
        data=TrainingData(
            dataset_id=tags.get("conveyor.dataset_id"),
            dataset_version=tags.get("conveyor.dataset_version"),
            path=tags.get("conveyor.dataset_path"),
            sha256=tags.get("conveyor.dataset_sha256"),
            dvc_md5=tags.get("dvc.md5"),
            dvc_tracked=_flag(tags.get("dvc.tracked")),
            dvc_rev=tags.get(DVC_REV_TAG),
        ),
        git_commit=tags.get("conveyor.git_commit"),
        git_dirty=_flag(tags.get("conveyor.git_dirty")),
        flow_run=flow_run,
        mlflow_run_url=tracking.run_url(run.info.run_id, run.info.experiment_id) if run else None,
        params=params,
        metrics=dict(run.data.metrics) if run else {},
    )


class _RunCache:
    """Training runs, each read once per request (a model's listing and its champion's lineage read the
    same run)."""

    def __init__(self) -> None:
        self._runs: dict[str, Run | None] = {}

    def get(self, run_id: str | None) -> Run | None:
        if not run_id:
            return None
        if run_id not in self._runs:
            try:
                self._runs[run_id] = tracking.client().get_run(run_id)
            except MlflowException:  # a deleted run: the version still lists, without metrics
                self._runs[run_id] = None
        return self._runs[run_id]


def _summary(model: RegisteredModel, runs: _RunCache) -> ModelSummary:
    versions = tracking.client().search_model_versions(f"name='{_quoted(model.name)}'")
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    listed = []
    for found in sorted(versions, key=lambda v: int(v.version), reverse=True):
        run_id = found.tags.get("conveyor.run_id") or found.run_id or None
        run = runs.get(run_id)
        listed.append(
            VersionSummary(
                version=str(found.version),
                aliases=sorted(aliases.get(str(found.version), [])),
                metrics=dict(run.data.metrics) if run else {},
                run_id=run_id,
                created_at=_iso(found.creation_timestamp),
            )
        )
    return ModelSummary(
        name=model.name,
        champion=_alias_of(model, CHAMPION),
        challenger=_alias_of(model, CHALLENGER),
        versions=listed,
        mlflow_url=tracking.ui_url(f"#/models/{quote(model.name, safe='')}"),
    )


def dvc_revision(
    path: str | None, md5: str | None, commit: str | None, repo: Path = pipeline.REPO
) -> str | None:
    """`commit` when the `dvc.lock` (or `.dvc` file) committed there pins `path` to these bytes (`md5`), so
    `dvc get REPO PATH --rev COMMIT` returns them; else None (a file outside the repository, one DVC does not
    track, or bytes that changed since)."""
    if not (path and md5 and commit):
        return None
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException, NotDvcRepoError
    from scmrepo.exceptions import SCMError

    file, repo = Path(path).resolve(), repo.resolve()
    if not file.is_relative_to(repo):
        return None
    try:
        info = DVCFileSystem(str(repo), rev=commit).info(file.relative_to(repo).as_posix())
    except (FileNotFoundError, NotDvcRepoError, DvcException, SCMError):
        return None
    return commit if info.get("dvc_info", {}).get("md5") == md5 else None


def _flow_run_url(flow_run_id: str) -> str:
    """The Prefect UI page of a flow run (the `make up` server's UI when no server is configured)."""
    from prefect.utilities.urls import url_for

    prefect_ui = f"http://127.0.0.1:{get_settings().prefect_port}"
    return str(url_for("flow-run", obj_id=flow_run_id, default_base_url=prefect_ui))


def _alias_of(model: RegisteredModel, alias: str) -> str | None:
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")


def _flag(value: str | None) -> bool | None:
    return None if value is None else value.lower() == "true"


def _iso(timestamp_ms: int | None) -> str:
    return datetime.fromtimestamp((timestamp_ms or 0) / 1000, UTC).isoformat(timespec="seconds")
