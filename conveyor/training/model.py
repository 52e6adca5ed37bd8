"""The one LightningModule (an MLP classifier over numeric tabular features) and its tensor helpers.

Local, DDP, multi-node and federated training all use `TabularClassifier`. Its `forward` takes raw
feature values (standardisation is a buffer inside the model) and returns class probabilities, so a
logged model serves predictions directly; training uses the logits from `logits`.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset


class TabularClassifier(L.LightningModule):
    """A small multi-layer perceptron classifier with built-in feature standardisation.

    Args:
        num_features: number of input columns.
        num_classes: number of target classes (labels are 0..num_classes-1).
        hidden: width of each hidden layer.
        layers: number of hidden layers.
        dropout: dropout after each hidden layer.
        lr: learning rate.
        weight_decay: AdamW weight decay.
        optimizer: "adamw" or "sgd".
    """

    feature_mean: Tensor  # buffers registered in __init__
    feature_std: Tensor

    def __init__(
        self,
        num_features: int,
        num_classes: int = 2,
        hidden: int = 32,
        layers: int = 2,
        dropout: float = 0.1,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        blocks: list[nn.Module] = []
        width = num_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, num_classes))
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))

    def set_standardization(self, features: Tensor) -> None:
        """Standardise inputs with the mean and spread of these (training) features."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-6))

    def logits(self, features: Tensor) -> Tensor:
        return self.net((features - self.feature_mean) / self.feature_std)

    def forward(self, features: Tensor) -> Tensor:
        """Class probabilities for raw feature rows."""
        return torch.softmax(self.logits(features), dim=-1)

    def _common_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        features, labels = batch
        logits = self.logits(features)
        loss = nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=on_step, sync_dist=not on_step)
        self.log(f"{stage}_accuracy", accuracy, on_step=False, on_epoch=True, sync_dist=not on_step)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._common_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._common_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if hp["optimizer"] == "sgd":
            return torch.optim.SGD(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        return torch.optim.AdamW(self.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])


def feature_array(frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """The feature columns as a float32 array (the model's input format)."""
    return frame[features].to_numpy(dtype=np.float32)


def frame_to_tensors(frame: pd.DataFrame, target: str, features: list[str]) -> tuple[Tensor, Tensor]:
    """Feature rows as float32 and integer class labels as int64 tensors."""
    return torch.from_numpy(feature_array(frame, features)), torch.from_numpy(
        frame[target].to_numpy(np.int64)
    )


def frame_to_dataset(frame: pd.DataFrame, target: str, features: list[str]) -> TensorDataset:
    return TensorDataset(*frame_to_tensors(frame, target, features))


def accuracy(model: TabularClassifier, features: Tensor, labels: Tensor) -> float:
    """Share of rows whose most probable class is the label."""
    model.eval()
    with torch.no_grad():
        return float((model(features).argmax(dim=-1) == labels).float().mean())
