"""`dvc repro` of the whole pipeline in a scratch copy of the repository, every stage for real.

prepare-data -> index -> evaluate-retrieval -> train -> register: the stages run the Prefect flows through
deployments/dvc_stage.py (against the session's Prefect test server, MLflow and LanceDB in the session's
state folder, the packaged embedding model), with test-sized parameters: one knowledge domain, a small
BEIR collection cut from Cranfield, a 1-epoch MLP and a 10-tree forest. The scratch copy holds only the
stages' declared deps, and the stages run its code: an undeclared import fails the run. Then the `platform`
flow, run in the same copy, makes exactly the flow runs the stages made (one params.yaml for both).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterParentTaskRunId,
    FlowRunFilterStartTime,
)
from prefect.settings import PREFECT_API_URL

from conveyor import pipeline, runtime

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = list(PIPELINE)
DVC = [sys.executable, "-m", "dvc"]
CRANFIELD = REPO / "data" / "benchmarks" / "cranfield"
N_QUERIES = 10
N_FILLER_DOCS = 40
MODELS = {"tabular": "dvc-pipeline-forest", "model": "dvc-pipeline-mlp"}  # not other tests' registry entries
COLLECTION = "cranfield-small"
TEST_PARAMS = {
    "index": {"domains": ["ml-datasets"]},
    "evaluate-retrieval": {"collection": COLLECTION},
    "train": {
        "tabular": {"forest": {"n_estimators": 10}, "model_name": MODELS["tabular"]},
        "model": {"epochs": 1, "model_name": MODELS["model"]},
    },
}
PIPELINE_FLOWS = ["index-documents", "evaluate-retrieval", "train-tabular", "train-model"]
METRICS = {
    "index": "metrics/index.json",
    "evaluate-retrieval": "metrics/retrieval.json",
    "train": "metrics/train.json",
    "register": "metrics/registry.json",
}


def pipeline_inputs() -> set[str]:
    """Repository paths the stages read: their deps, less other stages' outputs."""
    produced = set()
    for stage in PIPELINE.values():
        produced |= {next(iter(m)) if isinstance(m, dict) else m for m in stage.get("outs", [])}
        produced |= {next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])}
    inputs = {"dvc.yaml", ".dvcignore", "data/__init__.py"}
    for stage in PIPELINE.values():
        inputs |= {dep for dep in stage.get("deps", []) if "${" not in dep and dep not in produced}
    return inputs


PLATFORM_RUN = """
import json
from flows.end_to_end import PlatformOptions, platform
state = platform(PlatformOptions(agent_task=None), return_state=True)
print(json.dumps({"id": str(state.state_details.flow_run_id), "summary": state.result().model_dump()}))
"""


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) else value
    return merged


