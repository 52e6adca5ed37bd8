"""End to end: real SuperLink/SuperNode processes, the `federated-training` flow, MLflow and the registry."""

from __future__ import annotations

import mlflow
import psutil
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from conveyor import registry, tracking
from conveyor.federated.task import load_rows
from flows.federated_training import FederatedParams, federated_training

pytestmark = pytest.mark.slow


def flower_processes_of(run_dir: str) -> list[psutil.Process]:
    """Live processes started for this run (they all inherit FLWR_HOME=<run_dir>/flwr-home)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("FLWR_HOME", "").startswith(run_dir):
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def task_run_names(flow_run_id) -> set[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name for run in runs if run.state and run.state.is_completed()}


class TestFederation:
    @pytest.fixture(scope="class")
    def finished(self):
        params = FederatedParams(sites=3, rounds=2, local_epochs=3, model_name="test-federated")
        state = federated_training(params, return_state=True)
        return state.result(), state.state_details.flow_run_id

    def test_every_site_trains_in_every_round(self, finished):
        summary, _ = finished
        assert [r["round"] for r in summary.rounds] == [1, 2]
        for record in summary.rounds:
            assert record["trained"] == ["site-0", "site-1", "site-2"] and record["missing"] == []
            assert 0.0 <= record["test_accuracy"] <= 1.0 and record["seconds"] > 0
            assert record["site_accuracy"] is not None

    def test_each_round_is_a_prefect_task(self, finished):
        summary, flow_run_id = finished
        assert {"round-1", "round-2"} <= task_run_names(flow_run_id)

    def test_rounds_are_in_mlflow(self, finished):
        summary, _ = finished
        history = tracking.client().get_metric_history(summary.mlflow_run_id, "round_test_accuracy")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == [
            pytest.approx(r["test_accuracy"]) for r in summary.rounds
        ]
        sites = tracking.client().get_metric_history(summary.mlflow_run_id, "round_sites_trained")
        assert {m.value for m in sites} == {3.0}
        run = tracking.client().get_run(summary.mlflow_run_id)
        assert "baseline_centralized_accuracy" in run.data.metrics
        assert run.data.params["sites"] == "3"

    def test_global_model_is_registered_as_champion(self, finished):
        summary, _ = finished
        assert summary.promoted and registry.champion_version("test-federated") == summary.model_version
        features, labels = load_rows(f"{summary.run_dir}/data/test.csv")
        tracking.client()
        model = mlflow.pyfunc.load_model("models:/test-federated@champion")
        predictions = model.predict(features.numpy()).argmax(axis=1)
        assert (predictions == labels.numpy()).mean() == pytest.approx(summary.test_accuracy)

    def test_no_flower_process_is_left(self, finished):
        summary, _ = finished
        assert flower_processes_of(summary.run_dir) == []


class TestFaults:
    def test_a_round_closes_without_a_crashed_and_a_hung_site(self):
        params = FederatedParams(
            sites=4,
            rounds=1,
            min_sites=2,
            local_epochs=1,
            fraction_evaluate=0.0,
            round_timeout_s=90,  # healthy sites must answer in time even on a loaded 2-core machine
            faults={2: "crash", 3: "hang"},
            model_name="test-federated-faults",
        )
        summary = federated_training(params)
        assert summary.rounds[0]["trained"] == ["site-0", "site-1"]
        assert summary.rounds[0]["missing"] == ["site-2", "site-3"]
        assert registry.champion_version("test-federated-faults") == summary.model_version
        assert flower_processes_of(summary.run_dir) == []
