"""`conveyor up`/`down` for real: Prefect server + worker, MLflow, chat API; deploy, run, crash, retry."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from conveyor import stack
from conveyor.settings import ConfigurationError, Settings

REPO = Path(__file__).resolve().parent.parent
CHEAP_FLOW = '''
"""A flow that costs nothing: sleeps once per marker file, so a retried run finishes at once."""
import time
import uuid
from pathlib import Path

from prefect import flow


@flow(name="ops-check")
def ops_check(seconds: float = 0.0, marker: str | None = None) -> str:
    if marker is None or not Path(marker).exists():
        if marker:
            Path(marker).write_text("started")
        time.sleep(seconds)
    return "done"
'''
CHEAP_PROJECT = """
name: ops-check
deployments:
  - name: local
    entrypoint: cheap_flow.py:ops_check
    enforce_parameter_schema: true
    work_pool:
      name: local
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def stack_settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("stack-home")
    return Settings(home=home, prefect_port=_free_port(), mlflow_port=_free_port(), api_port=_free_port())


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    """Known secret values given to the stack, to look for in its logs."""
    return {name: f"ops-{uuid.uuid4().hex}" for name in ("CONVEYOR_SECRET_KEY", "CONVEYOR_ADMIN_PASSWORD")}


@pytest.fixture(scope="module")
def running_stack(stack_settings: Settings, secrets: dict[str, str]):
    saved = {name: os.environ.get(name) for name in secrets}
    os.environ.update(secrets)
    try:
        stack.up(stack_settings)
        yield stack_settings
    finally:
        stack.down(stack_settings)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def prefect_cli(running_stack: Settings):
    """Run `prefect ...` against the stack's server; returns the completed process."""
    env = stack.child_environment(running_stack)

    def run(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).with_name("prefect")), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="module")
