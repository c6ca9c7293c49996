"""Fixtures for the security tests: an app with one account per role."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from refserver.auth.users import ROLES
from tests.conftest import make_settings

ROLE_PASSWORD = "role-password-123"


@dataclass
class SecApp:
    client: TestClient
    headers: dict[str, dict[str, str]]  # role -> Bearer headers
    ctx: Any

    @property
    def app(self) -> Any:
        return self.client.app


def _open(data_dir: Path, **overrides: Any) -> Iterator[SecApp]:
    from refserver.api.app import create_app

    settings = make_settings(data_dir, **overrides)
    app = create_app(settings, start_workers=False, start_scheduler=False)
    with TestClient(app, follow_redirects=False) as client:
        ctx = app.state.ctx
        headers: dict[str, dict[str, str]] = {}
        for role in ROLES:
            user = ctx.accounts.create(f"{role}-user", ROLE_PASSWORD, role)
            _, token = ctx.accounts.create_token(user.id, name="test")
            headers[role] = {"Authorization": f"Bearer {token}"}
        yield SecApp(client, headers, ctx)


@pytest.fixture
def sec(tmp_path: Path) -> Iterator[SecApp]:
    """Reading is NOT public here, so every route shows its protection."""
    yield from _open(tmp_path / "data", public_read=False)


@pytest.fixture
def sec_public(tmp_path: Path) -> Iterator[SecApp]:
    yield from _open(tmp_path / "data-public", public_read=True)


def add_paper(ctx: Any, title: str = "A synthetic paper") -> str:
    """A paper written straight through the library (no ingest needed)."""
    from refserver.storage.library import PageInput, PaperInput

    rng = np.random.default_rng(len(title))
    vec = rng.standard_normal(384).astype(np.float32)
    vec /= np.linalg.norm(vec)
    body = f"{title}. Body text of the only page."
    return ctx.library.add_paper(
        PaperInput(
            file_sha256=hashlib.sha256(title.encode()).hexdigest(),
            file_size=100,
            filename="synthetic.pdf",
            page_count=1,
            pages=[PageInput(1, body, "text_layer", 1.0, vec)],
            metadata={"title": title, "authors": ["Ada Lovelace"], "year": 2020},
            field_sources={"title": "test"},
            paper_vector=vec,
            model="all-MiniLM-L6-v2",
            model_revision="test",
        )
    )
