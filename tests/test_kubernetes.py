"""Kubernetes offline: manifests and rendered pool Jobs against the API schema; the worker against kmock."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import kmock
import kubernetes_validate
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from agents import llm
from conveyor import workpools
from conveyor.settings import Settings

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "deployments" / "kubernetes"
# Applied by hand over the base instead of one of its parts (docs/operations.md), so not in the kustomization.
ALTERNATIVES = {"llm/vllm.yaml"}
ADAPTER_RULES = yaml.safe_load(
    (REPO / "deployments" / "monitoring" / "prometheus-adapter-values.yaml").read_text()
)
K8S_VERSION = "1.33"
# prefect-kubernetes insists on these keys inside the *pod* spec (where Kubernetes has no such fields; the
# API server drops them). The Job-level completions/parallelism are the real ones.
PREFECT_POD_SPEC_KEYS = ("completions", "parallelism")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEY|CREDENTIAL", re.IGNORECASE)


def manifest_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append(
                    (
                        f"{path.relative_to(MANIFESTS)}:{document['kind']}/{document['metadata']['name']}",
                        document,
                    )
                )
    return documents


def k8s_deployments() -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return [d for d in config["deployments"] if d["work_pool"]["name"] == "k8s-gpu"]


def render_job(job_variables: dict[str, Any], flow_run_name: str = "clever-fox") -> dict[str, Any]:
    """The Job the k8s-gpu pool's worker would submit for a flow run of a deployment with these variables."""

    async def render() -> KubernetesWorkerJobConfiguration:
        configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
            workpools.template("k8s-gpu"), job_variables, client=AsyncMock()
        )
        configuration.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name=flow_run_name))
        return configuration

    return asyncio.run(render()).job_manifest


def validate_job(job: dict[str, Any]) -> None:
    job = json.loads(json.dumps(job))
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "x"  # the API server fills it in
    for key in PREFECT_POD_SPEC_KEYS:
        job["spec"]["template"]["spec"].pop(key)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def containers_env(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
        "template", {}
    )
    return [env for container in pod.get("containers", []) for env in container.get("env") or []]


