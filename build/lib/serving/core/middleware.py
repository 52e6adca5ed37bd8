"""ASGI middleware: request id, request-body limit, Prometheus metrics and a JSON access log line."""

from __future__ import annotations

import json
import logging
import re
import time
from uuid import uuid4

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.core import metrics

access_log = logging.getLogger("conveyor.access")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(status_code=413, detail=f"request body is larger than {limit} bytes")


class RequestMiddleware:
    """Wraps every HTTP request; bodies over the limit get 413 (uploads have their own, larger limit)."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int, upload_paths: tuple[str, ...]
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming_id = headers.get("x-request-id", "")
        request_id = incoming_id if REQUEST_ID.match(incoming_id) else uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_upload_bytes if scope["path"] in self.upload_paths else self.max_body_bytes
        started = time.perf_counter()
        status = 500
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                await _send_json(send_with_id, 413, {"detail": _too_large(limit).detail})
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            self._observe(scope, status, time.perf_counter() - started, request_id)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"]
        metrics.REQUESTS.labels(method, route, str(status)).inc()
        metrics.LATENCY.labels(method, route).observe(seconds)
        if status >= 500:
            metrics.ERRORS.labels(method, route).inc()
        # The path only: a query string could carry something secret.
        record = {
            "request_id": request_id,
            "method": method,
            "path": scope["path"],
            "status": status,
            "ms": round(seconds * 1000, 1),
            "user": scope["state"].get("username"),
        }
        access_log.info(json.dumps(record))


async def _send_json(send: Send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
