"""Error responses: `{"detail", "request_id"}`, plus OpenAI's `{"error": {...}}` shape under `/v1`.

Bodies never echo request input (it may be a password) nor credentials inside URLs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from agents.chat import ChatUnavailable
from agents.llm import LLMUnavailable
from conveyor.settings import ConfigurationError
from serving.core.concurrency import GenerationTimeout

log = logging.getLogger("conveyor.api")
_CREDENTIALS_IN_URL = re.compile(r"://[^/@\s]+@")


def redact(text: str) -> str:
    return _CREDENTIALS_IN_URL.sub("://***@", text)


def error_response(
    request: Request, status: int, detail: Any, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail, "request_id": request.state.request_id, **extra}
    if request.url.path.startswith("/v1/"):  # what OpenAI clients read
        message = detail if isinstance(detail, str) else json.dumps(detail)
        kind = "invalid_request_error" if status < 500 else "server_error"
        body["error"] = {"message": message, "type": kind, "code": status}
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in error.items() if k not in {"input", "url"}} for error in exc.errors()]
        return error_response(request, 422, jsonable_encoder(errors))

    @app.exception_handler(LLMUnavailable)
    async def llm_unavailable(request: Request, exc: LLMUnavailable) -> JSONResponse:
        found = exc.found if isinstance(exc, ChatUnavailable) else {}
        return error_response(request, 503, redact(f"the language model is unavailable: {exc}"), **found)

    @app.exception_handler(GenerationTimeout)
    async def llm_timeout(request: Request, exc: GenerationTimeout) -> JSONResponse:
        return error_response(request, 504, f"the language model timed out: {exc}")

    @app.exception_handler(ConfigurationError)
    async def misconfigured(request: Request, exc: ConfigurationError) -> JSONResponse:
        return error_response(request, 503, redact(f"the service is misconfigured: {exc}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed", request.state.request_id, exc_info=exc)
        return error_response(request, 500, "internal error; the logs have the details under this request id")
