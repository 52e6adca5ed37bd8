"""Chat API over Prefect: documents indexed by a background flow run, retrieval, deployed flows, run state."""

import time
import uuid

import httpx
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL

from conveyor import gateway
from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD
from serving.testing import ProcessServer, login, poll

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DOCUMENTS = [
    {
        "id": "zephyr",
        "text": "The Zephyr wind turbine has three carbon blades and turns at 42 revolutions per minute "
        "in a steady breeze; its gearbox is cooled by oil.",
        "metadata": {"title": "Zephyr turbine"},
    },
    {
        "id": "basalt",
        "text": "Basalt is a fine-grained volcanic rock formed from the rapid cooling of lava rich in "
        "magnesium and iron.",
        "metadata": {"title": "Basalt"},
    },
    {
        "id": "sourdough",
        "text": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria in a fermented starter.",
        "metadata": {"title": "Sourdough"},
    },
]


@flow(name="api-echo")
def api_echo(count: int, label: str = "x") -> dict:
    return {"count": count, "label": label}


@pytest.fixture(scope="module")
def echo_deployment() -> str:
    return str(api_echo.to_deployment(name="api-test").apply())


def wait_for_run(api, auth, run_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api.url}/runs/{run_id}", headers=auth).json()
        if run["state"] in TERMINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def wait_for_state(run_id: uuid.UUID, timeout_s: float = 600) -> FlowRun:
    """The flow run once its state is final, read from Prefect itself."""
    with get_client(sync_client=True) as client:

        def finished() -> FlowRun | None:
            run = client.read_flow_run(run_id)
            return run if run.state is not None and run.state.is_final() else None

        return poll(finished, timeout_s, f"flow run {run_id} in a final state")


class TestRag:
    def test_posted_documents_are_indexed_by_a_flow_run_and_retrievable(self, api, auth):
        started = httpx.post(
            f"{api.url}/rag/documents", headers=auth, json={"domain": "api-docs", "documents": DOCUMENTS}
        )
        assert started.status_code == 202, started.text
        assert started.json()["flow_name"] == "index-documents"

        run = wait_for_run(api, auth, started.json()["run_id"])
        assert run["state"] == "COMPLETED", run["message"]
        assert run["flow_name"] == "index-documents" and "api-user:admin" in run["tags"]
        assert run["result"]["domain"] == "api-docs" and run["result"]["added"] == 3

        assert "api-docs" in httpx.get(f"{api.url}/rag/domains", headers=auth).json()
        found = httpx.post(
            f"{api.url}/rag/query",
            headers=auth,
            json={"query": "how fast does the wind turbine turn", "domains": ["api-docs"], "k": 2},
        )
        assert found.status_code == 200, found.text
        passages = found.json()["passages"]
        assert passages[0]["doc_id"] == "zephyr" and passages[0]["domain"] == "api-docs"
        assert "42 revolutions" in passages[0]["text"] and len(passages) == 2

    def test_a_local_run_outlives_the_api_that_started_it(self, api_settings, tmp_path):
        env = {"CONVEYOR_DATABASE_URL": api_settings.sql_url, "PREFECT_API_URL": PREFECT_API_URL.value()}
        posted = {"domain": "api-restart", "documents": DOCUMENTS[:1]}
        with ProcessServer(env, tmp_path / "api.log") as server:
            headers = login(server.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)
            started = httpx.post(f"{server.url}/rag/documents", headers=headers, json=posted)
        assert started.status_code == 202, started.text
        # The API process is gone; the run still goes to its end in Prefect, and its documents are indexed.
        run = wait_for_state(uuid.UUID(started.json()["run_id"]))
        assert run.state.is_completed(), run.state.message
        assert gateway.search("wind turbine revolutions", domains=["api-restart"], k=1)[0].doc_id == "zephyr"

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"query": "turbine", "domains": ["no-such-domain"]}, 404),
            ({"query": "   "}, 422),
            ({"query": "turbine", "k": 0}, 422),
            ({"query": "turbine", "k": 101}, 422),
            ({"query": "turbine", "domains": []}, 422),
            ({"query": "turbine", "domains": ["../etc"]}, 422),
        ],
    )
    def test_bad_queries_are_4xx_with_a_reason(self, api, auth, body, status):
        response = httpx.post(f"{api.url}/rag/query", headers=auth, json=body)
        assert response.status_code == status
        assert response.json()["detail"]

    @pytest.mark.parametrize(
        "body",
        [
            {"domain": "Bad Domain", "documents": DOCUMENTS},
            {"domain": "api-docs", "documents": []},
            {"domain": "api-docs", "documents": [{"id": "x", "text": ""}]},
            {"domain": "api-docs"},
        ],
    )
    def test_bad_document_posts_are_422_and_start_nothing(self, api, auth, body):
        response = httpx.post(f"{api.url}/rag/documents", headers=auth, json=body)
        assert response.status_code == 422


class TestFlows:
    def test_lists_deployments_with_their_parameter_schema(self, api, auth, echo_deployment):
        listed = httpx.get(f"{api.url}/flows", headers=auth).json()
        echo = next(d for d in listed if d["flow_name"] == "api-echo")
        assert echo["name"] == "api-test"
        assert echo["parameters_schema"]["required"] == ["count"]

    def test_starts_a_deployed_flow_run(self, api, auth, echo_deployment):
        started = httpx.post(
            f"{api.url}/flows/api-echo/runs", headers=auth, json={"parameters": {"count": 3}}
        )
        assert started.status_code == 202, started.text
        assert started.json()["deployment_id"] == echo_deployment
        run = httpx.get(f"{api.url}/runs/{started.json()['run_id']}", headers=auth).json()
        assert run["state"] == "SCHEDULED" and run["deployment_id"] == echo_deployment
        assert run["result"] is None

    @pytest.mark.parametrize("parameters", [{"count": "many"}, {}, {"count": 1, "label": 5}])
    def test_parameters_are_validated_against_the_deployment(self, api, auth, echo_deployment, parameters):
        response = httpx.post(f"{api.url}/flows/api-echo/runs", headers=auth, json={"parameters": parameters})
        assert response.status_code == 422
        assert "api-echo/api-test" in response.json()["detail"]

    def test_unknown_flow_is_404(self, api, auth):
        response = httpx.post(f"{api.url}/flows/no-such-flow/runs", headers=auth, json={"parameters": {}})
        assert response.status_code == 404

    def test_a_finished_run_reports_its_result(self, api, auth):
        state = api_echo(count=7, label="done", return_state=True)
        run = httpx.get(f"{api.url}/runs/{state.state_details.flow_run_id}", headers=auth).json()
        assert run["state"] == "COMPLETED" and run["flow_name"] == "api-echo"
        assert run["result"] == {"count": 7, "label": "done"}

    def test_unknown_run_is_404_and_a_malformed_id_422(self, api, auth):
        assert httpx.get(f"{api.url}/runs/{uuid.uuid4()}", headers=auth).status_code == 404
        assert httpx.get(f"{api.url}/runs/not-a-uuid", headers=auth).status_code == 422
