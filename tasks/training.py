"""Prefect tasks of the training flows: check data, fit (in-process or launched), log, register, promote.

Every task here has side effects in MLflow or reads files that change, so none is cached; none retries
on its own (a retried fit or registration would duplicate runs or versions: resume explicitly instead).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from importlib import metadata
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from conveyor import datasets, pipeline, registry, tracking
from conveyor.settings import get_settings
from conveyor.training.data import split_frame
from conveyor.training.evaluation import GREATER_IS_BETTER, Metric, model_scorer, score
from conveyor.training.fit import LAST_CHECKPOINT_ARTIFACT, FitConfig, FitOutcome, fit
from conveyor.training.launch import launch, needs_launcher
from conveyor.training.model import TabularClassifier, feature_array
from conveyor.training.tabular import SKOPS_TRUSTED_TYPES, build_pipeline
from conveyor.training.validation import Task, check_training_frame


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is failed and nothing is registered."""


class DatasetRef(BaseModel):
    """A checked dataset: where it is, which bytes, and which columns to train on."""

    id: str
    version: int
    path: str
    sha256: str
    md5: str  # DVC 3's content hash of the file
    rows: int
    target: str
    features: list[str]
    classes: int | None  # None for regression

    def tags(self) -> dict[str, str]:
        return {
            "conveyor.dataset_id": self.id,
            "conveyor.dataset_version": str(self.version),
            "conveyor.dataset_sha256": self.sha256,
            "conveyor.dataset_path": self.path,
            "dvc.md5": self.md5,
            "dvc.tracked": str(pipeline.locked_md5(Path(self.path)) == self.md5).lower(),
        }


@task(cache_policy=NO_CACHE)
def check_dataset(
    dataset_id: str, target: str, features: list[str] | None, task: Task, neural: bool = False
) -> DatasetRef:
    """Load a catalog dataset and refuse it (naming the problem) before any training starts."""
    info = datasets.describe(dataset_id)  # pins the version: a later upload can't change what we train on
    path = datasets.dataset_path(dataset_id, info.version or None)
    frame = datasets.load(dataset_id, info.version or None)
    columns = check_training_frame(
        frame, target, features, task=task, numeric_only=neural, integer_labels=neural
    )
    return DatasetRef(
        id=info.id,
        version=info.version,
        path=str(path),
        sha256=info.sha256,
        md5=hashlib.md5(path.read_bytes()).hexdigest(),
        rows=info.rows,
        target=target,
        features=columns,
        classes=int(frame[target].nunique()) if task == "classification" else None,
    )


@task(cache_policy=NO_CACHE)
def log_training_inputs(run_id: str, params: dict, data: DatasetRef, resumed: bool = False) -> None:
    """Record the parameters (new runs only: MLflow params are immutable) and the dataset as a run input."""
    with tracking.use_run(run_id):
        if resumed:
            tracking.log_run_report(tags={"conveyor.resumed_with": json.dumps(params, default=str)[:5000]})
        else:
            tracking.log_run_report(params=_flatten(params))
        frame = datasets.load(data.id, data.version or None)
        tracking.log_dataset(frame, source=data.path, name=data.id, target=data.target)


@task(cache_policy=NO_CACHE)
def fit_lightning(config: FitConfig) -> FitOutcome:
    """Fit in this process (one device, ddp_spawn) or as its own torchrun process group (ddp, multi-node)."""
    Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    outcome = launch(config) if needs_launcher(config) else fit(config)
    if outcome.diverged:
        raise TrainingDiverged(f"training diverged at epoch {outcome.epochs_completed}: {outcome.metrics}")
    return outcome


@task(cache_policy=NO_CACHE)
def log_lightning_model(run_id: str, outcome: FitOutcome, data: DatasetRef) -> str:
    """Log the best checkpoint's model (pt2, with signature and an input example) and its final metrics."""
    model = TabularClassifier.load_from_checkpoint(outcome.best_checkpoint, map_location="cpu").eval()
    frame = datasets.load(data.id, data.version or None)
    example = feature_array(frame.head(5), data.features)  # pt2 needs a batch of at least 2
    metrics = {f"final_{k}": v for k, v in outcome.metrics.items()}
    with tracking.use_run(run_id):
        tracking.log_run_report(metrics=metrics | {"samples_per_second": outcome.samples_per_second})
        return tracking.log_model(
            model,
            input_example=example,
            pip_requirements=_pinned("torch"),
            metadata={"features": data.features, "target": data.target},
        )


@task(cache_policy=NO_CACHE)
def fit_tabular(run_id: str, data: DatasetRef, task: Task, forest: dict, seed: int) -> str:
    """Fit the forest pipeline on the training split, log validation/test metrics and the model."""
    frame = datasets.load(data.id, data.version or None)
    train, val, test = split_frame(frame, data.target if task == "classification" else None, seed)
    pipeline = build_pipeline(frame, data.features, task, seed=seed, **forest)
    pipeline.fit(train[data.features], train[data.target])
    metric: Metric = "accuracy" if task == "classification" else "rmse"
    scores = {
        f"{split}_{metric}": score(pipeline.predict(part[data.features]), part[data.target], metric)
        for split, part in {"train": train, "val": val, "test": test}.items()
    }
    with tracking.use_run(run_id):
        tracking.log_run_report(metrics=scores)
        return tracking.log_model(
            pipeline,
            input_example=train[data.features].head(5),
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_pinned("scikit-learn", "pandas"),
            metadata={"features": data.features, "target": data.target},
        )


@task(cache_policy=NO_CACHE)
def promote(
    run_id: str,
    model_uri: str,
    model_name: str,
    data: DatasetRef,
    metric: Metric,
    seed: int,
    hold: bool = False,
) -> registry.PromotionDecision:
    """Register the model and move `@champion` only if it beats the champion on the held-out split (with
    `hold`, a person approves the move: tasks/approval.py)."""
    frame = datasets.load(data.id, data.version or None)
    stratify = data.target if data.classes else None
    _, _, held_out = split_frame(frame, stratify, seed)
    return registry.register_and_promote(
        run_id=run_id,
        model_uri=model_uri,
        name=model_name,
        metric=f"test_{metric}",
        evaluate=model_scorer(held_out, data.target, data.features, metric),
        greater_is_better=GREATER_IS_BETTER[metric],
        hold=hold,
    )


def resume_checkpoint(run_id: str) -> str:
    """The last checkpoint of an earlier run: from this machine's checkpoint folder, else downloaded there
    from its artifacts."""
    local = checkpoint_dir(run_id) / "last.ckpt"
    if local.is_file():
        return str(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=local.parent) as scratch:  # kept as that folder's last.ckpt
        try:
            Path(tracking.download_artifact(run_id, LAST_CHECKPOINT_ARTIFACT, scratch)).replace(local)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"run {run_id} has no checkpoint to resume from ({exc})") from None
    return str(local)


def checkpoint_dir(run_id: str) -> Path:
    return get_settings().state_dir / "checkpoints" / run_id


def _pinned(*packages: str) -> list[str]:
    """Exact requirements of the logged model (inferring them would load the model in a subprocess)."""
    return [f"{name}=={metadata.version(name)}" for name in packages]


def _flatten(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)[:500]
    return flat
