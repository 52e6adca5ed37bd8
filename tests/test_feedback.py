"""Feedback over HTTP: ratings and corrections of chat answers and agent runs land in agent memory, show in
the performance report, and routing corrections join the router's next training set."""

import uuid
from pathlib import Path

import httpx
import pytest

from agents import memory, router_model
from agents.catalog import AGENTS
from serving.testing import login
from tasks.routing import check_router_examples


@pytest.fixture(scope="module")
def other_user(api, auth) -> dict[str, str]:
    httpx.post(f"{api.url}/users", headers=auth, json={"username": "critic", "password": "critic-pass1"})
    return login(api.url, "critic", "critic-pass1")


@pytest.fixture(scope="module")
def conversation(api, auth) -> tuple[str, list[dict]]:
    """A conversation of two answers: its id and the two replies."""
    replies: list[dict] = []
    for message in ("Summarize in one sentence: the ferry leaves every 40 minutes from pier 3.", "Shorter."):
        body = {"message": message} | ({"conversation_id": replies[0]["conversation_id"]} if replies else {})
        response = httpx.post(f"{api.url}/chat", headers=auth, json=body, timeout=300)
        assert response.status_code == 200, response.text
        replies.append(response.json())
    assert all(r["run_id"] for r in replies), "chat recorded no agent-memory run"
    return replies[0]["conversation_id"], replies


def post(api, headers, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{api.url}{path}", headers=headers, json=body, timeout=60)


def report_row(agent: str) -> dict:
    return next(
        (r for r in memory.performance_report() if r["agent"] == agent),
        {"rated": 0, "rated_bad": 0, "rated_good": 0, "corrections": 0},
    )


class TestAnswerFeedback:
    def test_the_latest_answer_by_default_with_a_correction(self, api, auth, conversation):
        conversation_id, replies = conversation
        latest = replies[-1]
        before = report_row(latest["agent"])
        response = post(
            api, auth, f"/chat/{conversation_id}/feedback", {"rating": -1, "correction": "Pier 3."}
        )
        assert response.status_code == 201, response.text
        given = response.json()
        assert given["run_id"] == latest["run_id"] and given["answer_id"] == latest["lineage"]["answer_id"]
        assert (
            given["agent"] == latest["agent"] and given["correction"] == "Pier 3." and given["rating"] == -1
        )

        stored = memory.feedback_for(latest["run_id"])
        assert stored[-1]["id"] == given["feedback_id"] and stored[-1]["correction"] == "Pier 3."
        after = report_row(latest["agent"])
        assert after["rated"] == before["rated"] + 1 and after["rated_bad"] == before["rated_bad"] + 1
        assert after["corrections"] == before["corrections"] + 1 and after["average_rating"] < 1

    def test_an_earlier_answer_by_its_id(self, api, auth, conversation):
        conversation_id, replies = conversation
        first = replies[0]
        body = {"rating": 1, "answer_id": first["lineage"]["answer_id"]}
        response = post(api, auth, f"/chat/{conversation_id}/feedback", body)
        assert response.status_code == 201, response.text
        assert response.json()["run_id"] == first["run_id"] and response.json()["correct_agent"] is None
        assert memory.feedback_for(first["run_id"])[-1]["rating"] == 1

    def test_only_your_own_conversation_and_answers(self, api, auth, other_user, conversation):
        conversation_id, _ = conversation
        for headers, path, body, reason in [
            (other_user, f"/chat/{conversation_id}/feedback", {"rating": 1}, "no conversation"),
            (auth, f"/chat/{uuid.uuid4().hex}/feedback", {"rating": 1}, "no conversation"),
            (auth, f"/chat/{conversation_id}/feedback", {"rating": 1, "answer_id": "a" * 32}, "no answer"),
        ]:
            response = post(api, headers, path, body)
            assert response.status_code == 404 and reason in response.json()["detail"], response.text

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"rating": 0}, "-1 or 1"),
            ({"rating": True}, "-1 or 1"),
            ({}, "Field required"),
            ({"rating": 1, "stars": 5}, "Extra inputs"),
            ({"rating": -1, "agent": "poet"}, "unknown agent 'poet'"),
            ({"rating": 1, "answer_id": "not-an-id"}, "pattern"),
            ({"rating": -1, "correction": "   "}, "at least 1 character"),
        ],
    )
    def test_a_bad_body_is_422_with_the_reason(self, api, auth, conversation, body, reason):
        response = post(api, auth, f"/chat/{conversation[0]}/feedback", body)
        assert response.status_code == 422 and reason in str(response.json()["detail"]), response.text

    def test_a_good_rating_cannot_name_another_agent(self, api, auth, conversation):
        conversation_id, replies = conversation
        other = next(a for a in AGENTS if a != replies[-1]["agent"])
        response = post(api, auth, f"/chat/{conversation_id}/feedback", {"rating": 1, "agent": other})
        assert response.status_code == 422 and "needs -1" in response.json()["detail"]


class TestAgentRunFeedback:
    def test_a_run_agent_task_memory_id(self, api, auth):
        memory_id = memory.record("plan", "planner", "Analyse sales_2024.csv", True, 2.0, plan={"steps": []})
        response = post(
            api, auth, f"/agent-runs/{memory_id}/feedback", {"rating": -1, "correction": "Chart."}
        )
        assert response.status_code == 201, response.text
        assert response.json()["agent"] == "planner" and memory.feedback_for(memory_id)[0]["rating"] == -1

        rerouted = post(api, auth, f"/agent-runs/{memory_id}/feedback", {"rating": -1, "agent": "code"})
        assert rerouted.status_code == 422 and "not one agent's answer" in rerouted.json()["detail"]

    def test_an_unknown_or_someone_elses_run_is_404(self, api, auth, other_user, conversation):
        _, replies = conversation
        for headers, run_id in [(auth, uuid.uuid4().hex), (other_user, replies[0]["run_id"])]:
            response = post(api, headers, f"/agent-runs/{run_id}/feedback", {"rating": 1})
            assert response.status_code == 404 and "no agent run" in response.json()["detail"]
        assert post(api, auth, "/agent-runs/x' OR '1'='1/feedback", {"rating": 1}).status_code == 422


class TestRoutingCorrections:
    def test_a_correction_joins_the_next_training_set(self, api, auth, configure, tmp_path):
        configure(lancedb_uri=str(tmp_path / "memory"))  # corrections of this test only
        curated = router_model.load_examples()
        message = f"Plot the weekly revenue of store {uuid.uuid4().hex[:6]} as a line chart"
        wrong = memory.record("agent", "research", message, True, 1.0, output="Stores sell things.")
        labelled = memory.record("agent", "code", curated[0].message, True, 1.0)
        for run_id, agent in [(wrong, "code"), (labelled, "summary")]:
            response = post(api, auth, f"/agent-runs/{run_id}/feedback", {"rating": -1, "agent": agent})
            assert response.status_code == 201 and response.json()["correct_agent"] == agent, response.text

        data = check_router_examples.fn(str(router_model.TRAINING_FILE))
        examples = router_model.load_examples(Path(data.path))
        assert data.corrections == 1 and router_model.Example(message=message, agent="code") in examples
        assert examples[: len(curated)] == curated  # the curated file keeps its labels
        assert data.tags()["conveyor.router_corrections"] == "1"

        without = check_router_examples.fn(str(router_model.TRAINING_FILE), corrections=False)
        assert without.path == str(router_model.TRAINING_FILE) and without.corrections == 0
