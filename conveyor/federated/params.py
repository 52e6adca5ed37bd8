"""The federation's parameters: the one source of the Flower app's run config and of its defaults.

`FederatedParams.run_config` is what the flow submits; `FederatedParams.from_run_config` is how the
ServerApp and ClientApp read it back. The app's `[tool.flwr.app.config]` (keys a run may override, with
the values a bare `flwr run conveyor/federated` uses) is generated from these defaults:
`python -m conveyor.federated.params` rewrites it, and tests/test_federated.py checks it is current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import tomli_w
from flwr.app import UserConfig
from flwr.common.config import flatten_dict, unflatten_dict
from pydantic import BaseModel, Field, model_validator

from conveyor.federated.task import ModelSpec

APP_PYPROJECT = Path(__file__).with_name("pyproject.toml")
APP_CONFIG_TABLE = "\n[tool.flwr.app.config]\n"
# What the ServerApp and ClientApp read; the other fields are the flow's and the launcher's.
APP_FIELDS = {
    "sites",
    "rounds",
    "min_sites",
    "fraction_train",
    "fraction_evaluate",
    "strategy",
    "proximal_mu",
    "local_epochs",
    "batch_size",
    "model",
    "seed",
    "round_timeout_s",
}
PATH_KEYS = ("run-dir", "test-data")  # per-run paths, not parameters
MANUAL_RUN_DIR = ".conveyor/federated/manual"  # run-dir of a bare `flwr run`, relative to its cwd


class FederatedParams(BaseModel):
    """Federation size, rounds, strategy, local training and fault-tolerance settings."""

    sites: int = Field(3, ge=2, le=12, description="SuperNodes, one per site with its private rows.")
    rounds: int = Field(5, ge=1, le=200)
    min_sites: int = Field(2, ge=1, description="Fewest sites a round may close with (and must connect).")
    fraction_train: float = Field(1.0, gt=0, le=1, description="Share of connected sites asked to train.")
    fraction_evaluate: float = Field(1.0, ge=0, le=1, description="Share asked to evaluate on their rows.")
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0, description="FedProx's proximal weight.")
    local_epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(32, ge=1)
    model: ModelSpec = ModelSpec()
    dirichlet_alpha: float = Field(0.5, gt=0, description="Label skew of the split: smaller = more non-IID.")
    seed: int = 42
    round_timeout_s: float = Field(120.0, gt=0, description="How long a round waits for site replies.")
    startup_timeout_s: float = Field(60.0, gt=0)
    base_port: int | None = Field(None, ge=1024, le=65000, description="First local port; None = free ports.")
    faults: dict[int, Literal["crash", "hang"]] = Field(
        default_factory=dict,
        description="Fault drill: site id -> its ClientApp crashes or hangs when training.",
    )
    model_name: str = Field("federated-breast-cancer", min_length=1, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> FederatedParams:
        if self.min_sites > self.sites:
            raise ValueError(f"min_sites ({self.min_sites}) cannot exceed sites ({self.sites})")
        if unknown := sorted(set(self.faults) - set(range(self.sites))):
            raise ValueError(f"faults name sites {unknown} but sites are 0..{self.sites - 1}")
        return self

    def run_config(self, run_dir: str, test_data: str) -> UserConfig:
        """The Flower app's run config: the app's fields as kebab-case keys (`model.learning-rate`), paths."""
        fields = _renamed(self.model_dump(include=APP_FIELDS), "_", "-")
        return flatten_dict(fields) | {"run-dir": run_dir, "test-data": test_data}

    @classmethod
    def from_run_config(cls, config: UserConfig) -> FederatedParams:
        """The parameters in a run config made by `run_config` (other fields take their defaults)."""
        fields = unflatten_dict({key: value for key, value in config.items() if key not in PATH_KEYS})
        return cls.model_validate(_renamed(fields, "-", "_"))


def _renamed(fields: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return {
        key.replace(old, new): _renamed(value, old, new) if isinstance(value, dict) else value
        for key, value in fields.items()
    }


def app_config_toml() -> str:
    """The `[tool.flwr.app.config]` tables for the defaults, as they end the app's pyproject.toml."""
    config = FederatedParams().run_config(MANUAL_RUN_DIR, f"{MANUAL_RUN_DIR}/data/test.csv")
    return tomli_w.dumps({"tool": {"flwr": {"app": {"config": unflatten_dict(config)}}}})


def write_app_config(pyproject: Path = APP_PYPROJECT) -> None:
    """Replace everything from `[tool.flwr.app.config]` on in `pyproject` with `app_config_toml()`."""
    head = pyproject.read_text().partition(APP_CONFIG_TABLE)[0]
    pyproject.write_text(f"{head}\n{app_config_toml()}")


if __name__ == "__main__":
    write_app_config()
