"""One definition of the pipeline: dvc.yaml's code deps are what each stage's code imports, params.yaml is
what the flows take, and a broken params.yaml is refused naming the key.

That `dvc repro` and the `platform` flow make the same flow runs is checked on real runs in
test_dvc_pipeline.py.
"""

from __future__ import annotations

import ast
import importlib.util
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
import yaml

from conveyor import pipeline
from conveyor.settings import ConfigurationError

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
RUNNER = REPO / "deployments" / "dvc_stage.py"


def stage_runners() -> dict:
    spec = importlib.util.spec_from_file_location("dvc_stage", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STAGES


def stage_code(stage: str, tmp_path: Path) -> set[str]:
    """Repository files a stage's command runs: its script and every repository module its code imports,
    followed through the repository's own modules by modulefinder (for the dvc_stage runner, less what the
    other stages' functions import)."""
    command = PIPELINE[stage]["cmd"].split()
    if command[:3] == ["python", "-m", "deployments.dvc_stage"]:
        entry, runners = RUNNER, stage_runners()
        others = {runner.__name__ for name, runner in runners.items() if name != command[3]}
    elif command[0] == "python" and command[1].endswith(".py"):
        entry, others = REPO / command[1], set()
    else:
        pytest.fail(f"stage {stage}: unknown command {command}")
    tree = ast.parse(entry.read_text())
    skipped = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in others]
    imports = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not any(node is inner for function in skipped for inner in ast.walk(function))
    ]
    script = tmp_path / f"{stage}-imports.py"
    script.write_text("\n".join(ast.unparse(node) for node in imports))
    finder = ModuleFinder(path=[str(REPO)])  # this repository only: third-party imports are not followed
    finder.run_script(str(script))
    files = {Path(module.__file__) for module in finder.modules.values() if module.__file__}
    return {entry.relative_to(REPO).as_posix()} | {
        f.relative_to(REPO).as_posix() for f in files if f.is_relative_to(REPO)
    }


def python_files(folder: Path) -> set[str]:
    return {f.relative_to(REPO).as_posix() for f in folder.rglob("*.py") if "__pycache__" not in f.parts}


@pytest.mark.parametrize("stage", list(PIPELINE))
def test_stage_code_deps_are_exactly_what_its_code_imports(stage, tmp_path):
    code = stage_code(stage, tmp_path)
    deps = [dep for dep in PIPELINE[stage].get("deps", []) if "${" not in dep]
    missing = sorted(f for f in code if not any(f == dep or Path(f).is_relative_to(dep) for dep in deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs these files but does not depend on them: {missing}"
    for dep in deps:
        path = REPO / dep
        if dep.endswith(".py"):
            assert dep in code, f"dvc.yaml stage {stage!r} depends on {dep}, which its code never imports"
        elif (path / "__init__.py").is_file():  # a package folder: only if the stage imports all of it
            unused = sorted(python_files(path) - code)
            assert not unused, f"stage {stage!r} depends on all of {dep}; it never imports {unused}"


def test_the_runner_runs_every_flow_stage():
    runners = stage_runners()
    flow_stages = {s for s, d in PIPELINE.items() if "deployments.dvc_stage" in d["cmd"]}
    assert flow_stages == set(runners)
    for stage in flow_stages:
        assert PIPELINE[stage]["cmd"].split()[3] == stage


def test_params_yaml_is_what_the_flows_take(prepared_data):
    from flows.train_model import TrainModelParams
    from flows.train_tabular import TrainTabularParams

    params = pipeline.load_params()
    built = {folder.name for folder in (prepared_data / "knowledge").iterdir() if folder.is_dir()}
    assert set(params.index.domains) == built, "index.domains: the knowledge domains prepare-data builds"
    shipped = pipeline.evaluate_run(params, REPO / "data" / "benchmarks")  # the collection in the repository
    assert (Path(shipped["beir_dir"]) / "qrels" / f"{params.evaluate_retrieval.split}.tsv").is_file()
    tabular = TrainTabularParams.model_validate(params.train.tabular)
    model = TrainModelParams.model_validate(params.train.model)
    assert tabular.registered_name != model.registered_name
    # params.yaml's sections are the stages' params sections, no more, no less
    sections = {stage["params"][0] for stage in PIPELINE.values() if "params" in stage}
    assert sections == {field.alias or name for name, field in pipeline.PipelineParams.model_fields.items()}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("index: {domains: [conveyor]}\nevaluate-retrieval: {collection: c, split: test}\n", "train"),
        ("index: {domain: [conveyor]}\n", "index.domain"),
        ("index: [unclosed\n", "params.yaml"),
    ],
)
def test_a_broken_params_file_is_refused_naming_the_key(tmp_path, text, named):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=str(path)) as refused:
        pipeline.load_params(path)
    assert named in str(refused.value)


def test_a_missing_collection_is_named(tmp_path):
    with pytest.raises(ConfigurationError, match=f"{tmp_path}/cranfield/corpus.jsonl"):
        pipeline.evaluate_run(pipeline.load_params(), tmp_path)
