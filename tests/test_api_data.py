"""Chat API data routes: dataset catalog (rows, summary, versioned uploads) and champion-model predictions."""

import json

import httpx
import mlflow
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conveyor import registry, tracking
from conveyor.training.evaluation import model_scorer

FRAME = load_breast_cancer(as_frame=True).frame
FEATURES = [c for c in FRAME.columns if c != "target"]
TRAIN, HELD_OUT = FRAME.iloc[::2], FRAME.iloc[1::2]
MODEL = "api-breast-cancer"


API_SETTINGS = {"api_max_upload_bytes": 4096}


def upload(api, auth, dataset_id: str, content: bytes, content_type: str = "text/csv") -> httpx.Response:
    files = {"file": (f"{dataset_id}.csv", content, content_type)}
    return httpx.post(f"{api.url}/datasets", headers=auth, data={"id": dataset_id}, files=files)


class TestDatasets:
    def test_lists_the_builtin_datasets(self, api, auth):
        listed = {d["id"]: d for d in httpx.get(f"{api.url}/datasets", headers=auth).json()}
        assert {"sales_2024", "breast_cancer"} <= listed.keys()
        assert listed["sales_2024"]["source"] == "builtin" and listed["sales_2024"]["rows"] > 300

    def test_rows_are_paged(self, api, auth):
        first = httpx.get(f"{api.url}/datasets/sales_2024", headers=auth, params={"limit": 5}).json()
        second = httpx.get(
            f"{api.url}/datasets/sales_2024", headers=auth, params={"offset": 5, "limit": 5}
        ).json()
        assert len(first["rows"]) == len(second["rows"]) == 5
        assert first["rows"] != second["rows"]
        assert first["columns"] == [
            "date",
            "region",
            "product",
            "category",
            "channel",
            "units",
            "unit_price",
            "revenue",
        ]
        assert first["total"] == second["total"] > 300

    def test_summary_has_types_missing_values_and_statistics(self, api, auth):
        summary = httpx.get(f"{api.url}/datasets/sales_2024/summary", headers=auth).json()
        units = summary["columns"]["units"]
        assert units["dtype"].startswith("int") and units["missing"] == 0
        assert units["stats"]["min"] <= units["stats"]["mean"] <= units["stats"]["max"]
        assert summary["columns"]["region"]["stats"]["unique"] >= 2

    def test_upload_is_versioned_and_infers_types(self, api, auth):
        first = upload(api, auth, "api-upload", b"city,temp,rain\nOslo,3.5,\nLima,19.0,0.2\n")
        assert first.status_code == 201, first.text
        assert first.json()["version"] == 1
        assert first.json()["dtypes"] == {"city": "str", "temp": "float64", "rain": "float64"}
        second = upload(api, auth, "api-upload", b"city,temp,rain\nOslo,4.0,1.0\n")
        assert second.json()["version"] == 2

        latest = httpx.get(f"{api.url}/datasets/api-upload", headers=auth).json()
        assert latest["total"] == 1
        v1 = httpx.get(f"{api.url}/datasets/api-upload", headers=auth, params={"version": 1}).json()
        assert v1["rows"][0] == {"city": "Oslo", "temp": 3.5, "rain": None}
        summary = httpx.get(
            f"{api.url}/datasets/api-upload/summary", headers=auth, params={"version": 1}
        ).json()
        assert summary["columns"]["rain"]["missing"] == 1

    @pytest.mark.filterwarnings("ignore::RuntimeWarning")
    def test_infinite_values_come_back_as_null(self, api, auth):
        assert upload(api, auth, "api-inf", b"x\ninf\n1.0\n").status_code == 201
        summary = httpx.get(f"{api.url}/datasets/api-inf/summary", headers=auth)
        assert summary.status_code == 200 and summary.json()["columns"]["x"]["stats"]["max"] is None
        rows = httpx.get(f"{api.url}/datasets/api-inf", headers=auth).json()["rows"]
        assert rows[0]["x"] is None and rows[1]["x"] == 1.0

    def test_bad_uploads_are_refused_and_nothing_is_stored(self, api, auth):
        assert upload(api, auth, "api-bad", b"\x00\x01\x02\xff\xfe").status_code == 422
        assert upload(api, auth, "api-bad", b"").status_code == 422
        too_big = upload(api, auth, "api-bad", b"a,b\n" + b"1,2\n" * 2000)
        assert too_big.status_code == 413
        assert httpx.get(f"{api.url}/datasets/api-bad", headers=auth).status_code == 404

    @pytest.mark.parametrize("dataset_id", ["a..b", "..%2F..%2Fetc%2Fpasswd", ".hidden", "a" * 80])
    def test_ids_that_could_name_a_path_are_refused(self, api, auth, dataset_id):
        response = httpx.get(f"{api.url}/datasets/{dataset_id}", headers=auth)
        assert response.status_code in (404, 422)
        assert upload(api, auth, dataset_id, b"a\n1\n").status_code == 422

    @pytest.mark.parametrize("dataset_id", ["..", "../../etc/passwd", "/tmp/x"])
    def test_uploads_cannot_name_a_path(self, api, auth, dataset_id):
        assert upload(api, auth, dataset_id, b"a\n1\n").status_code == 422

    def test_unknown_dataset_and_version_are_404(self, api, auth):
        assert httpx.get(f"{api.url}/datasets/no-such-data", headers=auth).status_code == 404
        assert (
            httpx.get(f"{api.url}/datasets/sales_2024", headers=auth, params={"version": 9}).status_code
            == 404
        )


