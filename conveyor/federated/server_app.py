"""Flower ServerApp: pooled standardisation from the sites' moments, then FedAvg/FedProx rounds, journaled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from conveyor import runtime
from conveyor.federated.journal import JOURNAL_FILE, FederationError, Journal
from conveyor.federated.params import FederatedParams
from conveyor.federated.task import (
    build_model,
    evaluate,
    load_rows,
    pooled_standardization,
    record_number,
)

GLOBAL_MODEL_FILE = "global_model.pt"
app = ServerApp()


class SiteTracking:
    """Strategy mixin: records which sites each round asked and heard from, and enforces the minimum."""

    def __init__(self, *, sites: dict[int, str], **strategy_options: Any) -> None:
        super().__init__(**strategy_options)
        self.sites = sites  # node id -> "site-<i>", learnt from the sites' replies
        self.rounds: dict[int, dict[str, Any]] = {}

    def site(self, node_id: int) -> str:
        return self.sites.get(node_id, f"node-{node_id}")

    def configure_train(self, server_round, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        asked = sorted(self.site(m.metadata.dst_node_id) for m in messages)
        self.rounds[server_round] = {"started": time.time(), "asked": asked}
        return messages

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        valid = [r for r in replies if not r.has_error()]
        self.sites |= {r.metadata.src_node_id: site_label(r) for r in valid}
        record = self.rounds[server_round]
        record["trained"] = sorted(self.site(r.metadata.src_node_id) for r in valid)
        record["missing"] = sorted(set(record["asked"]) - set(record["trained"]))
        if len(valid) < self.min_train_nodes:
            raise FederationError(
                f"round {server_round}: {len(valid)} of {len(record['asked'])} sites replied, minimum is "
                f"{self.min_train_nodes}; no valid reply from {', '.join(record['missing'])}"
            )
        arrays, metrics = super().aggregate_train(server_round, valid)
        record["train_loss"] = float(metrics["train-loss"]) if metrics else None
        return arrays, metrics

    def aggregate_evaluate(self, server_round, replies):
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics:
            self.rounds[server_round] |= {
                "site_loss": float(metrics["site-loss"]),
                "site_accuracy": float(metrics["site-accuracy"]),
            }
        return metrics


def site_label(reply: Message) -> str:
    return f"site-{int(record_number(reply.content.config_records['site'], 'site-id'))}"


class TrackedFedAvg(SiteTracking, FedAvg):
    """FedAvg with per-round site tracking."""


class TrackedFedProx(SiteTracking, FedProx):
    """FedProx with per-round site tracking."""


def gather_sites(grid: Grid, expected: int, minimum: int, timeout_s: float) -> dict[int, dict[str, Any]]:
    """Wait for the sites to connect and collect each one's id and feature moments, keyed by node id."""
    polling = Retrying(
        retry=retry_if_result(lambda nodes: len(nodes) < expected),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(0.5),
    )
    try:
        nodes = polling(lambda: list(grid.get_node_ids()))
    except RetryError as error:
        nodes = error.last_attempt.result()  # the sites connected by the deadline
    if len(nodes) < minimum:
        raise FederationError(
            f"{len(nodes)} of {expected} sites connected within {timeout_s:.0f} s, minimum is {minimum}"
        )
    query = [
        Message(
            RecordDict({"config": ConfigRecord()}),
            dst_node_id=node,
            message_type=f"{MessageType.QUERY}.feature_moments",
        )
        for node in nodes
    ]
    replies = [r for r in grid.send_and_receive(query, timeout=timeout_s) if not r.has_error()]
    if len(replies) < minimum:
        raise FederationError(
            f"{len(replies)} of {len(nodes)} sites sent feature moments, minimum is {minimum}"
        )
    return {
        r.metadata.src_node_id: {"site": site_label(r), "moments": dict(r.content["moments"])}
        for r in replies
    }


def _strategy(params: FederatedParams, sites: dict[int, str]) -> TrackedFedAvg | TrackedFedProx:
    options = {
        "fraction_train": params.fraction_train,
        "fraction_evaluate": params.fraction_evaluate,
        "min_train_nodes": params.min_sites,
        "min_evaluate_nodes": min(params.min_sites, len(sites)),
        "min_available_nodes": params.min_sites,
    }
    if params.strategy == "fedprox":
        return TrackedFedProx(sites=sites, proximal_mu=params.proximal_mu, **options)
    return TrackedFedAvg(sites=sites, **options)


def federate(grid: Grid, params: FederatedParams, run_dir: Path, test_data: str, journal: Journal) -> Path:
    """Run the whole federation; returns the file in `run_dir` holding the final global weights."""
    runtime.limit_torch_threads(1)
    test_features, test_labels = load_rows(test_data)
    timeout_s = params.round_timeout_s
    found = gather_sites(grid, params.sites, params.min_sites, timeout_s)
    journal.write("sites", sites=sorted(site["site"] for site in found.values()))

    model = build_model(test_features.shape[1], params.model, seed=params.seed)
    mean, std = pooled_standardization([site["moments"] for site in found.values()])
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std)
    strategy = _strategy(params, {node: site["site"] for node, site in found.items()})

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, test_features, test_labels)
        record = strategy.rounds.get(server_round, {})
        seconds = round(time.time() - record["started"], 3) if record else 0.0
        journal.write(
            "round" if server_round else "initial",
            round=server_round,
            test_loss=loss,
            test_accuracy=accuracy,
            seconds=seconds,
            **{k: v for k, v in record.items() if k != "started"},
        )
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=params.rounds,
        timeout=timeout_s,
        train_config=ConfigRecord(),
        evaluate_fn=evaluate_global,
    )
    model_path = run_dir / GLOBAL_MODEL_FILE
    torch.save(result.arrays.to_torch_state_dict(), model_path)
    return model_path


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Federate, journaling each round; a failure is journaled with its reason before it propagates."""
    config = context.run_config
    run_dir = Path(str(config["run-dir"]))
    journal = Journal(run_dir / JOURNAL_FILE)
    try:
        params = FederatedParams.from_run_config(config)
        model_path = federate(grid, params, run_dir, str(config["test-data"]), journal)
    except Exception as exc:
        journal.write("failed", reason=f"{type(exc).__name__}: {exc}")
        raise
    journal.write("finished", model_path=str(model_path))