class TestManifests:
    @pytest.mark.parametrize(
        "name,document", manifest_documents(), ids=lambda v: v if isinstance(v, str) else ""
    )
    def test_validates_strictly_against_the_kubernetes_schema(self, name: str, document: dict[str, Any]):
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)

    def test_kustomization_lists_every_manifest(self):
        listed = set(yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"])
        files = {
            str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml"
        }
        assert listed == files - ALTERNATIVES

    def test_secrets_only_by_reference(self):
        for name, document in manifest_documents():
            assert document["kind"] != "Secret", f"{name}: Secrets are created out of band, never committed"
            for env in containers_env(document):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} must come from a secretKeyRef"

    def test_chat_api_probes_health_and_ready(self):
        api = next(d for n, d in manifest_documents() if n.endswith("Deployment/conveyor-api"))
        container = api["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        kinds = {d["kind"] for n, d in manifest_documents() if n.startswith("api/")}
        assert {
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "ConfigMap",
            "PersistentVolumeClaim",
        } <= kinds


def manifest(name: str) -> dict[str, Any]:
    """The one document named `FILE:KIND/NAME`."""
    [document] = [d for n, d in manifest_documents() if n == name]
    return document


def flags(container: dict[str, Any]) -> dict[str, str]:
    """A container's `--name=value` arguments (`--name` alone: "")."""
    return dict((arg.removeprefix("--").split("=", 1) + [""])[:2] for arg in container["args"])


LLM_SERVICE = manifest("llm/llama-cpp.yaml:Service/conveyor-llm")
LLM_VARIANTS = ["llm/llama-cpp.yaml", "llm/vllm.yaml"]


class TestLLMService:
    def test_the_api_calls_the_llm_service(self):
        config = manifest("api/config.yaml:ConfigMap/conveyor-config")["data"]
        meta, [port] = LLM_SERVICE["metadata"], LLM_SERVICE["spec"]["ports"]
        assert config["CONVEYOR_LLM_BACKEND"] == "openai"
        assert (
            config["CONVEYOR_LLM_BASE_URL"]
            == f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}/v1"
        )

    @pytest.mark.parametrize("variant", LLM_VARIANTS)
    def test_each_server_is_reached_probed_and_scaled_alike(self, variant: str):
        deployment = manifest(f"{variant}:Deployment/conveyor-llm")
        pod = deployment["spec"]["template"]
        [server] = pod["spec"]["containers"]
        options = flags(server)
        assert LLM_SERVICE["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        [port] = [p for p in server["ports"] if p["name"] == LLM_SERVICE["spec"]["ports"][0]["targetPort"]]
        assert (
            str(port["containerPort"])
            == options["port"]
            == pod["metadata"]["annotations"]["prometheus.io/port"]
        )
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert server[probe]["httpGet"] == {"path": "/health", "port": port["name"]}
        # the model name the API asks for (CONVEYOR_LLM_MODEL, not overridden in conveyor-config)
        assert Settings().llm_model in (options.get("alias"), options.get("served-model-name"))

        hpa = manifest(f"{variant}:HorizontalPodAutoscaler/conveyor-llm")
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        [metric] = hpa["spec"]["metrics"]
        rules = {rule["name"]["as"]: rule for rule in ADAPTER_RULES["rules"]["custom"]}
        rule = rules[metric["pods"]["metric"]["name"]]  # a per-pod metric the adapter serves
        exported = rule["seriesQuery"].split(":")[0]
        assert exported == {"llm/llama-cpp.yaml": "llamacpp", "llm/vllm.yaml": "vllm"}[variant]
        if exported == "llamacpp":
            assert "metrics" in options  # llama-server exports them only with --metrics

    def test_the_cpu_server_loads_the_checked_gguf_of_the_embedded_backend(self):
        spec = manifest("llm/llama-cpp.yaml:Deployment/conveyor-llm")["spec"]["template"]["spec"]
        [init], [server] = spec["initContainers"], spec["containers"]
        assert "from agents.llm import model_file" in init["command"][-1]
        home = {e["name"]: e["value"] for e in init["env"]}["CONVEYOR_HOME"]
        assert flags(server)["model"] == f"{home}/models/{llm.LOCAL_MODELS[Settings().llm_model].file}"
        mounts = [{m["name"]: m["mountPath"] for m in c["volumeMounts"]} for c in (init, server)]
        assert mounts[0]["models"] == mounts[1]["models"] == home

    def test_the_gpu_variant_replaces_the_cpu_deployment_and_hpa(self):
        cpu = {n.split(":")[1]: d for n, d in manifest_documents() if n.startswith("llm/llama-cpp.yaml:")}
        gpu = {n.split(":")[1]: d for n, d in manifest_documents() if n.startswith("llm/vllm.yaml:")}
        assert set(gpu) - set(cpu) == {"PersistentVolumeClaim/conveyor-llm-models"}
        assert set(cpu) - set(gpu) == {"Service/conveyor-llm"}  # shared
        name = "Deployment/conveyor-llm"
        assert gpu[name]["spec"]["selector"] == cpu[name]["spec"]["selector"]  # immutable: same one
        pod = gpu[name]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        pool = workpools.template("k8s-gpu")["variables"]["properties"]
        assert pod["nodeSelector"] == pool["node_selector"]["default"]
        assert {t["key"] for t in pod["tolerations"]} == {t["key"] for t in pool["tolerations"]["default"]}


class TestRenderedJobs:
    def test_default_job_is_a_valid_gpu_job(self):
        job = render_job({})
        validate_job(job)
        pod = job["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["nodeSelector"]
        assert (
            workpools.template("k8s-gpu")["variables"]["properties"]["pod_watch_timeout_seconds"]["default"]
            >= 600
        )

    @pytest.mark.parametrize("deployment", k8s_deployments(), ids=lambda d: f"{d['entrypoint']}:{d['name']}")
    def test_every_k8s_deployment_renders_a_valid_job(self, deployment: dict[str, Any]):
        job = render_job(deployment["work_pool"].get("job_variables", {}))
        validate_job(job)
        assert job["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")

    def test_secrets_reach_pods_by_reference_only(self):
        container = render_job({})["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "conveyor-secrets", "optional": True}} in container["envFrom"]
        assert not [e for e in container["env"] if SECRET_NAME.search(e["name"]) and "value" in e]

    def test_multinode_ddp_is_an_indexed_job_behind_the_headless_service(self):
        deployment = next(d for d in k8s_deployments() if d["name"] == "k8s-gpu-multinode")
        job = render_job(deployment["work_pool"]["job_variables"])
        validate_job(job)
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
        assert deployment["parameters"]["params"]["num_nodes"] == 2
        pod = job["spec"]["template"]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        service = next(
            d for n, d in manifest_documents() if n.startswith("training/") and d["kind"] == "Service"
        )
        assert service["spec"]["clusterIP"] == "None"
        assert pod["spec"]["subdomain"] == service["metadata"]["name"] == env["MASTER_ADDR"]["value"]
        assert env["MASTER_PORT"]["value"] == str(service["spec"]["ports"][0]["port"])
        rank_source = env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert "batch.kubernetes.io/job-completion-index" in rank_source
        selector = dict(service["spec"]["selector"])
        assert selector.pop("batch.kubernetes.io/job-completion-index") == "0"
        assert selector.items() <= pod["metadata"]["labels"].items()
        # Only pod 0 runs the flow; the others join its process group.
        assert "prefect flow-run execute" in pod["spec"]["containers"][0]["args"][0]


class TestWorkerAgainstKmock:
    def test_worker_submits_the_rendered_job(self, monkeypatch):
        monkeypatch.setenv("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_ENABLED", "false")
        monkeypatch.setenv("PREFECT_INTEGRATIONS_KUBERNETES_CLUSTER_UID", "kmock")
        created = asyncio.run(self._submit())
        assert created["metadata"]["namespace"] == "conveyor"
        assert (
            created["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        )
        assert created["metadata"]["labels"]["prefect.io/flow-run-name"] == "kmock-run"
        validate_job({**created, "metadata": {**created["metadata"], "generateName": "kmock-run-"}})

    @staticmethod
    async def _submit() -> dict[str, Any]:
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            kubeconfig = {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
                "users": [{"name": "kmock", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
            }
            configuration = await KubernetesWorkerJobConfiguration.from_template_and_values(
                workpools.template("k8s-gpu"),
                {"cluster_config": {"config": kubeconfig, "context_name": "kmock"}},
                client=AsyncMock(),
            )
            flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="kmock-run")
            configuration.prepare_for_flow_run(flow_run)
            name = configuration.job_manifest["metadata"].pop("generateName") + "0"
            configuration.job_manifest["metadata"]["name"] = name  # kmock does not implement generateName
            async with KubernetesWorker(work_pool_name="k8s-gpu", create_pool_if_not_found=False) as worker:
                run = asyncio.create_task(worker.run(flow_run, configuration))
                key = (kmock.resource("batch/v1/jobs"), "conveyor", name)
                for _ in range(300):
                    if key in emulator.objects or run.done():
                        break
                    await asyncio.sleep(0.1)
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            assert key in emulator.objects, f"the worker created no Job in kmock (run: {run})"
            return json.loads(json.dumps(emulator.objects[key].raw))