def cheap_project(tmp_path_factory, prefect_cli) -> Path:
    folder = tmp_path_factory.mktemp("ops-project")
    (folder / "cheap_flow.py").write_text(CHEAP_FLOW)
    (folder / "prefect.yaml").write_text(CHEAP_PROJECT)
    done = prefect_cli("--no-prompt", "deploy", "--all", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def _flow_run_state(settings: Settings, flow_run_id: str) -> StateType:
    with (
        temporary_settings({PREFECT_API_URL: stack.prefect_api_url(settings)}),
        get_client(sync_client=True) as c,
    ):
        return c.read_flow_run(flow_run_id).state.type


def _wait_for_state(settings: Settings, flow_run_id: str, wanted: StateType, timeout_s: float) -> StateType:
    deadline = time.monotonic() + timeout_s
    state = _flow_run_state(settings, flow_run_id)
    while state != wanted and time.monotonic() < deadline:
        time.sleep(2)
        state = _flow_run_state(settings, flow_run_id)
    return state


def _flow_run_id(cli_output: str) -> str:
    return next(line.split("UUID:")[1].strip() for line in cli_output.splitlines() if "UUID:" in line)


class TestUp:
    def test_every_service_answers_its_health_check(self, running_stack: Settings):
        names = [service.name for service in stack.services(running_stack)]
        assert names[:3] == ["prefect-server", "prefect-worker", "mlflow-server"]
        assert "chat-api" in names, "serving/app.py exists, so the chat API is part of the stack"
        for service in stack.services(running_stack):
            if service.port:
                assert httpx.get(service.health_url, timeout=10).status_code == 200, service.name
            assert (running_stack.state_dir / "run" / f"{service.name}.log").stat().st_size > 0

    def test_second_up_starts_nothing_new(self, running_stack: Settings, capsys):
        pids = {p.name: p.read_text() for p in (running_stack.state_dir / "run").glob("*.pid")}
        stack.up(running_stack)
        out = capsys.readouterr().out
        assert out.count("already running") == len(stack.services(running_stack))
        assert {p.name: p.read_text() for p in (running_stack.state_dir / "run").glob("*.pid")} == pids

    def test_mlflow_server_shares_the_tracking_store(self, running_stack: Settings):
        url = f"http://127.0.0.1:{running_stack.mlflow_port}/api/2.0/mlflow/experiments/search"
        response = httpx.post(url, json={"max_results": 10}, timeout=10)
        assert response.status_code == 200
        assert (running_stack.state_dir / "mlflow.db").exists()

    def test_a_port_taken_by_another_process_is_named(self, running_stack: Settings, tmp_path: Path):
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        try:
            other = Settings(home=tmp_path, prefect_port=squatter.getsockname()[1])
            with pytest.raises(ConfigurationError, match="CONVEYOR_PREFECT_PORT"):
                stack.up(other)
        finally:
            squatter.close()


class TestDeployments:
    def test_deploy_and_run_to_completed(self, running_stack, prefect_cli, cheap_project: Path):
        done = prefect_cli(
            "deployment", "run", "ops-check/local", "--param", "seconds=0.1", "--watch", cwd=cheap_project
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Completed" in done.stdout
        assert _flow_run_state(running_stack, _flow_run_id(done.stdout)) == StateType.COMPLETED

    def test_invalid_parameters_are_rejected_before_a_run_exists(self, prefect_cli, cheap_project: Path):
        done = prefect_cli(
            "deployment", "run", "ops-check/local", "--param", "seconds=soon", cwd=cheap_project
        )
        assert "Validation failed for field 'seconds'" in done.stdout + done.stderr
        assert "UUID:" not in done.stdout

    def test_the_repository_deploys_to_every_pool(self, running_stack, prefect_cli):
        from conveyor import workpools

        for pool in workpools.POOL_TYPES:
            workpools.apply(pool, api_url=stack.prefect_api_url(running_stack))
        done = prefect_cli("--no-prompt", "deploy", "--all", timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        listed = prefect_cli("deployment", "ls").stdout
        for name in [
            "index-documents/local",
            "train-model/k8s-gpu-multinode",
            "platform/local",
            "federated-training/docker",
            "train-tabular/k8s",
            "evaluate-retrieval/local",
        ]:
            assert name in listed
        bad = prefect_cli(
            "deployment",
            "run",
            "train-tabular/local",
            "--params",
            '{"params": {"forest": {"n_estimators": 0}}}',
        )
        assert "Validation failed" in bad.stdout + bad.stderr and "UUID:" not in bad.stdout

    def test_the_original_contract_client_passes_against_the_stack(self, running_stack):
        """`python -m serving.contract_client URL` as a user runs it against `make up` (the deployments above:
        /ml/train starts train-tabular on the local pool and the stack's worker runs it)."""
        url = f"http://{running_stack.api_host}:{running_stack.api_port}"
        done = subprocess.run(  # the admin password comes from CONVEYOR_ADMIN_PASSWORD, as the stack's
            [sys.executable, "-m", "serving.contract_client", url],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "contract: every call passed" in done.stdout and "predict: {" in done.stdout


class TestFaults:
    def test_a_killed_worker_leaves_the_run_crashed_and_a_retry_completes(
        self, running_stack: Settings, prefect_cli, cheap_project: Path, tmp_path: Path
    ):
        marker = tmp_path / "first-attempt"
        started = prefect_cli(
            "deployment",
            "run",
            "ops-check/local",
            "--param",
            "seconds=600",
            "--param",
            f"marker={marker}",
            cwd=cheap_project,
        )
        flow_run_id = _flow_run_id(started.stdout)
        assert _wait_for_state(running_stack, flow_run_id, StateType.RUNNING, 180) == StateType.RUNNING
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(1)

        # A dying node takes the worker and its flow-run process with it.
        worker_pid = stack.running_pid(running_stack.state_dir / "run" / "prefect-worker.pid")
        children = subprocess.run(
            ["pgrep", "-P", str(worker_pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in [worker_pid, *map(int, children)]:
            os.kill(pid, signal.SIGKILL)

        assert _wait_for_state(running_stack, flow_run_id, StateType.CRASHED, 240) == StateType.CRASHED
        stack.up(running_stack)  # brings back only the worker
        retried = prefect_cli("flow-run", "retry", flow_run_id)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert _wait_for_state(running_stack, flow_run_id, StateType.COMPLETED, 180) == StateType.COMPLETED


class TestDown:
    def test_down_stops_what_up_started_and_nothing_else(self, running_stack: Settings):
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        pids = [stack.running_pid(p) for p in (running_stack.state_dir / "run").glob("*.pid")]
        try:
            stack.down(running_stack)
            assert not list((running_stack.state_dir / "run").glob("*.pid"))
            assert all(stack.start_time(pid) is None for pid in pids)
            assert bystander.poll() is None
            with pytest.raises(httpx.HTTPError):
                httpx.get(stack.prefect_api_url(running_stack) + "/health", timeout=2)
        finally:
            bystander.kill()
            bystander.wait()

    def test_no_secret_reaches_a_log(self, running_stack: Settings, secrets: dict[str, str]):
        logs = list((running_stack.state_dir / "run").glob("*.log"))
        assert {log.stem for log in logs} >= {"prefect-server", "prefect-worker", "mlflow-server"}
        for log in logs:
            text = log.read_text(errors="replace")
            assert not [name for name, value in secrets.items() if value in text], log
