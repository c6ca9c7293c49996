"""All settings, declared once.

Every setting is read from the environment with the ``REFSERVER_`` prefix (or a
``.env`` file). ``docs/configuration.md`` is generated from this class by
``refserver config docs``; a test keeps the two in step.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me-refserver-development-key"


class Settings(BaseSettings):
    """RefServer settings (env prefix ``REFSERVER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="REFSERVER_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- server -----------------------------------------------------------
    environment: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses to start with the default secret key.",
    )
    data_dir: Path = Field(Path("./data"), description="Folder holding every store.")
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8060, description="Port the HTTP server listens on.")
    secret_key: str = Field(
        DEFAULT_SECRET_KEY, description="Signs session cookies and CSRF tokens."
    )
    admin_user: str = Field("admin", description="Superuser created on first start.")
    admin_password: str | None = Field(
        None, description="Its password; generated and printed once when unset."
    )
    public_read: bool = Field(
        True, description="Allow reading and searching papers without signing in."
    )

    # --- stores -------------------------------------------------------------
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default `sqlite:///<data_dir>/refserver.db`."
    )
    chroma_path: Path | None = Field(
        None, description="Embedded ChromaDB folder; default `<data_dir>/chroma`."
    )
    chroma_host: str | None = Field(
        None, description="Use a Chroma server (`chroma run`) at this host instead."
    )
    chroma_port: int = Field(8000, description="Port of the Chroma server.")
    hnsw_space: Literal["cosine"] = Field("cosine", description="Vector distance.")
    hnsw_ef_construction: int = Field(200, description="HNSW build-time neighbours.")
    hnsw_max_neighbors: int = Field(32, description="HNSW M (links per node).")
    hnsw_ef_search: int = Field(200, description="HNSW query-time candidate list.")

    # --- embeddings ---------------------------------------------------------
    embedding_model: Literal["all-MiniLM-L6-v2"] = Field(
        "all-MiniLM-L6-v2", description="Embedding model (ONNX, offline, CPU)."
    )
    embedding_batch_size: int = Field(8, description="Chunks per model call.")
    chunk_words: int = Field(150, description="Words per embedded chunk.")
    embedding_threads: int = Field(0, description="onnxruntime threads; 0 = all cores.")

    # --- ingestion ----------------------------------------------------------
    max_upload_mb: int = Field(100, description="Largest accepted PDF, in MiB.")
    max_pages: int = Field(2000, description="Largest accepted page count.")
    ocr_enabled: bool = Field(True, description="OCR pages without a usable text layer.")
    ocr_languages: str = Field("eng+kor", description="Tesseract languages for OCR.")
    ocr_dpi: int = Field(200, description="Resolution pages are rendered at for OCR.")
    text_quality_threshold: float = Field(0.5, description="Pages scoring below this are OCR'd.")
    workers: int = Field(2, description="Background ingest worker threads.")
    bulk_save_group: int = Field(
        16,
        ge=1,
        le=256,
        description="Papers a bulk import saves per transaction (one ChromaDB upsert each "
        "group; a kill -9 redoes at most one group).",
    )
    queue_backend: Literal["sqlite", "redis", "memory"] = Field(
        "sqlite", description="Huey storage for the job queue."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the queue.")
    llm_enabled: bool = Field(False, description="Refine metadata with an LLM endpoint.")
    llm_base_url: str = Field("http://127.0.0.1:11434", description="OpenAI-compatible URL.")
    llm_model: str = Field("llama3.1", description="Model name sent to the endpoint.")
    llm_api_key: str | None = Field(None, description="Bearer key for the endpoint.")
    llm_timeout: float = Field(30.0, description="Seconds per LLM request.")

    # --- protection ---------------------------------------------------------
    scheduler_enabled: bool = Field(True, description="Run scheduled backups and checks.")
    timezone: str = Field("UTC", description="Time zone of the schedule.")
    backup_compression: Literal["zstd", "gzip", "none"] = Field(
        "zstd", description="Compression of backup members."
    )
    backup_compression_level: int | None = Field(
        None,
        ge=1,
        le=19,
        description="Compression level (zstd 1–19, gzip 1–9); empty = zstd 2 / gzip 6.",
    )
    orphan_grace_seconds: int = Field(
        3600, description="Age before orphaned entries may be auto-repaired."
    )

    consume_enabled: bool = Field(True, description="Watch the consume folder for new PDFs.")
    consume_dir: Path | None = Field(
        None, description="Consume folder; default `<data_dir>/consume`."
    )
    consume_interval: float = Field(5.0, description="Seconds between consume-folder polls.")
    search_index: Literal["chroma", "int8", "float16"] = Field(
        "chroma", description="Vector index for semantic search (quantized: in memory)."
    )
    vector_storage: Literal["float32", "float16", "int8"] = Field(
        "float32",
        description="Encoding of new vectors in SQLite (int8: 388 B, float16: 768 B, "
        "float32: 1,536 B per 384-d vector); convert existing ones with "
        "`refserver index requantize`.",
    )

    # --- security -----------------------------------------------------------
    cookie_secure: bool = Field(False, description="Mark the session cookie Secure (HTTPS).")
    login_rate_limit: str = Field("10/minute", description="Logins per client and username.")
    login_rate_limit_per_ip: str = Field("60/minute", description="Logins per client.")
    upload_rate_limit: str = Field("120/minute", description="Uploads per user.")
    pdf_check_timeout: float = Field(60.0, description="Seconds to check one upload.")
    pdf_check_memory_mb: int = Field(1024, description="Memory cap of the upload check.")
    metrics_public: bool = Field(False, description="Serve `/metrics` without signing in.")

    # --- schedule (crontab in `timezone`; empty = off) -----------------------
    schedule_incremental: str = Field("0 * * * *", description="Incremental backup.")
    schedule_full_daily: str = Field("0 3 * * *", description="Daily full backup.")
    schedule_full_weekly: str = Field("0 4 * * sun", description="Weekly full backup.")
    weekly_backup_retention_days: int = Field(90, description="Days a weekly full is kept.")
    schedule_consistency: str = Field("30 2 * * *", description="Consistency check.")
    schedule_health: str = Field("15 * * * *", description="Health check and alert rules.")
    schedule_drill: str = Field("0 5 * * sun", description="Automatic restore drill.")
    scheduler_misfire_grace_seconds: int = Field(
        30 * 24 * 3600, description="A run missed by up to this long runs once at start."
    )
    scheduler_lock_retry_seconds: float = Field(
        60.0, description="How often a standby process retries the scheduler lock."
    )
    rpo_hours: float = Field(0.0, description="Readiness RPO; 0 = the most frequent backup.")

    # --- alerts and offsite copies --------------------------------------------
    alert_webhook_url: str = Field("", description="POST alerts here as JSON.")
    alert_repeat_hours: float = Field(6.0, description="Hours between identical alerts.")
    alert_min_free_percent: float = Field(10.0, description="Alert below this free disk.")
    offsite_target: str = Field("", description="Folder, `sftp://...` or `s3://...`.")
    offsite_key_file: str | None = Field(None, description="Key file: encrypt offsite copies.")
    offsite_keep_days: float = Field(0.0, description="Prune older offsite copies; 0 = keep.")
    offsite_sftp_key_file: str | None = Field(None, description="SFTP private key.")
    offsite_sftp_password: str | None = Field(None, description="SFTP password.")
    offsite_sftp_known_hosts: str | None = Field(None, description="SFTP known_hosts file.")
    offsite_s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint.")
    offsite_s3_region: str | None = Field(None, description="S3 region.")
    offsite_s3_access_key: str | None = Field(None, description="S3 access key.")
    offsite_s3_secret_key: str | None = Field(None, description="S3 secret key.")

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.chroma_path is None:
            self.chroma_path = self.data_dir / "chroma"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'refserver.db'}"
        return self

    # Paths derived from data_dir: not settings, so not documented as such.
    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def previews_dir(self) -> Path:
        return self.data_dir / "previews"

    @property
    def staging_dir(self) -> Path:
        return self.data_dir / "staging"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def restore_dir(self) -> Path:
        return self.data_dir / "restore"

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @property
    def is_sqlite(self) -> bool:
        return str(self.database_url).startswith("sqlite")

    @property
    def sqlite_path(self) -> Path:
        assert self.is_sqlite, "not a SQLite deployment"
        return Path(str(self.database_url).removeprefix("sqlite:///"))

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.files_dir, self.previews_dir, self.staging_dir):
            d.mkdir(parents=True, exist_ok=True)

    def check_secure(self) -> None:
        """Refuse an insecure production start."""
        if self.environment == "production" and self.secret_key == DEFAULT_SECRET_KEY:
            raise RuntimeError(
                "REFSERVER_SECRET_KEY is the default: set a secret key before running "
                f"in production (e.g. {secrets.token_urlsafe(32)})"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_markdown() -> str:
    """The configuration reference, generated from :class:`Settings`."""
    lines = [
        "# Configuration",
        "",
        "Generated by `refserver config docs` from `src/refserver/config.py`.",
        "Set each as an environment variable (or in `.env`).",
        "",
        "| variable | default | description |",
        "| --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        lines.append(f"| `REFSERVER_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"
