"""Training figures: samples/s of 1 process vs DDP over 2 CPU processes, and where a flow run's time goes.

`python -m bench.bench_training [--epochs N]` runs `train-model` (1 process, DDP launched with torchrun,
ddp_spawn) and `train-tabular` in a throw-away state folder and prints, per run, the fit throughput and
the split of the flow's wall time into its tasks (data, fit, logging, registration) and the rest
(Prefect orchestration plus opening/closing the MLflow run in the flow body).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from conveyor import tracking
from conveyor.settings import reset_settings

PHASES = {
    "check_dataset": "data",
    "log_training_inputs": "data",
    "fit_lightning": "fit",
    "fit_tabular": "fit",
    "log_lightning_model": "logging",
    "promote": "registration",
}


def task_seconds(flow_run_id: str) -> dict[str, float]:
    """Seconds per phase, summed over the flow run's task runs, as Prefect recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    phases: dict[str, float] = {}
    for run in runs:
        phase = PHASES.get(run.task_key.rsplit("-", 1)[0], run.name)
        phases[phase] = phases.get(phase, 0.0) + run.total_run_time.total_seconds()
    return phases


def report(label: str, wall: float, run_id: str, rows: int) -> None:
    run = tracking.client().get_run(run_id)
    phases = task_seconds(run.data.tags["prefect.flow_run_id"])
    overhead = wall - sum(phases.values())
    split = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
    speed = run.data.metrics.get("samples_per_second")
    throughput = f"fit {speed:,.0f} samples/s, " if speed else ""
    print(
        f"{label:<28} wall {wall:5.1f}s | {throughput}{rows} training rows | {split}, "
        f"outside tasks {overhead:.1f}s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    saved = {k: os.environ.get(k) for k in ("CONVEYOR_HOME", "CONVEYOR_DATA_DIR")}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-training-") as home:
        _isolate(Path(home))
        try:
            _run(args.epochs, args.batch_size)
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
            reset_settings()


def _isolate(home: Path) -> None:
    from data.prepare import export_breast_cancer

    (home / "data" / "tabular").mkdir(parents=True)
    export_breast_cancer().to_csv(home / "data" / "tabular" / "breast_cancer.csv", index=False)
    os.environ["CONVEYOR_HOME"] = str(home / "state")
    os.environ["CONVEYOR_DATA_DIR"] = str(home / "data")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # busy shared cores
    reset_settings()


def _start_stores() -> None:
    """Start the temporary Prefect server and create the MLflow tables before timing anything."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()
    tracking.check_reachable()


def _run(epochs: int, batch_size: int) -> None:
    from conveyor import datasets
    from conveyor.training.data import split_frame
    from flows.train_model import TrainModelParams, train_model
    from flows.train_tabular import TrainTabularParams, train_tabular

    print(
        f"train-model: breast_cancer MLP, {epochs} epochs, batch {batch_size}, CPU (shared machine: "
        "other load slows every figure)"
    )
    runs = [
        ("train-model 1 process", {"devices": 1}),
        ("train-model DDP 2 (torchrun)", {"devices": 2, "strategy": "ddp"}),
        ("train-model ddp_spawn 2", {"devices": 2, "strategy": "ddp_spawn"}),
    ]
    _start_stores()
    rows = len(split_frame(datasets.load("breast_cancer"), "malignant", seed=0)[0])
    for label, hardware in runs:
        params = TrainModelParams(
            model_name="bench-mlp", epochs=epochs, batch_size=batch_size, patience=epochs, **hardware
        )
        started = time.perf_counter()
        result = train_model(params)
        report(label, time.perf_counter() - started, result.run_id, rows)
    started = time.perf_counter()
    tabular = train_tabular(TrainTabularParams(model_name="bench-forest"))
    report("train-tabular (100 trees)", time.perf_counter() - started, tabular.run_id, rows)


if __name__ == "__main__":
    main()
