"""Flower ClientApp: one site answers with its feature moments, local training and local evaluation.

The site's rows come from the SuperNode's `--node-config "site-id=I data-path=FILE"`; only model weights,
moments and metrics leave it. `fault="crash"|"hang"` in the node config makes the site fail on purpose
(fault drills: the federation must finish without it or fail naming it).
"""

from __future__ import annotations

import os
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from conveyor import runtime
from conveyor.federated.params import FederatedParams
from conveyor.federated.task import (
    ProximalClassifier,
    build_model,
    evaluate,
    feature_moments,
    load_rows,
    record_number,
    train_local,
)

app = ClientApp()


def _site_id(context: Context) -> int:
    return int(context.node_config["site-id"])


def _site(context: Context) -> ConfigRecord:
    """Which site answers: lets the coordinator name sites in its records and errors."""
    return ConfigRecord({"site-id": _site_id(context)})


def _site_rows(context: Context):
    path = context.node_config.get("data-path")
    if not path:
        raise ValueError(f"SuperNode {context.node_id} has no node-config 'data-path'")
    runtime.limit_torch_threads(1)
    return load_rows(str(path))


def _params(context: Context) -> FederatedParams:
    return FederatedParams.from_run_config(context.run_config)


def _received_model(message: Message, num_features: int, context: Context) -> ProximalClassifier:
    params = _params(context)
    model = build_model(num_features, params.model, seed=params.seed, kind=ProximalClassifier)
    model.load_state_dict(message.content.array_records["arrays"].to_torch_state_dict())
    return model


def _act_out_fault(context: Context) -> None:
    fault = context.node_config.get("fault", "")
    if fault == "crash":
        os._exit(17)
    if fault == "hang":
        time.sleep(24 * 3600)


@app.query("feature_moments")
def moments(message: Message, context: Context) -> Message:
    """Row count and per-feature sums / sums of squares, for pooled standardisation."""
    features, _ = _site_rows(context)
    content = RecordDict({"moments": MetricRecord(dict(feature_moments(features))), "site": _site(context)})
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model on this site's rows for `local-epochs`."""
    _act_out_fault(context)
    features, labels = _site_rows(context)
    model = _received_model(message, features.shape[1], context)
    config = message.content.config_records["config"]
    model.anchor(float(record_number(config, "proximal-mu", default=0.0)))
    server_round = int(record_number(config, "server-round"))
    params = _params(context)
    loss = train_local(
        model,
        features,
        labels,
        epochs=params.local_epochs,
        batch_size=params.batch_size,
        seed=params.seed * 1000 + server_round * 100 + _site_id(context),
    )
    metrics = MetricRecord({"train-loss": loss, "num-examples": len(labels)})
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": metrics, "site": _site(context)}
    )
    return Message(content, reply_to=message)


@app.evaluate()
def local_evaluate(message: Message, context: Context) -> Message:
    """Loss and accuracy of the received global model on this site's rows."""
    features, labels = _site_rows(context)
    model = _received_model(message, features.shape[1], context)
    loss, accuracy = evaluate(model, features, labels)
    metrics = MetricRecord({"site-loss": loss, "site-accuracy": accuracy, "num-examples": len(labels)})
    return Message(RecordDict({"metrics": metrics}), reply_to=message)
