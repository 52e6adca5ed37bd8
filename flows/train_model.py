"""Flow `train-model`: Lightning training of the tabular MLP, tracked, registered, promoted when better
(and, with `approve_promotion`, when a person approves: tasks/approval.py).

Run locally: `python -m flows.train_model --epochs 5 --devices 2` (DDP over 2 CPU processes).
"""

from __future__ import annotations

import argparse
from typing import ClassVar, Literal

from prefect import flow
from pydantic import BaseModel, Field

from conveyor import tracking
from conveyor.registry import PromotionDecision
from conveyor.settings import get_settings
from conveyor.training.fit import FitConfig, ModelConfig
from conveyor.training.launch import join_as_worker
from conveyor.training.params import TrainingParams
from tasks.approval import PromotionApproval, review_promotion
from tasks.training import (
    DatasetRef,
    check_dataset,
    checkpoint_dir,
    fit_lightning,
    log_lightning_model,
    log_training_inputs,
    promote,
    resume_checkpoint,
)

EXPERIMENT = "train-model"
SHARED_WITH_FIT = {
    "model", "accelerator", "devices", "num_nodes", "strategy", "precision",
    "epochs", "batch_size", "patience", "seed",
}  # fmt: skip


class TrainModelParams(TrainingParams, PromotionApproval):
    """Parameters of `train-model` (also the deployment's parameter schema); numeric features, an integer
    class label (0..K-1) as target."""

    model_kind: ClassVar[str] = "mlp"

    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = "cpu"
    devices: int = Field(1, ge=1, description="Processes (CPU) or GPUs per node.")
    num_nodes: int = Field(1, ge=1, description="Nodes; >1 expects MASTER_ADDR/MASTER_PORT/NODE_RANK.")
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    patience: int = Field(5, ge=1, description="Early-stopping patience on val_loss.")
    model: ModelConfig = ModelConfig()
    resume_run_id: str | None = Field(None, description="Continue this MLflow run from its last checkpoint.")


class TrainingResult(BaseModel):
    run_id: str
    model_uri: str
    decision: PromotionDecision
    metrics: dict[str, float]


@flow(name="train-model", log_prints=True)
def train_model(params: TrainModelParams | None = None) -> TrainingResult:
    """Check data, fit (one device, DDP or multi-node), log the model, register and promote it."""
    params = params or TrainModelParams()
    data = check_dataset(params.dataset, params.target, params.features, "classification", neural=True)
    with tracking.start_run(EXPERIMENT, tags=data.tags(), run_id=params.resume_run_id) as run:
        run_id = run.info.run_id
        log_training_inputs(run_id, params.model_dump(), data, resumed=params.resume_run_id is not None)
        outcome = fit_lightning(fit_config(params, data, run_id))
        model_uri = log_lightning_model(run_id, outcome, data)
        decision = promote(
            run_id, model_uri, params.registered_name, data, "accuracy", params.seed, params.approve_promotion
        )
    decision = review_promotion(decision, params)
    return TrainingResult(run_id=run_id, model_uri=model_uri, decision=decision, metrics=outcome.metrics)


def fit_config(params: TrainModelParams, data: DatasetRef, run_id: str) -> FitConfig:
    """The fit's full description, written where every rank (and a resumed run) can read it."""
    folder = checkpoint_dir(run_id)
    return FitConfig(
        **params.model_dump(include=SHARED_WITH_FIT),
        csv_path=data.path,
        target=data.target,
        features=data.features,
        num_classes=data.classes or 2,
        torch_threads=get_settings().torch_threads,
        tracking_uri=get_settings().tracking_uri,
        run_id=run_id,
        checkpoint_dir=str(folder),
        resume_checkpoint=resume_checkpoint(run_id) if params.resume_run_id else None,
        outcome_path=str(folder / "outcome.json"),
    )


def main(argv: list[str] | None = None) -> TrainingResult | None:
    parser = argparse.ArgumentParser(description="Run the train-model flow once, or join one as a DDP node.")
    parser.add_argument(
        "--ddp-worker",
        action="store_true",
        help="Node NODE_RANK>0 of a multi-node run: join node 0's fit (MASTER_ADDR/PORT).",
    )
    parser.add_argument("--approve-promotion", action="store_true", help="a person approves @champion")
    for name, field in TrainModelParams.model_fields.items():
        if field.annotation in (int, str, str | None) or name in {"accelerator", "strategy", "precision"}:
            parser.add_argument(f"--{name.replace('_', '-')}", type=int if field.annotation is int else str)
    args = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    if args.pop("ddp_worker"):
        join_as_worker()
        return None
    result = train_model(TrainModelParams(**args))
    print(result.model_dump_json(indent=2))
    return result


if __name__ == "__main__":
    main()
