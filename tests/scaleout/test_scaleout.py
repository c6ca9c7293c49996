"""Scale-out on existing engines: a Chroma server and a Redis-backed queue, same code paths."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import corpus_pdf, login, make_settings, wait_job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port}")


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[int]:
    exe = Path(sys.executable).parent / "chroma"
    port = free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "run",
            "--path",
            str(tmp_path / "chroma-server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_chroma_server_and_redis_queue(
    tmp_path: Path, chroma_server: int, redis_server: int
) -> None:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from refserver.api.app import create_app

    settings = make_settings(
        tmp_path / "data",
        chroma_host="127.0.0.1",
        chroma_port=chroma_server,
        queue_backend="redis",
        redis_url=f"redis://127.0.0.1:{redis_server}/0",
    )
    with TestClient(create_app(settings)) as c:
        h = login(c)
        assert c.get("/status").json()["deployment_mode"] == "scale-out"
        r = c.post(
            "/upload",
            headers=h,
            files={"file": ("j.pdf", corpus_pdf("jacow").read_bytes(), "application/pdf")},
        )
        job = wait_job(c, r.json()["job_id"], h)
        assert job["status"] == "completed", job
        vs = c.get("/vector/stats", headers=h).json()
        assert vs["total_vectors"] == vs["sqlite_vectors"] == 4  # 3 pages + the paper
    # The vectors live in the Chroma server, not in the data folder.
    assert not (tmp_path / "data" / "chroma").exists()
    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma_server, settings=ChromaSettings(anonymized_telemetry=False)
    )
    assert client.get_collection("pages").count() == 3
    assert client.get_collection("papers").count() == 1
