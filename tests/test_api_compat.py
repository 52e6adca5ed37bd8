"""Compatibility routes: a client written against the original contract, end to end over HTTP; errors."""

import uuid

import httpx
import pytest
from prefect.client.orchestration import get_client

from conveyor import pipeline, sentiment
from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD
from flows.run_agent_task import run_agent_task
from flows.train_tabular import ForestConfig, TrainTabularParams, train_tabular
from serving.api.routes import compat
from serving.contract_client import ContractClient
from serving.testing import login

MODEL = "compat-forest"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
OTHER = ("compat-user", "compat-pass1")
COMPAT_PATHS = {
    ("post", "/auth/login"), ("post", "/auth/verify"), ("get", "/users/{user_id}"),
    ("post", "/chat/message"), ("get", "/data/datasets/{dataset_id}"),
    ("get", "/analytics/summary/{dataset_id}"), ("post", "/data/process"), ("get", "/data/status/{task_id}"),
    ("post", "/ml/train"), ("post", "/ml/predict"), ("post", "/ml/generate"),
    ("post", "/ml/analyze-sentiment"),
}  # fmt: skip


def run_parameters(run_id: str) -> dict:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id)).parameters


@pytest.fixture(scope="module")
def deployed() -> None:
    """The flows /ml/train and /data/process start, deployed on this session's Prefect API (no worker)."""
    for flow in (train_tabular, run_agent_task):
        flow.to_deployment(name="compat-test").apply()


@pytest.fixture(scope="module")
def champion() -> str:
    """A small forest trained, registered and promoted by the real train-tabular flow."""
    result = train_tabular(TrainTabularParams(model_name=MODEL, forest=ForestConfig(n_estimators=10)))
    assert result.decision.promoted
    return MODEL


@pytest.fixture(scope="module")
def other_user(api, auth) -> dict[str, str]:
    created = httpx.post(f"{api.url}/users", headers=auth, json={"username": OTHER[0], "password": OTHER[1]})
    assert created.status_code == 201, created.text
    return login(api.url, *OTHER)


class TestContractClient:
    def test_every_call_of_the_contract_works_end_to_end(self, api, deployed, champion):
        with httpx.Client(base_url=api.url, timeout=300) as http:
            self.run_client(ContractClient(http), champion)

    def run_client(self, client: ContractClient, champion: str) -> None:
        token = client.login("admin", DEVELOPMENT_ADMIN_PASSWORD)
        assert client.call("POST", "/auth/verify", json={"token": token}) == {
            "valid": True, "username": "admin", "role": "admin",
        }  # fmt: skip
        me = client.call("GET", "/users/admin")
        assert me["id"] == me["username"] == "admin" and me["role"] == "admin"

        reply = client.call("POST", "/chat/message", json={"message": "Say hello in three words."})
        assert reply["response"].strip() and reply["agent"] and isinstance(reply["sources"], list)
        assert reply["conversation_id"]

        rows = client.call("GET", "/data/datasets/sales_2024", params={"limit": 3})
        assert len(rows["data"]) == 3 and set(rows["data"][0]) == set(rows["columns"]) >= {"revenue"}
        summary = client.call("GET", "/analytics/summary/sales_2024")
        assert summary["rows"] == rows["total"] > 300
        assert summary["columns"]["units"]["stats"]["min"] <= summary["columns"]["units"]["stats"]["max"]

        mood = client.call("POST", "/ml/analyze-sentiment", json={"text": "The new release is wonderful!"})
        assert mood["label"] == "positive" and mood["score"] == mood["scores"]["compound"] > 0.05
        assert set(mood["scores"]) == {"pos", "neu", "neg", "compound"}

        record = {k: v for k, v in rows_of(client, "breast_cancer")[0].items() if k != "malignant"}
        by_record = client.call("POST", "/ml/predict", json={"model": champion, "records": [record]})
        by_values = client.call(
            "POST", "/ml/predict", json={"model": champion, "features": list(record.values())}
        )
        assert by_record["predictions"] == by_values["predictions"] and by_record["predictions"][0] in (0, 1)

        params = {"dataset": "breast_cancer", "target": "malignant", "forest": {"n_estimators": 5}}
        training = client.call("POST", "/ml/train", json={"flow": "train-tabular", "parameters": params})
        assert training["status"] == "SCHEDULED" and training["flow_name"] == "train-tabular"
        assert run_parameters(training["task_id"]) == {"params": params}
        queued = client.call("GET", f"/data/status/{training['task_id']}")
        assert queued["status"] == "SCHEDULED" and "api-user:admin" in queued["tags"]

        analysis = client.call("POST", "/data/process", json={"dataset_id": "sales_2024"})
        assert analysis["flow_name"] == "run-agent-task" and analysis["status"] == "SCHEDULED"
        assert "sales_2024.csv" in run_parameters(analysis["task_id"])["task"]
        documents = [{"id": "compat", "text": "Compatibility routes keep the first mobile client working."}]
        indexing = client.call("POST", "/data/process", json={"domain": "compat", "documents": documents})
        assert indexing["flow_name"] == "index-documents"
        done = client.wait(indexing["task_id"])
        assert done["status"] == "COMPLETED" and done["result"]["added"] == 1, done["message"]

        generated = client.call("POST", "/ml/generate", json={"prompt": "Count: one, two,", "max_tokens": 4})
        assert generated["text"] and generated["finish_reason"] in ("stop", "length")


