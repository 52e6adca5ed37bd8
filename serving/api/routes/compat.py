"""The API as first specified (`/auth/login`, `/chat/message`, `/ml/*`, `/data/*`...) over Conveyor's routes.

Each route here calls the Conveyor route that does the work (or, for sentiment, `conveyor.sentiment`) and
only reshapes its request and answer, so authentication, rate limits, validation and errors are the same.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from conveyor import datasets as catalog
from conveyor import sentiment
from serving import crud, runs
from serving.api.deps import CurrentUser, SessionDep, SettingsDep, get_current_user
from serving.api.routes import auth, chat, flows, models, openai, rag, users
from serving.api.routes import datasets as dataset_routes
from serving.api.routes import runs as run_routes
from serving.db import User

TAG = {
    "name": "compat",
    "description": "The API as first specified for the mobile client and its services: the same calls, "
    "shapes and paths, each served by the Conveyor route named in its description (same token, rate "
    "limits and checks). New clients should use the Conveyor routes.",
}
router = APIRouter(tags=["compat"])
DEFAULT_MODEL = "breast-cancer-forest"  # what `make run` registers: train-tabular on params.yaml's data
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # as /models/{name}
AGENT_FLOW = "run-agent-task"
MAX_TEXTS = 1000
Role = Literal["admin", "user"]
SentimentText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=sentiment.MAX_CHARACTERS)
]


def _role(user: User) -> Role:
    return "admin" if user.is_admin else "user"


class LoginRequest(BaseModel):
    username: str = Field(description="The account name.")
    password: str = Field(description="The account password; never echoed back.")


class LoginResponse(BaseModel):
    token: str = Field(description="Bearer token for the `Authorization: Bearer` header.")
    token_type: str = Field("bearer", description="Always `bearer`.")
    expires_in: int = Field(description="Seconds until the token expires.")


@router.post(
    "/auth/login",
    responses={401: {"description": "wrong username or password"}, 429: {"description": "too many attempts"}},
)
def login(body: LoginRequest, request: Request, session: SessionDep, settings: SettingsDep) -> LoginResponse:
    """Sign in with JSON credentials (as `POST /auth/token`)."""
    form = OAuth2PasswordRequestForm(username=body.username, password=body.password)
    issued = auth.login(request, form, session, settings)
    return LoginResponse(
        token=issued.access_token, token_type=issued.token_type, expires_in=issued.expires_in
    )


class VerifyRequest(BaseModel):
    token: str = Field(description="A bearer token from `/auth/login`.")


class Verified(BaseModel):
    valid: Literal[True] = Field(True, description="Always true: an invalid token is a 401.")
    username: str = Field(description="The token's user.")
    role: Role = Field(description="`admin` or `user`.")


@router.post("/auth/verify", responses={401: {"description": "invalid or expired token"}})
def verify_token(
    body: VerifyRequest, request: Request, session: SessionDep, settings: SettingsDep
) -> Verified:
    """Check a token for a service: its user and role (the check every route makes; counts as a request)."""
    user = get_current_user(request, session, body.token, settings)
    return Verified(username=user.username, role=_role(user))


class CompatUser(users.UserOut):
    id: str = Field(description="The user's id: the username.")
    role: Role = Field(description="`admin` or `user`.")


@router.get("/users/{user_id}", responses={404: {"description": "no such user, or not yours to read"}})
def read_user(
    user_id: Annotated[str, Path(pattern=crud.USERNAME.pattern)], user: CurrentUser, session: SessionDep
) -> CompatUser:
    """A user by username: admins read anyone, others only themselves (as `GET /users/me`)."""
    found = crud.get_user(session, user_id) if user.is_admin or user_id == user.username else None
    if found is None:  # someone else's account looks the same as a missing one
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no user {user_id!r}")
    return CompatUser(
        id=found.username, role=_role(found), **users.UserOut.model_validate(found).model_dump()
    )


class MessageReply(BaseModel):
    response: str = Field(description="The agent's answer.")
    agent: str = Field(description="The agent that answered.")
    sources: list[dict[str, Any]] = Field(description="Passages or files the answer used.")
    conversation_id: str = Field(description="Send it back with the next message to continue.")
    run_id: str | None = Field(None, description="The MLflow run of the agent's work, when it made one.")


@router.post("/chat/message", responses=chat.LLM_ERRORS)
async def send_message(
    body: chat.ChatRequest, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> MessageReply:
    """Ask the agents (as `POST /chat`); the answer comes as `response`."""
    reply = await chat.chat(body, user, session, settings)
    return MessageReply(response=reply.answer, **reply.model_dump(exclude={"answer"}))


class DatasetRows(BaseModel):
    data: list[dict[str, Any]] = Field(description="The page's rows as {column: value}; missing values null.")
    id: str = Field(description="The dataset id.")
    columns: list[str] = Field(description="Column names in file order.")
    total: int = Field(description="Rows in the dataset.")
    offset: int = Field(description="Index of the page's first row.")
    limit: int = Field(description="Most rows the page holds.")


@router.get("/data/datasets/{dataset_id}", responses={404: {"description": "no such dataset or version"}})
def read_dataset(
    dataset_id: dataset_routes.DatasetId,
    user: CurrentUser,
    offset: dataset_routes.Offset = 0,
    limit: dataset_routes.Limit = 100,
    version: dataset_routes.Version = None,
) -> DatasetRows:
    """A page of a dataset's rows as `data` (as `GET /datasets/{id}`)."""
    page = dataset_routes.read_rows(dataset_id, user, offset, limit, version)
    return DatasetRows(data=page.rows, **page.model_dump(exclude={"rows"}))


