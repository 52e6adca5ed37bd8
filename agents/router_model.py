"""The router's classifier: labelled messages, their features (sentence embeddings), fitting and measuring.

Training examples live in `router_training.jsonl`; `router_cases.jsonl` is the evaluation set and is never
trained on. One message in HELD_OUT_EVERY, chosen by a hash of its text (so it stays on its side whatever
else the file gains), is held out: registry promotion compares models on those.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from agents.catalog import AGENTS
from conveyor.embeddings import embed

TRAINING_FILE = Path(__file__).with_name("router_training.jsonl")
# Chosen by stratified 5-fold cross-validated accuracy on the training file: HEAD_WORDS of 4, 6, 8, 12 or no
# head embedding (0.927 without, 0.957 with 8); DEFAULT_C of 3, 10, 30 (tied; 10 is the middle).
HEAD_WORDS = 8  # the request is mostly in a message's first words; the rest is often the text it is about
HELD_OUT_EVERY = 5
DEFAULT_C = 10.0
THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.30 ... 0.90


class Example(BaseModel):
    message: str
    agent: str


class ThresholdRow(BaseModel):
    """What a confidence threshold does on out-of-fold predictions."""

    threshold: float
    kept: float  # share of messages whose top probability reaches the threshold
    accuracy_kept: float  # the classifier's accuracy on those
    top2_deferred: float  # share of the others whose label is among the classifier's top two


def load_examples(path: Path = TRAINING_FILE) -> list[Example]:
    """Labelled messages, one JSON object a line; a ValueError names a line with an unknown agent."""
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            example = Example.model_validate_json(line)
            if example.agent not in AGENTS:
                raise ValueError(f"{path}:{number}: unknown agent {example.agent!r} (known: {list(AGENTS)})")
            examples.append(example)
    return examples


def normalise(message: str) -> str:
    """Lower-case words and numbers: the form in which two messages are compared."""
    return " ".join(re.findall(r"[a-z0-9]+", message.lower()))


def is_held_out(message: str) -> bool:
    digest = hashlib.sha256(normalise(message).encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_EVERY == 0


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(training, held-out) examples."""
    held_out = [e for e in examples if is_held_out(e.message)]
    return [e for e in examples if not is_held_out(e.message)], held_out


def features(messages: list[str]) -> np.ndarray:
    """Each message's embedding next to the embedding of its first HEAD_WORDS words (one batch)."""
    heads = [" ".join(message.split()[:HEAD_WORDS]) for message in messages]
    vectors = embed([*messages, *heads])
    return np.hstack([vectors[: len(messages)], vectors[len(messages) :]])


def new_classifier(c: float = DEFAULT_C) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000)


def fit(examples: list[Example], c: float = DEFAULT_C) -> LogisticRegression:
    """A classifier fitted on `examples`; its `classes_` are the agent names."""
    return new_classifier(c).fit(features([e.message for e in examples]), [e.agent for e in examples])


def out_of_fold(
    examples: list[Example], c: float = DEFAULT_C, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of each example from a classifier that did not see it (stratified k-fold),
    and the class of each column."""
    labels = [e.agent for e in examples]
    probabilities = cross_val_predict(
        new_classifier(c),
        features([e.message for e in examples]),
        labels,
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        method="predict_proba",
    )
    return probabilities, sorted(set(labels))


def accuracy(probabilities: np.ndarray, classes: list[str], labels: list[str]) -> float:
    return float(np.mean(np.asarray(classes)[probabilities.argmax(axis=1)] == np.asarray(labels)))


def threshold_sweep(
    probabilities: np.ndarray, classes: list[str], labels: list[str], thresholds: Sequence[float] = THRESHOLDS
) -> list[ThresholdRow]:
    """For each threshold: how many messages the classifier keeps, how right it is on them, and how often
    the right agent is among the top two on the ones it would hand to the LLM."""
    order = np.argsort(-probabilities, axis=1)
    names, truth = np.asarray(classes), np.asarray(labels)
    top, correct = probabilities.max(axis=1), names[order[:, 0]] == truth
    in_top2 = correct | (names[order[:, 1]] == truth)
    rows = []
    for threshold in thresholds:
        kept = top >= threshold
        rows.append(
            ThresholdRow(
                threshold=threshold,
                kept=float(kept.mean()),
                accuracy_kept=float(correct[kept].mean()) if kept.any() else 1.0,
                top2_deferred=float(in_top2[~kept].mean()) if (~kept).any() else 1.0,
            )
        )
    return rows
