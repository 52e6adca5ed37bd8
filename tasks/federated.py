"""Prefect tasks of `federated-training`: site data, a task per round, baselines, global model, promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from conveyor import registry, tracking
from conveyor.federated.launcher import LocalFederation
from conveyor.federated.task import (
    TARGET,
    ModelSpec,
    SiteData,
    build_model,
    evaluate,
    load_rows,
    train_local,
    write_site_data,
)
from conveyor.training.evaluation import model_scorer

ROUND_METRICS = ("test_accuracy", "test_loss", "train_loss", "site_accuracy", "site_loss", "seconds")


@task(cache_policy=NO_CACHE, retries=1)
def split_sites(out_dir: str, sites: int, alpha: float, seed: int) -> SiteData:
    """Write each site's private rows and the coordinator's hold-out set (same inputs = same files)."""
    return write_site_data(Path(out_dir), sites, alpha, seed)


@task(task_run_name="round-{round_number}", cache_policy=NO_CACHE)
def federated_round(
    federation: LocalFederation, round_number: int, mlflow_run_id: str, timeout_s: float
) -> dict[str, Any]:
    """Wait for round `round_number` to close; log its metrics and sites to MLflow and Prefect."""
    record = federation.journal.wait_for(
        lambda event: event["event"] == "round" and event["round"] == round_number,
        timeout_s,
        f"end of round {round_number}",
        federation.check_alive,
    )
    metrics = {key: float(record[key]) for key in ROUND_METRICS if record.get(key) is not None}
    metrics["sites_trained"] = float(len(record["trained"]))
    tracking.log_step_metrics(
        mlflow_run_id,
        {f"round_{key}": value for key, value in metrics.items()},
        step=round_number,
        timestamp_ms=int(record["time"] * 1000),
    )
    create_table_artifact(
        table=[
            {"round": round_number, **metrics, "trained": record["trained"], "missing": record["missing"]}
        ],
        description=f"Round {round_number}: sites {record['trained']} trained, missing: {record['missing']}",
    )
    return record


@task(cache_policy=NO_CACHE)
def await_global_model(federation: LocalFederation, timeout_s: float) -> str:
    """The path of the final global weights once the ServerApp reports the run finished."""
    event = federation.journal.wait_for(
        lambda e: e["event"] == "finished", timeout_s, "end of the run", federation.check_alive
    )
    return event["model_path"]


def _fit_and_score(
    rows: list[str], test_path: str, spec: ModelSpec, epochs: int, batch_size: int, seed: int
) -> float:
    features, labels = (torch.cat(parts) for parts in zip(*(load_rows(path) for path in rows), strict=True))
    model = build_model(features.shape[1], spec, seed)
    model.set_standardization(features)
    train_local(model, features, labels, epochs=epochs, batch_size=batch_size, seed=seed)
    return evaluate(model, *load_rows(test_path))[1]


@task(cache_policy=NO_CACHE)
def train_baselines(
    data: SiteData, spec: ModelSpec, epochs: int, batch_size: int, seed: int, mlflow_run_id: str
) -> dict[str, float]:
    """Test accuracy of the same model trained centrally on all sites' rows, and on each site alone."""
    sites = [
        _fit_and_score([path], data.test_path, spec, epochs, batch_size, seed) for path in data.site_paths
    ]
    scores = {
        "centralized_accuracy": _fit_and_score(
            data.site_paths, data.test_path, spec, epochs, batch_size, seed
        ),
        "site_mean_accuracy": sum(sites) / len(sites),
        "site_best_accuracy": max(sites),
    }
    scores |= {f"site_{i}_accuracy": score for i, score in enumerate(sites)}
    tracking.log_step_metrics(
        mlflow_run_id, {f"baseline_{key}": value for key, value in scores.items()}, step=0
    )
    return scores


@task(cache_policy=NO_CACHE)
def log_global_model(
    weights_path: str, data: SiteData, spec: ModelSpec, seed: int, mlflow_run_id: str
) -> str:
    """Log the final global model (pt2, input example, feature names) and its test metrics; return its URI."""
    test = pd.read_csv(data.test_path)
    features = [column for column in test.columns if column != TARGET]
    model = build_model(len(features), spec, seed)
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    loss, accuracy = evaluate(model, *load_rows(data.test_path))
    with tracking.use_run(mlflow_run_id):
        tracking.log_run_report(metrics={"test_accuracy": accuracy, "test_loss": loss})
        return tracking.log_model(
            model.eval(),
            input_example=test[features].head(5).to_numpy(dtype="float32", copy=True),
            metadata={"features": features, "target": TARGET},
        )


@task(cache_policy=NO_CACHE)
def promote_global_model(
    mlflow_run_id: str, model_uri: str, model_name: str, test_path: str
) -> registry.PromotionDecision:
    """Register the global model; `@champion` moves only if it beats the champion on the hold-out set."""
    test = pd.read_csv(test_path)
    features = [column for column in test.columns if column != TARGET]
    return registry.register_and_promote(
        run_id=mlflow_run_id,
        model_uri=model_uri,
        name=model_name,
        metric="test_accuracy",
        evaluate=model_scorer(test, TARGET, features, "accuracy"),
    )
