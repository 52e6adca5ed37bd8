"""Prefect tasks of the training flows: check data, fit (in-process or launched), log, register, promote.

Every task here has side effects in MLflow or reads files that change, so none is cached; none retries
on its own (a retried fit or registration would duplicate runs or versions: resume explicitly instead).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import mlflow
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from conveyor import datasets, registry, tracking
from conveyor.settings import get_settings
from conveyor.training.data import split_frame
from conveyor.training.evaluation import GREATER_IS_BETTER, Metric, model_scorer, score
from conveyor.training.fit import LAST_CHECKPOINT_ARTIFACT, FitConfig, FitOutcome, fit
from conveyor.training.model import TabularClassifier, feature_array
from conveyor.training.tabular import build_pipeline
from conveyor.training.validation import Task, check_training_frame

REPO = Path(__file__).resolve().parent.parent


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
            "dvc.md5": self.md5,
            "dvc.tracked": str(_dvc_tracks(self.md5)).lower(),
        }


@task(cache_policy=NO_CACHE)
def check_dataset(
    dataset_id: str, target: str, features: list[str] | None, task: Task, neural: bool = False
) -> DatasetRef:
    """Load a catalog dataset and refuse it (naming the problem) before any training starts."""
    path = datasets.dataset_path(dataset_id)
    frame = datasets.load(dataset_id)
    columns = check_training_frame(
        frame, target, features, task=task, numeric_only=neural, integer_labels=neural
    )
    info = datasets.describe(dataset_id)
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
            mlflow.set_tag("conveyor.resumed_with", json.dumps(params, default=str)[:5000])
        else:
            mlflow.log_params(_flatten(params))
        frame = datasets.load(data.id, data.version or None)
        mlflow.log_input(
            mlflow.data.from_pandas(frame, source=data.path, name=data.id, targets=data.target),
            context="training",
        )


@task(cache_policy=NO_CACHE)
def fit_lightning(config: FitConfig) -> FitOutcome:
    """Fit in this process (one device, ddp_spawn) or as its own torchrun process group (ddp, multi-node)."""
    Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    if needs_launcher(config):
        outcome = _launch(config)
    else:
        outcome = fit(config)
    if outcome.diverged:
        raise TrainingDiverged(f"training diverged at epoch {outcome.epochs_completed}: {outcome.metrics}")
    return outcome


def needs_launcher(config: FitConfig) -> bool:
    """The one rule for where a fit runs: multi-process strategies other than ddp_spawn get their own
    process group, since Lightning's `ddp` launcher would re-execute the flow's script per rank."""
    processes = config.devices * config.num_nodes
    return processes > 1 and config.strategy != "ddp_spawn"


def _launch(config: FitConfig) -> FitOutcome:
    strategy = "ddp" if config.strategy == "auto" else config.strategy
    config = config.model_copy(update={"strategy": strategy})
    config_path = Path(config.checkpoint_dir) / "fit_config.json"
    config_path.write_text(config.model_dump_json(indent=2))
    env = os.environ
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={config.devices}",
        f"--nnodes={config.num_nodes}",
        f"--node-rank={env.get('NODE_RANK', '0')}",
        f"--master-addr={env.get('MASTER_ADDR', '127.0.0.1')}",
        f"--master-port={env.get('MASTER_PORT') or _free_port()}",
        "-m",
        "conveyor.training.fit",
        str(config_path),
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"distributed fit exited with {done.returncode}:\n{tail}")
    return FitOutcome.model_validate_json(Path(config.outcome_path).read_text())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@task(cache_policy=NO_CACHE)
def log_lightning_model(run_id: str, outcome: FitOutcome, data: DatasetRef) -> str:
    """Log the best checkpoint's model (pt2, with signature and an input example) and its final metrics."""
    model = TabularClassifier.load_from_checkpoint(outcome.best_checkpoint, map_location="cpu").eval()
    frame = datasets.load(data.id, data.version or None)
    example = feature_array(frame.head(5), data.features)  # pt2 needs a batch of at least 2
    with tracking.use_run(run_id):
        mlflow.log_metrics({f"final_{k}": v for k, v in outcome.metrics.items()})
        mlflow.log_metric("samples_per_second", outcome.samples_per_second)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            pip_requirements=_pinned("torch", "lightning"),
            metadata={"features": data.features, "target": data.target},
        )
    return info.model_uri


@task(cache_policy=NO_CACHE)
def fit_tabular(run_id: str, data: DatasetRef, task: Task, forest: dict, seed: int) -> str:
    """Fit the forest pipeline on the training split, log validation/test metrics and the model."""
    frame = datasets.load(data.id, data.version or None)
    train, val, test = split_frame(frame, data.target if task == "classification" else None, 0.15, 0.15, seed)
    pipeline = build_pipeline(frame, data.features, task, seed=seed, **forest)
    pipeline.fit(train[data.features], train[data.target])
    metric: Metric = "accuracy" if task == "classification" else "rmse"
    with tracking.use_run(run_id):
        for split, part in {"train": train, "val": val, "test": test}.items():
            predictions = pipeline.predict(part[data.features])
            mlflow.log_metric(f"{split}_{metric}", score(predictions, part[data.target], metric))
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            input_example=train[data.features].head(5),
            serialization_format="cloudpickle",
            pip_requirements=_pinned("scikit-learn", "pandas"),
            metadata={"features": data.features, "target": data.target},
        )
    return info.model_uri


@task(cache_policy=NO_CACHE)
def promote(
    run_id: str, model_uri: str, model_name: str, data: DatasetRef, metric: Metric, seed: int
) -> registry.PromotionDecision:
    """Register the model and move `@champion` only if it beats the champion on the held-out split."""
    frame = datasets.load(data.id, data.version or None)
    stratify = data.target if data.classes else None
    _, _, held_out = split_frame(frame, stratify, 0.15, 0.15, seed)
    return registry.register_and_promote(
        run_id=run_id,
        model_uri=model_uri,
        name=model_name,
        metric=f"test_{metric}",
        evaluate=model_scorer(held_out, data.target, data.features, metric),
        greater_is_better=GREATER_IS_BETTER[metric],
    )


def resume_checkpoint(run_id: str) -> str:
    """The last checkpoint of an earlier run: from this machine's checkpoint folder, else its artifacts."""
    local = checkpoint_dir(run_id) / "last.ckpt"
    if local.is_file():
        return str(local)
    tracking.client()
    target = tempfile.mkdtemp(prefix="conveyor-resume-")
    try:
        return mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=LAST_CHECKPOINT_ARTIFACT, dst_path=target
        )
    except mlflow.exceptions.MlflowException as exc:
        raise FileNotFoundError(f"run {run_id} has no checkpoint to resume from ({exc})") from None


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


def _dvc_tracks(md5: str) -> bool:
    lock = REPO / "dvc.lock"
    return lock.is_file() and md5 in lock.read_text()
