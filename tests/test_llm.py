"""LLM backends: the verified embedded model, streaming, structured output, serialization, OpenAI API."""

import socket
import subprocess
import sys
import threading
import time
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel

from agents import llm
from conveyor.settings import ConfigurationError, Settings, get_settings

SHORT = [{"role": "user", "content": "Reply with the single word: yes"}]


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    confidence: int


JUDGE = [{"role": "user", "content": "Is 7 a prime number? Reply as JSON with answer and confidence 0-100."}]


@pytest.fixture(scope="module")
def model():
    return llm.get_llm()


class TestModelFile:
    @pytest.mark.parametrize("name", llm.LOCAL_MODELS)
    def test_each_local_model_is_assembled_with_its_pinned_digest(self, settings, name):
        path = llm.model_file(name)
        assert path.parent == settings.models_dir
        assert llm.sha256_of(path) == llm.LOCAL_MODELS[name].sha256

    def test_other_digests_are_refused(self, tmp_path):
        fake = tmp_path / "model.gguf"
        fake.write_bytes(b"GGUF" + b"\0" * 64)
        with pytest.raises(ConfigurationError, match="refusing model file"):
            llm.verify_model(fake, llm.LOCAL_MODELS["qwen2.5-coder-0.5b-instruct"].sha256)

    def test_an_unknown_local_model_is_refused_with_the_known_ones(self, configure):
        configure(llm_model="qwen-9000")
        with pytest.raises(ConfigurationError, match="no model 'qwen-9000'.*qwen2.5-coder-0.5b-instruct"):
            llm.model_file()


class TestRoles:
    def test_quality_roles_get_the_quality_model_and_the_others_the_fast_one(self, configure):
        configure(llm_quality_roles='["planning", "code"]')
        settings = get_settings()
        assert llm.model_name("planning") == llm.model_name("code") == settings.llm_quality_model
        assert llm.model_name("chat") == llm.model_name("routing") == settings.llm_model
        assert llm.identity("code").sha256 == llm.LOCAL_MODELS[settings.llm_quality_model].sha256

    def test_by_default_planning_code_data_and_reports_use_the_quality_model(self):
        assert Settings.model_fields["llm_quality_roles"].default == {"planning", "code", "data", "summary"}


class TestEmbedded:
    def test_complete_and_stream(self, model):
        assert model.complete(SHORT, max_tokens=4).strip()
        chunks = list(model.stream(SHORT, max_tokens=6))
        assert len(chunks) >= 1 and "".join(chunks).strip()

    def test_structured_output_is_validated(self, model):
        verdict = model.structured(JUDGE, Verdict, max_tokens=40)
        assert isinstance(verdict, Verdict) and verdict.answer in {"yes", "no"}

    def test_malformed_json_is_a_clear_error(self):
        with pytest.raises(llm.StructuredOutputError, match="Verdict"):
            llm.parse_json('{"answer": "maybe"}', Verdict)

    def test_requests_are_serialized_and_counted(self, model):
        holder = model.stream(SHORT, max_tokens=30)
        next(holder)  # this generation now holds the model
        results = []
        waiter = threading.Thread(target=lambda: results.append(model.complete(SHORT, max_tokens=4)))
        waiter.start()
        while llm.queue_depth() == 0 and waiter.is_alive():
            time.sleep(0.01)
        assert llm.queue_depth() == 1 and not results
        holder.close()  # releases the model: the waiting request runs
        waiter.join()
        assert llm.queue_depth() == 0 and results and results[0].strip()


def test_generation_past_the_timeout_is_llm_unavailable(model, configure):
    configure(llm_timeout_s=0.3)
    with pytest.raises(llm.LLMUnavailable, match="exceeded"):
        model.complete([{"role": "user", "content": "Count from 1 to 500."}], max_tokens=400)
    configure(llm_timeout_s=120)
    assert model.complete(SHORT, max_tokens=4).strip()  # the model is released and usable again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def openai_backend(configure):
    """Switch settings to the OpenAI-compatible backend at `base_url`; restore the embedded one after."""

    def use(base_url: str):
        configure(llm_backend="openai", llm_base_url=base_url, llm_timeout_s=60)
        return llm.OpenAICompatibleLLM(get_settings().llm_model)

    return use


class TestOpenAICompatible:
    def test_endpoint_down_is_llm_unavailable(self, openai_backend):
        backend = openai_backend(f"http://127.0.0.1:{_free_port()}/v1")
        with pytest.raises(llm.LLMUnavailable, match="failed"):
            backend.complete(SHORT, max_tokens=4)
        with pytest.raises(llm.LLMUnavailable):
            list(backend.stream(SHORT, max_tokens=4))

    def test_missing_base_url_is_a_configuration_error(self, openai_backend):
        with pytest.raises(ConfigurationError, match="CONVEYOR_LLM_BASE_URL"):
            openai_backend("")

    def test_llama_cpp_server(self, openai_backend, settings):
        """The real llama.cpp OpenAI server: chat, stream, and structured output (it rejects json_schema)."""
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(llm.model_file()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_ctx",
                "2048",
                "--model_alias",
                settings.llm_model,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            backend = openai_backend(f"{base}/v1")
            assert backend.complete(SHORT, max_tokens=4).strip()
            chunks = backend.stream(SHORT, max_tokens=6)
            first = next(chunks)
            assert llm.queue_depth() == 1  # in flight to the service: the gauge the autoscaler reads
            assert (first + "".join(chunks)).strip() and llm.queue_depth() == 0
            verdict = backend.structured(JUDGE, Verdict, max_tokens=40)
            assert isinstance(verdict, Verdict)
        finally:
            server.terminate()
            server.wait(timeout=30)
