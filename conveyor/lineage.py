"""Answer lineage: the data, index versions, models, prompts, route and trace behind one answer, and links to
them."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Literal
from uuid import uuid4

from pydantic import BaseModel, Field

from conveyor import pipeline, tracking
from conveyor.embeddings import model_path
from conveyor.settings import get_settings

log = logging.getLogger(__name__)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # sentence-transformers layouts, first found wins


class DomainRead(BaseModel):
    """One knowledge domain as a query read it: the table, its version, and the index run that wrote it."""

    domain: str
    table: str
    version: int
    index_flow_run_id: str | None = Field(description="The `index-documents` flow run that wrote it.")


class EmbeddingModel(BaseModel):
    name: str
    digest: str | None = Field(description="sha256 of the weights file; null when there is none to read.")


class LanguageModel(BaseModel):
    name: str
    backend: Literal["embedded", "openai"]
    sha256: str | None = Field(None, description="The GGUF file's sha256 (embedded backend).")
    model_id: str | None = Field(None, description="The model id asked of the endpoint (openai backend).")


class DataRevision(BaseModel):
    git_commit: str | None = Field(description="The serving checkout's commit.")
    knowledge_md5: str | None = Field(description="What dvc.lock pins for data/knowledge.")


class RouteDecision(BaseModel):
    agent: str
    method: str
    score: float | None = Field(None, description="The router's confidence in `agent` (0 to 1).")


class PromptRef(BaseModel):
    """A prompt an agent used: its name in MLflow's prompt registry and the version."""

    name: str
    version: int | None = Field(description="null: the registry was unreachable, the text in code was used.")


class Lineage(BaseModel):
    """Which data, index versions, models, prompts and run produced an answer."""

    answer_id: str = Field(default_factory=lambda: uuid4().hex)
    domains: list[DomainRead]
    embedding: EmbeddingModel
    llm: LanguageModel | None = None
    prompts: list[PromptRef] = Field(default_factory=list, description="`prompts:/NAME/VERSION` in MLflow.")
    data_revision: DataRevision
    router: RouteDecision | None = None
    confidence: float | None = Field(
        None,
        description="The research agent's calibrated probability that the answer is right (from retrieval "
        "similarity and citation support); null for other agents and for no answer.",
    )
    trace_id: str | None = Field(None, description="The answer's MLflow trace; null when not traced.")


class Links(BaseModel):
    """Where to look at what a lineage names."""

    index_flow_runs: dict[str, str | None] = Field(description="Prefect UI page of each domain's index run.")
    trace: str | None = Field(description="MLflow UI page of the trace.")


class Recording(list[DomainRead]):
    """What one answer read (the domain reads, in order), plus the prompt versions its agent used and the
    confidence it gave; `build` takes it as its `reads`."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[PromptRef] = []
        self.confidence: float | None = None


_recording: ContextVar[Recording | None] = ContextVar("conveyor_lineage_recording", default=None)


@contextmanager
def recording() -> Iterator[Recording]:
    """Collect what every gateway query, prompt and agent in this context (one answer) notes."""
    recorded = Recording()
    token = _recording.set(recorded)
    try:
        yield recorded
    finally:
        _recording.reset(token)


def note_reads(reads: list[DomainRead]) -> None:
    """Add a query's reads to the answer being recorded, if any (the gateway calls this)."""
    recorded = _recording.get()
    if recorded is not None:
        recorded.extend(reads)


def note_prompt(prompt: PromptRef) -> None:
    """Add a prompt version to the answer being recorded, if any (conveyor.prompts calls this)."""
    recorded = _recording.get()
    if recorded is not None and prompt not in recorded.prompts:
        recorded.prompts.append(prompt)


def note_confidence(confidence: float | None) -> None:
    """Set the answer's confidence, if an answer is being recorded (the research agent calls this)."""
    recorded = _recording.get()
    if recorded is not None:
        recorded.confidence = confidence


@cache
def _weights_digest(name: str) -> str | None:
    folder = Path(model_path(name))
    for candidate in WEIGHT_FILES:
        if (folder / candidate).is_file():
            with (folder / candidate).open("rb") as weights:
                return hashlib.file_digest(weights, "sha256").hexdigest()
    return None


def embedding_model() -> EmbeddingModel:
    """The configured embedding model and its weights' digest (hashed once per process)."""
    name = get_settings().embedding_model
    return EmbeddingModel(name=name, digest=_weights_digest(name))


@cache
def data_revision() -> DataRevision:
    """The checkout's commit and its DVC-locked knowledge sources, read once per process."""
    try:
        knowledge = pipeline.locked_md5(pipeline.REPO / "data" / "knowledge")
    except Exception as exc:  # no DVC repository here (an image without one): the commit still says much
        log.warning("lineage: no DVC revision of the knowledge sources: %s", exc)
        knowledge = None
    return DataRevision(git_commit=tracking.git_commit() or None, knowledge_md5=knowledge)


def build(
    reads: list[DomainRead],
    llm: LanguageModel | None = None,
    router: RouteDecision | None = None,
    trace_id: str | None = None,
) -> Lineage:
    """An answer's lineage from what its queries read (each domain version once) and what answered it."""
    unique = {(read.domain, read.version): read for read in reads}
    return Lineage(
        domains=list(unique.values()),
        embedding=embedding_model(),
        llm=llm,
        prompts=reads.prompts if isinstance(reads, Recording) else [],
        data_revision=data_revision(),
        router=router,
        confidence=reads.confidence if isinstance(reads, Recording) else None,
        trace_id=trace_id,
    )


def links(lineage: Lineage) -> Links:
    """Prefect UI pages of the index runs and the MLflow UI page of the trace (the `make up` servers when
    the stores are embedded)."""
    from prefect.utilities.urls import url_for

    prefect_ui = f"http://127.0.0.1:{get_settings().prefect_port}"
    return Links(
        index_flow_runs={
            read.domain: read.index_flow_run_id
            and url_for("flow-run", obj_id=read.index_flow_run_id, default_base_url=prefect_ui)
            for read in lineage.domains
        },
        trace=lineage.trace_id and tracking.trace_url(lineage.trace_id),
    )
