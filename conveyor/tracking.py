"""The one door to MLflow: tracking URI, experiments, runs tagged with their Prefect and git provenance,
what the runs record (params, metrics, inputs, artifacts, models), and the traces of answers."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import mlflow
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import LiveSpan, Metric, NoOpSpan
from mlflow.entities.trace_location import MlflowExperimentLocation
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from conveyor.settings import ConfigurationError, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.base import BaseEstimator
    from torch import nn

log = logging.getLogger(__name__)
TRACE_EXPERIMENT = "chat"
TRACE_STORE_RECHECK_S = 60.0  # how long a verdict on the tracking store stands
TRACE_STORE_PROBE_S = 2.0


def _configured_uri(uri: str) -> str:
    """Point MLflow's fluent API at `uri` (again, if something else moved it)."""
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        get_settings().artifact_root.mkdir(parents=True, exist_ok=True)
    return uri


def client() -> MlflowClient:
    """An MLflow client on the configured tracking URI."""
    return MlflowClient(tracking_uri=_configured_uri(get_settings().tracking_uri))


def check_reachable() -> str:
    """Fail with a message naming the setting when the tracking store can't be used."""
    uri = get_settings().tracking_uri
    try:
        client().search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a bad store
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"CONVEYOR_MLFLOW_TRACKING_URI={uri!r} is not reachable: {first_line}"
        ) from None
    return uri


def experiment_id(name: str) -> str:
    """Get or create an experiment whose artifacts live under the state folder (for SQLite stores)."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if get_settings().tracking_uri.startswith("sqlite:"):
        location = (get_settings().artifact_root / name).as_uri()
    return mlflow_client.create_experiment(name, artifact_location=location)


def provenance_tags() -> dict[str, str]:
    """Prefect flow run, deployment and git commit of the current process, where known."""
    from prefect.runtime import deployment, flow_run

    commit = git_commit()
    tags = {"conveyor.git_commit": commit, "conveyor.git_dirty": commit and str(git_dirty()).lower()}
    if flow_run.id:
        tags |= {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_name": str(flow_run.flow_name)}
    if deployment.id:
        tags["prefect.deployment_id"] = str(deployment.id)
    return {k: v for k, v in tags.items() if v}


@cache
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


@cache
def git_dirty() -> bool:
    """Whether tracked files differ from the commit (then the commit alone does not say what ran)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.stdout.strip())


