"""prefect.yaml against the flows and the pool templates: names, pools, job variables, parameters, secrets."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule
from prefect.utilities.templating import find_placeholders

from conveyor import workpools

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = CONFIG["deployments"]
FLOWS = {
    "index-documents": "flows/index_documents.py:index_documents",
    "evaluate-retrieval": "flows/evaluate_retrieval.py:evaluate_retrieval",
    "run-agent-task": "flows/run_agent_task.py:run_agent_task",
    "train-model": "flows/train_model.py:train_model",
    "train-tabular": "flows/train_tabular.py:train_tabular",
    "train-router": "flows/train_router.py:train_router",
    "evaluate-answers": "flows/evaluate_answers.py:evaluate_answers",
    "federated-training": "flows/federated_training.py:federated_training",
    "platform": "flows/end_to_end.py:platform",
}
SECRET_KEY = re.compile(r"secret|password|token|api[_-]?key|credential", re.IGNORECASE)


def flow_name(entrypoint: str) -> str | None:
    """The `@flow(name=...)` of an entrypoint, read from the source without importing it."""
    path, function = entrypoint.split(":")
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "flow":
                    return next((k.value.value for k in decorator.keywords if k.arg == "name"), function)
    return None


def ids(deployment: dict[str, Any]) -> str:
    return f"{flow_name(deployment['entrypoint']) or deployment['entrypoint']}/{deployment['name']}"


def walk(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")
    else:
        yield path, value


class TestDeploymentsCoverTheFlows:
    def test_every_flow_has_a_local_deployment(self):
        for name, entrypoint in FLOWS.items():
            pools = {d["work_pool"]["name"] for d in DEPLOYMENTS if d["entrypoint"] == entrypoint}
            assert "local" in pools, f"{name} has no deployment on the local pool"

    @pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids)
    def test_entrypoint_is_the_named_flow(self, deployment: dict[str, Any]):
        expected = next(name for name, entrypoint in FLOWS.items() if entrypoint == deployment["entrypoint"])
        assert flow_name(deployment["entrypoint"]) == expected

    def test_names_are_flow_slash_pool_and_unique(self):
        names = [ids(d) for d in DEPLOYMENTS]
        assert len(names) == len(set(names))
        for deployment in DEPLOYMENTS:
            assert deployment["name"].startswith(deployment["work_pool"]["name"].split("-")[0])

    @pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids)
    def test_parameters_are_enforced(self, deployment: dict[str, Any]):
        assert deployment["enforce_parameter_schema"] is True

    def test_entrypoint_folders_shadow_no_standard_module(self):
        """Prefect puts an entrypoint's folder on `sys.path`: a `flows/platform.py` there made
        `import platform` in spawned processes (Dask workers) load the flow, not the standard library."""
        folders = {(REPO / d["entrypoint"].split(":")[0]).parent for d in DEPLOYMENTS}
        shadowing = [
            str(path.relative_to(REPO))
            for folder in folders
            for path in folder.glob("*.py")
            if path.stem in sys.stdlib_module_names
        ]
        assert shadowing == []


class TestWorkPools:
    @pytest.mark.parametrize("pool", list(workpools.POOL_TYPES))
    def test_template_uses_only_declared_variables(self, pool: str):
        template = workpools.template(pool)
        used = {p.name for p in find_placeholders(template["job_configuration"])}
        declared = set(template["variables"]["properties"])
        assert used <= declared, used - declared

    @pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids)
    def test_job_variables_exist_in_the_pools_template(self, deployment: dict[str, Any]):
        pool = deployment["work_pool"]["name"]
        declared = workpools.template(pool)["variables"]["properties"]
        unknown = set(deployment["work_pool"].get("job_variables", {})) - set(declared)
        assert not unknown, f"{ids(deployment)} sets {unknown}, which pool {pool!r} does not declare"

    @pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=ids)
    def test_image_deployments_run_from_the_image_folder(self, deployment: dict[str, Any]):
        if deployment["work_pool"]["name"] == "local":
            assert "pull" not in deployment  # runs in the checkout it was deployed from
        else:
            step = deployment["pull"][0]["prefect.deployments.steps.set_working_directory"]
            assert step["directory"] == "/opt/conveyor"

    def test_docker_flow_runs_can_sandbox_model_code(self):
        """Flow-run containers get the security options the compose API has, which bubblewrap needs."""
        compose = yaml.safe_load((REPO / "deployments" / "compose" / "compose.yaml").read_text())
        variables = workpools.template("docker")["variables"]["properties"]
        default = variables["container_create_kwargs"]["default"]
        assert default == {"security_opt": compose["services"]["api"]["security_opt"]}

    def test_unknown_pool_is_a_clear_error(self):
        from conveyor.settings import ConfigurationError

        with pytest.raises(ConfigurationError, match="unknown work pool 'gpu'"):
            workpools.template("gpu")


class TestSchedulesAndParameters:
    @pytest.mark.parametrize("deployment", [d for d in DEPLOYMENTS if d.get("schedules")], ids=ids)
    def test_schedules_are_valid_cron(self, deployment: dict[str, Any]):
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])

    def test_nightly_reindex_weekly_retrain_and_federated_rounds_are_scheduled(self):
        scheduled = {flow_name(d["entrypoint"]) for d in DEPLOYMENTS if d.get("schedules")}
        assert {"index-documents", "train-model", "federated-training"} <= scheduled

    @pytest.mark.parametrize(
        "deployment", [d for d in DEPLOYMENTS if d.get("parameters") or d.get("schedules")], ids=ids
    )
    def test_parameters_match_the_flow_signature(self, deployment: dict[str, Any]):
        from prefect.flows import load_flow_from_entrypoint

        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        base = deployment.get("parameters", {})
        # A scheduled run gets the deployment's parameters overlaid with its schedule's.
        runs = [{**base, **s.get("parameters", {})} for s in deployment.get("schedules", [])] or [base]
        for parameters in runs:
            flow.validate_parameters(parameters)


class TestSecrets:
    def test_no_plaintext_secret_in_prefect_yaml(self):
        for path, value in walk(CONFIG):
            if SECRET_KEY.search(path.rsplit(".", 1)[-1]) and isinstance(value, str):
                assert "{{" in value, (
                    f"prefect.yaml{path} holds a literal secret; reference a Secret block instead"
                )

    @pytest.mark.parametrize("pool", list(workpools.POOL_TYPES))
    def test_pool_templates_carry_no_secret_values(self, pool: str):
        for name, spec in workpools.template(pool)["variables"]["properties"].items():
            if name == "env":
                assert not [key for key in spec.get("default") or {} if SECRET_KEY.search(key)]
            elif SECRET_KEY.search(name):  # a Secret's name, or a credentials block chosen per deployment
                assert name == "secret_name" or spec.get("default") is None, name
