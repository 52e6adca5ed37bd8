"""Sentiment of short English texts with VADER (lexicon and rules, no model files): a label and scores."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, Field
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

MAX_CHARACTERS = 10_000
POSITIVE_FROM = 0.05  # VADER's documented thresholds on the compound score
NEGATIVE_TO = -0.05
Label = Literal["positive", "negative", "neutral"]


class Scores(BaseModel):
    pos: float = Field(description="Proportion of the text that reads positive, 0 to 1.")
    neu: float = Field(description="Proportion of the text that reads neutral, 0 to 1.")
    neg: float = Field(description="Proportion of the text that reads negative, 0 to 1.")
    compound: float = Field(description="Normalised sum of the word valences, -1 (most negative) to 1.")


class Sentiment(BaseModel):
    label: Label = Field(description="positive from compound 0.05, negative to -0.05, else neutral.")
    score: float = Field(description="The compound score the label is read from, -1 to 1.")
    scores: Scores


@cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()  # reads the lexicon and emoji files once per process


def _label(compound: float) -> Label:
    if compound >= POSITIVE_FROM:
        return "positive"
    if compound <= NEGATIVE_TO:
        return "negative"
    return "neutral"


def analyze(text: str) -> Sentiment:
    """The sentiment of `text` (a sentence to a few paragraphs; callers keep it under MAX_CHARACTERS)."""
    scores = Scores(**_analyzer().polarity_scores(text))
    return Sentiment(label=_label(scores.compound), score=scores.compound, scores=scores)