def tiny_beir(folder: Path) -> tuple[int, int]:
    """The first judged Cranfield queries, their judged documents and some other documents (BEIR layout)."""
    rows = [line.split("\t") for line in (CRANFIELD / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    query_ids = list(dict.fromkeys(row[0] for row in rows))[:N_QUERIES]
    judged = [row for row in rows if row[0] in query_ids]
    corpus = [json.loads(line) for line in (CRANFIELD / "corpus.jsonl").read_text().splitlines()]
    keep = {row[1] for row in judged} | {doc["_id"] for doc in corpus[:N_FILLER_DOCS]}
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        out.writelines(json.dumps(doc) + "\n" for doc in corpus if doc["_id"] in keep)
    with (folder / "queries.jsonl").open("w") as out:
        for line in (CRANFIELD / "queries.jsonl").read_text().splitlines():
            if json.loads(line)["_id"] in query_ids:
                out.write(line + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        out.writelines("\t".join(row) + "\n" for row in judged)
    return len(query_ids), len(keep & {doc["_id"] for doc in corpus})


@pytest.fixture(scope="module")
def env(settings) -> dict[str, str]:
    """The stages' environment: this session's state folder and Prefect server, this venv's `python` first."""
    return runtime.with_tools(os.environ) | {
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "CONVEYOR_HOME": str(settings.state_dir),
    }


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, env) -> Path:
    """A git + DVC repository with the pipeline's inputs and test-sized params.yaml."""
    root = tmp_path_factory.mktemp("dvc-pipeline").resolve()
    for name in sorted(pipeline_inputs()):
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TEST_PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc("init", "-q", cwd=root, env=env)
    return root


@pytest.fixture(scope="module")
def collection(scratch: Path) -> dict[str, Any]:
    """The test-sized BEIR collection params.yaml names, where the evaluate stage depends on it."""
    folder = scratch / "data" / "benchmarks" / COLLECTION
    queries, documents = tiny_beir(folder)
    return {"dir": folder, "queries": queries, "documents": documents}


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run([*DVC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


def skipped(out: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' didn't change, skipping", out))


def metrics_shown(scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=scratch, env=env))
    files = shown[""]["data"]
    return {stage: files[path]["data"] for stage, path in METRICS.items()}


def flow_calls(**run_filter: Any) -> list[tuple[str, str]]:
    """(flow name, parameters as JSON) of the pipeline flows' runs that match a FlowRunFilter."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=PIPELINE_FLOWS)),
            flow_run_filter=FlowRunFilter(**run_filter),
        )
        names = {run.flow_id: client.read_flow(run.flow_id).name for run in runs}
    return sorted((names[run.flow_id], json.dumps(run.parameters, sort_keys=True)) for run in runs)


def as_recorded(flow: Any, call: dict[str, Any]) -> tuple[str, str]:
    """A flow call as the Prefect API records its run: every parameter, defaults included."""
    bound = inspect.signature(flow.fn).bind(**call)
    bound.apply_defaults()
    return flow.name, json.dumps(bound.arguments, sort_keys=True)


@pytest.fixture(scope="module")
def repro_run(scratch: Path, collection, env) -> tuple[str, FlowRunFilterStartTime]:
    """The first `dvc repro`: its output and when it ran."""
    started = datetime.now(UTC)
    out = dvc("repro", cwd=scratch, env=env)
    return out, FlowRunFilterStartTime(after_=started, before_=datetime.now(UTC))


@pytest.fixture(scope="module")
def first_repro(repro_run) -> str:
    return repro_run[0]


@pytest.fixture(scope="module")
def stage_calls(repro_run) -> list[tuple[str, str]]:
    """The flow runs the stages made: top-level runs while the first `dvc repro` ran."""
    top_level = FlowRunFilterParentTaskRunId(is_null_=True)
    return flow_calls(start_time=repro_run[1], parent_task_run_id=top_level)


class TestFullRepro:
    def test_every_stage_runs(self, first_repro: str, scratch: Path, collection):
        assert ran(first_repro) == set(STAGES)
        at = {stage: first_repro.index(f"Running stage '{stage}'") for stage in STAGES}
        assert at["prepare-data"] < at["index"] < at["evaluate-retrieval"]
        assert at["prepare-data"] < at["train"] < at["register"]
        assert all((scratch / path).is_file() for path in METRICS.values())
        lock = yaml.safe_load((scratch / "dvc.lock").read_text())["stages"]
        assert set(lock) == set(STAGES)
        collection_dep = collection["dir"].relative_to(scratch).as_posix()
        assert collection_dep in {dep["path"] for dep in lock["evaluate-retrieval"]["deps"]}

    def test_metrics_show_reads_every_stage(self, first_repro: str, scratch: Path, env, collection):
        metrics = metrics_shown(scratch, env)
        for domain in TEST_PARAMS["index"]["domains"]:
            report = metrics["index"][domain]
            assert report["domain"] == domain and report["rows"] > 0
            assert report["added"] + report["updated"] + report["unchanged"] > 0
            assert report["indexed_rows"] + report["unindexed_rows"] == report["rows"]
        retrieval = metrics["evaluate-retrieval"]
        assert retrieval["n_queries"] == collection["queries"]
        assert retrieval["n_documents"] == collection["documents"]
        for name in ["ndcg@10", "recall@100", "mrr@10", "map@100"]:
            assert 0 < retrieval[name] <= 1, (name, retrieval)
        # real queries over their judged documents and 40 others: a broken retriever scores near 0
        assert retrieval["ndcg@10"] >= 0.3 and retrieval["recall@100"] >= 0.6, retrieval
        train = metrics["train"]
        assert train["tabular"]["decision"]["challenger_value"] >= 0.85, train["tabular"]["decision"]
        assert train["model"]["metrics"]["val_accuracy"] >= 0.8, train["model"]["metrics"]
        for flow, name in MODELS.items():
            decision = train[flow]["decision"]
            assert decision["name"] == name and decision["version"] == "1" and decision["promoted"]
            first = {"versions": 1, "challenger_version": 1, "champion_version": 1}
            assert metrics["register"][name] == first

    def test_training_reads_the_repository_data_not_conveyor_data_dir(self, first_repro: str, scratch: Path):
        from conveyor import tracking

        tabular = scratch / "data" / "tabular" / "breast_cancer.csv"
        for result in json.loads((scratch / METRICS["train"]).read_text()).values():
            run = tracking.client().get_run(result["run_id"])
            assert run.data.tags["dvc.md5"] == hashlib.md5(tabular.read_bytes()).hexdigest()
            assert run.data.tags["dvc.tracked"] == "true"  # the bytes scratch's dvc.lock pins
            # the file read (MLflow's dataset input is not the place: an experiment reuses the dataset record
            # of identical bytes logged before, with the source of that first run)
            assert run.data.tags["conveyor.dataset_path"] == str(tabular)

    def test_second_repro_skips_every_stage(self, first_repro: str, scratch: Path, env):
        out = dvc("repro", cwd=scratch, env=env)
        assert ran(out) == set()
        assert skipped(out) == set(STAGES)
        assert json.loads(dvc("status", "--json", cwd=scratch, env=env)) == {}

    def test_the_stages_make_the_flow_runs_params_yaml_defines(self, stage_calls, scratch: Path):
        from flows.evaluate_retrieval import evaluate_retrieval
        from flows.index_documents import index_documents
        from flows.train_model import train_model
        from flows.train_tabular import train_tabular

        params = pipeline.load_params(scratch / "params.yaml")
        expected = [(index_documents, run) for run in pipeline.index_runs(params, scratch / "data")]
        expected.append((evaluate_retrieval, pipeline.evaluate_run(params, scratch / "data" / "benchmarks")))
        expected.append((train_tabular, {"params": params.train.tabular}))
        expected.append((train_model, {"params": params.train.model}))
        assert stage_calls == sorted(as_recorded(flow, call) for flow, call in expected)

    def test_the_platform_flow_makes_the_same_flow_runs(self, stage_calls, scratch: Path, env):
        for package in ["conveyor", "flows", "tasks", "agents"]:  # the platform's code, beyond the stages'
            for source in (REPO / package).rglob("*"):
                target = scratch / source.relative_to(REPO)
                if source.is_file() and "__pycache__" not in source.parts and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, target)
        data = scratch / "data"
        run_env = env | {"CONVEYOR_DATA_DIR": str(data), "CONVEYOR_BENCHMARKS_DIR": str(data / "benchmarks")}
        command = [sys.executable, "-c", PLATFORM_RUN]
        done = subprocess.run(command, cwd=scratch, env=run_env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
        platform_run = json.loads(done.stdout.strip().splitlines()[-1])
        assert platform_run["summary"]["data_reused"]  # `dvc status --json`: prepare-data unchanged
        subflows = flow_calls(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[platform_run["id"]]))
        assert subflows == stage_calls
        assert json.loads(dvc("status", "--json", cwd=scratch, env=env)) == {}  # and it changed no stage

    def test_changed_train_params_rerun_train_and_register_only(self, first_repro: str, scratch: Path, env):
        from conveyor import tracking

        before = metrics_shown(scratch, env)
        versions = {
            name: len(tracking.client().search_model_versions(f"name = '{name}'")) for name in MODELS.values()
        }
        params = yaml.safe_load((scratch / "params.yaml").read_text())
        params["train"]["model"]["epochs"] += 1
        (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc("repro", cwd=scratch, env=env)
        assert ran(out) == {"train", "register"}
        assert skipped(out) == {"prepare-data", "index", "evaluate-retrieval"}
        after = metrics_shown(scratch, env)
        assert after["train"]["model"]["run_id"] != before["train"]["model"]["run_id"]
        for name, registered in after["register"].items():
            assert registered["versions"] == versions[name] + 1
            assert registered["challenger_version"] == registered["versions"]
        assert after["evaluate-retrieval"] == before["evaluate-retrieval"]
