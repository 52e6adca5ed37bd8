"""Flow `evaluate-answers`: the research agent answers labelled questions; citation support, retrieval
relevance, correctness and the calibration of its confidence go to MLflow and a Prefect table artifact.

Run locally: `python -m flows.evaluate_answers` (the labelled set: data/benchmarks/answers/questions.jsonl;
the checks: tasks/answers.py and conveyor/grounding.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from conveyor.settings import get_settings
from flows.index_documents import index_documents
from tasks.answers import AnswerCheck, answer_question, check_labels, load_questions, log_answers, summarize

EXPERIMENT = "evaluate-answers"
QUESTIONS = "data/benchmarks/answers/questions.jsonl"


class AnswersReport(BaseModel):
    run_id: str
    summary: dict
    answers: list[AnswerCheck]


@flow(name="evaluate-answers", log_prints=True)
def evaluate_answers(
    questions: str = QUESTIONS, ids: list[str] | None = None, k: int = 4, index: bool = True
) -> AnswersReport:
    """Index the questions' knowledge domains (incremental), check the labels still match, answer each
    question, check the answers, log the figures."""
    labelled = load_questions(questions, ids)
    domains = sorted({q.domain for q in labelled})
    if index:
        sources = get_settings().data_dir.resolve() / "knowledge"
        for domain in domains:
            index_documents(domain=domain, source=str(sources / domain), delete_missing=True)
    check_labels(labelled)
    checks = [answer_question(question, domains, k) for question in labelled]
    summary = summarize(checks)
    params = {"questions": str(Path(questions)), "answers": len(checks), "k": k, "domains": ",".join(domains)}
    run_id = log_answers(EXPERIMENT, params, checks, summary)
    create_table_artifact(
        key="answer-quality",
        table=[
            {
                "id": c.id,
                "correct": c.correct,
                "confidence": c.confidence,
                "support": c.citation_support,
                "retrieval_hit": c.retrieval_hit,
                "citation_precision": c.citation_precision,
            }
            for c in checks
        ],  # fmt: skip
        description=f"evaluate-answers: accuracy {summary['accuracy']}, "
        f"Brier {summary['calibration']['brier']} (MLflow run {run_id})",
    )
    return AnswersReport(run_id=run_id, summary=summary, answers=checks)


def main(argv: list[str] | None = None) -> AnswersReport:
    parser = argparse.ArgumentParser(
        description="Evaluate the research agent's answers on labelled questions."
    )
    parser.add_argument("--questions", default=QUESTIONS)
    parser.add_argument("--ids", nargs="*", help="only these question ids")
    parser.add_argument("--no-index", action="store_true", help="use the domains as they are indexed")
    args = parser.parse_args(argv)
    report = evaluate_answers(questions=args.questions, ids=args.ids, index=not args.no_index)
    print(json.dumps({"run_id": report.run_id, **report.summary}))
    return report


if __name__ == "__main__":
    main()
