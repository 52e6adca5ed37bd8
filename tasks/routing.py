"""Prefect tasks of `train-router`: check the labelled messages (the training file plus users' routing
corrections from agent memory), fit and measure the router's classifier, register and promote it.

Every task here has side effects in MLflow or reads a file that changes, so none is cached; none retries
on its own (a retried registration would duplicate versions).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from importlib import metadata
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agents import memory, router_model
from agents.catalog import AGENTS
from agents.router_model import Example
from conveyor import registry, tracking
from conveyor.settings import get_settings
from conveyor.training.evaluation import model_scorer

DATASET_ID = "router-training"


class RouterExamples(BaseModel):
    """The checked training set: where, which bytes, how many messages per agent, held out and added
    from users' routing corrections."""

    path: str
    sha256: str
    per_agent: dict[str, int]
    held_out: int
    corrections: int = 0

    def tags(self) -> dict[str, str]:
        return {
            "conveyor.dataset_id": DATASET_ID,
            "conveyor.dataset_sha256": self.sha256,
            "conveyor.router_corrections": str(self.corrections),
        }


class RouterFit(BaseModel):
    model_uri: str
    cv_accuracy: float
    test_accuracy: float


@task(cache_policy=NO_CACHE)
def check_router_examples(path: str, corrections: bool = True) -> RouterExamples:
    """Refuse a training file with an unknown agent, a missing agent or a message twice (normalised); with
    `corrections`, the training set is the file plus the messages users re-routed (a file of its own)."""
    examples = router_model.load_examples(Path(path))
    missing = set(AGENTS) - {e.agent for e in examples}
    if missing:
        raise ValueError(f"{path}: no example for {sorted(missing)}")
    seen = Counter(router_model.normalise(e.message) for e in examples)
    repeated = [text for text, count in seen.items() if count > 1]
    if repeated:
        raise ValueError(f"{path}: messages given more than once: {repeated[:3]}")
    added = corrected_examples(examples) if corrections else []
    if added:
        examples = [*examples, *added]
        path = _write_training_set(examples)
    return RouterExamples(
        path=path,
        sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        per_agent=dict(Counter(e.agent for e in examples)),
        held_out=len(router_model.split(examples)[1]),
        corrections=len(added),
    )


def corrected_examples(examples: list[Example]) -> list[Example]:
    """Users' routing corrections as examples: the latest per message, none for a message `examples`
    already label (the curated file wins) or for an agent no longer in the catalogue."""
    labelled = {router_model.normalise(e.message) for e in examples}
    latest: dict[str, Example] = {}
    for correction in memory.routing_corrections():
        key = router_model.normalise(correction["message"])
        if key and key not in labelled and correction["agent"] in AGENTS:
            latest[key] = Example(message=correction["message"], agent=correction["agent"])
    return list(latest.values())


def _write_training_set(examples: list[Example]) -> str:
    """The examples as a JSONL file under the state folder, named by its content."""
    text = "".join(e.model_dump_json() + "\n" for e in examples)
    folder = get_settings().state_dir / "router-training"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.write_text(text)
    return str(path)


@task(cache_policy=NO_CACHE)
def fit_router(run_id: str, data: RouterExamples, c: float, folds: int, seed: int) -> RouterFit:
    """Cross-validate on the training split (accuracy, and what each confidence threshold does), fit on
    it, log its accuracy on the held-out messages and the model."""
    training, held_out = router_model.split(_examples(data))
    labels = [e.agent for e in training]
    probabilities, classes = router_model.out_of_fold(training, c, folds, seed)
    sweep = router_model.threshold_sweep(probabilities, classes, labels)
    threshold = get_settings().router_confidence_threshold
    at_setting = router_model.threshold_sweep(probabilities, classes, labels, [threshold])[0]
    classifier = router_model.fit(training, c)
    held_out_features = router_model.features([e.message for e in held_out])
    metrics = {
        "cv_accuracy": router_model.accuracy(probabilities, classes, labels),
        "cv_kept": at_setting.kept,
        "cv_accuracy_kept": at_setting.accuracy_kept,
        "test_accuracy": float(classifier.score(held_out_features, [e.agent for e in held_out])),
    }
    with tracking.use_run(run_id):
        tracking.log_run_report(
            params={
                "c": c,
                "folds": folds,
                "seed": seed,
                "head_words": router_model.HEAD_WORDS,
                "embedding_model": get_settings().embedding_model,
                "confidence_threshold": threshold,
                "training_messages": len(training),
                "held_out_messages": len(held_out),
            },
            metrics=metrics,
            artifacts={"threshold_sweep.json": {"rows": [row.model_dump() for row in sweep]}},
        )
        frame = pd.DataFrame([e.model_dump() for e in training])
        tracking.log_dataset(frame, source=data.path, name=DATASET_ID, target="agent")
        model_uri = tracking.log_model(
            classifier,
            input_example=held_out_features[:2],
            pip_requirements=[f"scikit-learn=={metadata.version('scikit-learn')}"],
            metadata={
                "embedding_model": get_settings().embedding_model,
                "head_words": router_model.HEAD_WORDS,
            },
        )
    return RouterFit(
        model_uri=model_uri, cv_accuracy=metrics["cv_accuracy"], test_accuracy=metrics["test_accuracy"]
    )


@task(cache_policy=NO_CACHE)
def promote_router(
    run_id: str, model_uri: str, model_name: str, data: RouterExamples
) -> registry.PromotionDecision:
    """Register the classifier; `@champion` moves only if it beats the champion on the held-out messages."""
    _, held_out = router_model.split(_examples(data))
    vectors = router_model.features([e.message for e in held_out])
    columns = [f"x{i}" for i in range(vectors.shape[1])]
    frame = pd.DataFrame(vectors, columns=columns).assign(agent=[e.agent for e in held_out])
    return registry.register_and_promote(
        run_id=run_id,
        model_uri=model_uri,
        name=model_name,
        metric="test_accuracy",
        evaluate=model_scorer(frame, "agent", columns, "accuracy"),
    )


def _examples(data: RouterExamples) -> list[Example]:
    """The checked file's examples; an error if its bytes changed since the check."""
    if hashlib.sha256(Path(data.path).read_bytes()).hexdigest() != data.sha256:
        raise RuntimeError(f"{data.path} changed after it was checked; run the flow again")
    return router_model.load_examples(Path(data.path))
