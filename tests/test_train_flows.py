"""The train-tabular and train-model flows end to end: tracking, registry, bad input, divergence, DDP."""

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from pydantic import ValidationError

from conveyor import datasets, registry, tracking
from conveyor.training.fit import ModelConfig
from flows.train_model import TrainModelParams, train_model
from flows.train_tabular import ForestConfig, TrainTabularParams, train_tabular
from tasks.training import checkpoint_dir

REPO = Path(__file__).resolve().parent.parent
TINY = {"epochs": 3, "batch_size": 64, "model": ModelConfig(hidden=16, layers=1)}


def flow_run_count(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.count_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))


def epochs_logged(run_id: str, metric: str) -> list[int]:
    return [m.step for m in tracking.client().get_metric_history(run_id, metric)]


class TestTrainTabular:
    def test_trains_tracks_registers_and_serves(self):
        result = train_tabular(
            TrainTabularParams(model_name="tab-cancer", forest=ForestConfig(n_estimators=20))
        )
        run = tracking.client().get_run(result.run_id)
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["prefect.flow_name"] == "train-tabular" and tags["prefect.flow_run_id"]
        assert tags["conveyor.dataset_id"] == "breast_cancer"
        assert tags["conveyor.dataset_sha256"] == datasets.describe("breast_cancer").sha256
        assert len(tags["dvc.md5"]) == 32
        assert run.data.metrics["test_accuracy"] > 0.85
        assert run.data.params["forest.n_estimators"] == "20"
        assert run.inputs.dataset_inputs[0].dataset.name == "breast_cancer"
        assert result.decision.promoted and registry.champion_version("tab-cancer") == result.decision.version

        version, model = registry.load_champion("tab-cancer")
        rows = datasets.load("breast_cancer").drop(columns="malignant").head(3).to_dict(orient="records")
        assert version == "1" and len(registry.predict_rows(model, rows)) == 3

    def test_uploaded_regression_csv(self):
        rng = np.random.default_rng(1)
        x = rng.normal(size=200)
        csv = "x,region,y\n" + "\n".join(f"{v},{'NS'[i % 2]},{3 * v + (i % 2)}" for i, v in enumerate(x))
        datasets.save_upload("toy_regression", csv.encode())
        result = train_tabular(
            TrainTabularParams(
                dataset="toy_regression", target="y", task="regression", forest=ForestConfig(n_estimators=10)
            )
        )
        assert result.decision.metric == "test_rmse" and not result.decision.greater_is_better
        assert result.decision.challenger_value < 1.0

    @pytest.mark.parametrize(
        ("csv", "target", "problem"),
        [
            ("a,b\n" + "1,0\n2,1\n" * 10, "label", "target column 'label' is missing"),
            ("a,label\n" + "1,0\n,1\n" * 10, "label", "missing values (NaN) in columns: a (10)"),
            ("a,label\n" + "1,1\n2,1\n" * 10, "label", "single class"),
        ],
        ids=["missing-target", "nan-feature", "single-class"],
    )
    def test_bad_dataset_fails_before_training(self, csv, target, problem):
        datasets.save_upload("bad_upload", csv.encode())
        runs_before = len(tracking.client().search_runs([tracking.experiment_id("train-tabular")]))
        state = train_tabular(TrainTabularParams(dataset="bad_upload", target=target), return_state=True)
        assert state.is_failed()
        with pytest.raises(ValueError) as failure:
            state.result()
        assert problem in str(failure.value)
        assert len(tracking.client().search_runs([tracking.experiment_id("train-tabular")])) == runs_before


@pytest.mark.parametrize(
    ("params", "settings"),
    [
        (TrainTabularParams, {"n_estimators": 3}),  # belongs under `forest`
        (TrainTabularParams, {"forest": {"n_estimator": 3}}),
        (TrainModelParams, {"epoch": 3}),
        (TrainModelParams, {"model": {"hiden": 8}}),
    ],
)
def test_a_mistyped_setting_is_refused_not_ignored(params, settings):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        params.model_validate(settings)


