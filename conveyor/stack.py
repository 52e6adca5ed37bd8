"""`conveyor up` / `conveyor down`: the local stack (Prefect server + worker, MLflow server, chat API)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

from conveyor import runtime
from conveyor.polling import wait_until
from conveyor.settings import ConfigurationError, Settings, get_settings

REPO = Path(__file__).resolve().parent.parent
WORKER_NAME = "conveyor-local-worker"
STOP_GRACE_S = 15.0


class StillRunning(RuntimeError):
    """A service's process outlived the grace period after SIGTERM."""


@dataclass(frozen=True)
class Service:
    """A long-running process of the stack and how to tell it is healthy."""

    name: str
    command: list[str]
    port: int
    port_setting: str
    health_url: str
    ready_timeout_s: float
    is_ready: Callable[[httpx.Response, datetime], bool] = lambda response, _: response.status_code == 200


def prefect_api_url(settings: Settings) -> str:
    return settings.prefect_api_url or f"http://127.0.0.1:{settings.prefect_port}/api"


def _bin(name: str) -> str:
    return str(runtime.SCRIPTS / name)


def _worker_heartbeat_since(response: httpx.Response, since: datetime) -> bool:
    """The worker has sent a heartbeat since it was started (older records may be left from before)."""
    return response.status_code == 200 and any(
        w["name"] == WORKER_NAME
        and w["last_heartbeat_time"]
        and datetime.fromisoformat(w["last_heartbeat_time"]) >= since
        for w in response.json()
    )


def services(settings: Settings) -> list[Service]:
    """The stack in start order; the chat API only once `serving/app.py` exists."""
    api, pool, mlflow_port, api_port = (
        prefect_api_url(settings),
        settings.work_pool,
        settings.mlflow_port,
        settings.api_port,
    )
    mlflow = [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
    mlflow += ["--backend-store-uri", settings.tracking_uri]
    mlflow += ["--default-artifact-root", settings.artifact_root.as_uri()]
    stack = [
        Service(
            "prefect-server",
            [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(settings.prefect_port)],
            settings.prefect_port,
            "CONVEYOR_PREFECT_PORT",
            f"{api}/health",
            ready_timeout_s=90,
        ),
        Service(
            "prefect-worker",
            [_bin("prefect"), "worker", "start", "--type", "process", "--pool", pool, "--name", WORKER_NAME],
            0,
            "",
            f"{api}/work_pools/{pool}/workers/filter",
            ready_timeout_s=60,
            is_ready=_worker_heartbeat_since,
        ),
        Service(
            "mlflow-server",
            mlflow,
            mlflow_port,
            "CONVEYOR_MLFLOW_PORT",
            f"http://127.0.0.1:{mlflow_port}/health",
            ready_timeout_s=120,
        ),
    ]
    if (REPO / "serving" / "app.py").exists():
        stack.append(
            Service(
                "chat-api",
                [
                    _bin("uvicorn"),
                    "serving.app:app",
                    "--host",
                    settings.api_host,
                    "--port",
                    str(api_port),
                    "--no-access-log",
                ],
                api_port,
                "CONVEYOR_API_PORT",
                f"http://{settings.api_host}:{api_port}/health",
                ready_timeout_s=120,
            )
        )
    return stack


def _run_dir(settings: Settings) -> Path:
    path = settings.state_dir / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_time(pid: int) -> str | None:
    """The start time of a live `pid` (tells it from a reused pid); None if gone or a zombie."""
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return f"{process.create_time():.2f}"
    except psutil.Error:
        return None


def running_pid(pid_file: Path) -> int | None:
    """The pid recorded in `pid_file` if that very process is still alive."""
    try:
        record = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return record["pid"] if start_time(record["pid"]) == record["started"] else None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def child_environment(settings: Settings) -> dict[str, str]:
    """Environment for the stack's processes: one Prefect home and API, the same tracking store."""
    return os.environ | {
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_API_URL": prefect_api_url(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "CONVEYOR_HOME": str(settings.state_dir),
        "CONVEYOR_PREFECT_API_URL": prefect_api_url(settings),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PYTHONUNBUFFERED": "1",
    }


def _wait_healthy(service: Service, process: subprocess.Popen, log: Path) -> float:
    started, since = time.monotonic(), datetime.now(UTC) - timedelta(seconds=1)

    def healthy() -> bool:
        if process.poll() is not None:
            raise ConfigurationError(f"{service.name} exited with code {process.returncode}; see {log}")
        return service.is_ready(_probe(service.health_url), since)

    wait_until(
        healthy,
        service.ready_timeout_s,
        0.5,
        lambda: ConfigurationError(f"{service.name} not healthy in {service.ready_timeout_s:.0f} s ({log})"),
        transient=(httpx.HTTPError,),
    )
    return time.monotonic() - started


def _probe(url: str) -> httpx.Response:
    if url.endswith("/filter"):
        return httpx.post(url, json={}, timeout=5)
    return httpx.get(url, timeout=5)


def _start(service: Service, settings: Settings, env: dict[str, str]) -> None:
    run_dir = _run_dir(settings)
    pid_file, log = run_dir / f"{service.name}.pid", run_dir / f"{service.name}.log"
    if running_pid(pid_file):
        print(f"{service.name:15} already running (pid {running_pid(pid_file)})")
        return
    if service.port and _port_in_use("127.0.0.1", service.port):
        raise ConfigurationError(
            f"port {service.port} is taken by a process `conveyor up` did not start: "
            f"stop it or set {service.port_setting}"
        )
    with log.open("ab") as out:
        process = subprocess.Popen(
            service.command,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(json.dumps({"pid": process.pid, "started": start_time(process.pid)}))
    try:
        seconds = _wait_healthy(service, process, log)
    except ConfigurationError:
        _stop(service.name, settings)
        raise
    print(f"{service.name:15} healthy in {seconds:4.1f} s  {service.health_url}  (log {log})")


def up(settings: Settings | None = None) -> None:
    """Start every service that is not running yet and wait until each answers its health check."""
    from conveyor import workpools

    settings = settings or get_settings()
    env = child_environment(settings)
    for service in services(settings):
        if service.name == "prefect-worker":
            workpools.apply(settings.work_pool, api_url=prefect_api_url(settings))
            workpools.apply_crash_detection(api_url=prefect_api_url(settings))
        _start(service, settings, env)
    print(f"Prefect UI  http://127.0.0.1:{settings.prefect_port}")
    print(f"            export PREFECT_API_URL={env['PREFECT_API_URL']}  # for prefect deploy/run")
    print(f"MLflow UI   http://127.0.0.1:{settings.mlflow_port}")
    if any(s.name == "chat-api" for s in services(settings)):
        print(f"Chat API    http://{settings.api_host}:{settings.api_port}/docs")


def _stop(name: str, settings: Settings) -> bool:
    pid_file = _run_dir(settings) / f"{name}.pid"
    pid = running_pid(pid_file)
    if pid:
        # Each service leads its own session: signal its group so child processes stop with it.
        os.killpg(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not start_time(pid), STOP_GRACE_S, 0.2, StillRunning)
        except StillRunning:  # after the grace period
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid is not None


def down(settings: Settings | None = None) -> None:
    """Stop, in reverse order, only the processes whose pid files `up` wrote."""
    settings = settings or get_settings()
    names = [s.name for s in services(settings)] + ["chat-api"]
    for name in reversed(dict.fromkeys(names)):
        print(f"{name:15} {'stopped' if _stop(name, settings) else 'not running'}")
