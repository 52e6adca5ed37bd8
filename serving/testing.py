"""Serve the API on a free local port for tests and benchmarks: in a thread, or as a uvicorn process."""

from __future__ import annotations

import contextvars
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from conveyor.polling import wait_until

REPO = Path(__file__).resolve().parent.parent


def poll(probe: Callable[[], Any], deadline_s: float, what: str, every_s: float = 1.0) -> Any:
    """The first truthy result of `probe`; AssertionError naming `what` if none came within the deadline."""
    return wait_until(
        probe, deadline_s, every_s, lambda: AssertionError(f"not seen: {what} within {deadline_s:.0f} s")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """`app` served by uvicorn in a background thread of this process (shares its loaded models)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        # A copied context keeps the caller's Prefect settings (test harness API URL) in the server thread.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._server.run,), daemon=True
        )

    def __enter__(self) -> ThreadedServer:
        self._thread.start()

        def started() -> bool:
            if not self._thread.is_alive():
                raise RuntimeError("the API server did not start")
            return self._server.started

        # start-up loads the LLM
        wait_until(started, 300, 0.05, lambda: RuntimeError("the API server did not start within 300 s"))
        return self

    def __exit__(self, *_) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


class ProcessServer:
    """`uvicorn serving.app:app` as a child process with extra environment; stopped on exit.

    `with` starts it and waits for `/health`; `start()` then `wait_until_up()` let several start together."""

    def __init__(self, env: dict[str, str], log_path: Path, startup_timeout_s: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = os.environ | env
        self._log_path = log_path
        self._timeout = startup_timeout_s
        self._process: subprocess.Popen | None = None
        self._deadline = 0.0

    def __enter__(self) -> ProcessServer:
        return self.start().wait_until_up()

    def start(self) -> ProcessServer:
        """Launch the process without waiting for it; the startup timeout counts from now."""
        command = [sys.executable, "-m", "uvicorn", "serving.app:app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--no-access-log"]  # fmt: skip
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        self._deadline = time.monotonic() + self._timeout
        return self

    def wait_until_up(self) -> ProcessServer:
        """Wait for `/health`; RuntimeError (the process stopped) if it exits or the timeout passes."""
        process = self._process
        assert process is not None, "start() first"

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the API process exited; see {self._log_path}")
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200

        try:
            wait_until(
                up,
                max(0.0, self._deadline - time.monotonic()),
                0.3,
                lambda: RuntimeError(f"the API process did not answer /health; see {self._log_path}"),
                transient=(httpx.HTTPError,),
            )
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def login(url: str, username: str, password: str) -> dict[str, str]:
    """Authorization headers for `username`."""
    response = httpx.post(f"{url}/auth/token", data={"username": username, "password": password}, timeout=30)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event, JSON data) pairs from the lines of a text/event-stream body (`[DONE]` comes as a string)."""
    event, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            text = "\n".join(data)
            yield event, text if text == "[DONE]" else json.loads(text)
            event, data = "message", []
