"""Parameters every training flow shares: which data, which columns, which registered model, which seed."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class TrainingParams(BaseModel):
    """The data and the registered model of a training flow; each flow adds its own settings."""

    model_config = ConfigDict(extra="forbid")  # a mistyped setting is an error, not a silent default
    model_kind: ClassVar[str]  # the default registered name is '<dataset>-<model_kind>'

    dataset: str = Field("breast_cancer", description="Catalog dataset id: built-in or uploaded CSV.")
    target: str = Field("malignant", description="Column to predict.")
    features: list[str] | None = Field(None, description="Feature columns; default all but the target.")
    model_name: str | None = Field(
        None, description="Registered model name; default '<dataset>-mlp' or '<dataset>-forest' by flow."
    )
    seed: int = Field(0, description="Split and initialisation seed; keep it fixed per model name.")

    @property
    def registered_name(self) -> str:
        return self.model_name or f"{self.dataset.replace('_', '-')}-{self.model_kind}"
