"""Summary agent: summarises text or earlier results within a word bound."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from pydantic import Field

from agents.base import Agent, AgentRequest, AgentResult, generate
from agents.llm import LLMUnavailable, get_llm
from conveyor import prompts

NAME: Final = "summary"
SYSTEM = (
    "You summarise text faithfully and concisely. State the findings that matter (the largest group and its "
    "share, the trend over time, outliers) with their numbers exactly as the text gives them; never write a "
    "number the text does not contain. Use at most {words} words."
)
NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:\s*(?:million|thousand|billion)\b)?", re.IGNORECASE)
SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9}
# Lines a cut can leave at the end with nothing after them: a heading, a bare list marker ("1.", "-").
EMPTY_ENDING = re.compile(r"(?:\n[ \t]*(?:#{1,6}[ \t][^\n]*|\d+\.|[-*+])?[ \t]*)+\Z")


class SummaryRequest(AgentRequest):
    max_words: int = Field(120, ge=10, le=1000)


def bound_words(text: str, max_words: int) -> str:
    """Cut `text` to `max_words`, ending at the last full sentence inside the bound when there is one."""
    words = list(re.finditer(r"\S+", text))
    if len(words) <= max_words:
        return text.strip()
    last = words[max_words - 1].end()
    cut = text[: last + text[last : last + 1].count("\n")]  # line breaks kept: markdown stays readable
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("!"), cut.rfind("?"), cut.rfind("\n"))
    return cut[: end + 1].strip() if end > len(cut) // 2 else cut.rstrip(",;:") + "..."


def drop_unfinished(text: str) -> str:
    """`text` without its last sentence or list line when the token limit cut it off midway."""
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("\n"), text.rfind("! "), text.rfind("? "))
    return text[: end + 1].strip() if end > 0 else text.strip()


def _summary(
    messages: list[dict], budget: int, max_words: int, on_token: Callable[[str], None] | None
) -> str:
    """The model's summary within `max_words`; one the token budget cut off ends at its last full sentence."""
    text = generate(messages, NAME, on_token, max_tokens=budget)
    tokens = get_llm(NAME).count_tokens(text)
    if tokens is None or tokens >= budget - 1:
        text = text if text.rstrip().endswith((".", "!", "?")) else drop_unfinished(text)
    return EMPTY_ENDING.sub("", bound_words(text, max_words))


def _value(number: str) -> tuple[float, float]:
    """A number as written ("1,234.5", "15.7 million") -> its value and the step it was rounded to."""
    digits, *scale = number.replace(",", "").lower().split()
    factor = SCALES[scale[0]] if scale else 1.0
    decimals = len(digits.partition(".")[2])
    return float(digits) * factor, 10.0**-decimals * factor


def unsupported_numbers(summary: str, source: str) -> list[str]:
    """Numbers of `summary` that no number of `source` rounds to (signs and units aside)."""
    known = [_value(n)[0] for n in NUMBER.findall(source)]
    unsupported = []
    for written in NUMBER.findall(summary):
        value, step = _value(written)
        if not any(abs(value - k) <= step / 2 + 1e-9 * abs(k) for k in known):
            unsupported.append(written)
    return unsupported


def summarise(request: SummaryRequest, on_token: Callable[[str], None] | None = None) -> AgentResult:
    """Summarise the instruction's text plus any earlier results, in at most `max_words` words; a number the
    text does not contain is sent back once for correction, then reported in `data["unsupported_numbers"]`."""
    text = f"{request.instruction}\n\n{request.context}".strip()[:12_000]
    system = prompts.system_prompt(NAME, SYSTEM).text
    messages = [
        {"role": "system", "content": system.format(words=request.max_words)},
        {"role": "user", "content": f"Summarise:\n\n{text}"},
    ]
    budget = request.max_words * 3 + 32  # markdown and figures like "$15,708,803.88" take many tokens a word
    try:
        summary = _summary(messages, budget, request.max_words, on_token)
        if unsupported := unsupported_numbers(summary, text):
            messages += [
                {"role": "assistant", "content": summary},
                {
                    "role": "user",
                    "content": f"These numbers are not in the text: {', '.join(unsupported)}. Rewrite the "
                    "summary using only numbers that appear in the text.",
                },
            ]
            summary = _summary(messages, budget, request.max_words, None)
    except LLMUnavailable as exc:
        return AgentResult.without_llm(NAME, exc, f"The language model is unavailable: {exc}")
    return AgentResult(
        agent=NAME,
        answer=summary,
        data={
            "words": len(summary.split()),
            "max_words": request.max_words,
            "unsupported_numbers": unsupported_numbers(summary, text),
        },
    )


AGENT = Agent(
    name=NAME,
    description=(
        "Makes a given text shorter: summaries, key points, TL;DR of text in the message or earlier results. "
        "Example: 'Summarize this: ...'"
    ),
    request=SummaryRequest,
    run=summarise,
    streams=True,
)
