"""Flow `train-tabular`: a scikit-learn forest on a catalog CSV, tracked, registered, promoted when better
(and, with `approve_promotion`, when a person approves: tasks/approval.py).

Run locally: `python -m flows.train_tabular --dataset breast_cancer --target malignant`.
"""

from __future__ import annotations

import argparse
from typing import ClassVar

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from conveyor import tracking
from conveyor.registry import PromotionDecision
from conveyor.training.params import TrainingParams
from conveyor.training.validation import Task
from tasks.approval import PromotionApproval, review_promotion
from tasks.training import check_dataset, fit_tabular, log_training_inputs, promote

EXPERIMENT = "train-tabular"


class ForestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_estimators: int = Field(100, ge=1)
    max_depth: int | None = Field(None, ge=1)
    min_samples_leaf: int = Field(1, ge=1)


class TrainTabularParams(TrainingParams, PromotionApproval):
    """Parameters of `train-tabular` (also the deployment's parameter schema)."""

    model_kind: ClassVar[str] = "forest"

    task: Task = "classification"
    forest: ForestConfig = ForestConfig()


class TabularResult(BaseModel):
    run_id: str
    model_uri: str
    decision: PromotionDecision


@flow(name="train-tabular", log_prints=True)
def train_tabular(params: TrainTabularParams | None = None) -> TabularResult:
    """Check the CSV, fit the forest, log it with its metrics, register and promote it (approved if asked)."""
    params = params or TrainTabularParams()
    data = check_dataset(params.dataset, params.target, params.features, params.task)
    with tracking.start_run(EXPERIMENT, tags=data.tags()) as run:
        run_id = run.info.run_id
        log_training_inputs(run_id, params.model_dump(), data)
        model_uri = fit_tabular(run_id, data, params.task, params.forest.model_dump(), params.seed)
        metric = "accuracy" if params.task == "classification" else "rmse"
        decision = promote(
            run_id, model_uri, params.registered_name, data, metric, params.seed, params.approve_promotion
        )
    decision = review_promotion(decision, params)
    return TabularResult(run_id=run_id, model_uri=model_uri, decision=decision)


def main(argv: list[str] | None = None) -> TabularResult:
    parser = argparse.ArgumentParser(description="Run the train-tabular flow once.")
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--target", default="malignant")
    parser.add_argument("--task", choices=["classification", "regression"], default="classification")
    parser.add_argument("--model-name")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--approve-promotion", action="store_true", help="a person approves @champion")
    args = parser.parse_args(argv)
    result = train_tabular(
        TrainTabularParams(
            dataset=args.dataset,
            target=args.target,
            task=args.task,
            model_name=args.model_name,
            forest=ForestConfig(n_estimators=args.n_estimators),
            approve_promotion=args.approve_promotion,
        )
    )
    print(result.model_dump_json(indent=2))
    return result


if __name__ == "__main__":
    main()
