"""Answer lineage over real components: every id an answer names is followed to LanceDB, Prefect, MLflow
(trace, prompt version) and the model files; re-indexing moves the version while the old one still opens;
tracing down costs nothing."""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from sqlalchemy import select, text

from agents import research
from agents.llm import LOCAL_MODELS
from conveyor import knowledge, tracking
from conveyor.embeddings import model_path
from conveyor.settings import get_settings
from flows.index_documents import index_documents
from serving.db import Conversation, Message, User, make_engine, make_sessionmaker
from serving.testing import free_port, login, poll, sse_events

REPO = Path(__file__).resolve().parent.parent
DOMAIN = "lineage-notes"
QUESTION = "Is LanceDB an in-process database or a server?"  # one of the router's research examples
BEFORE = [
    {"id": "lancedb", "title": "LanceDB", "text": "LanceDB is an in-process database: no server to start."},
    {"id": "mars", "title": "Mars", "text": "Mars is a red planet with the tallest volcano, Olympus Mons."},
]
AFTER = [
    {"id": "lancedb", "title": "LanceDB", "text": "LanceDB runs in your process; LanceDB Cloud is a server."},
    BEFORE[1],
]


def indexed(documents: list[dict], domain: str = DOMAIN) -> tuple[str, int]:
    """Index `documents` with the flow; its flow run id and the table version it committed."""
    state = index_documents(domain=domain, documents=documents, return_state=True)
    return str(state.state_details.flow_run_id), state.result().table_version


def flow_run(run_id: str) -> tuple[str, dict, str]:
    """A flow run's flow name, parameters and state, read from the Prefect API."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        return client.read_flow(run.flow_id).name, run.parameters, run.state.type.value


def rows_at(version: int, domain: str = DOMAIN) -> dict[str, str]:
    """chunk_id -> text of the domain's table checked out at `version`."""
    table = knowledge.open_domain(domain)
    table.checkout(version)
    rows = table.to_arrow().select(["chunk_id", "text"]).to_pylist()
    return {row["chunk_id"]: row["text"] for row in rows}


def read_of(version: int, run_id: str) -> dict:
    """The lineage entry of DOMAIN read at `version`, written by the index run `run_id`."""
    return {
        "domain": DOMAIN,
        "table": knowledge.table_name(DOMAIN),
        "version": version,
        "index_flow_run_id": run_id,
    }


def our_read(lineage: dict) -> dict:
    [read] = [read for read in lineage["domains"] if read["domain"] == DOMAIN]
    return read


def ask(api, auth, query: str = QUESTION) -> dict:
    response = httpx.post(
        f"{api.url}/rag/query", headers=auth, json={"query": query, "domains": [DOMAIN], "k": 2}
    )
    assert response.status_code == 200, response.text
    return response.json()


def trace_of(trace_id: str):
    """The answer's trace once the background export has written all of it."""

    def complete():
        try:
            trace = mlflow.MlflowClient(get_settings().tracking_uri).get_trace(trace_id)
        except MlflowException:
            return None
        return trace if trace.info.state == "OK" and any(s.name == "chat" for s in trace.data.spans) else None

    return poll(complete, 60, f"trace {trace_id}", every_s=0.5)


@pytest.fixture(scope="module")
def first_run() -> tuple[str, int]:
    return indexed(BEFORE)


@pytest.fixture(scope="module")
def other_user(api, auth) -> dict[str, str]:
    httpx.post(f"{api.url}/users", headers=auth, json={"username": "someone", "password": "someone-pass1"})
    return login(api.url, "someone", "someone-pass1")


