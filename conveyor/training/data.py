"""Dataset splits and the LightningDataModule over a catalog CSV (picklable for ddp_spawn workers)."""

from __future__ import annotations

import lightning as L
import pandas as pd
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from conveyor.training.model import frame_to_dataset

VAL_FRACTION = TEST_FRACTION = 0.15


def split_frame(
    frame: pd.DataFrame,
    target: str | None,
    seed: int,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Deterministic train/validation/test split, stratified by `target` when given (classification)."""
    stratify = frame[target] if target else None
    rest, test = train_test_split(frame, test_size=test_fraction, random_state=seed, stratify=stratify)
    stratify = rest[target] if target else None
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), random_state=seed, stratify=stratify
    )
    return train, val, test


class TabularDataModule(L.LightningDataModule):
    """Train/val/test loaders over a CSV file; every process reads and splits it the same way."""

    def __init__(
        self,
        csv_path: str,
        target: str,
        features: list[str],
        batch_size: int = 64,
        val_fraction: float = VAL_FRACTION,
        test_fraction: float = TEST_FRACTION,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.splits: dict[str, pd.DataFrame] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        frame = pd.read_csv(hp["csv_path"])
        train, val, test = split_frame(
            frame, hp["target"], hp["seed"], hp["val_fraction"], hp["test_fraction"]
        )
        self.splits = {"train": train, "val": val, "test": test}

    def dataset(self, split: str) -> TensorDataset:
        """The rows of `split` ("train", "val" or "test") as tensors; call `setup` first."""
        return frame_to_dataset(self.splits[split], self.hparams["target"], self.hparams["features"])

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.hparams["batch_size"], shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