def rows_of(client: ContractClient, dataset_id: str) -> list[dict]:
    return client.call("GET", f"/data/datasets/{dataset_id}", params={"limit": 1})["data"]


class TestErrors:
    def test_wrong_password_is_401_without_echoing_it(self, api):
        response = httpx.post(
            f"{api.url}/auth/login", json={"username": "admin", "password": "hunter2-wrong"}
        )
        assert response.status_code == 401 and "hunter2-wrong" not in response.text

    def test_a_bad_token_is_401_without_echoing_it(self, api):
        forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.not-a-signature"
        response = httpx.post(f"{api.url}/auth/verify", json={"token": forged})
        assert response.status_code == 401 and forged not in response.text
        bearer = httpx.get(
            f"{api.url}/data/datasets/sales_2024", headers={"Authorization": f"Bearer {forged}"}
        )
        assert bearer.status_code == 401

    def test_users_read_only_themselves_and_admins_anyone(self, api, auth, other_user):
        assert httpx.get(f"{api.url}/users/admin", headers=other_user).status_code == 404
        assert httpx.get(f"{api.url}/users/nobody", headers=other_user).status_code == 404
        mine = httpx.get(f"{api.url}/users/{OTHER[0]}", headers=other_user).json()
        assert mine["role"] == "user" and mine["is_admin"] is False
        assert httpx.get(f"{api.url}/users/{OTHER[0]}", headers=auth).json()["id"] == OTHER[0]
        assert httpx.get(f"{api.url}/users/nobody", headers=auth).status_code == 404

    def test_unknown_datasets_are_404(self, api, auth):
        for path in ("/data/datasets/no-such-data", "/analytics/summary/no-such-data"):
            assert httpx.get(f"{api.url}{path}", headers=auth).status_code == 404
        process = httpx.post(f"{api.url}/data/process", headers=auth, json={"dataset_id": "no-such-data"})
        assert process.status_code == 404 and "no-such-data" in process.json()["detail"]
        assert httpx.get(f"{api.url}/data/status/{uuid.uuid4()}", headers=auth).status_code == 404

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ({"text": ""}, "at least 1 character"),
            ({"text": "   "}, "at least 1 character"),
            ({"text": "good " * 2001}, "at most 10000 characters"),
            ({"texts": ["fine", ""]}, "at least 1 character"),
            ({}, "`text` or `texts`"),
            ({"text": "good", "texts": ["bad"]}, "`text` or `texts`"),
        ],
    )
    def test_unusable_sentiment_text_is_422_with_the_reason(self, api, auth, body, reason):
        response = httpx.post(f"{api.url}/ml/analyze-sentiment", headers=auth, json=body)
        assert response.status_code == 422 and reason in str(response.json()["detail"])

    @pytest.mark.parametrize(
        ("parameters", "reason"),
        [
            ({"forest": {"n_estimators": 0}}, "0 is less than the minimum of 1"),
            ({"n_trees": 5}, "'n_trees' was unexpected"),
            ({"task": "clustering"}, "'clustering' is not one of"),
        ],
    )
    def test_invalid_training_parameters_are_422_with_the_schema_reason(
        self, api, auth, deployed, parameters, reason
    ):
        body = {"flow": "train-tabular", "parameters": parameters}
        response = httpx.post(f"{api.url}/ml/train", headers=auth, json=body)
        assert response.status_code == 422 and reason in response.json()["detail"]

    def test_unknown_training_flow_and_model_are_refused(self, api, auth, champion):
        flow = httpx.post(f"{api.url}/ml/train", headers=auth, json={"flow": "train-everything"})
        assert flow.status_code == 422
        model = httpx.post(f"{api.url}/ml/predict", headers=auth, json={"model": "no-model", "features": [1]})
        assert model.status_code == 404
        neither = httpx.post(f"{api.url}/ml/predict", headers=auth, json={"model": champion})
        assert neither.status_code == 422 and "`features` or `records`" in neither.json()["detail"]
        empty = httpx.post(f"{api.url}/ml/predict", headers=auth, json={"model": champion, "records": []})
        assert empty.status_code == 422


class TestSentiment:
    def test_labels_follow_the_compound_thresholds_and_batches_keep_order(self, api, auth):
        texts = [
            "I love this, it works great.",
            "The export is broken and support ignores me.",
            "It is blue.",
        ]
        response = httpx.post(f"{api.url}/ml/analyze-sentiment", headers=auth, json={"texts": texts})
        results = response.json()["results"]
        assert [r["label"] for r in results] == ["positive", "negative", "neutral"]
        assert [r["score"] for r in results] == [sentiment.analyze(t).score for t in texts]


class TestSchema:
    def test_compat_routes_are_under_their_own_tag(self, api):
        schema = httpx.get(f"{api.url}/openapi.json").json()
        tagged = {
            (method, path)
            for path, operations in schema["paths"].items()
            for method, operation in operations.items()
            if "compat" in operation.get("tags", [])
        }
        assert tagged == COMPAT_PATHS
        assert next(t for t in schema["tags"] if t["name"] == "compat")["description"]

    def test_the_default_model_is_the_one_make_run_registers(self):
        tabular = TrainTabularParams(**pipeline.load_params().train.tabular)
        assert tabular.registered_name == compat.DEFAULT_MODEL
