"""Settings, read once from the environment and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.chat.attachment_checks import check_types_setting
from app.store.database_url import normalize_database_url

DEFAULT_ATTACHMENT_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
)
ALLOWED_JWKS_ALGORITHMS = ("EdDSA", "ES256", "ES512", "RS256", "PS256")
MIN_SECRET_BYTES = 32


class SettingsError(Exception):
    """A setting is invalid; the message names it."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the server; environment variables are the upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Unset or empty: a SQLite file `chat.db` in DATA_DIR.
    database_url: str = ""
    auto_migrate: bool = True
    database_pool_size: int = Field(default=20, ge=1, le=500)
    database_max_overflow: int = Field(default=20, ge=0, le=500)
    database_pool_timeout: float = Field(default=30.0, gt=0)
    # Seconds any one statement may run (Postgres; 0 = no limit).
    database_statement_timeout: float = Field(default=15.0, ge=0)
    # `transaction`: DATABASE_URL is a transaction-mode pooler (PgBouncer, Neon's -pooler host).
    database_pooler: Literal["none", "transaction"] = "none"
    database_migration_url: str | None = None
    database_startup_timeout: float = Field(default=30.0, ge=0)
    web_concurrency: int = Field(default=1, ge=1, le=64)
    data_dir: Path = Path(".data")

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_api: Literal["responses", "chat_completions"] = "responses"
    openai_timeout: float = Field(default=60.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0, le=10)
    agents_tracing: bool = False
    # first_words: no model request for a title; model: one, after the first answer streamed.
    thread_titles: Literal["model", "first_words", "off"] = "first_words"
    # Models users may pick in the composer (inference_options.model); default: OPENAI_MODEL.
    openai_models: Annotated[list[str], NoDecode] = []
    # Dictation (input.transcribe) with the OpenAI provider; empty turns it off.
    openai_transcribe_model: str = "gpt-4o-mini-transcribe"
    transcribe_max_bytes: int = Field(default=10_485_760, ge=1024, le=26_214_400)
    # Deployment-specific guidance appended to the agent's instructions.
    agent_instructions: str | None = Field(default=None, max_length=8000)

    @field_validator("openai_models", mode="before")
    @classmethod
    def _model_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("agent_instructions", mode="before")
    @classmethod
    def _blank_instructions(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    mcp_server_url: str | None = None
    mcp_timeout: float = Field(default=10.0, gt=0)
    todo_mcp_calls_per_minute: int = Field(default=120, ge=0)
    todo_mcp_stream_idle_seconds: float = Field(default=60.0, ge=0)

    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_algorithms: Annotated[list[str], NoDecode] = ["EdDSA"]
    auth_jwt_secret: SecretStr | None = None
    auth_leeway_seconds: int = Field(default=30, ge=0, le=300)
    auth_max_token_lifetime_seconds: int = Field(default=86_400, ge=60)
    auth_jwks_cache_seconds: int = Field(default=300, ge=1)
    auth_jwks_stale_seconds: int = Field(default=3600, ge=0)

    cors_origins: Annotated[list[str], NoDecode] = []
    # /docs and /openapi.json.
    docs: bool = True
    # The browser playground at `/`: auto = on in the local-secret mode (no AUTH_* mode set).
    playground: Literal["auto", "true", "false"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_json: bool = False
    history_limit: int = Field(default=20, ge=1, le=100)

    rate_limit_turns_per_minute: int = Field(default=30, ge=0)
    rate_limit_concurrent_streams: int = Field(default=3, ge=0)
    # A running answer renews its claims every third of this; a crashed one lapses after it.
    stream_lease_seconds: int = Field(default=60, ge=10)
    shutdown_grace_seconds: int = Field(default=20, ge=0)
    max_concurrent_turns: int = Field(default=64, ge=1)
    turn_queue_seconds: float = Field(default=60.0, ge=0)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # A request body that has not fully arrived after this many seconds gets 408.
    request_body_timeout: float = Field(default=30.0, gt=0)
    max_message_chars: int = Field(default=32_000, ge=1)

    # Composer attachments: bytes kept in the database, per user (see app/chat/attachments.py).
    attachments: bool = True
    attachment_max_bytes: int = Field(default=10_485_760, ge=1, le=104_857_600)
    attachment_types: Annotated[list[str], NoDecode] = list(DEFAULT_ATTACHMENT_TYPES)
    # The URL clients reach this server at, for upload and preview links; default: the request's.
    public_url: str | None = None

    # GET /metrics (Prometheus); with METRICS_TOKEN set, scrapes must send it as a bearer token.
    metrics: bool = True
    metrics_token: SecretStr | None = None
    # Traces are exported (OTLP/HTTP) only when the standard OpenTelemetry endpoint is set.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "chatkit-agent-server"

    @field_validator("auth_algorithms", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("attachment_types", mode="before")
    @classmethod
    def _attachment_type_list(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("attachment_types")
    @classmethod
    def _known_attachment_types(cls, value: list[str]) -> list[str]:
        return check_types_setting(value)

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return None
        url = value.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError("must be an http(s) URL such as https://chat.example.com")
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("playground", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "openai_api_key",
        "openai_base_url",
        "mcp_server_url",
        "auth_jwks_url",
        "auth_issuer",
        "auth_audience",
        "auth_jwt_secret",
        "metrics_token",
        "otel_exporter_otlp_endpoint",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        unknown = [alg for alg in value if alg not in ALLOWED_JWKS_ALGORITHMS]
        if unknown:
            allowed = ", ".join(ALLOWED_JWKS_ALGORITHMS)
            raise ValueError(f"unsupported {', '.join(unknown)}; allowed: {allowed}")
        return value

    @field_validator("auth_jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @field_validator("database_migration_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url", "database_migration_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        # libpq-style URLs (postgres://, ?sslmode=...) are checked here, so a bad one stops
        # startup naming the parameter; the message never contains the password.
        if value is None or not value.strip():
            return None if value is None else ""
        return normalize_database_url(value)

    @model_validator(mode="after")
    def _default_database_in_data_dir(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'chat.db'}"
        return self

    @model_validator(mode="after")
    def _exclusive_auth_modes(self) -> Settings:
        if self.auth_jwks_url and self.auth_jwt_secret:
            raise ValueError(
                "AUTH_JWKS_URL and AUTH_JWT_SECRET are exclusive: configure one auth mode"
            )
        return self

    @property
    def model_provider(self) -> Literal["openai", "offline"]:
        """`openai` when any OpenAI setting is given, else the offline demo model."""
        return "openai" if (self.openai_api_key or self.openai_base_url) else "offline"

    @property
    def local_secret_mode(self) -> bool:
        """True when no auth mode is configured: tokens are signed with a generated secret."""
        return not self.auth_jwks_url and self.auth_jwt_secret is None

    @property
    def playground_enabled(self) -> bool:
        """Whether `GET /` serves the browser playground (PLAYGROUND, auto: local-secret mode)."""
        if self.playground == "auto":
            return self.local_secret_mode
        return self.playground == "true"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """The models a message may pick (OPENAI_MODELS, else OPENAI_MODEL alone)."""
        return tuple(dict.fromkeys(self.openai_models)) or (self.openai_model,)

    @property
    def dictation_enabled(self) -> bool:
        """input.transcribe works: an OpenAI-compatible server and a transcription model."""
        return self.model_provider == "openai" and bool(self.openai_transcribe_model.strip())


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one message that names each setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("Invalid settings: " + "; ".join(problems)) from None
