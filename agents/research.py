"""Research agent: answers from the knowledge base with numbered citations that map to its sources, and says
how confident it is (conveyor/grounding.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np

from agents.base import Agent, AgentRequest, AgentResult, generate
from agents.llm import LLMUnavailable
from conveyor import grounding, lineage, prompts
from conveyor.grounding import CITATION

NAME: Final = "research"
RELEVANCE_MIN = 0.3  # MiniLM cosine between question and passage below which a passage is off-topic
ATTRIBUTION_MIN = 0.35
NO_ANSWER = "I don't know: the knowledge base has nothing relevant to this question."
SYSTEM = (
    "You answer questions using only the numbered sources given. Cite the sources you use as [1], [2]. "
    "If the sources do not contain the answer, say you don't know. Be brief."
)


class ResearchRequest(AgentRequest):
    domains: list[str] | None = None
    k: int = 4


def _source(number: int, passage, similarity: float) -> dict:
    fields = passage.model_dump() if hasattr(passage, "model_dump") else dict(vars(passage))
    return {
        "n": number,
        "doc_id": fields.get("doc_id"),
        "chunk_id": fields.get("chunk_id"),
        "domain": fields.get("domain"),
        "title": fields.get("title"),
        "score": fields.get("score"),
        "similarity": round(similarity, 4),  # MiniLM cosine with the question
        "text": str(fields.get("text", ""))[:800],
    }


def relevant_sources(question: str, domains: list[str] | None, k: int) -> tuple[list[dict], list[dict]]:
    """Retrieved passages that are about the question, numbered from 1; and the domains that failed."""
    from conveyor import gateway
    from conveyor.embeddings import embed

    found = gateway.retrieve(question, domains=domains, k=k)
    failed = [failure.model_dump() for failure in found.failed_domains]
    if not found.passages:
        return [], failed
    vectors = embed([question, *[p.text for p in found.passages]])
    similarity = vectors[1:] @ vectors[0]
    kept = [(p, float(s)) for p, s in zip(found.passages, similarity, strict=True) if s >= RELEVANCE_MIN]
    return [_source(i, p, s) for i, (p, s) in enumerate(kept, start=1)], failed


def attribute(answer: str, sources: list[dict]) -> str:
    """Cite, after each uncited sentence, the source most similar to it (when similar enough)."""
    from conveyor.embeddings import embed

    sentences = grounding.sentences(answer)
    uncited = [i for i, s in enumerate(sentences) if not CITATION.search(s) and len(s.split()) > 3]
    if not uncited or not sources:
        return answer
    vectors = embed([sentences[i] for i in uncited] + [s["text"] for s in sources])
    scores = vectors[: len(uncited)] @ vectors[len(uncited) :].T
    for row, index in enumerate(uncited):
        best = int(np.argmax(scores[row]))
        if scores[row, best] >= ATTRIBUTION_MIN:
            sentence = sentences[index]
            end = len(sentence.rstrip(".!?"))
            sentences[index] = f"{sentence[:end]} [{sources[best]['n']}]{sentence[end:]}"
    return " ".join(sentences)


def citations(answer: str, sources: list[dict]) -> list[int]:
    valid = {s["n"] for s in sources}
    return sorted({int(n) for n in CITATION.findall(answer) if int(n) in valid})


def answer(request: ResearchRequest, on_token: Callable[[str], None] | None = None) -> AgentResult:
    """Retrieve, then answer with citations; with nothing relevant say so; without an LLM return sources."""
    try:
        sources, failed = relevant_sources(request.instruction, request.domains, request.k)
    except Exception as exc:  # the gateway's store may be missing or broken: report, don't crash the chat
        return AgentResult(agent=NAME, answer=f"Retrieval failed: {exc}", ok=False, error=str(exc))
    degraded = {"failed_domains": failed} if failed else {}  # the answer lacks these domains
    if not sources:
        return AgentResult(agent=NAME, answer=NO_ANSWER, data={"citations": [], **degraded})
    numbered = "\n\n".join(f"Source [{s['n']}] ({s['title'] or s['doc_id']}):\n{s['text']}" for s in sources)
    context = f"\n\nEarlier results:\n{request.context[:2000]}" if request.context else ""
    system = prompts.system_prompt(NAME, SYSTEM)
    messages = [
        {"role": "system", "content": system.text},
        {
            "role": "user",
            "content": f"Question: {request.instruction}\n\n{numbered}{context}\n\n"
            f"Answer the question in a full sentence, citing the source: {request.instruction}",
        },
    ]
    try:
        text = generate(messages, "research", on_token, max_tokens=200, temperature=0.1)
    except LLMUnavailable as exc:
        return AgentResult.without_llm(
            NAME,
            exc,
            f"The language model is unavailable ({exc}); the retrieved sources follow.",
            sources=sources,
            data=degraded,
        )
    text = attribute(text, sources)
    # Citations that name no source are removed rather than shown as dangling numbers.
    text = CITATION.sub(lambda m: m.group(0) if int(m.group(1)) <= len(sources) else "", text)
    checks = grounding.citation_support(text, sources)
    support = grounding.support_rate(checks)
    confidence = grounding.confidence(max(s["similarity"] for s in sources), support)
    lineage.note_confidence(confidence)
    return AgentResult(
        agent=NAME,
        answer=text,
        sources=sources,
        data={
            "citations": citations(text, sources),
            "confidence": confidence,
            "citation_support": round(support, 4),
            "prompt": system.ref.model_dump(),
            **degraded,
        },
    )


AGENT = Agent(
    name=NAME,
    description=(
        "Answers what/how/why questions about concepts, Python modules, Conveyor or the ML datasets' "
        "documentation, from the knowledge base with citations. Example: 'What is a Prefect work pool?'"
    ),
    request=ResearchRequest,
    run=answer,
    streams=True,
)
