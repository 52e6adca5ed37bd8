"""Model lineage over real components: a model trained by the flow is listed by GET /models, and every id
GET /models/{name} gives for its champion is followed to MLflow, Prefect, the data file and git."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client

from conveyor import prompts, registry, runtime, tracking
from flows.train_tabular import ForestConfig, TrainTabularParams, train_tabular

REPO = Path(__file__).resolve().parent.parent
MODEL = "lineage-forest"
FOREST = ForestConfig(n_estimators=10, max_depth=3)
SUMMARY_KEYS = {"name", "champion", "challenger", "versions", "mlflow_url"}
VERSION_KEYS = {"version", "aliases", "metrics", "run_id", "created_at"}


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def trained():
    """Two runs of train-tabular on the same data and params: v1 is champion, v2 (no better) challenger."""
    first = train_tabular(TrainTabularParams(model_name=MODEL, forest=FOREST))
    second = train_tabular(TrainTabularParams(model_name=MODEL, forest=FOREST))
    assert first.decision.promoted and not second.decision.promoted
    return first, second


def get(api, auth, path: str) -> httpx.Response:
    return httpx.get(f"{api.url}{path}", headers=auth, timeout=60)


class TestListing:
    def test_lists_the_model_with_its_versions_aliases_and_run_metrics(self, api, auth, trained):
        first, second = trained
        response = get(api, auth, "/models")
        assert response.status_code == 200, response.text
        [model] = [m for m in response.json() if m["name"] == MODEL]
        assert set(model) == SUMMARY_KEYS
        assert (model["champion"], model["challenger"]) == ("1", "2")
        assert model["mlflow_url"].endswith(f"/#/models/{MODEL}")
        newest, oldest = model["versions"]
        assert all(set(version) == VERSION_KEYS for version in model["versions"])
        assert (newest["version"], newest["aliases"]) == ("2", ["challenger"])
        assert (oldest["version"], oldest["aliases"]) == ("1", ["champion"])
        assert (newest["run_id"], oldest["run_id"]) == (second.run_id, first.run_id)
        run_metrics = tracking.client().get_run(first.run_id).data.metrics
        assert oldest["metrics"] == run_metrics and "test_accuracy" in run_metrics
        assert oldest["created_at"] <= newest["created_at"]

    def test_prompts_are_not_models(self, api, auth, trained):
        prompt = prompts.system_prompt("lineage-check", "A prompt, registered as a model to the store.")
        assert prompt.version is not None
        assert prompt.name not in {m["name"] for m in get(api, auth, "/models").json()}
        missing = get(api, auth, f"/models/{prompt.name}")
        assert missing.status_code == 404 and prompt.name in missing.json()["detail"]

    def test_an_unknown_model_is_404_with_the_reason(self, api, auth, trained):
        missing = get(api, auth, "/models/no-such-model")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no registered model 'no-such-model'"
        assert httpx.get(f"{api.url}/models", timeout=30).status_code == 401


class TestChampionLineage:
    def test_every_id_leads_to_what_trained_the_champion(self, api, auth, trained):
        first, _ = trained
        response = get(api, auth, f"/models/{MODEL}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == SUMMARY_KEYS | {"lineage"} and body["champion"] == "1"
        found = body["lineage"]
        assert found["version"] == "1" and found["run_id"] == first.run_id

        run = tracking.client().get_run(found["run_id"])
        assert run.info.status == "FINISHED"
        assert found["params"] == run.data.params and found["params"]["forest.n_estimators"] == "10"
        assert found["params"]["model_name"] == MODEL
        assert found["metrics"] == run.data.metrics
        run_page = f"/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        assert found["mlflow_run_url"].endswith(run_page)

        flow_run = found["flow_run"]
        with get_client(sync_client=True) as client:
            prefect_run = client.read_flow_run(flow_run["id"])
            assert client.read_flow(prefect_run.flow_id).name == flow_run["flow_name"] == "train-tabular"
        assert prefect_run.state.type.value == "COMPLETED"
        assert prefect_run.parameters["params"]["model_name"] == MODEL
        assert flow_run["url"].endswith(f"/runs/flow-run/{flow_run['id']}")

        data = found["data"]
        file = Path(data["path"])
        assert data["dataset_id"] == "breast_cancer"
        assert hashlib.md5(file.read_bytes()).hexdigest() == data["dvc_md5"]
        assert hashlib.sha256(file.read_bytes()).hexdigest() == data["sha256"]
        # the tests' data folder is outside the repository: no dvc.lock pins it
        assert data["dvc_tracked"] is False and data["dvc_rev"] is None

        assert found["git_commit"] == git("rev-parse", "HEAD")
        assert found["git_dirty"] == bool(git("status", "--porcelain", "--untracked-files=no"))

    def test_the_version_itself_carries_the_lineage(self, trained):
        first, _ = trained
        tags = tracking.client().get_model_version(MODEL, "1").tags
        run = tracking.client().get_run(first.run_id)
        assert json.loads(tags["conveyor.params"]) == run.data.params
        for key in ("conveyor.git_commit", "prefect.flow_run_id", "conveyor.dataset_path", "dvc.md5"):
            assert tags[key] == run.data.tags[key], key


def dvc(*args: str, cwd: Path) -> None:
    env = runtime.with_tools(os.environ)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


class TestDvcRevision:
    def test_the_revision_is_the_commit_whose_dvc_files_pin_the_bytes(self, tmp_path):
        repo = tmp_path / "repo"
        (repo / "data").mkdir(parents=True)
        git("init", "-q", cwd=repo)
        dvc("init", "-q", cwd=repo)
        csv = repo / "data" / "rows.csv"
        csv.write_text("a,b\n1,2\n")
        dvc("add", "data/rows.csv", cwd=repo)
        git("add", "-A", cwd=repo)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data", cwd=repo)
        commit = git("rev-parse", "HEAD", cwd=repo)
        md5 = hashlib.md5(csv.read_bytes()).hexdigest()

        assert registry.dvc_revision(str(csv), md5, commit, repo=repo) == commit
        csv.write_text("a,b\n1,3\n")  # changed since: that commit does not pin these bytes
        changed = hashlib.md5(csv.read_bytes()).hexdigest()
        assert registry.dvc_revision(str(csv), changed, commit, repo=repo) is None
        outside = tmp_path / "rows.csv"
        outside.write_text("a,b\n1,2\n")
        assert registry.dvc_revision(str(outside), md5, commit, repo=repo) is None
