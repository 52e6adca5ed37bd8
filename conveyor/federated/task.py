"""Sites' private data (a seeded non-IID split), the shared model and local training for the Flower app.

The data is scikit-learn's bundled Wisconsin breast-cancer set (569 rows, 30 features, offline). The rule:
a stratified `test_fraction` hold-out (seeded) is the coordinator's evaluation set; the rest is split over
the sites by label with per-class shares drawn from Dirichlet(alpha) (`dirichlet_partition`), redrawn
until every site has `MIN_SITE_ROWS` rows. Small alpha = more skewed sites. Each site's rows go to its own
CSV file; a site's process reads only that file.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, overload

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from conveyor.training.model import TabularClassifier

if TYPE_CHECKING:
    from flwr.app import ConfigRecord

TARGET = "target"
MIN_SITE_ROWS = 20
MAX_DRAWS = 1000
Classifier = TypeVar("Classifier", bound=TabularClassifier)


class SiteData(BaseModel):
    """Where each site's private rows and the coordinator's hold-out set were written."""

    site_paths: list[str]
    test_path: str
    site_rows: list[int]
    site_positive_share: list[float]


class ModelSpec(BaseModel):
    """The shared MLP's shape and optimiser, identical at every site and at the coordinator."""

    hidden: int = 32
    layers: int = 2
    dropout: float = 0.1
    learning_rate: float = 1e-2


def dirichlet_partition(labels: np.ndarray, num_sites: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Row indices per site: each class's rows are dealt out in Dirichlet(alpha) shares (seeded).

    Raises:
        ValueError: no draw gives every site `MIN_SITE_ROWS` rows (too many sites for the data).
    """
    if num_sites < 1 or alpha <= 0:
        raise ValueError(f"need num_sites >= 1 and alpha > 0, got {num_sites} and {alpha}")
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DRAWS):
        sites: list[list[int]] = [[] for _ in range(num_sites)]
        for label in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_sites, alpha)))[:-1] * len(rows)).astype(int)
            for site, part in zip(sites, np.split(rows, cuts), strict=True):
                site.extend(part.tolist())
        if min(len(site) for site in sites) >= MIN_SITE_ROWS:
            return [np.sort(np.array(site)) for site in sites]
    raise ValueError(
        f"cannot give {num_sites} sites {MIN_SITE_ROWS} rows each out of {len(labels)} (alpha={alpha}): "
        "use fewer sites or a larger alpha"
    )


def breast_cancer_frame() -> pd.DataFrame:
    """The bundled dataset as one frame: 30 float features and `target` (0 malignant, 1 benign)."""
    bunch = load_breast_cancer(as_frame=True)
    return bunch.frame.astype({TARGET: np.int64})


def write_site_data(
    out_dir: Path, num_sites: int, alpha: float, seed: int, test_fraction: float = 0.25
) -> SiteData:
    """Split the dataset by the documented rule and write `site-<i>.csv` files and `test.csv`."""
    frame = breast_cancer_frame()
    train, test = train_test_split(frame, test_size=test_fraction, stratify=frame[TARGET], random_state=seed)
    train = train.reset_index(drop=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, rows, positive = [], [], []
    for site, indices in enumerate(dirichlet_partition(train[TARGET].to_numpy(), num_sites, alpha, seed)):
        path = out_dir / f"site-{site}.csv"
        part = train.iloc[indices]
        part.to_csv(path, index=False)
        paths.append(str(path))
        rows.append(len(part))
        positive.append(round(float(part[TARGET].mean()), 4))
    test_path = out_dir / "test.csv"
    test.to_csv(test_path, index=False)
    return SiteData(site_paths=paths, test_path=str(test_path), site_rows=rows, site_positive_share=positive)


def load_rows(path: str | Path) -> tuple[Tensor, Tensor]:
    """Features (float32) and labels (int64) of one CSV written by `write_site_data`."""
    frame = pd.read_csv(path)
    if TARGET not in frame.columns:
        raise ValueError(f"{path} has no {TARGET!r} column")
    features = frame.drop(columns=[TARGET]).to_numpy(dtype=np.float32)
    return torch.tensor(features), torch.tensor(frame[TARGET].to_numpy(np.int64))


@overload
def build_model(num_features: int, spec: ModelSpec, seed: int) -> TabularClassifier: ...


@overload
def build_model(num_features: int, spec: ModelSpec, seed: int, kind: type[Classifier]) -> Classifier: ...


def build_model(
    num_features: int, spec: ModelSpec, seed: int, kind: type[TabularClassifier] = TabularClassifier
) -> TabularClassifier:
    """The shared `TabularClassifier` (or a subclass), initialised from `seed`."""
    torch.manual_seed(seed)
    return kind(
        num_features, hidden=spec.hidden, layers=spec.layers, dropout=spec.dropout, lr=spec.learning_rate
    )


class ProximalClassifier(TabularClassifier):
    """The shared model with FedProx's local objective: loss + mu/2 ||w - w_received||^2 (mu=0: FedAvg)."""

    def anchor(self, proximal_mu: float) -> None:
        """Fix the received global weights as the proximal term's centre."""
        self.proximal_mu = proximal_mu
        self.received = [p.detach().clone() for p in self.parameters()]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.proximal_mu > 0:
            drift = sum((p - g).pow(2).sum() for p, g in zip(self.parameters(), self.received, strict=True))
            loss = loss + self.proximal_mu / 2 * drift
        return loss


def record_number(record: ConfigRecord, key: str, default: float | None = None) -> int | float:
    """The number under `key` in a Flower record (`default` when absent); TypeError for text, bytes, lists."""
    if default is not None and key not in record:
        return default
    value = record[key]
    if not isinstance(value, int | float):
        raise TypeError(f"record entry {key!r} is a {type(value).__name__}, not a number")
    return value


def feature_moments(features: Tensor) -> dict[str, list[float]]:
    """Row count, per-feature sums and sums of squares: all a site reveals for standardisation."""
    values = features.double()
    return {
        "count": [float(len(values))],
        "sum": values.sum(0).tolist(),
        "sum-sq": (values**2).sum(0).tolist(),
    }


def pooled_standardization(moments: list[dict[str, list[float]]]) -> tuple[Tensor, Tensor]:
    """Mean and (sample) standard deviation of all sites' rows together, from their moments alone."""
    count = sum(m["count"][0] for m in moments)
    total = np.sum([m["sum"] for m in moments], axis=0)
    total_sq = np.sum([m["sum-sq"] for m in moments], axis=0)
    mean = total / count
    variance = np.maximum(total_sq - count * mean**2, 0.0) / max(count - 1, 1)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(
        np.sqrt(variance), dtype=torch.float32
    ).clamp_min(1e-6)


def train_local(
    model: TabularClassifier, features: Tensor, labels: Tensor, *, epochs: int, batch_size: int, seed: int
) -> float:
    """Fit `model` for `epochs` with the module's own Lightning training step; return the last loss."""
    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*number of training batches.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    loader = DataLoader(
        TensorDataset(features, labels),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    return float(trainer.callback_metrics["train_loss"])


def evaluate(model: TabularClassifier, features: Tensor, labels: Tensor) -> tuple[float, float]:
    """Cross-entropy loss and accuracy of `model` on these rows."""
    model.eval()
    with torch.no_grad():
        logits = model.logits(features)
    loss = float(nn.functional.cross_entropy(logits, labels))
    return loss, float((logits.argmax(dim=-1) == labels).float().mean())