@contextmanager
def start_run(
    experiment: str,
    run_name: str | None = None,
    tags: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run in `experiment` (or the existing `run_id`, resumed), tagged with provenance;
    marked FAILED if the body raises."""
    _configured_uri(get_settings().tracking_uri)
    all_tags = provenance_tags() | {k: str(v) for k, v in (tags or {}).items()}
    with mlflow.start_run(
        run_id=run_id, experiment_id=experiment_id(experiment), run_name=run_name, tags=all_tags
    ) as run:
        yield run


@contextmanager
def use_run(run_id: str) -> Iterator[Any]:
    """Make `run_id` the active run for fluent logging: the current one if it is active, else resumed."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield active
        return
    _configured_uri(get_settings().tracking_uri)
    with mlflow.start_run(run_id=run_id) as run:
        yield run


def log_run_report(
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: Mapping[str, str | Path | dict[str, Any]] | None = None,
) -> None:
    """Log to the active run.

    Args:
        params: run parameters (immutable once logged).
        metrics: values at step 0.
        tags: run tags.
        artifacts: by artifact path: a dict is written there as JSON; a local folder's files are copied
            under that folder, a local file into it ("" is the run's artifact root).
    """
    if params:
        mlflow.log_params(dict(params))
    if metrics:
        mlflow.log_metrics(dict(metrics))
    if tags:
        mlflow.set_tags(dict(tags))
    for artifact_path, item in (artifacts or {}).items():
        if isinstance(item, dict):
            mlflow.log_dict(item, artifact_path)
        elif Path(item).is_dir():
            mlflow.log_artifacts(str(item), artifact_path=artifact_path or None)
        else:
            mlflow.log_artifact(str(item), artifact_path=artifact_path or None)


def log_table(rows: list[dict[str, Any]], artifact_file: str) -> None:
    """Rows (same keys, scalar values) as a table artifact of the active run, shown in the MLflow UI."""
    columns = list(rows[0]) if rows else []
    mlflow.log_table({column: [row.get(column) for row in rows] for column in columns}, artifact_file)


def log_step_metrics(
    run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
) -> None:
    """Log `metrics` at `step` of `run_id` in one batch (works from any thread: no active run needed)."""
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    client().log_batch(run_id, metrics=[Metric(key, value, stamp, step) for key, value in metrics.items()])


def log_dataset(
    frame: pd.DataFrame, *, source: str, name: str, target: str, context: str = "training"
) -> None:
    """Record `frame` (digest, schema, source) as an input of the active run."""
    dataset = from_pandas(frame, source=source, name=name, targets=target)
    mlflow.log_input(dataset, context=context)


def log_model(
    model: BaseEstimator | nn.Module,
    *,
    input_example: pd.DataFrame | np.ndarray,
    metadata: dict[str, Any],
    pip_requirements: list[str] | None = None,
    skops_trusted_types: list[str] | None = None,
) -> str:
    """Log `model` as the active run's `model` in its flavour (scikit-learn, else PyTorch), its signature
    inferred from `input_example`; returns the model URI.

    Args:
        pip_requirements: exact requirements (None: MLflow infers them).
        skops_trusted_types: for scikit-learn models, types skops may load beyond its defaults.
    """
    from sklearn.base import BaseEstimator

    options: dict[str, Any] = {
        "name": "model",
        "input_example": input_example,
        "pip_requirements": pip_requirements,
        "metadata": metadata,
    }
    if isinstance(model, BaseEstimator):
        info = mlflow.sklearn.log_model(model, skops_trusted_types=skops_trusted_types, **options)
    else:
        info = mlflow.pytorch.log_model(model, **options)
    return info.model_uri


def load_model(model_uri: str) -> PyFuncModel:
    """Load a logged or registered model (`runs:/...`, `models:/...`) as a pyfunc model."""
    _configured_uri(get_settings().tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def download_artifact(run_id: str, artifact_path: str, dst_dir: str) -> str:
    """Download one artifact of `run_id` into `dst_dir`; returns its local path.

    Raises:
        FileNotFoundError: MLflow could not provide it (no such run or artifact).
    """
    _configured_uri(get_settings().tracking_uri)
    try:
        return mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=dst_dir
        )
    except MlflowException as exc:
        raise FileNotFoundError(exc.message) from None


class _TraceStore:
    """Whether answers can be traced: the trace experiment's id while the tracking store answers, else None.

    One caller at a time probes the store (at most once a minute per URI, with a short timeout); the others
    use the last verdict meanwhile, so a store that is down never holds up an answer. A change of verdict is
    logged once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdicts: dict[str, tuple[float, str | None]] = {}

    def experiment(self) -> str | None:
        uri = get_settings().tracking_uri
        known = uri in self._verdicts
        checked_at, experiment = self._verdicts.get(uri, (float("-inf"), None))
        if time.monotonic() - checked_at < TRACE_STORE_RECHECK_S or not self._lock.acquire(blocking=False):
            return experiment
        try:
            fresh = self._probe(uri)
            if fresh is None and (experiment is not None or not known):
                log.warning("answers are not traced: MLflow at %s is unreachable", _public(uri))
            elif fresh is not None and experiment is None and known:
                log.info("answers are traced again: MLflow at %s answers", _public(uri))
            self._verdicts[uri] = (time.monotonic(), fresh)
            return fresh
        finally:
            self._lock.release()

    @staticmethod
    def _probe(uri: str) -> str | None:
        try:
            if uri.startswith(("http://", "https://")):  # MLflow's own client retries for minutes
                httpx.get(f"{uri.rstrip('/')}/health", timeout=TRACE_STORE_PROBE_S).raise_for_status()
            return experiment_id(TRACE_EXPERIMENT)
        except Exception as exc:  # any failure of the store means: no tracing for now
            log.debug("tracking store probe failed: %s", exc)
            return None


_trace_store = _TraceStore()


def _public(uri: str) -> str:
    """`uri` without credentials."""
    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    return parts._replace(netloc=f"{parts.hostname}{f':{parts.port}' if parts.port else ''}").geturl()


class Span:
    """A span of the answer being traced; every method does nothing when there is none."""

    def __init__(self, live: LiveSpan | None = None) -> None:
        self._live = None if isinstance(live, NoOpSpan) else live

    @property
    def trace_id(self) -> str | None:
        return self._live.trace_id if self._live is not None else None

    def set_outputs(self, outputs: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.set_outputs(outputs)

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.set_attributes(attributes)

    def end(
        self, outputs: dict[str, Any] | None = None, error: str | None = None, end_ns: int | None = None
    ) -> None:
        """End a span from `start_span` (an `error` marks it failed)."""
        if self._live is not None:
            self._live.end(outputs=outputs, status="ERROR" if error else "OK", end_time_ns=end_ns)


@contextmanager
def trace_answer(name: str, inputs: dict[str, Any]) -> Iterator[Span]:
    """The root span of one answer's trace (experiment `chat`), or a Span that does nothing while the
    tracking store is unreachable; traces are written in the background."""
    experiment = _trace_store.experiment()
    if experiment is None:
        yield Span()
        return
    location = MlflowExperimentLocation(experiment_id=experiment)
    with mlflow.start_span(name, span_type="AGENT", trace_destination=location) as live:
        live.set_inputs(inputs)
        yield Span(live)


@contextmanager
def tracing_disabled() -> Iterator[None]:
    """No answer is traced inside the block, in any thread (benchmarks compare answers with and without)."""
    mlflow.tracing.disable()
    try:
        yield
    finally:
        mlflow.tracing.enable()


@contextmanager
def span(name: str, kind: str, inputs: dict[str, Any] | None = None) -> Iterator[Span]:
    """A child span of the current one around the block (spans started inside nest under it); nothing
    outside a traced answer. `kind`: an MLflow span type (CHAIN, AGENT, RETRIEVER, LLM...)."""
    if mlflow.get_current_active_span() is None:
        yield Span()
        return
    with mlflow.start_span(name, span_type=kind) as live:
        if inputs is not None:
            live.set_inputs(inputs)
        yield Span(live)


def start_span(
    name: str, kind: str, inputs: dict[str, Any] | None = None, start_ns: int | None = None
) -> Span:
    """A child span of the current one that the caller ends with `Span.end`: for generators and for work
    timed in other threads; nothing outside a traced answer."""
    parent = mlflow.get_current_active_span()
    if parent is None:
        return Span()
    return Span(
        mlflow.start_span_no_context(
            name, span_type=kind, parent_span=parent, inputs=inputs, start_time_ns=start_ns
        )
    )


def ui_url(page: str) -> str:
    """An MLflow UI page (`#/models/NAME`...): on the tracking server, or for a database store the
    `make up` server on it."""
    uri = get_settings().tracking_uri
    base = _public(uri) if uri.startswith(("http://", "https://")) else None
    base = base or f"http://127.0.0.1:{get_settings().mlflow_port}"
    return f"{base.rstrip('/')}/{page.lstrip('/')}"


def run_url(run_id: str, experiment_id: str) -> str:
    return ui_url(f"#/experiments/{experiment_id}/runs/{run_id}")


def trace_url(trace_id: str) -> str | None:
    """The MLflow UI page of an answer's trace."""
    experiment = _trace_store.experiment()
    if experiment is None:
        return None
    return ui_url(f"#/experiments/{experiment}/traces?selectedTraceId={trace_id}")


def reachable() -> bool:
    """Whether the tracking store answers now (the verdict that tracing uses: probed at most once a minute,
    with a short timeout), so that callers on an answer's path never wait on a store that is down."""
    return _trace_store.experiment() is not None


class PromptVersion(BaseModel):
    """One version of a registered prompt."""

    name: str
    version: int
    template: str
    tags: dict[str, str]


def prompt_version(name: str, alias: str) -> PromptVersion | None:
    """The version of prompt `name` behind `prompts:/name@alias`, or None when the prompt or alias is
    missing."""
    try:
        found = client().get_prompt_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise
    return PromptVersion(name=name, version=int(found.version), template=str(found.template), tags=found.tags)


def prompt_tags(name: str) -> dict[str, str] | None:
    """The tags of prompt `name` (not of its versions), or None when there is no such prompt."""
    found = client().get_prompt(name)
    return None if found is None else dict(found.tags)


def register_prompt(
    name: str, template: str, *, alias: str, message: str, tags: dict[str, str], name_tags: dict[str, str]
) -> int:
    """A new version of prompt `name` (created if new) with version `tags`, moved under `alias`; the prompt
    itself gets `name_tags`. Returns the version number."""
    mlflow_client = client()
    created = mlflow_client.register_prompt(name, template, commit_message=message, tags=tags)
    for key, value in name_tags.items():
        mlflow_client.set_prompt_tag(name, key, value)
    mlflow_client.set_prompt_alias(name, alias, int(created.version))
    return int(created.version)


def set_prompt_alias(name: str, alias: str, version: int) -> None:
    client().set_prompt_alias(name, alias, version)
