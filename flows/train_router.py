"""Flow `train-router`: the chat router's classifier on agents/router_training.jsonl plus users' routing
corrections (MiniLM embeddings, logistic regression), tracked, registered as `message-router`, promoted
when it beats `@champion`.

Run locally: `python -m flows.train_router`.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from agents.router import MODEL_NAME
from agents.router_model import DEFAULT_C, TRAINING_FILE
from conveyor import tracking
from conveyor.registry import PromotionDecision
from tasks.routing import check_router_examples, fit_router, promote_router

EXPERIMENT = "train-router"


class TrainRouterParams(BaseModel):
    """Parameters of `train-router` (also the deployment's parameter schema)."""

    model_config = ConfigDict(extra="forbid")
    model_name: str = Field(
        MODEL_NAME, description="Registered model name (the router reads message-router)."
    )
    c: float = Field(DEFAULT_C, gt=0, description="Inverse regularisation strength of the classifier.")
    folds: int = Field(5, ge=2, description="Cross-validation folds over the training split.")
    seed: int = Field(0, description="Fold shuffling seed.")
    corrections: bool = Field(
        True,
        description="Add the messages users re-routed (chat feedback naming an agent) to the training set.",
    )


class RouterResult(BaseModel):
    run_id: str
    model_uri: str
    cv_accuracy: float
    decision: PromotionDecision


@flow(name="train-router", log_prints=True)
def train_router(params: TrainRouterParams | None = None) -> RouterResult:
    """Check the labelled messages, cross-validate and fit the classifier, register and promote it."""
    params = params or TrainRouterParams()
    data = check_router_examples(str(TRAINING_FILE), params.corrections)
    with tracking.start_run(EXPERIMENT, tags=data.tags()) as run:
        run_id = run.info.run_id
        fitted = fit_router(run_id, data, params.c, params.folds, params.seed)
        decision = promote_router(run_id, fitted.model_uri, params.model_name, data)
    return RouterResult(
        run_id=run_id, model_uri=fitted.model_uri, cv_accuracy=fitted.cv_accuracy, decision=decision
    )


if __name__ == "__main__":
    print(train_router().model_dump_json(indent=2))
