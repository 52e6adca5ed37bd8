"""One configuration object for every layer, read from `CONVEYOR_*` variables (and `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "development-only-secret-change-me"
# What a model is asked to do: the agents by name, the planner and the router's fallback.
LLMRole = Literal["chat", "routing", "planning", "research", "data", "code", "summary"]
DEVELOPMENT_ADMIN_PASSWORD = "conveyor-dev"


class ConfigurationError(RuntimeError):
    """A setting, file or endpoint is wrong; the message names it."""


class Settings(BaseSettings):
    """Conveyor settings; every field can be set as `CONVEYOR_<NAME>`."""

    # An empty CONVEYOR_* variable means unset (CONVEYOR_HOME= would otherwise put the state in the cwd).
    model_config = SettingsConfigDict(
        env_prefix="CONVEYOR_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    environment: Literal["development", "production"] = "development"
    home: Path = Field(Path(".conveyor"), description="State folder for every local store.")
    data_dir: Path = Field(Path("data"), description="Datasets and knowledge-base sources (DVC-tracked).")
    benchmarks_dir: Path = Field(Path("data/benchmarks"), description="BEIR-layout IR collections.")

    # Orchestration and tracking
    prefect_api_url: str | None = Field(None, description="Prefect API; unset = local embedded server.")
    prefect_port: int = 4200
    mlflow_tracking_uri: str | None = Field(None, description="Unset = SQLite under the state folder.")
    mlflow_port: int = 5000
    work_pool: str = "local"
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where mapped tasks run: this process's threads or a Dask cluster."
    )
    dask_address: str | None = Field(None, description="A running Dask scheduler; unset = a new cluster.")
    dask_cluster_class: str = Field("distributed.LocalCluster", description="Temporary cluster per flow run.")
    dask_cluster_kwargs: dict[str, Any] = Field(
        {"n_workers": 2, "threads_per_worker": 1}, description="Arguments of `dask_cluster_class` (JSON)."
    )

    # Knowledge store and embeddings
    lancedb_uri: str | None = Field(None, description="Unset = a LanceDB folder under the state folder.")
    embedding_model: str = Field("all-MiniLM-L6-v2", description="Packaged model name or a local path.")
    embedding_batch_size: int = Field(64, ge=1)
    torch_threads: int = Field(1, ge=1, description="Torch CPU threads per process.")
    chunk_tokens: int = Field(128, ge=16, le=512, description="Chunk size in embedding-model tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between consecutive chunks.")
    max_document_bytes: int = Field(20_000_000, ge=1, description="Larger source files are skipped.")
    index_lock_timeout_s: float = Field(600.0, ge=0, description="Wait for another run on the same domain.")
    index_lock_lease_s: float = Field(
        300.0, ge=60, le=86_400, description="Lease of a run's Prefect slot on its domain: a dead run's ends."
    )
    embedding_task_chunks: int = Field(512, ge=1, description="Chunks per embedding task (the fan-out unit).")
    evaluation_task_queries: int = Field(50, ge=1, description="Queries per evaluate-retrieval task.")
    vector_index_min_rows: int = Field(
        10_000, ge=1, description="Chunks from which a domain gets an ANN (IVF-HNSW-SQ) vector index."
    )
    retrieval_fusion: Literal["rrf", "convex"] = Field(
        "convex", description="How dense and BM25 lists merge."
    )
    retrieval_feedback_docs: int = Field(3, ge=0, le=20, description="Top documents for dense PRF; 0 = off.")
    retrieval_feedback_weight: float = Field(
        1.0, ge=0, description="Rocchio weight of the feedback centroid."
    )
    gateway_domain_timeout_s: float = Field(
        10.0, gt=0, description="Seconds each retrieval pass waits for a domain before reporting it failed."
    )

    # LLM
    llm_backend: Literal["embedded", "openai"] = "embedded"
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint for llm_backend=openai.")
    llm_model: str = Field(
        "qwen2.5-coder-0.5b-instruct", description="The fast model: chat answers, research, routing."
    )
    llm_quality_model: str = Field(
        "qwen2.5-coder-1.5b-instruct", description="The stronger model, for the roles in llm_quality_roles."
    )
    llm_quality_roles: set[LLMRole] = Field(
        {"planning", "code", "data", "summary"},
        description="Roles the quality model plays; [] = the fast model everywhere (bench/bench_agents.py "
        "measures both per role).",
    )
    llm_api_key: SecretStr | None = None
    llm_models_dir: Path | None = Field(
        None, description="Where embedded models are assembled; unset = models/ under the state folder."
    )
    llm_threads: int = Field(1, ge=1)
    llm_context: int = Field(4096, ge=512)
    llm_timeout_s: float = Field(120.0, gt=0)
    planner_memory_min_similarity: float = Field(
        0.7,
        ge=-1,
        le=1,
        description="A past plan is the planner's prompt example only from this task-embedding cosine up "
        "(measured: python -m bench.bench_planner --memory-threshold).",
    )
    router_confidence_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The router's classifier decides alone from this top probability; below it the LLM "
        "picks between its top two (default measured by cross-validation: bench/bench_router.py).",
    )

    # Sandbox for model-written code
    sandbox_isolation: Literal["bubblewrap", "process"] = Field(
        "bubblewrap",
        description="bubblewrap = OS isolation (refuses to run without it); process = resource limits only, "
        "for a trusted single-user machine.",
    )

    # Serving
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    database_url: str | None = Field(None, description="Users/conversations DB; unset = SQLite.")
    secret_key: SecretStr = SecretStr(DEVELOPMENT_SECRET)
    token_minutes: int = Field(30, ge=1)
    admin_username: str = "admin"
    admin_password: SecretStr | None = None
    api_rate_limit_per_minute: int = Field(120, ge=1, description="Authenticated API requests per user.")
    api_login_attempts_per_minute: int = Field(30, ge=1, description="Sign-in attempts per client address.")
    api_login_max_failures: int = Field(20, ge=1, description="Failed sign-ins that lock an account.")
    api_login_lockout_minutes: int = Field(
        15, ge=1, description="How long a locked account refuses sign-in; failures count within it."
    )
    rate_limit_storage_url: str | None = Field(
        None, description="`limits` storage shared by API replicas (redis://...); unset = the API database."
    )
    api_ready_cache_s: float = Field(10.0, ge=0, description="How long /ready reuses the model's answer.")
    api_max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest JSON request body.")
    api_max_upload_bytes: int = Field(20_000_000, ge=1024, description="Largest CSV upload to /datasets.")

    @model_validator(mode="after")
    def _no_default_secrets_outside_development(self) -> Settings:
        if self.environment != "development":
            if self.secret_key.get_secret_value() == DEVELOPMENT_SECRET:
                raise ValueError("CONVEYOR_SECRET_KEY must be set outside development")
            if self.admin_password and self.admin_password.get_secret_value() == DEVELOPMENT_ADMIN_PASSWORD:
                raise ValueError("CONVEYOR_ADMIN_PASSWORD must not be the development password")
        return self

    @property
    def state_dir(self) -> Path:
        return self.home.resolve()

    @property
    def models_dir(self) -> Path:
        return (self.llm_models_dir or self.state_dir / "models").resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def knowledge_uri(self) -> str:
        return self.lancedb_uri or str(self.state_dir / "lancedb")

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'conveyor.db'}"

    @property
    def initial_admin_password(self) -> str | None:
        """The first admin's password: from settings, or a known one in development only."""
        if self.admin_password:
            return self.admin_password.get_secret_value()
        return DEVELOPMENT_ADMIN_PASSWORD if self.environment == "development" else None

    @property
    def sandbox_dir(self) -> Path:
        """Run folders of the sandbox (scratch + captured output), removed after each run."""
        folder = self.state_dir / "sandbox"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; raises ConfigurationError naming the bad setting."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CONVEYOR_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    get_settings.cache_clear()
