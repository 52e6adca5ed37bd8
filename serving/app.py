"""The chat API: FastAPI app wiring settings, database, middleware, error mapping and one router per resource.

Run: `uvicorn serving.app:app --host 127.0.0.1 --port 8000` (or `make up`).
"""
# ruff: noqa: E402  (the imports after runtime.configure() read its environment when they load)

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from limits.errors import StorageError

from conveyor import runtime

runtime.configure()  # the API process's entry point: before prefect and transformers load below

from agents.llm import get_llm, reset_llm
from conveyor.embeddings import embed
from conveyor.lineage import data_revision, embedding_model
from conveyor.settings import Settings, get_settings
from serving import crud
from serving.api.errors import add_error_handlers, error_response
from serving.api.routes import (
    auth,
    chat,
    compat,
    conversations,
    dashboard,
    datasets,
    feedback,
    flows,
    health,
    lineage,
    models,
    openai,
    rag,
    runs,
    users,
)
from serving.champions import ChampionCache
from serving.core.middleware import RequestMiddleware
from serving.core.ratelimit import ApiLimits, open_storage
from serving.db import make_engine, make_sessionmaker

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("conveyor.api")


def _configure_logging() -> None:
    """Access and API logs as lines on stderr, unless the host process configured logging."""
    for name in ("conveyor.access", "conveyor.api"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            logger.addHandler(handler)


def _load_models() -> None:
    """Load the models once before serving, so the first requests don't each wait for (or start) a load;
    hash the embedding weights and read the data revision for answers' lineage."""
    embed(["warm-up"])
    embedding_model()
    data_revision()
    try:
        get_llm()
    except Exception as exc:  # the API still serves everything else; /ready reports the model
        log.warning("the language model is not available: %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = make_engine(settings.sql_url)
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.limits = ApiLimits(open_storage(settings, engine), settings)
    with app.state.sessionmaker() as session:
        admin = crud.ensure_first_admin(session, settings.admin_username, settings.initial_admin_password)
    if admin is not None:
        log.info("created the first admin user %r from settings", admin.username)
    await anyio.to_thread.run_sync(_load_models)
    yield
    engine.dispose()
    reset_llm()  # free the model now: a llama.cpp model left to interpreter shutdown can hang the exit


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app on `settings` (the process settings by default)."""
    settings = settings or get_settings()
    _configure_logging()
    app = FastAPI(
        title="Conveyor chat API",
        version="0.1.0",
        description="Agents, retrieval, datasets, models and flow runs of the Conveyor platform.",
        lifespan=lifespan,
        openapi_tags=[compat.TAG],
    )
    app.state.settings = settings
    app.state.champions = ChampionCache()
    app.state.llm_readiness = health.CachedCheck(settings.api_ready_cache_s)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.api_max_body_bytes,
        max_upload_bytes=settings.api_max_upload_bytes,
        upload_paths=("/datasets",),
    )
    add_error_handlers(app)

    @app.exception_handler(StorageError)
    async def limits_unavailable(request: Request, exc: StorageError) -> JSONResponse:
        log.error("the rate-limit store failed: %s", exc)
        return error_response(request, 503, "the rate-limit store is unavailable; retry shortly")

    for module in (
        health,
        auth,
        users,
        chat,
        feedback,
        conversations,
        lineage,
        openai,
        rag,
        flows,
        runs,
        datasets,
        models,
        dashboard,
    ):
        app.include_router(module.router)
    app.include_router(compat.router)  # last: GET /users/me stays ahead of its GET /users/{user_id}
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


app = create_app()
