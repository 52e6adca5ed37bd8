"""Sentiment figures: VADER (`conveyor/sentiment.py`) on the labelled texts of data/benchmarks/sentiment.

`python -m bench.bench_sentiment [--file PATH]` prints accuracy and macro-F1 (overall and per domain), the
confusion matrix, and the latency per text (p50/p95, the analyzer already loaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from conveyor import sentiment

LABELLED = Path(__file__).resolve().parent.parent / "data" / "benchmarks" / "sentiment" / "labelled.jsonl"
LABELS = ["positive", "neutral", "negative"]
TIMED_ROUNDS = 5


def scores(expected: list[str], predicted: list[str]) -> str:
    accuracy = accuracy_score(expected, predicted)
    macro_f1 = f1_score(expected, predicted, labels=LABELS, average="macro", zero_division=0)
    return f"accuracy {accuracy:.3f}, macro-F1 {macro_f1:.3f} ({len(expected)} texts)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=LABELLED, help="JSONL with `text`, `label`, `domain`")
    args = parser.parse_args(argv or [])
    rows = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    sentiment.analyze("warm-up")  # loads the lexicon: not part of the per-text latency
    predicted = [sentiment.analyze(row["text"]).label for row in rows]
    expected = [row["label"] for row in rows]
    print(f"all: {scores(expected, predicted)}", flush=True)
    for domain in sorted({row["domain"] for row in rows}):
        picked = [i for i, row in enumerate(rows) if row["domain"] == domain]
        print(f"{domain}: {scores([expected[i] for i in picked], [predicted[i] for i in picked])}")
    matrix = confusion_matrix(expected, predicted, labels=LABELS)
    print(f"confusion (rows true, columns predicted; {', '.join(LABELS)}): {matrix.tolist()}")

    latencies = []
    for _ in range(TIMED_ROUNDS):
        for row in rows:
            started = time.perf_counter()
            sentiment.analyze(row["text"])
            latencies.append(time.perf_counter() - started)
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    print(
        f"latency per text: p50 {statistics.median(ordered) * 1000:.3f} ms, p95 {p95 * 1000:.3f} ms "
        f"({len(ordered)} calls)",
        flush=True,
    )


if __name__ == "__main__":
    main()
