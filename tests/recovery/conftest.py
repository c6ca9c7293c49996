"""Fixtures for the disaster-recovery tests: a small real library and real backups."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from refserver.config import Settings
from tests.conftest import make_settings, make_text_pdf


def add_papers(ctx: Any, tmp: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` papers with a real PDF each (in the file store) and random unit vectors."""
    from refserver.storage.library import PageInput, PaperInput

    rng = np.random.default_rng(seed)
    rnd = random.Random(seed)
    ids = []
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        word = f"{rnd.getrandbits(48):012x}"
        texts = [f"Paper {seed}-{i} {word} page {p} about recovery drills." for p in (1, 2)]
        pdf = make_text_pdf(tmp / f"p{seed}-{i}-{word}.pdf", texts, title=f"Paper {word}")
        sha = ctx.files.put(pdf)
        vecs = rng.normal(size=(3, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        pages = [PageInput(k + 1, t, "text_layer", 0.9, vecs[k]) for k, t in enumerate(texts)]
        ids.append(
            ctx.library.add_paper(
                PaperInput(
                    file_sha256=sha,
                    file_size=pdf.stat().st_size,
                    filename=pdf.name,
                    page_count=2,
                    pages=pages,
                    metadata={"title": f"Recovery paper {word}", "year": 2000 + i % 25},
                    field_sources={"title": "test"},
                    paper_vector=vecs[2],
                    model="all-MiniLM-L6-v2",
                    model_revision="test",
                )
            )
        )
    return ids


def full_backup(ctx: Any, kind: str = "full") -> Any:
    from refserver.safety.backup import engine_of

    m = engine_of(ctx).create(kind, description=f"test {kind}")
    assert m.status == "completed" and m.verified, m.error
    return m


class RecoverySettings(Settings):
    """Settings plus the protection settings this area reads (proposed for config.py).

    ``Settings`` ignores unknown keys, so until config.py declares them the tests
    set them through this subclass; the code reads them with ``getattr``.
    """

    schedule_incremental: str = "0 * * * *"
    schedule_full_daily: str = "0 3 * * *"
    schedule_full_weekly: str = "0 4 * * sun"
    schedule_consistency: str = "30 2 * * *"
    schedule_health: str = "15 * * * *"
    schedule_drill: str = "0 5 * * sun"
    weekly_backup_retention_days: int = 90
    scheduler_misfire_grace_seconds: int = 30 * 24 * 3600
    scheduler_lock_retry_seconds: float = 60.0
    rpo_hours: float = 0.0
    alert_webhook_url: str = ""
    alert_repeat_hours: float = 6.0
    alert_min_free_percent: float = 10.0
    offsite_target: str = ""
    offsite_key_file: str | None = None
    offsite_keep_days: float = 0.0
    offsite_sftp_key_file: str | None = None
    offsite_sftp_password: str | None = None
    offsite_sftp_known_hosts: str | None = None
    offsite_s3_endpoint_url: str | None = None
    offsite_s3_region: str | None = None
    offsite_s3_access_key: str | None = None
    offsite_s3_secret_key: str | None = None
    metrics_public: bool = False


def recovery_settings(data_dir: Path, **overrides: Any) -> RecoverySettings:
    base = make_settings(data_dir).model_dump()
    base.pop("chroma_path", None)
    base.pop("database_url", None)
    base.update(overrides)
    return RecoverySettings(**base)


@pytest.fixture
def rsettings(tmp_path: Path) -> RecoverySettings:
    return recovery_settings(tmp_path / "data")


@pytest.fixture
def rctx(rsettings: RecoverySettings, tmp_path: Path) -> Iterator[Any]:
    """An AppContext on RecoverySettings holding four papers."""
    from refserver.context import AppContext

    ctx = AppContext(rsettings)
    add_papers(ctx, tmp_path / "pdfs", 4)
    try:
        yield ctx
    finally:
        if ctx.scheduler is not None:
            ctx.scheduler.shutdown()
        ctx.close()