@pytest.fixture(scope="module")
def chat_reply(api, auth, first_run) -> dict:
    response = httpx.post(f"{api.url}/chat", headers=auth, json={"message": QUESTION}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


class TestRagQuery:
    def test_names_the_version_read_and_the_index_run_that_wrote_it(self, api, auth, first_run):
        run_id, version = first_run
        found = ask(api, auth)
        lineage = found["lineage"]
        assert our_read(lineage) == read_of(version, run_id)
        name, parameters, state = flow_run(run_id)
        assert (name, parameters["domain"], parameters["documents"], state) == (
            "index-documents",
            DOMAIN,
            BEFORE,
            "COMPLETED",
        )
        at_version = rows_at(version)
        assert all(at_version[p["chunk_id"]] == p["text"] for p in found["passages"])

        weights = Path(model_path(get_settings().embedding_model)) / "model.safetensors"
        expected = hashlib.sha256(weights.read_bytes()).hexdigest()
        assert lineage["embedding"] == {"name": get_settings().embedding_model, "digest": expected}
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
        locked = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["prepare-data"]["outs"]
        [knowledge_md5] = [out["md5"] for out in locked if out["path"] == "data/knowledge"]
        assert lineage["data_revision"] == {
            "git_commit": commit.stdout.strip(),
            "knowledge_md5": knowledge_md5,
        }
        assert lineage["llm"] is None and lineage["router"] is None and lineage["trace_id"] is None
        assert lineage["prompts"] == [] and lineage["confidence"] is None

    def test_versions_that_index_upkeep_added_belong_to_the_run_before_them(self, first_run):
        run_id, _ = first_run
        table = knowledge.open_domain(DOMAIN)
        versions = [v["version"] for v in table.list_versions()]
        assert len(versions) > 1  # the commit, then the full-text index build
        assert {knowledge.index_run_id(table, v) for v in versions} == {run_id}


class TestChat:
    def test_every_id_of_the_answer_leads_to_what_produced_it(self, api, auth, first_run, chat_reply):
        run_id, version = first_run
        lineage = chat_reply["lineage"]
        assert our_read(lineage) == read_of(version, run_id)
        assert lineage["router"]["agent"] == chat_reply["agent"] == "research"
        assert lineage["llm"] == {
            "name": get_settings().llm_model,
            "backend": "embedded",
            "sha256": LOCAL_MODELS[get_settings().llm_model].sha256,
            "model_id": None,
        }
        at_version = rows_at(version)
        cited = [s for s in chat_reply["sources"] if s["domain"] == DOMAIN]
        assert cited and all(at_version[s["chunk_id"]] == s["text"] for s in cited)
        [prompt] = lineage["prompts"]
        stored = mlflow.MlflowClient(get_settings().tracking_uri).get_prompt_version(
            prompt["name"], prompt["version"]
        )
        assert prompt["name"] == "conveyor-research-system" and stored.template == research.SYSTEM
        assert 0.0 < lineage["confidence"] < 1.0

        trace = trace_of(lineage["trace_id"])
        spans = {span.name: span for span in trace.data.spans}
        assert spans["chat"].parent_id is None and spans["chat"].outputs["answer"] == chat_reply["answer"]
        assert spans["route"].outputs["agent"] == "research"
        assert spans["route"].outputs["score"] == lineage["router"]["score"]
        llm_calls = [span for span in trace.data.spans if span.span_type == "LLM"]
        assert {span.parent_id for span in llm_calls} <= {
            spans["route"].span_id,
            spans["agent:research"].span_id,
        }
        assert spans["retrieve"].parent_id == spans["agent:research"].span_id
        domain_span = spans[f"retrieve:{DOMAIN}"]
        assert domain_span.parent_id == spans["retrieve"].span_id
        assert domain_span.inputs["version"] == version
        assert {p["chunk_id"] for p in domain_span.outputs["passages"]} >= {s["chunk_id"] for s in cited}
        assert all(isinstance(p["score"], float) for p in domain_span.outputs["passages"])
        generation = spans["llm.stream"]
        assert generation.parent_id == spans["agent:research"].span_id
        assert generation.inputs["prompt_chars"] > len(QUESTION) and generation.outputs["tokens"] > 0
        assert generation.end_time_ns > generation.start_time_ns

    def test_the_lineage_is_stored_and_resolved_for_its_owner_only(self, api, auth, other_user, chat_reply):
        lineage = chat_reply["lineage"]
        stored = httpx.get(f"{api.url}/conversations/{chat_reply['conversation_id']}", headers=auth).json()
        assert stored["messages"][-1]["lineage"] == lineage and stored["messages"][0]["lineage"] is None

        resolved = httpx.get(f"{api.url}/lineage/{lineage['answer_id']}", headers=auth)
        assert resolved.status_code == 200, resolved.text
        body = resolved.json()
        assert body["lineage"] == lineage and body["conversation_id"] == chat_reply["conversation_id"]
        assert body["links"]["index_flow_runs"][DOMAIN].endswith(
            f"/runs/flow-run/{our_read(lineage)['index_flow_run_id']}"
        )
        experiment = mlflow.MlflowClient(get_settings().tracking_uri).get_experiment_by_name("chat")
        assert body["links"]["trace"].endswith(
            f"/#/experiments/{experiment.experiment_id}/traces?selectedTraceId={lineage['trace_id']}"
        )

        for headers, answer_id in ((other_user, lineage["answer_id"]), (auth, "0" * 32)):
            missing = httpx.get(f"{api.url}/lineage/{answer_id}", headers=headers)
            assert missing.status_code == 404 and answer_id in missing.json()["detail"]
        assert httpx.get(f"{api.url}/lineage/not-an-id", headers=auth).status_code == 422

    def test_reindexing_moves_the_version_and_the_old_one_still_shows_the_old_answer(
        self, api, auth, first_run, chat_reply
    ):
        old_run, old_version = first_run
        new_run, new_version = indexed(AFTER)
        assert new_version > old_version and new_run != old_run
        assert our_read(ask(api, auth)["lineage"]) == read_of(new_version, new_run)
        cited = [s for s in chat_reply["sources"] if s["domain"] == DOMAIN]
        then, now = rows_at(old_version), rows_at(new_version)
        assert all(then[s["chunk_id"]] == s["text"] for s in cited)  # what the old answer saw
        changed = [chunk for chunk in now if chunk.startswith("lancedb#")]
        assert changed and all(now[c] != then.get(c) for c in changed)


class TestTracingDown:
    def test_an_unreachable_tracking_server_leaves_answers_untraced_with_one_warning(
        self, api, auth, configure, caplog
    ):
        configure(mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
        caplog.set_level(logging.WARNING, logger=tracking.log.name)
        body = {"message": "Summarize in five words: the tide rose over the harbour wall at noon."}
        with httpx.stream("POST", f"{api.url}/chat/stream", headers=auth, json=body, timeout=300) as response:
            assert response.status_code == 200
            [final] = [data for kind, data in sse_events(response.iter_lines()) if kind == "final"]
        assert final["answer"].strip() and final["lineage"]["trace_id"] is None
        assert final["lineage"]["llm"]["sha256"] == LOCAL_MODELS[get_settings().llm_model].sha256
        with tracking.trace_answer("chat", {"message": "again"}) as trace:  # the next answer, without the LLM
            assert trace.trace_id is None
        assert len([r for r in caplog.records if "not traced" in r.getMessage()]) == 1


class TestStorage:
    def test_a_database_made_before_lineage_gets_the_columns_and_keeps_its_rows(self, tmp_path, caplog):
        url = f"sqlite:///{tmp_path / 'old.db'}"
        with make_sessionmaker(make_engine(url))() as session:
            session.add(User(id=1, username="old", password_hash="x"))
            session.add(Conversation(id="c" * 32, user_id=1, title="old"))
            session.add(Message(conversation_id="c" * 32, role="assistant", content="an old answer"))
            session.commit()
            session.execute(text("DROP INDEX ix_messages_answer_id"))
            session.execute(text("ALTER TABLE messages DROP COLUMN answer_id"))
            session.execute(text("ALTER TABLE messages DROP COLUMN lineage"))
            session.commit()

        caplog.set_level(logging.INFO, logger="conveyor.api")
        with make_sessionmaker(make_engine(url))() as session:
            [old] = session.scalars(select(Message)).all()
        assert (old.content, old.lineage, old.answer_id) == ("an old answer", None, None)
        added = sorted(r.getMessage() for r in caplog.records if "added column" in r.getMessage())
        assert [line.split(" (")[0] for line in added] == [
            "database: added column messages.answer_id",
            "database: added column messages.lineage",
        ]


def test_only_the_last_index_runs_stay_tagged(monkeypatch):
    monkeypatch.setattr(knowledge, "INDEX_RUNS_KEPT", 1)
    domain = "lineage-kept"
    first, first_version = indexed(BEFORE, domain)
    second, second_version = indexed(AFTER, domain)
    table = knowledge.open_domain(domain)
    assert knowledge.index_run_id(table, second_version) == second
    assert knowledge.index_run_id(table, first_version) is None  # its tag was dropped: no longer vouched for
