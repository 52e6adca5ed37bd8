"""One Lightning fit, in-process or as its own torchrun process: `python -m conveyor.training.fit CONFIG`.

Launching the fit as its own process is how DDP and multi-node training stay out of the Prefect flow:
Lightning's `ddp` launcher re-executes the current script for every extra rank, so running it inside
a flow would start duplicate flow runs. Only global rank 0 talks to MLflow and writes the outcome file.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from pydantic import BaseModel, ConfigDict

from conveyor.training.data import TabularDataModule
from conveyor.training.model import TabularClassifier

LAST_CHECKPOINT_ARTIFACT = "last/last.ckpt"
Precision = Literal["32-true", "16-mixed", "bf16-mixed", "64-true"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: int = 32
    layers: int = 2
    dropout: float = 0.1
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"


class FitConfig(BaseModel):
    """Everything one fit needs; serialisable so a launcher can hand it to other processes."""

    csv_path: str
    target: str
    features: list[str]
    num_classes: int
    model: ModelConfig = ModelConfig()
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Precision = "32-true"
    epochs: int = 10
    batch_size: int = 64
    patience: int = 5
    seed: int = 0
    torch_threads: int = 1
    tracking_uri: str
    run_id: str
    checkpoint_dir: str
    resume_checkpoint: str | None = None
    outcome_path: str


class FitOutcome(BaseModel):
    best_checkpoint: str
    last_checkpoint: str
    epochs_completed: int
    metrics: dict[str, float]
    diverged: bool
    samples_per_second: float


class _RunLogger(MLFlowLogger):
    """Logs into the flow's MLflow run and leaves ending it to the flow (which logs the model after).

    Lightning's hyperparameters get a `lightning.` prefix so they never clash with the flow's params;
    epoch-level metrics are stepped by epoch, so every run's history reads per epoch.
    """

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(metrics, int(metrics["epoch"]) if "epoch" in metrics else step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        super().log_hyperparams({f"lightning.{key}": value for key, value in params.items()})

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        return None


def fit(config: FitConfig) -> FitOutcome | None:
    """Train `TabularClassifier` on the config's CSV; rank 0 returns (and writes) the outcome."""
    from conveyor.runtime import limit_torch_threads

    limit_torch_threads(config.torch_threads)
    L.seed_everything(config.seed, workers=True)
    data = TabularDataModule(
        config.csv_path, config.target, config.features, batch_size=config.batch_size, seed=config.seed
    )
    data.setup()
    model = TabularClassifier(len(config.features), config.num_classes, **config.model.model_dump())
    train_features = data.dataset("train").tensors[0]
    model.set_standardization(train_features)
    checkpoint = ModelCheckpoint(dirpath=config.checkpoint_dir, monitor="val_loss", save_last=True)
    trainer = L.Trainer(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,
        max_epochs=config.epochs,
        logger=_RunLogger(tracking_uri=config.tracking_uri, run_id=config.run_id, log_model="all"),
        callbacks=[
            checkpoint,
            EarlyStopping(monitor="val_loss", patience=config.patience, check_finite=True),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    started = time.perf_counter()
    trainer.fit(model, datamodule=data, ckpt_path=config.resume_checkpoint)
    seconds = time.perf_counter() - started
    if trainer.global_rank != 0:
        return None
    # Read progress from the files: after ddp_spawn this process's trainer never ran the loop.
    last = Path(config.checkpoint_dir) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
    epochs_done = _checkpoint_epochs(str(last))
    epochs_trained = max(epochs_done - _checkpoint_epochs(config.resume_checkpoint), 1)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    outcome = FitOutcome(
        best_checkpoint=checkpoint.best_model_path or str(last),
        last_checkpoint=str(last),
        epochs_completed=epochs_done,
        metrics=metrics,
        diverged=not all(math.isfinite(v) for v in metrics.values()),
        samples_per_second=len(data.splits["train"]) * epochs_trained / seconds,
    )
    Path(config.outcome_path).write_text(outcome.model_dump_json())
    return outcome


def _checkpoint_epochs(path: str | None) -> int:
    """Epochs completed when the checkpoint at `path` was written (0 without one)."""
    if not path:
        return 0
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one Lightning fit from a FitConfig JSON file.")
    parser.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    fit(FitConfig.model_validate(json.loads(args.config.read_text())))


if __name__ == "__main__":
    main()
