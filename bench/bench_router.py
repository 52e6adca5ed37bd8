"""Router benchmark: accuracy on the labelled evaluation set (agents/router_cases.jsonl), the share the
classifier routes alone, and latency per routing (classifier path and overall).

`--models` routes with each local model alone instead (no classifier: the LLM picks among every agent the
router knows, as the LLM-only router did), for the accuracy and latency the classifier is compared with.

`--thresholds` measures the confidence threshold instead, on the training set only: out-of-fold probabilities
(stratified 5-fold over the training split) and, for every message that some threshold hands to the LLM,
the LLM's pick between the top two; each threshold's expected accuracy and share routed without the LLM.

Prints one JSON line per measurement. `python -m bench.bench_router [--models | --thresholds]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from agents import router, router_model
from agents.llm import LOCAL_MODELS, LLMUnavailable, StructuredOutputError
from conveyor.settings import get_settings, reset_settings

CASES = router_model.TRAINING_FILE.with_name("router_cases.jsonl")
TARGETS = {"accuracy": 0.92, "latency_p95_s": 0.05}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
    }


def bench_evaluation() -> dict:
    cases = router_model.load_examples(CASES)
    started = time.perf_counter()
    router.route("warm-up: load the classifier and the embedding model")
    cold_s = time.perf_counter() - started
    routes = [router.route(c.message) for c in cases]
    right = [r.agent == c.agent for r, c in zip(routes, cases, strict=True)]
    alone = [r.method == "classifier" for r in routes]
    _, model = router.classifier()
    top_picks = model.predict(router_model.features([c.message for c in cases]))
    return {
        "bench": "router",
        "messages": len(cases),
        "classifier_version": routes[0].classifier_version,
        "threshold": get_settings().router_confidence_threshold,
        "accuracy": round(float(np.mean(right)), 3),
        "accuracy_classifier_only": round(float(np.mean(top_picks == [c.agent for c in cases])), 3),
        "accuracy_routed_alone": round(
            float(np.mean([ok for ok, a in zip(right, alone, strict=True) if a])), 3
        ),
        "share_classifier_alone": round(float(np.mean(alone)), 3),
        "llm_errors": sum(r.error is not None for r in routes),
        "latency_classifier": latency([r.latency_s for r in routes if r.method == "classifier"]),
        "latency_llm": latency([r.latency_s for r in routes if r.method != "classifier"]),
        "latency_overall": latency([r.latency_s for r in routes]),
        "cold_start_s": round(cold_s, 2),
        "targets": TARGETS,
    }


def bench_thresholds(c: float = router_model.DEFAULT_C, folds: int = 5, seed: int = 0) -> list[dict]:
    training, _ = router_model.split(router_model.load_examples())
    labels = [e.agent for e in training]
    probabilities, classes = router_model.out_of_fold(training, c, folds, seed)
    top = probabilities.max(axis=1)
    order = np.argsort(-probabilities, axis=1)
    picks = np.asarray(classes)[order[:, 0]].tolist()
    llm_right = {}
    for i in np.flatnonzero(top < max(router_model.THRESHOLDS)):
        candidates = [classes[j] for j in order[i, :2]]
        try:
            llm_right[i] = router.llm_choice(training[i].message, candidates) == labels[i]
        except (LLMUnavailable, StructuredOutputError):
            llm_right[i] = picks[i] == labels[i]  # what route() does when the LLM fails
    rows = []
    for row in router_model.threshold_sweep(probabilities, classes, labels):
        right = [
            picks[i] == labels[i] if top[i] >= row.threshold else llm_right[i] for i in range(len(training))
        ]
        rows.append(
            {
                "bench": "router-threshold",
                **row.model_dump(),
                "accuracy_with_llm": round(float(np.mean(right)), 3),
                "llm_accuracy_deferred": round(
                    float(np.mean([llm_right[i] for i in range(len(training)) if top[i] < row.threshold]))
                    if (top < row.threshold).any()
                    else 1.0,
                    3,
                ),
            }
        )
    return rows


def bench_model_alone(model: str) -> dict:
    """Every evaluation message routed by local model `model` alone, among all the router's agents."""
    os.environ["CONVEYOR_LLM_MODEL"] = model
    os.environ["CONVEYOR_LLM_QUALITY_ROLES"] = "[]"  # the routing role on CONVEYOR_LLM_MODEL
    reset_settings()
    cases = router_model.load_examples(CASES)
    agents = sorted({c.agent for c in router_model.load_examples()})
    router.llm_choice("warm-up", agents)
    picks, seconds = [], []
    for case in cases:
        started = time.perf_counter()
        try:
            picks.append(router.llm_choice(case.message, agents))
        except (LLMUnavailable, StructuredOutputError):
            picks.append(None)
        seconds.append(time.perf_counter() - started)
    return {
        "bench": "router-model-alone",
        "model": model,
        "messages": len(cases),
        "accuracy": round(float(np.mean([p == c.agent for p, c in zip(picks, cases, strict=True)])), 3),
        "failed_replies": picks.count(None),
        "latency": latency(seconds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--thresholds", action="store_true", help="measure the threshold (training set)")
    parser.add_argument("--models", action="store_true", help="route with each local model alone")
    args = parser.parse_args(argv or [])
    if args.models:
        for model in LOCAL_MODELS:
            print(json.dumps(bench_model_alone(model)), flush=True)
    elif args.thresholds:
        rows = bench_thresholds()
        for row in rows:
            print(json.dumps(row), flush=True)
        # the most accurate with the LLM's help; of equals, the lowest (fewer slow LLM calls)
        best = max(rows, key=lambda row: (row["accuracy_with_llm"], -row["threshold"]))
        print(json.dumps({"bench": "router-threshold-choice", "threshold": best["threshold"]}), flush=True)
    else:
        print(json.dumps(bench_evaluation()), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
