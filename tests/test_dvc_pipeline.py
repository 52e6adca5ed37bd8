"""`dvc repro` of the whole pipeline in a scratch copy of the repository, every stage for real.

prepare-data -> index -> evaluate-retrieval -> train -> register: the stages run the Prefect flows through
deployments/dvc_stage.py (against the session's Prefect test server, MLflow and LanceDB in the session's
state folder, the packaged embedding model), with test-sized parameters: one knowledge domain, a small
BEIR collection cut from Cranfield, a 1-epoch MLP and a 10-tree forest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.settings import PREFECT_API_URL

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGES = list(PIPELINE)
DVC = [sys.executable, "-m", "dvc"]
CRANFIELD = REPO / "data" / "benchmarks" / "cranfield"
N_QUERIES = 10
N_FILLER_DOCS = 40
MODELS = {"tabular": "dvc-pipeline-forest", "model": "dvc-pipeline-mlp"}  # not other tests' registry entries
TEST_PARAMS = {
    "index": {"domains": ["ml-datasets"]},
    "train": {
        "tabular": {"forest": {"n_estimators": 10}, "model_name": MODELS["tabular"]},
        "model": {"epochs": 1, "model_name": MODELS["model"]},
    },
    "register": {"models": list(MODELS.values())},
}
METRICS = {
    "index": "metrics/index.json",
    "evaluate-retrieval": "metrics/retrieval.json",
    "train": "metrics/train.json",
    "register": "metrics/registry.json",
}


def pipeline_inputs() -> set[str]:
    """Repository paths the stages read: their deps (less other stages' outputs) and the scripts they run."""
    produced = set()
    for stage in PIPELINE.values():
        produced |= {next(iter(m)) if isinstance(m, dict) else m for m in stage.get("outs", [])}
        produced |= {next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])}
    inputs = {"dvc.yaml", ".dvcignore", "data/__init__.py"}
    for stage in PIPELINE.values():
        inputs |= {dep for dep in stage.get("deps", []) if "${" not in dep and dep not in produced}
        inputs |= {word for word in stage["cmd"].split() if word.endswith(".py")}
    return inputs


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
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
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
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "CONVEYOR_HOME": str(settings.state_dir),
        "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("beir") / "cranfield-small"
    queries, documents = tiny_beir(folder)
    return {"dir": folder, "queries": queries, "documents": documents}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, collection, env) -> Path:
    """A git + DVC repository with the pipeline's inputs and test-sized params.yaml."""
    root = tmp_path_factory.mktemp("dvc-pipeline")
    for name in sorted(pipeline_inputs()):
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), TEST_PARAMS)
    params["evaluate-retrieval"]["beir_dir"] = str(collection["dir"])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc("init", "-q", cwd=root, env=env)
    return root


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


@pytest.fixture(scope="module")
def first_repro(scratch: Path, env) -> str:
    return dvc("repro", cwd=scratch, env=env)


class TestFullRepro:
    def test_every_stage_runs(self, first_repro: str, scratch: Path, collection):
        assert ran(first_repro) == set(STAGES)
        at = {stage: first_repro.index(f"Running stage '{stage}'") for stage in STAGES}
        assert at["prepare-data"] < at["index"] < at["evaluate-retrieval"]
        assert at["prepare-data"] < at["train"] < at["register"]
        assert all((scratch / path).is_file() for path in METRICS.values())
        lock = yaml.safe_load((scratch / "dvc.lock").read_text())["stages"]
        assert set(lock) == set(STAGES)
        assert str(collection["dir"]) in {dep["path"] for dep in lock["evaluate-retrieval"]["deps"]}

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
            sources = [json.loads(i.dataset.source)["uri"] for i in run.inputs.dataset_inputs]
            assert sources == [str(tabular)], sources

    def test_second_repro_skips_every_stage(self, first_repro: str, scratch: Path, env):
        out = dvc("repro", cwd=scratch, env=env)
        assert ran(out) == set()
        assert skipped(out) == set(STAGES)
        assert "up to date" in dvc("status", cwd=scratch, env=env).lower()

    def test_changed_train_params_rerun_train_and_register_only(self, first_repro: str, scratch: Path, env):
        before = metrics_shown(scratch, env)
        params = yaml.safe_load((scratch / "params.yaml").read_text())
        params["train"]["model"]["epochs"] += 1
        (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = dvc("repro", cwd=scratch, env=env)
        assert ran(out) == {"train", "register"}
        assert skipped(out) == {"prepare-data", "index", "evaluate-retrieval"}
        after = metrics_shown(scratch, env)
        assert after["train"]["model"]["run_id"] != before["train"]["model"]["run_id"]
        for name, registered in after["register"].items():
            assert registered["versions"] == before["register"][name]["versions"] + 1 == 2
            assert registered["challenger_version"] == 2
        assert after["evaluate-retrieval"] == before["evaluate-retrieval"]
