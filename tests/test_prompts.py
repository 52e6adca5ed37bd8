"""Agents' system prompts in MLflow's prompt registry: one version per change of the text in code,
`@production` followed, the version an answer used in its lineage, answers that don't wait on a store that
is down."""

from __future__ import annotations

import logging

import pytest

from agents import research
from conveyor import lineage, prompts, tracking
from conveyor.lineage import PromptRef
from flows.index_documents import index_documents
from serving.testing import free_port

DOMAIN = "prompt-notes"
DOCUMENTS = [
    {"id": "lancedb", "title": "LanceDB", "text": "LanceDB is an in-process database: no server to start."},
    {"id": "mars", "title": "Mars", "text": "Mars is a red planet with the tallest volcano, Olympus Mons."},
]
QUESTION = "Is LanceDB an in-process database or a server?"


@pytest.fixture(autouse=True)
def fresh_reads():
    """Every test reads the registry anew (the module keeps what it read for a minute)."""
    prompts.forget()
    yield
    prompts.forget()


@pytest.fixture(scope="module")
def indexed() -> str:
    index_documents(domain=DOMAIN, documents=DOCUMENTS)
    return DOMAIN


def versions(name: str) -> list[int]:
    return sorted(int(v.version) for v in tracking.client().search_prompt_versions(name))


def production(name: str) -> tracking.PromptVersion | None:
    return tracking.prompt_version(name, prompts.PRODUCTION)


class TestRegistration:
    def test_one_version_per_change_of_the_text_in_code(self):
        first = prompts.system_prompt("first-agent", "Answer briefly.")
        name = prompts.prompt_name("first-agent")
        assert (first.name, first.text, first.version) == (name, "Answer briefly.", 1)
        assert production(name).template == "Answer briefly." and production(name).version == 1

        prompts.forget()
        assert prompts.system_prompt("first-agent", "Answer briefly.").version == 1
        assert versions(name) == [1]  # the same text is not registered again

        changed = prompts.system_prompt("first-agent", "Answer briefly, with sources.")
        assert changed.version == 2 and changed.text == "Answer briefly, with sources."
        assert production(name).version == 2 and versions(name) == [1, 2]

    def test_a_version_promoted_in_the_registry_is_used_until_the_code_changes(self):
        code = "Answer in one sentence."
        name = prompts.prompt_name("second-agent")
        assert prompts.system_prompt("second-agent", code).version == 1
        edited = tracking.client().register_prompt(name, "Answer in one sentence, politely.")
        tracking.set_prompt_alias(name, prompts.PRODUCTION, int(edited.version))

        prompts.forget()
        used = prompts.system_prompt("second-agent", code)
        assert (used.text, used.version) == ("Answer in one sentence, politely.", 2)

        new_code = prompts.system_prompt("second-agent", "Answer in two sentences.")
        assert (new_code.text, new_code.version) == ("Answer in two sentences.", 3)
        assert production(name).version == 3

    def test_prompts_are_noted_only_inside_an_answer(self):
        with lineage.recording() as recorded:
            used = prompts.system_prompt("third-agent", "Be brief.")
            prompts.system_prompt("third-agent", "Be brief.")
        assert recorded.prompts == [PromptRef(name=used.name, version=1)]
        assert lineage.build(recorded).prompts == recorded.prompts
        prompts.system_prompt("third-agent", "Be brief.")  # outside: noted nowhere, no error


class TestResearchAgent:
    def test_the_answer_names_the_prompt_version_it_used(self, indexed):
        with lineage.recording() as recorded:
            result = research.answer(research.ResearchRequest(instruction=QUESTION, domains=[indexed]))
        assert result.ok and result.sources
        [used] = recorded.prompts
        assert used.name == "conveyor-research-system" and used.version is not None
        assert result.data["prompt"] == used.model_dump()
        stored = tracking.client().get_prompt_version(used.name, used.version)
        assert stored.template == research.SYSTEM
        assert 0.0 < result.data["confidence"] < 1.0 and recorded.confidence == result.data["confidence"]


class TestStoreDown:
    def test_the_text_in_code_is_used_with_no_version_and_one_warning(self, indexed, configure, caplog):
        configure(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
        caplog.set_level(logging.WARNING, logger=prompts.log.name)
        first = prompts.system_prompt("first-agent", "Answer briefly.")
        assert (first.text, first.version) == ("Answer briefly.", None)
        with lineage.recording() as recorded:
            result = research.answer(research.ResearchRequest(instruction=QUESTION, domains=[indexed]))
        assert result.ok and result.answer.strip()
        assert recorded.prompts == [PromptRef(name="conveyor-research-system", version=None)]
        warnings = [r for r in caplog.records if r.name == prompts.log.name]
        assert len(warnings) == 1 and "not versioned" in warnings[0].getMessage()