class TestTrainModel:
    def test_trains_logs_epochs_registers_and_serves(self):
        result = train_model(TrainModelParams(model_name="mlp-cancer", **TINY))
        assert epochs_logged(result.run_id, "val_loss") == [0, 1, 2]
        assert result.metrics["val_accuracy"] > 0.8
        run = tracking.client().get_run(result.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_name"] == "train-model"
        artifacts = {a.path for a in tracking.client().list_artifacts(result.run_id)}
        assert "last" in artifacts
        version, model = registry.load_champion("mlp-cancer")
        rows = datasets.load("breast_cancer").drop(columns="malignant").head(1).to_numpy().tolist()
        probabilities = registry.predict_rows(model, rows)
        assert len(probabilities) == 1 and math.isclose(sum(probabilities[0]), 1.0, rel_tol=1e-5)

    def test_diverging_loss_fails_the_run_and_keeps_the_champion(self):
        name = "mlp-diverge"
        train_model(TrainModelParams(model_name=name, **TINY))
        exploding = ModelConfig(hidden=16, layers=1, optimizer="sgd", lr=1e12, dropout=0.0)
        state = train_model(TrainModelParams(model_name=name, epochs=3, model=exploding), return_state=True)
        assert state.is_failed()
        with pytest.raises(RuntimeError, match="diverged"):
            state.result()
        failed = tracking.client().search_runs(
            [tracking.experiment_id("train-model")], order_by=["start_time DESC"]
        )[0]
        assert failed.info.status == "FAILED"
        assert registry.champion_version(name) == "1"
        assert len(tracking.client().search_model_versions(f"name='{name}'")) == 1

    def test_resume_continues_the_same_run_from_its_last_checkpoint_artifact(self):
        first = train_model(
            TrainModelParams(model_name="mlp-resume", epochs=2, patience=10, model=TINY["model"])
        )
        shutil.rmtree(checkpoint_dir(first.run_id))  # another machine: only the run's artifacts remain
        resumed = train_model(
            TrainModelParams(
                model_name="mlp-resume",
                epochs=4,
                patience=10,
                model=TINY["model"],
                resume_run_id=first.run_id,
            )
        )
        assert resumed.run_id == first.run_id
        assert epochs_logged(first.run_id, "train_loss") == [0, 1, 2, 3]
        assert tracking.client().get_run(first.run_id).info.status == "FINISHED"

    def test_ddp_over_two_cpu_processes_keeps_one_flow_run_and_one_mlflow_run(self):
        flow_runs = flow_run_count("train-model")
        mlflow_runs = len(tracking.client().search_runs([tracking.experiment_id("train-model")]))
        result = train_model(TrainModelParams(model_name="mlp-ddp", devices=2, strategy="ddp", **TINY))
        assert flow_run_count("train-model") == flow_runs + 1
        assert len(tracking.client().search_runs([tracking.experiment_id("train-model")])) == mlflow_runs + 1
        assert epochs_logged(result.run_id, "val_loss") == [0, 1, 2]
        assert result.decision.promoted and result.metrics["val_accuracy"] > 0.8

    def test_multi_node_ddp_with_a_worker_node_joining_on_localhost(self, monkeypatch):
        rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
        worker = subprocess.Popen(
            [sys.executable, "-m", "flows.train_model", "--ddp-worker"],
            env=os.environ | rendezvous | {"NODE_RANK": "1"}, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        for name, value in (rendezvous | {"NODE_RANK": "0"}).items():
            monkeypatch.setenv(name, value)
        mlflow_runs = len(tracking.client().search_runs([tracking.experiment_id("train-model")]))
        try:
            result = train_model(
                TrainModelParams(model_name="mlp-nodes", num_nodes=2, devices=1, strategy="ddp", **TINY)
            )
            output, _ = worker.communicate(timeout=300)
        finally:
            worker.kill()
        assert worker.returncode == 0, output[-2000:]
        assert len(tracking.client().search_runs([tracking.experiment_id("train-model")])) == mlflow_runs + 1
        assert epochs_logged(result.run_id, "val_loss") == [0, 1, 2]
        assert result.decision.promoted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
