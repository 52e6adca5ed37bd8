"""Flow `federated-training`: FedAvg/FedProx over hospital sites' private rows, tracked and registered."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from conveyor import tracking
from conveyor.federated.launcher import LocalFederation
from conveyor.federated.params import FederatedParams
from conveyor.settings import get_settings
from tasks.federated import (
    await_global_model,
    federated_round,
    log_global_model,
    promote_global_model,
    split_sites,
    train_baselines,
)

EXPERIMENT = "federated-training"


class FederatedSummary(BaseModel):
    mlflow_run_id: str
    model_uri: str
    model_version: str
    promoted: bool
    test_accuracy: float
    baselines: dict[str, float]
    rounds: list[dict[str, Any]]
    run_dir: str


@flow(name="federated-training", log_prints=True)
def federated_training(params: FederatedParams | None = None) -> FederatedSummary:
    """Split the sites' data, federate over real SuperLink/SuperNode processes, compare, register."""
    params = params or FederatedParams()
    run_dir = get_settings().state_dir / "federated" / _run_name()
    data = split_sites(str(run_dir / "data"), params.sites, params.dirichlet_alpha, params.seed)
    round_wait_s = 4 * params.round_timeout_s + 60  # connect + moments + train + evaluate, with slack

    with tracking.start_run(
        EXPERIMENT, run_name=run_dir.name, tags={"conveyor.strategy": params.strategy}
    ) as run:
        run_id = run.info.run_id
        _log_params(params, data.site_rows)
        with LocalFederation(
            run_dir, _node_configs(data.site_paths, params.faults), params.base_port, params.startup_timeout_s
        ) as federation:
            federation.submit(params.run_config(str(run_dir), data.test_path))
            rounds = [
                federated_round(federation, n, run_id, round_wait_s) for n in range(1, params.rounds + 1)
            ]
            weights = await_global_model(federation, round_wait_s)
        baselines = train_baselines(
            data, params.model, params.rounds * params.local_epochs, params.batch_size, params.seed, run_id
        )
        model_uri = log_global_model(weights, data, params.model, params.seed, run_id)
    decision = promote_global_model(run_id, model_uri, params.model_name, data.test_path)

    summary = FederatedSummary(
        mlflow_run_id=run_id,
        model_uri=model_uri,
        model_version=decision.version,
        promoted=decision.promoted,
        test_accuracy=decision.challenger_value,
        baselines=baselines,
        rounds=rounds,
        run_dir=str(run_dir),
    )
    create_markdown_artifact(
        key="federated-training",
        markdown=_markdown(summary),
        description="FedAvg vs centralized vs single sites",
    )
    get_run_logger().info(
        "global model %s v%s: test accuracy %.4f (centralized %.4f, best site %.4f)",
        params.model_name,
        decision.version,
        summary.test_accuracy,
        baselines["centralized_accuracy"],
        baselines["site_best_accuracy"],
    )
    return summary


def _node_configs(site_paths: list[str], faults: dict[int, str]) -> list[dict[str, Any]]:
    """One SuperNode's `--node-config` per site: its id, its file and any fault drill."""
    return [
        {"site-id": i, "data-path": path} | ({"fault": faults[i]} if i in faults else {})
        for i, path in enumerate(site_paths)
    ]


def _run_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{str(flow_run.id or 'local')[:8]}"


def _log_params(params: FederatedParams, site_rows: list[int]) -> None:
    flat = params.model_dump(exclude={"model", "faults"}) | params.model.model_dump()
    tracking.log_run_report(params=flat | {"site_rows": site_rows, "faults": json.dumps(params.faults)})


def _markdown(summary: FederatedSummary) -> str:
    lines = [
        "| round | test accuracy | train loss | sites trained | missing | seconds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['round']} | {r['test_accuracy']:.4f} | {r.get('train_loss') or float('nan'):.4f} | "
        f"{r['trained']} | {r['missing']} | {r['seconds']:.1f} |"
        for r in summary.rounds
    ]
    base = summary.baselines
    lines += [
        "",
        f"Global model v{summary.model_version}: test accuracy **{summary.test_accuracy:.4f}** "
        f"(promoted: {summary.promoted}); centralized {base['centralized_accuracy']:.4f}, "
        f"single sites mean {base['site_mean_accuracy']:.4f} / best {base['site_best_accuracy']:.4f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="{}", help="FederatedParams as JSON, e.g. '{\"sites\": 3}'")
    args = parser.parse_args(argv)
    summary = federated_training(FederatedParams.model_validate_json(args.params))
    print(summary.model_dump_json(exclude={"rounds"}))


if __name__ == "__main__":
    main()
