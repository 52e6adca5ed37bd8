"""A local federation: one SuperLink and one SuperNode per site as real processes on 127.0.0.1.

Everything started here (and every helper those processes spawn, such as `flower-superexec` and the
per-message ClientApp/ServerApp processes) is stopped by pid when the federation closes, also on failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import tomli_w

from conveyor import runtime
from conveyor.federated.journal import JOURNAL_FILE, FederationError, Journal
from conveyor.polling import wait_until

APP_DIR = Path(__file__).resolve().parent
CONNECTION = "conveyor-local"
HOST = "127.0.0.1"
STOP_GRACE_S = 5.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS reports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def require_free(ports: list[int]) -> None:
    """Raise FederationError naming the first port on 127.0.0.1 that something already listens on."""
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                raise FederationError(
                    f"port {port} on {HOST} is already in use: choose another base_port or leave it unset "
                    "to pick free ports"
                ) from None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _log_tail(path: Path, lines: int = 15) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalFederation:
    """SuperLink + SuperNodes for `sites` (node configs), started on enter and stopped by pid on exit.

    Args:
        run_dir: where logs, FLWR_HOME and the run config go.
        sites: one node config per site (`site-id`, `data-path`, optionally `fault`).
        base_port: first of the 3 + len(sites) consecutive ports to use; None = any free ports.
        startup_timeout_s: how long the SuperLink may take to listen.
    """

    def __init__(
        self,
        run_dir: Path,
        sites: list[dict[str, Any]],
        base_port: int | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.run_dir = run_dir
        self.sites = sites
        self.base_port = base_port
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = run_dir / "logs"
        self.flwr_home = run_dir / "flwr-home"
        self.journal = Journal(run_dir / JOURNAL_FILE)
        self.processes: dict[str, subprocess.Popen] = {}
        self.stopped_pids: list[int] = []

    def __enter__(self) -> LocalFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The processes' environment: the SuperLink and SuperNodes start `flower-superexec` by name."""
        return runtime.with_tools(os.environ) | {"FLWR_HOME": str(self.flwr_home), "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        count = 3 + len(self.sites)
        if self.base_port is None:
            ports = free_ports(count)
        else:
            ports = list(range(self.base_port, self.base_port + count))
            require_free(ports)
        serverappio, fleet, control, *clientappio = ports
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        (self.flwr_home / "config.toml").write_text(
            tomli_w.dumps(
                {
                    "superlink": {
                        "default": CONNECTION,
                        CONNECTION: {"address": f"{HOST}:{control}", "insecure": True},
                    }
                }
            )
        )

        self._spawn(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--serverappio-api-address",
                f"{HOST}:{serverappio}",
                "--fleet-api-address",
                f"{HOST}:{fleet}",
                "--control-api-address",
                f"{HOST}:{control}",
            ],
        )
        self._await_listening("superlink", [serverappio, fleet, control])
        for site, port in zip(self.sites, clientappio, strict=True):
            node_config = " ".join(f"{key}={json.dumps(value)}" for key, value in site.items())
            self._spawn(
                f"supernode-{site['site-id']}",
                [
                    "flower-supernode",
                    "--insecure",
                    "--superlink",
                    f"{HOST}:{fleet}",
                    "--clientappio-api-address",
                    f"{HOST}:{port}",
                    "--node-config",
                    node_config,
                ],
            )
        for site, port in zip(self.sites, clientappio, strict=True):
            self._await_listening(f"supernode-{site['site-id']}", [port])

    def _spawn(self, name: str, command: list[str]) -> None:
        executable = runtime.SCRIPTS / command[0]
        if not executable.is_file():
            raise FederationError(f"{executable} is missing: install flwr into this environment")
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [str(executable), *command[1:]],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.run_dir,
                start_new_session=True,
            )

    def _await_listening(self, name: str, ports: list[int]) -> None:
        process = self.processes[name]

        def listening() -> bool:
            if process.poll() is not None:
                raise FederationError(
                    f"{name} exited with code {process.returncode} while starting:\n"
                    f"{_log_tail(self.log_dir / f'{name}.log')}"
                )
            return all(_listening(port) for port in ports)

        wait_until(
            listening,
            self.startup_timeout_s,
            0.2,
            lambda: FederationError(
                f"{name} did not listen on ports {ports} within {self.startup_timeout_s:.0f} s:\n"
                f"{_log_tail(self.log_dir / f'{name}.log')}"
            ),
        )

    def submit(self, run_config: dict[str, Any], timeout_s: float = 120.0) -> int:
        """Start a run of the app with `run_config` overrides on the SuperLink; returns Flower's run id."""
        config_path = self.run_dir / "run_config.toml"
        config_path.write_text(tomli_w.dumps(run_config))
        command = [
            str(runtime.SCRIPTS / "flwr"),
            "run",
            str(APP_DIR),
            CONNECTION,
            "--run-config",
            str(config_path),
            "--format",
            "json",
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, env=self.env, timeout=timeout_s, cwd=self.run_dir
            )
        except subprocess.TimeoutExpired:
            raise FederationError(f"`flwr run` did not return within {timeout_s:.0f} s") from None
        try:
            reply = json.loads(done.stdout[done.stdout.index("{") :])
        except (json.JSONDecodeError, ValueError):
            reply = {}
        if done.returncode != 0 or not reply.get("success"):
            detail = (done.stdout + done.stderr).strip()[-2000:]
            raise FederationError(f"`flwr run` could not start the run (exit {done.returncode}): {detail}")
        return int(reply["run-id"])

    def check_alive(self) -> None:
        """Raise FederationError if the SuperLink has died (a lost SuperNode only costs its site)."""
        superlink = self.processes.get("superlink")
        if superlink is not None and superlink.poll() is not None:
            raise FederationError(
                f"the SuperLink exited with code {superlink.returncode}:\n"
                f"{_log_tail(self.log_dir / 'superlink.log')}"
            )

    def stop(self) -> None:
        """Stop every process started here and all their descendants, by pid (TERM, then KILL)."""
        tree = [proc for process in self.processes.values() for proc in _freeze_tree(process.pid)]
        for proc in tree:
            try:
                proc.terminate()
                proc.resume()
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=STOP_GRACE_S)
        for process in self.processes.values():
            process.poll()  # reap
        self.stopped_pids += [proc.pid for proc in tree]
        self.processes.clear()


def _freeze_tree(pid: int) -> list[psutil.Process]:
    """Suspend a process and all its descendants, parents first, so none can spawn or escape meanwhile."""
    frozen, frontier = [], [pid]
    while frontier:
        try:
            proc = psutil.Process(frontier.pop())
            proc.suspend()
            frozen.append(proc)
            frontier += [child.pid for child in proc.children()]
        except psutil.NoSuchProcess:
            continue
    return frozen
