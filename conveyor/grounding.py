"""Deterministic checks of an answer against its numbered sources, and the confidence they give.

Citation support: a sentence of the answer that cites sources `[n]` is *supported* when one of the
passages it cites says the same, measured two ways on the sentence without its citation marks:
- `cosine`: MiniLM cosine similarity of the sentence and the passage (meaning, whatever the words);
- `overlap`: the share of the sentence's content words (lower-cased letters/digits, stop words dropped,
  numbers kept, answer boilerplate such as "according to the sources" dropped) that occur in the passage
  (the facts: names, numbers).
`score = (cosine + overlap) / 2`, and the sentence is supported when `score >= SUPPORT_MIN`. Neither
measure alone will do: a sentence that copies the passage's words but says the opposite still has a high
overlap, and a fluent paraphrase of the question has a high cosine to any on-topic passage.

Confidence: the probability that a research answer is right, from the retrieval similarity of its best
source and the share of its cited sentences that are supported: a logistic model whose weights were fitted
on the labelled questions of data/benchmarks/answers (`python -m bench.bench_answers --fit`).
"""

from __future__ import annotations

import math
import re

import numpy as np
from pydantic import BaseModel

CITATION = re.compile(r"\[(\d+)\]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[a-z0-9_]+")
SUPPORT_MIN = 0.5
# Fitted by `python -m bench.bench_answers --fit` on the 21 labelled questions (fast 0.5B model): with so few
# answers neither feature predicts correctness out of sample (leave-one-out Brier 0.235 against 0.204 for the
# base rate), so the fit stays close to the base rate (~0.7) and moves little with support. Refit when the
# labelled set or the model changes.
CONFIDENCE_WEIGHTS = {"intercept": 0.813, "top_similarity": -0.108, "support_rate": 0.241}
STOP_WORDS = frozenset(
    """a an and are as at be been but by can do does for from has have how if in into is it its may of on
    or so such than that the their them then there these they this to was were what when where which who
    will with would you your not no yes also used use uses using one each any all more most other only
    same based information provided source sources according given mentioned states stated""".split()
)  # and the boilerplate of answers ("based on the information provided in the sources")


class SentenceSupport(BaseModel):
    """How well the passages a sentence cites support it."""

    sentence: str
    cited: list[int]
    best: int | None  # the cited source that supports it best
    cosine: float
    overlap: float
    score: float
    supported: bool


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP_WORDS and (len(w) > 2 or w.isdigit())}


def overlap(sentence: str, passage: str) -> float:
    """Share of the sentence's content words found in the passage (0.0 for a sentence with none)."""
    words = content_words(sentence)
    return len(words & content_words(passage)) / len(words) if words else 0.0


def citation_support(answer: str, sources: list[dict]) -> list[SentenceSupport]:
    """Every sentence of `answer` that cites one of `sources` (by their `n`) and says something (has a
    content word), checked against them."""
    from conveyor.embeddings import embed

    by_number = {int(s["n"]): str(s["text"]) for s in sources}
    cited = []
    for sentence in sentences(answer):
        numbers = sorted({int(n) for n in CITATION.findall(sentence) if int(n) in by_number})
        claim = CITATION.sub("", sentence).strip()
        if numbers and content_words(claim):  # a bare "[1]" claims nothing, so nothing is supported
            cited.append((claim, numbers))
    if not cited:
        return []
    numbers_used = sorted({n for _, numbers in cited for n in numbers})
    vectors = embed([text for text, _ in cited] + [by_number[n] for n in numbers_used])
    sentence_vectors, passage_vectors = vectors[: len(cited)], vectors[len(cited) :]
    row_of = {n: i for i, n in enumerate(numbers_used)}
    checks = []
    for (text, numbers), vector in zip(cited, sentence_vectors, strict=True):
        scored = []
        for n in numbers:
            cosine = float(np.dot(vector, passage_vectors[row_of[n]]))
            words = overlap(text, by_number[n])
            scored.append(((cosine + words) / 2, cosine, words, n))
        score, cosine, words, best = max(scored)
        checks.append(
            SentenceSupport(
                sentence=text,
                cited=numbers,
                best=best,
                cosine=round(cosine, 4),
                overlap=round(words, 4),
                score=round(score, 4),
                supported=score >= SUPPORT_MIN,
            )
        )
    return checks


def support_rate(checks: list[SentenceSupport]) -> float:
    """Share of cited sentences that their passages support (0.0 when nothing is cited)."""
    return sum(c.supported for c in checks) / len(checks) if checks else 0.0


def confidence(top_similarity: float, rate: float) -> float:
    """P(answer is right) from the best source's similarity to the question and the support rate."""
    weights = CONFIDENCE_WEIGHTS
    logit = weights["intercept"] + weights["top_similarity"] * top_similarity + weights["support_rate"] * rate
    return round(1 / (1 + math.exp(-logit)), 4)