@router.get("/analytics/summary/{dataset_id}", responses={404: {"description": "no such dataset or version"}})
def summarize_dataset(
    dataset_id: dataset_routes.DatasetId, user: CurrentUser, version: dataset_routes.Version = None
) -> dict[str, Any]:
    """`{id, rows, columns: {name: {dtype, missing, stats}}}` (as `GET /datasets/{id}/summary`)."""
    return dataset_routes.read_summary(dataset_id, user, version)


class TaskStarted(runs.RunStarted):
    task_id: str = Field(description="The Prefect flow run id; poll `GET /data/status/{task_id}`.")
    status: str = Field(description="The run's state type when it was created, e.g. `SCHEDULED`.")


class TaskStatus(runs.RunInfo):
    task_id: str = Field(description="The Prefect flow run id.")
    status: str = Field(description="SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED or CANCELLED.")


def _task(started: runs.RunStarted) -> TaskStarted:
    return TaskStarted(task_id=started.run_id, status=started.state, **started.model_dump())


class DatasetJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(pattern=catalog.DATASET_ID.pattern, description="A dataset of `GET /datasets`.")
    instruction: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] = (
        Field(
            "summarize the columns and the main insights in a report",
            description="What the agents should do with the dataset.",
        )
    )


@router.post(
    "/data/process",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "no such dataset, or the agent flow is not deployed"}},
)
async def process_data(
    body: DatasetJob | rag.IndexRequest, user: CurrentUser, settings: SettingsDep
) -> TaskStarted:
    """`{dataset_id, instruction?}` starts the agents on the dataset (as `POST /flows/run-agent-task/runs`);
    `{domain, documents}` indexes documents (as `POST /rag/documents`)."""
    if isinstance(body, rag.IndexRequest):
        return _task(await rag.add_documents(body, user, settings))
    try:
        dataset_id = catalog.validate_id(body.dataset_id)
        catalog.dataset_path(dataset_id)
    except catalog.DatasetError as exc:
        raise dataset_routes.http_error(exc) from None
    task = f"Analyze the dataset {dataset_id}.csv: {body.instruction}"
    request = flows.RunRequest(parameters={"task": task})
    return _task(await flows.start_flow_run(AGENT_FLOW, request, user, settings))


