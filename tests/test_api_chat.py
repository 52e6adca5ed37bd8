"""Chat API with the real agents and embedded LLM: conversations, streaming, OpenAI route, LLM faults."""

import re
import threading

import httpx
import openai
import pytest
from prefect.settings import PREFECT_API_URL

from agents.catalog import AGENTS
from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD
from serving.app import create_app
from serving.testing import ProcessServer, ThreadedServer, free_port, login, sse_events

REPORT = (
    "Summarize in one short sentence: The quarterly report shows revenue grew 12 percent to 4.2 million "
    "dollars, driven by the northern region, while costs stayed flat."
)


@pytest.fixture(scope="module")
def other_user(api, auth) -> dict[str, str]:
    httpx.post(f"{api.url}/users", headers=auth, json={"username": "other", "password": "other-pass1"})
    return login(api.url, "other", "other-pass1")


def stream_chat(api, auth, body: dict) -> list[tuple[str, dict]]:
    with httpx.stream("POST", f"{api.url}/chat/stream", headers=auth, json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response.iter_lines()))


class TestConversations:
    def test_answers_persist_per_conversation_and_user(self, api, auth, other_user):
        first = httpx.post(f"{api.url}/chat", headers=auth, json={"message": REPORT}, timeout=300)
        assert first.status_code == 200, first.text
        reply = first.json()
        assert reply["agent"] in AGENTS and reply["answer"].strip()
        assert isinstance(reply["sources"], list) and re.fullmatch(r"[0-9a-f]{32}", reply["conversation_id"])

        follow_up = {"message": "Now say it in five words.", "conversation_id": reply["conversation_id"]}
        second = httpx.post(f"{api.url}/chat", headers=auth, json=follow_up, timeout=300)
        assert second.status_code == 200 and second.json()["conversation_id"] == reply["conversation_id"]

        stored = httpx.get(f"{api.url}/conversations/{reply['conversation_id']}", headers=auth).json()
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
        assert stored["messages"][0]["content"] == REPORT
        assert (
            stored["messages"][1]["content"] == reply["answer"]
            and stored["messages"][1]["agent"] == reply["agent"]
        )
        listed = httpx.get(f"{api.url}/conversations", headers=auth).json()
        assert reply["conversation_id"] in [c["id"] for c in listed]

        # Someone else's conversation does not exist for them.
        assert (
            httpx.get(f"{api.url}/conversations/{reply['conversation_id']}", headers=other_user).status_code
            == 404
        )
        hijack = httpx.post(f"{api.url}/chat", headers=other_user, json=follow_up, timeout=60)
        assert hijack.status_code == 404
        assert reply["conversation_id"] not in [
            c["id"] for c in httpx.get(f"{api.url}/conversations", headers=other_user).json()
        ]
        assert (
            httpx.delete(
                f"{api.url}/conversations/{reply['conversation_id']}", headers=other_user
            ).status_code
            == 404
        )
        assert (
            httpx.delete(f"{api.url}/conversations/{reply['conversation_id']}", headers=auth).status_code
            == 204
        )
        assert (
            httpx.get(f"{api.url}/conversations/{reply['conversation_id']}", headers=auth).status_code == 404
        )

    @pytest.mark.parametrize(
        "body",
        [
            {"message": ""},
            {"message": "   "},
            {"message": "x" * 8001},
            {"message": "hi", "conversation_id": "../../etc"},
            {"text": "hi"},
        ],
    )
    def test_bad_chat_requests_are_422(self, api, auth, body):
        assert httpx.post(f"{api.url}/chat", headers=auth, json=body).status_code == 422

    def test_unknown_conversation_is_404(self, api, auth):
        body = {"message": "hi", "conversation_id": "0" * 32}
        assert httpx.post(f"{api.url}/chat", headers=auth, json=body).status_code == 404


class TestStreaming:
    def test_tokens_then_a_final_event_with_agent_and_sources(self, api, auth):
        events = stream_chat(api, auth, {"message": REPORT})
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "meta" and kinds[-1] == "final" and "token" in kinds
        assert set(kinds[1:-1]) == {"token"}
        final = events[-1][1]
        assert final["agent"] in AGENTS and isinstance(final["sources"], list) and final["answer"].strip()
        assert final["conversation_id"] == events[0][1]["conversation_id"]
        streamed = "".join(data["text"] for kind, data in events if kind == "token")
        assert streamed.strip()

        stored = httpx.get(f"{api.url}/conversations/{final['conversation_id']}", headers=auth).json()
        assert stored["messages"][-1]["content"] == final["answer"]

        metrics = httpx.get(f"{api.url}/metrics", headers=auth).text
        tokens = re.search(r'conveyor_tokens_streamed_total\{route="/chat/stream"\} (\S+)', metrics)
        assert tokens and float(tokens.group(1)) >= kinds.count("token")
        assert re.search(r"^conveyor_llm_queue_depth \d", metrics, re.MULTILINE)
        assert 'conveyor_http_requests_total{method="POST",route="/chat/stream",status="200"}' in metrics

    def test_health_answers_while_the_model_generates(self, api, auth):
        client = openai.OpenAI(
            base_url=f"{api.url}/v1", api_key=auth["Authorization"].split()[1], max_retries=0
        )
        received = []
        first_token = threading.Event()

        def generate() -> None:
            stream = client.chat.completions.create(
                model="qwen2.5-coder-0.5b-instruct",
                messages=[{"role": "user", "content": "Count from 1 to 60, one number per line."}],
                max_tokens=120,
                stream=True,
            )
            for chunk in stream:
                received.append(chunk)
                first_token.set()

        worker = threading.Thread(target=generate)
        worker.start()
        assert first_token.wait(timeout=300)
        health = httpx.get(f"{api.url}/health", timeout=30)
        seen_at_health = len(received)
        worker.join(timeout=300)
        assert health.status_code == 200
        # Had generation blocked the event loop, /health would have come back only after the last chunk.
        assert seen_at_health < len(received)


