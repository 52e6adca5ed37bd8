"""Answer-quality benchmark: the research agent on the labelled questions of data/benchmarks/answers.

`python -m bench answers` (or `python -m bench.bench_answers [--fit] [--ids ID...]`) runs the
`evaluate-answers` flow (indexing the questions' domains first, incrementally) and prints JSON lines:
- `answers`: accuracy (the answer holds every expected term), retrieval hit rate / precision / MRR of the
  labelled passages among the sources, citation precision (cited sources that are labelled passages),
  citation support (cited sentences their passages support: conveyor/grounding.py), seconds per answer;
- `calibration`: Brier score and expected calibration error of the agent's confidence, accuracy by
  confidence bucket, and the Brier score of always answering the base rate (what a useless confidence gets);
- `fit` (with `--fit`): logistic weights refitted on these answers for conveyor/grounding.py
  `CONFIDENCE_WEIGHTS`, with their in-sample and leave-one-out Brier scores (few questions: the
  leave-one-out figure is the honest one).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from flows.evaluate_answers import evaluate_answers
from tasks.answers import AnswerCheck


def fit(checks: list[AnswerCheck]) -> dict:
    """Logistic regression of correctness on (top similarity, citation support), in and out of sample."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    x = np.array([[c.top_similarity, c.citation_support] for c in checks])
    y = np.array([int(c.correct) for c in checks])
    if len(set(y)) < 2 or min(np.bincount(y)) < 2:
        return {"bench": "fit", "error": "needs at least two right and two wrong answers"}
    model = LogisticRegression(C=1.0).fit(x, y)
    in_sample = model.predict_proba(x)[:, 1]
    held_out = cross_val_predict(LogisticRegression(C=1.0), x, y, cv=LeaveOneOut(), method="predict_proba")[
        :, 1
    ]
    return {
        "bench": "fit",
        "weights": {
            "intercept": round(float(model.intercept_[0]), 3),
            "top_similarity": round(float(model.coef_[0][0]), 3),
            "support_rate": round(float(model.coef_[0][1]), 3),
        },
        "brier_in_sample": round(float(np.mean((in_sample - y) ** 2)), 4),
        "brier_leave_one_out": round(float(np.mean((held_out - y) ** 2)), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fit", action="store_true", help="refit the confidence weights on these answers")
    parser.add_argument("--ids", nargs="*", help="only these question ids")
    args = parser.parse_args(argv or [])
    report = evaluate_answers(ids=args.ids)
    summary = dict(report.summary)
    calibration = summary.pop("calibration")
    print(json.dumps({"bench": "answers", "mlflow_run_id": report.run_id, **summary}), flush=True)
    base_rate = summary["accuracy"]
    print(
        json.dumps(
            {"bench": "calibration", **calibration, "brier_base_rate": round(base_rate * (1 - base_rate), 4)}
        ),
        flush=True,
    )
    if args.fit:
        print(json.dumps(fit(report.answers)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
