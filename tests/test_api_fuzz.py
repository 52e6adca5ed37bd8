"""Chat API under bad input: schemathesis fuzzing of the OpenAPI schema (no 5xx), size and format limits."""

import httpx
import hypothesis
import schemathesis
from schemathesis.generation import GenerationMode

import serving.app

# Valid input on these runs the model or an indexing flow (or stores an upload in the shared test
# state): the chat, runs and data tests cover it; the fuzzer sends them schema-violating input only.
HEAVY = r"^/(chat|chat/stream|chat/message|ml/generate|v1/chat/completions|rag/documents|datasets)$"
# Either of its two body shapes starts a flow run, so even "invalid" input can be valid for the other one:
# tests/test_api_compat.py covers it, and /rag/documents (the same indexing) is fuzzed.
UNFUZZED = "/data/process"


API_SETTINGS = {"api_rate_limit_per_minute": 100_000}


def load_schema(max_examples: int, modes: list[GenerationMode]) -> schemathesis.BaseSchema:
    """The app's own OpenAPI document; cases are sent over HTTP to the live server."""
    schema = schemathesis.openapi.from_dict(serving.app.app.openapi())
    schema.config.generation.update(max_examples=max_examples, modes=modes)
    return schema


# `/ready` answers 503 by design whenever a store is slow or down: it is a probe, not an input handler.
light_schema = (
    load_schema(15, list(GenerationMode))
    .exclude(path_regex=HEAVY, method="POST")
    .exclude(path="/ready")
    .exclude(path=UNFUZZED)
)
heavy_schema = load_schema(15, [GenerationMode.NEGATIVE]).include(path_regex=HEAVY, method="POST")


def call_without_server_error(case, api, auth) -> None:
    response = case.call(base_url=api.url, headers=auth, timeout=120)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )


@light_schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_error_on_generated_input(case, api, auth):
    call_without_server_error(case, api, auth)


@heavy_schema.parametrize()
@hypothesis.settings(deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_no_server_error_on_invalid_input_to_model_and_flow_routes(case, api, auth):
    call_without_server_error(case, api, auth)


class TestLimits:
    def test_oversized_json_body_is_413(self, api, auth):
        body = b'{"message": "' + b"x" * 1_100_000 + b'"}'
        response = httpx.post(
            f"{api.url}/chat", headers=auth | {"Content-Type": "application/json"}, content=body
        )
        assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def test_oversized_chunked_body_is_413(self, api, auth):
        def chunks():
            for _ in range(40):
                yield b"x" * 50_000

        response = httpx.post(
            f"{api.url}/rag/query", headers=auth | {"Content-Type": "application/json"}, content=chunks()
        )
        assert response.status_code == 413

    def test_malformed_json_is_422_with_the_reason(self, api, auth):
        response = httpx.post(
            f"{api.url}/rag/query", headers=auth | {"Content-Type": "application/json"}, content=b'{"query": '
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"

    def test_wrong_content_type_is_422(self, api, auth):
        response = httpx.post(
            f"{api.url}/rag/query", headers=auth | {"Content-Type": "text/plain"}, content=b'{"query": "x"}'
        )
        assert response.status_code == 422

    def test_form_where_json_is_expected_is_422(self, api, auth):
        response = httpx.post(f"{api.url}/chat", headers=auth, data={"message": "hi"})
        assert response.status_code == 422

    def test_request_id_is_echoed_or_made(self, api):
        assert (
            httpx.get(f"{api.url}/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
            == "abc-123"
        )
        made = httpx.get(f"{api.url}/health", headers={"X-Request-ID": "bad id\twith junk"}).headers[
            "x-request-id"
        ]
        assert made != "bad id\twith junk" and len(made) == 32

    def test_openapi_and_chat_page_are_served(self, api):
        schema = httpx.get(f"{api.url}/openapi.json").json()
        assert {
            "/chat",
            "/chat/stream",
            "/v1/chat/completions",
            "/rag/query",
            "/models/{name}/predict",
        } <= set(schema["paths"])
        page = httpx.get(f"{api.url}/")
        assert page.status_code == 200 and "<title>Conveyor</title>" in page.text
        assert "/static/app.js" in page.text  # the web app