class TestOpenAICompatible:
    @pytest.fixture(scope="class")
    def client(self, api, auth) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{api.url}/v1", api_key=auth["Authorization"].split()[1], max_retries=0
        )

    def test_models(self, client, api_settings):
        assert [m.id for m in client.models.list()] == [api_settings.llm_model]

    def test_completion(self, client, api_settings):
        completion = client.chat.completions.create(
            model=api_settings.llm_model,
            messages=[
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Say hello."},
            ],
            max_tokens=8,
        )
        assert completion.object == "chat.completion" and completion.model == api_settings.llm_model
        assert (
            completion.choices[0].message.role == "assistant"
            and completion.choices[0].message.content.strip()
        )
        assert completion.choices[0].finish_reason in ("stop", "length")

    def test_streamed_completion(self, client, api_settings):
        chunks = list(
            client.chat.completions.create(
                model=api_settings.llm_model,
                messages=[{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
                max_tokens=8,
                stream=True,
            )
        )
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        assert len({c.id for c in chunks}) == 1

    def test_unknown_model_and_bad_requests(self, client, api_settings):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(model=api_settings.llm_model, messages=[], max_tokens=4)
        with pytest.raises(openai.UnprocessableEntityError):
            client.chat.completions.create(
                model=api_settings.llm_model, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
            )

    def test_a_token_is_required(self, api, api_settings):
        client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="not-a-token", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(
                model=api_settings.llm_model, messages=[{"role": "user", "content": "hi"}]
            )


class TestSlowModel:
    def test_a_slow_model_gives_504_and_the_api_keeps_serving(self, api_settings):
        impatient = api_settings.model_copy(update={"llm_timeout_s": 0.05})
        with ThreadedServer(create_app(impatient)) as server:
            headers = login(server.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)
            completion = {
                "model": impatient.llm_model,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
            slow_completion = httpx.post(
                f"{server.url}/v1/chat/completions", headers=headers, json=completion
            )
            slow_stream = httpx.post(f"{server.url}/chat/stream", headers=headers, json={"message": REPORT})
            assert httpx.get(f"{server.url}/health").status_code == 200
        for response in (slow_completion, slow_stream):
            assert response.status_code == 504
            assert "timed out" in response.json()["detail"] and response.json()["request_id"]


class TestModelDown:
    def test_an_unreachable_model_gives_503_and_not_ready(self, tmp_path, api_settings):
        env = {
            "CONVEYOR_LLM_BACKEND": "openai",
            "CONVEYOR_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
            "CONVEYOR_LLM_TIMEOUT_S": "60",  # the first chat also loads the embedding model
            "CONVEYOR_DATABASE_URL": api_settings.sql_url,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
        }
        with ProcessServer(env, tmp_path / "api.log") as server:
            headers = login(server.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)
            client = openai.OpenAI(
                base_url=f"{server.url}/v1", api_key=headers["Authorization"].split()[1], max_retries=0
            )
            with pytest.raises(openai.InternalServerError) as down:
                client.chat.completions.create(
                    model=api_settings.llm_model, messages=[{"role": "user", "content": "hi"}]
                )
            summarise = {
                "message": "Summarize in one sentence: the lighthouse was painted red and white in 1871."
            }
            chats = [
                httpx.post(f"{server.url}/{path}", headers=headers, json=summarise, timeout=120)
                for path in ("chat", "chat/stream")
            ]
            ready = httpx.get(f"{server.url}/ready", timeout=120)
            health = httpx.get(f"{server.url}/health")
        assert down.value.status_code == 503 and "unavailable" in down.value.message
        for response in chats:  # routed to the summary agent (by the classifier), which needs the model
            assert response.status_code == 503, response.text
            body = response.json()
            assert "unavailable" in body["detail"] and body["agent"] == "summary" and body["sources"] == []
        assert ready.status_code == 503 and ready.json()["checks"]["llm"].startswith("error")
        assert health.status_code == 200