def log_and_promote(model) -> registry.PromotionDecision:
    model.fit(TRAIN[FEATURES], TRAIN["target"])
    with tracking.start_run("api-tests") as run:
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=TRAIN[FEATURES].head(3),
            serialization_format="cloudpickle", pip_requirements=[],
        )  # fmt: skip
    return registry.register_and_promote(
        run_id=run.info.run_id, model_uri=info.model_uri, name=MODEL, metric="accuracy",
        evaluate=model_scorer(HELD_OUT, "target", FEATURES, "accuracy"),
    )  # fmt: skip


class TestPredict:
    def test_serves_the_champion_and_picks_up_a_new_one_without_restart(self, api, auth):
        assert log_and_promote(DummyClassifier(strategy="constant", constant=0)).promoted
        records = json.loads(HELD_OUT[FEATURES].head(40).to_json(orient="records"))
        first = httpx.post(f"{api.url}/models/{MODEL}/predict", headers=auth, json={"inputs": records})
        assert first.status_code == 200, first.text
        assert first.json()["version"] == "1" and set(first.json()["predictions"]) == {0}

        assert log_and_promote(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))).promoted
        second = httpx.post(f"{api.url}/models/{MODEL}/predict", headers=auth, json={"inputs": records})
        assert second.json()["version"] == "2"
        expected = HELD_OUT["target"].head(40).tolist()
        agreement = sum(p == e for p, e in zip(second.json()["predictions"], expected, strict=True)) / 40
        assert agreement > 0.85 and set(second.json()["predictions"]) == {0, 1}

    def test_rows_of_values_follow_the_signature_column_order(self, api, auth):
        rows = HELD_OUT[FEATURES].head(3).to_numpy().tolist()
        response = httpx.post(f"{api.url}/models/{MODEL}/predict", headers=auth, json={"inputs": rows})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3

    def test_inputs_that_miss_the_signature_are_422(self, api, auth):
        record = json.loads(HELD_OUT[FEATURES].head(1).to_json(orient="records"))[0]
        missing = {k: v for k, v in record.items() if k != "mean radius"}
        wrong_type = record | {"mean radius": "large"}
        for inputs in ([missing], [wrong_type], [[1.0, 2.0]]):
            response = httpx.post(f"{api.url}/models/{MODEL}/predict", headers=auth, json={"inputs": inputs})
            assert response.status_code == 422, response.text
            assert MODEL in response.json()["detail"]

    def test_unknown_model_is_404(self, api, auth):
        response = httpx.post(
            f"{api.url}/models/no-such-model/predict", headers=auth, json={"inputs": [[1.0]]}
        )
        assert response.status_code == 404
        assert "champion" in response.json()["detail"]