@router.get("/data/status/{task_id}", responses={404: {"description": "no such run"}})
async def read_task(task_id: UUID, user: CurrentUser) -> TaskStatus:
    """State of a processing or training run and its result once completed (as `GET /runs/{id}`)."""
    info = await run_routes.read_run(task_id, user)
    return TaskStatus(task_id=info.id, status=info.state, **info.model_dump())


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: Literal["train-tabular", "train-model", "federated-training"] = Field(
        "train-tabular", description="The training flow: a forest, the Lightning MLP, or federated training."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The flow's `params` (dataset, target, model_name, seed and the flow's own settings; "
        "schemas in `GET /flows`), checked against the deployment's schema before the run starts.",
    )


@router.post(
    "/ml/train",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"description": "the flow is not deployed"}, 422: {"description": "invalid parameters"}},
)
async def train(body: TrainRequest, user: CurrentUser, settings: SettingsDep) -> TaskStarted:
    """Start a training run (as `POST /flows/{flow}/runs` with `{"params": parameters}`)."""
    request = flows.RunRequest(parameters={"params": body.parameters})
    return _task(await flows.start_flow_run(body.flow, request, user, settings))


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, pattern=MODEL_NAME, description="A registered model with a champion.")
    features: list[list[models.Scalar]] | list[models.Scalar] | None = Field(
        None, description="Rows of values in the model's column order; a flat list is one row."
    )
    records: list[dict[str, models.Scalar]] | None = Field(None, description="Rows as {column: value}.")


def _rows(body: PredictBody) -> list:
    if (body.features is None) == (body.records is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "send `features` or `records`, one of them"
        )
    if body.records is not None:
        return body.records
    features = body.features or []
    return features if features and isinstance(features[0], list) else [features]


@router.post("/ml/predict", responses={404: {"description": "no champion"}, 422: {}})
def predict(body: PredictBody, user: CurrentUser, request: Request) -> models.PredictResponse:
    """Predict with a model's champion (as `POST /models/{model}/predict`); send `features` or `records`."""
    try:
        inputs = models.PredictRequest(inputs=_rows(body))
    except ValidationError as exc:  # too many rows, or none: the /models route's own limits
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return models.predict(body.model, inputs, user, request)


class GenerateRequest(BaseModel):
    prompt: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=openai.MAX_CHARACTERS)
    ] = Field(description="The text to continue or answer.")
    max_tokens: int = Field(
        openai.DEFAULT_MAX_TOKENS, ge=1, le=openai.MAX_TOKENS, description="Most tokens to generate."
    )


class Generated(BaseModel):
    text: str = Field(description="The generated text.")
    model: str = Field(description="The model that wrote it.")
    finish_reason: Literal["stop", "length"] = Field(description="`length` when `max_tokens` cut it.")


@router.post("/ml/generate", responses=chat.LLM_ERRORS)
async def generate(body: GenerateRequest, user: CurrentUser, settings: SettingsDep) -> Generated:
    """Generate text from a prompt (as `POST /v1/chat/completions` with one user message)."""
    request = openai.CompletionRequest(
        model=settings.llm_model,
        messages=[openai.ChatMessage(role="user", content=body.prompt)],
        max_tokens=body.max_tokens,
    )
    completion = await openai.chat_completions(request, user, settings)
    choice = completion.choices[0]
    return Generated(text=choice.message.content, model=completion.model, finish_reason=choice.finish_reason)


class SentimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: SentimentText | None = Field(None, description="One text, 1 to 10,000 characters.")
    texts: list[SentimentText] | None = Field(
        None, min_length=1, max_length=MAX_TEXTS, description="Several texts: one result each, in order."
    )


class SentimentBatch(BaseModel):
    results: list[sentiment.Sentiment] = Field(description="One result per text of `texts`, in order.")


@router.post("/ml/analyze-sentiment", responses={422: {"description": "empty or too long, with the reason"}})
def analyze_sentiment(body: SentimentRequest, _: CurrentUser) -> sentiment.Sentiment | SentimentBatch:
    """Sentiment of `text` (or of each of `texts`) with VADER: label, compound score and the four scores."""
    if body.text is not None and body.texts is None:
        return sentiment.analyze(body.text)
    if body.texts is not None and body.text is None:
        return SentimentBatch(results=[sentiment.analyze(text) for text in body.texts])
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "send `text` or `texts`, one of them")
