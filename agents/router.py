"""Router: a classifier over sentence embeddings picks a chat message's agent; when its top probability is
below `router_confidence_threshold`, the LLM chooses between the classifier's top two (constrained JSON).

The classifier is `message-router@champion` from the model registry (flow `train-router`), its alias
re-read at most every REFRESH_S seconds; while none is registered, one is trained in this process from
agents/router_training.jsonl (a few seconds, logged).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, create_model
from sklearn.linear_model import LogisticRegression

from agents import router_model
from agents.catalog import AGENTS
from agents.llm import LLMUnavailable, StructuredOutputError, get_llm
from conveyor import registry
from conveyor.settings import get_settings

log = logging.getLogger(__name__)
MODEL_NAME = "message-router"
IN_PROCESS = "in-process"
REFRESH_S = 30.0

# Worked examples shown to the model (none of them is in router_cases.jsonl, the evaluation set).
EXAMPLES = [
    ("Which Python module parses command-line arguments?", "research"),
    ("What is the median units value per product in sales_2024.csv?", "data"),
    ("Write a function that returns the n-th Fibonacci number", "code"),
    ("Summarize this: the release adds dark mode, fixes two crashes and drops Python 3.8.", "summary"),
    ("How does Conveyor track experiments?", "research"),
    ("Histogram of radius_mean in breast_cancer.csv", "data"),
]


class Route(BaseModel):
    """Where a message goes and why. `method` is "classifier" when the classifier was sure, else
    "classifier+llm": the LLM's `model_choice` decided, or, when it failed (`error`), the classifier's."""

    agent: str
    method: Literal["classifier", "classifier+llm"]
    score: float  # the classifier's top probability
    latency_s: float
    classifier_version: str  # the registered version, or "in-process"
    model_choice: str | None = None
    error: str | None = None


class _Loaded(NamedTuple):
    version: str
    model: LogisticRegression
    checked_at: float


_loaded: _Loaded | None = None
_lock = threading.Lock()
_refreshing = threading.Event()


def classifier() -> tuple[str, LogisticRegression]:
    """(version, classifier): the registry's champion, or one trained here while there is none.

    Only the first call waits for the registry; later alias checks run in the background, so a slow or
    unreachable tracking server never holds a reply (the classifier in hand keeps routing)."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _refresh(None, time.monotonic())
        elif time.monotonic() - _loaded.checked_at >= REFRESH_S and not _refreshing.is_set():
            _refreshing.set()
            threading.Thread(target=_refresh_in_background, args=(_loaded,), daemon=True).start()
        return _loaded.version, _loaded.model


def _refresh_in_background(current: _Loaded) -> None:
    global _loaded
    try:
        fresh = _refresh(current, time.monotonic())
        with _lock:
            _loaded = fresh
    finally:
        _refreshing.clear()


def _refresh(loaded: _Loaded | None, now: float) -> _Loaded:
    try:
        version = registry.champion_version(MODEL_NAME)
        if version is not None and (loaded is None or loaded.version != version):
            version, model = registry.load_champion(MODEL_NAME)
            return _Loaded(version, model.get_raw_model(), now)
    except Exception as exc:  # MLflow raises many types for a store it cannot reach or a missing artifact
        log.warning("router: cannot load %s@%s from the registry: %s", MODEL_NAME, registry.CHAMPION, exc)
    if loaded is not None:
        return loaded._replace(checked_at=now)
    log.warning(
        "router: no %s@%s in the registry; training a classifier in this process from %s "
        "(the train-router flow registers one)",
        MODEL_NAME,
        registry.CHAMPION,
        router_model.TRAINING_FILE,
    )
    training, _ = router_model.split(router_model.load_examples())
    return _Loaded(IN_PROCESS, router_model.fit(training), now)


class AgentChoice(BaseModel):
    """The LLM's structured reply; `_choice_schema` narrows `agent` to the candidates."""

    agent: str


def _choice_schema(candidates: list[str]) -> type[AgentChoice]:
    names: Any = Literal[tuple(candidates)]  # built at runtime: no static type
    return create_model("AgentChoice", __base__=AgentChoice, agent=(names, ...))


def route_prompt(message: str, candidates: list[str]) -> list[dict]:
    catalogue = "\n".join(f"- {name}: {AGENTS[name].description}" for name in candidates)
    messages = [{"role": "system", "content": f"Route each message to one agent. Agents:\n{catalogue}"}]
    for example, agent in EXAMPLES:
        if agent in candidates:
            messages += [
                {"role": "user", "content": example},
                {"role": "assistant", "content": f'{{"agent": "{agent}"}}'},
            ]
    return [*messages, {"role": "user", "content": message[:2000]}]


def route(message: str) -> Route:
    """The agent for `message`: the classifier's pick, or the LLM's between its top two when it is unsure."""
    started = time.perf_counter()
    version, model = classifier()
    probabilities = model.predict_proba(router_model.features([message]))[0]
    order = np.argsort(-probabilities)
    candidates = [str(model.classes_[i]) for i in order[:2]]
    decision = Route(
        agent=candidates[0],
        method="classifier",
        score=float(probabilities[order[0]]),
        latency_s=0.0,
        classifier_version=version,
    )
    if decision.score < get_settings().router_confidence_threshold:
        decision = _ask_llm(message, candidates, decision)
    decision.latency_s = time.perf_counter() - started
    return decision


def llm_choice(message: str, candidates: list[str]) -> str:
    """The LLM's pick among `candidates` (LLMUnavailable or StructuredOutputError when it fails)."""
    schema = _choice_schema(candidates)
    return get_llm("routing").structured(route_prompt(message, candidates), schema, max_tokens=20).agent


def _ask_llm(message: str, candidates: list[str], decision: Route) -> Route:
    try:
        choice = llm_choice(message, candidates)
    except (LLMUnavailable, StructuredOutputError) as exc:
        return decision.model_copy(update={"method": "classifier+llm", "error": str(exc)})
    return decision.model_copy(update={"method": "classifier+llm", "agent": choice, "model_choice": choice})
