"""Tasks of `evaluate-answers`: answer labelled questions with the research agent, check each answer against
its labels and its own citations, summarise (with how well its confidence is calibrated), log to MLflow.

A question's labels (data/benchmarks/answers/questions.jsonl) name the passages that answer it as a
document id and an evidence quote: a chunk is a labelled passage when it belongs to that document and
contains the quote (whitespace and case aside). Chunk ids carry a hash of their document's content and
source path, so they differ between checkouts; the document and the quote do not.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from agents.research import ResearchRequest, answer
from conveyor import grounding, knowledge, tracking

BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)


class LabelledPassage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_id: str
    evidence: str = Field(min_length=8, description="A quote the answering chunk contains.")


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    domain: str
    question: str
    answer: list[str] = Field(
        min_length=1, description="Terms a right answer contains, all of them; `a|b`: either."
    )
    passages: list[LabelledPassage] = Field(min_length=1)


class AnswerCheck(BaseModel):
    """One answer and what the checks found."""

    id: str
    question: str
    answer: str
    ok: bool
    seconds: float
    sources: list[dict] = Field(description="doc_id, chunk_id, similarity, labelled, cited of each source.")
    retrieval_hit: bool = Field(description="A labelled passage was among the sources.")
    retrieval_precision: float = Field(description="Share of sources that are labelled passages.")
    retrieval_rank: int | None = Field(description="Position of the first labelled passage, from 1.")
    citation_precision: float | None = Field(description="Share of cited sources that are labelled.")
    citation_support: float = Field(description="Share of cited sentences their passages support.")
    sentences: list[grounding.SentenceSupport]
    top_similarity: float
    correct: bool = Field(description="The answer contains every expected term.")
    confidence: float | None


def load_questions(path: str | Path, ids: list[str] | None = None) -> list[Question]:
    """The labelled questions of a JSONL file (those named by `ids`, in the file's order)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    questions = [Question.model_validate_json(line) for line in lines if line.strip()]
    if ids is not None:
        unknown = sorted(set(ids) - {q.id for q in questions})
        if unknown:
            raise ValueError(f"{path}: no question with id {unknown}")
        questions = [q for q in questions if q.id in ids]
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def is_labelled(question: Question, doc_id: str, text: str) -> bool:
    """Whether a chunk (`doc_id`, `text`) is one of the passages that answer `question`."""
    return any(p.doc_id == doc_id and _flat(p.evidence) in _flat(text) for p in question.passages)


def is_correct(question: Question, text: str) -> bool:
    """Every expected term (one of its `|` alternatives) occurs in the answer, case aside."""
    found = text.lower()
    return all(any(option.strip().lower() in found for option in term.split("|")) for term in question.answer)


@task(cache_policy=NO_CACHE)
def check_labels(questions: list[Question]) -> None:
    """Refuse labels whose evidence no indexed chunk of their document contains (the source changed)."""
    stale = []
    for domain in sorted({q.domain for q in questions}):
        table = knowledge.open_domain(domain)
        if table is None:
            raise ValueError(f"domain {domain!r} is not indexed")
        rows = table.to_arrow().select(["doc_id", "text"]).to_pylist()
        for question in (q for q in questions if q.domain == domain):
            for label in question.passages:
                if not any(
                    is_labelled(question, r["doc_id"], r["text"]) for r in rows if r["doc_id"] == label.doc_id
                ):
                    stale.append(f"{question.id}: {label.doc_id} has no chunk with {label.evidence!r}")
    if stale:
        raise ValueError("labels that no indexed passage matches: " + "; ".join(stale))


@task(cache_policy=NO_CACHE, retries=0)
def answer_question(question: Question, domains: list[str], k: int) -> AnswerCheck:
    """The research agent's answer to one question, checked against the labels and its own citations."""
    started = time.perf_counter()
    result = answer(ResearchRequest(instruction=question.question, domains=domains, k=k))
    seconds = time.perf_counter() - started
    cited_numbers = set(result.data.get("citations", []))
    sources = [
        {
            "n": s["n"],
            "doc_id": s["doc_id"],
            "chunk_id": s["chunk_id"],
            "similarity": s["similarity"],
            "labelled": is_labelled(question, s["doc_id"], s["text"]),
            "cited": s["n"] in cited_numbers,
        }
        for s in result.sources
    ]
    labelled = [s["labelled"] for s in sources]
    cited = [s["labelled"] for s in sources if s["cited"]]
    checks = grounding.citation_support(result.answer, result.sources) if result.ok else []
    return AnswerCheck(
        id=question.id,
        question=question.question,
        answer=result.answer,
        ok=result.ok,
        seconds=round(seconds, 3),
        sources=sources,
        retrieval_hit=any(labelled),
        retrieval_precision=sum(labelled) / len(labelled) if labelled else 0.0,
        retrieval_rank=labelled.index(True) + 1 if any(labelled) else None,
        citation_precision=sum(cited) / len(cited) if cited else None,
        citation_support=grounding.support_rate(checks),
        sentences=checks,
        top_similarity=max((s["similarity"] for s in sources), default=0.0),
        correct=result.ok and is_correct(question, result.answer),
        confidence=result.data.get("confidence"),
    )


def calibration(checks: list[AnswerCheck]) -> dict:
    """Brier score, expected calibration error and accuracy by confidence bucket of the answers that carry
    a confidence."""
    rated = [(c.confidence, float(c.correct)) for c in checks if c.confidence is not None]
    buckets, gaps = [], 0.0
    for low, high in zip(BUCKETS, BUCKETS[1:], strict=False):
        inside = [(p, y) for p, y in rated if low <= p < high or (high == 1.0 and p == 1.0)]
        if inside:
            gaps += abs(sum(p for p, _ in inside) - sum(y for _, y in inside))
        buckets.append(
            {
                "bucket": f"{low:.2f}-{high:.2f}",
                "answers": len(inside),
                "mean_confidence": _mean([p for p, _ in inside]),
                "accuracy": _mean([y for _, y in inside]),
            }
        )
    return {
        "rated": len(rated),
        "brier": _mean([(p - y) ** 2 for p, y in rated]),
        "ece": round(gaps / len(rated), 4) if rated else None,
        "buckets": buckets,
    }


@task(cache_policy=NO_CACHE)
def summarize(checks: list[AnswerCheck]) -> dict:
    """Means over the answers and the calibration of their confidence."""
    cited = [c.citation_precision for c in checks if c.citation_precision is not None]
    ranks = [c.retrieval_rank for c in checks]
    return {
        "answers": len(checks),
        "accuracy": _mean([float(c.correct) for c in checks]),
        "retrieval_hit_rate": _mean([float(c.retrieval_hit) for c in checks]),
        "retrieval_precision": _mean([c.retrieval_precision for c in checks]),
        "retrieval_mrr": _mean([1 / r if r else 0.0 for r in ranks]),
        "citation_precision": _mean(cited),
        "citation_support": _mean([c.citation_support for c in checks]),
        "answers_with_citations": sum(bool(c.sentences) for c in checks),
        "seconds_per_answer": _mean([c.seconds for c in checks]),
        "calibration": calibration(checks),
    }


@task(cache_policy=NO_CACHE)
def log_answers(experiment: str, params: dict, checks: list[AnswerCheck], summary: dict) -> str:
    """One MLflow run: the figures, each answer's measures as steps, every answer as a table row; its id."""
    figures = {k: v for k, v in summary.items() if isinstance(v, int | float)}
    figures |= {
        f"calibration_{k}": v for k, v in summary["calibration"].items() if isinstance(v, int | float)
    }
    with tracking.start_run(experiment, run_name=f"{len(checks)} answers") as run:
        tracking.log_run_report(
            params=params,
            metrics=figures,
            artifacts={
                "summary.json": summary,
                "answers.json": {"answers": [c.model_dump() for c in checks]},
            },
        )
        for step, check in enumerate(checks):
            measures = {
                "answer_correct": float(check.correct),
                "answer_citation_support": check.citation_support,
                "answer_retrieval_precision": check.retrieval_precision,
                "answer_retrieval_hit": float(check.retrieval_hit),
            }
            if check.confidence is not None:
                measures["answer_confidence"] = check.confidence
            tracking.log_step_metrics(run.info.run_id, measures, step)
        tracking.log_table([_row(c) for c in checks], "answers_table.json")
        return run.info.run_id


def _row(check: AnswerCheck) -> dict:
    return {
        "id": check.id,
        "question": check.question,
        "answer": check.answer,
        "correct": check.correct,
        "confidence": check.confidence,
        "citation_support": check.citation_support,
        "citation_precision": check.citation_precision,
        "retrieval_hit": check.retrieval_hit,
        "retrieval_precision": check.retrieval_precision,
        "sources": json.dumps([[s["doc_id"], s["labelled"], s["cited"]] for s in check.sources]),
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
