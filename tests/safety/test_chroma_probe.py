"""The ChromaDB copy is opened in a forked child that reports counts or the failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.config import Settings as ChromaSettings

from refserver.safety.chroma_probe import counts_in_child, warm_up


def _folder(tmp_path: Path, n: int) -> Path:
    live = tmp_path / "live"
    client = chromadb.PersistentClient(
        path=str(live), settings=ChromaSettings(anonymized_telemetry=False)
    )
    col = client.get_or_create_collection("pages")
    vecs = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    col.add(ids=[f"p{i}" for i in range(n)], embeddings=vecs.tolist())
    client.get_or_create_collection("papers")
    copy = tmp_path / "copy"
    shutil.copytree(live, copy)
    return copy


def test_counts_every_collection_in_a_child(tmp_path: Path) -> None:
    warm_up()
    warm_up()  # repeatable
    folder = _folder(tmp_path, 7)
    assert counts_in_child(folder, timeout=120) == {"pages": 7, "papers": 0}
    assert counts_in_child(folder, timeout=120) == {"pages": 7, "papers": 0}  # a fresh fork


def test_a_corrupted_folder_fails_in_the_child_not_here(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    with pytest.raises(RuntimeError, match="opening the ChromaDB copy failed") as err:
        counts_in_child(folder, timeout=120)
    assert "exit 1" in str(err.value) or "signal" in str(err.value)
    # this process is unharmed and the next probe works
    assert counts_in_child(_folder(tmp_path, 2), timeout=120)["pages"] == 2


def test_the_child_does_not_share_this_process_state(tmp_path: Path, monkeypatch: Any) -> None:
    """Forked from the fork server, not from this (multi-threaded) process."""
    folder = _folder(tmp_path, 1)
    monkeypatch.setattr(chromadb, "PersistentClient", None)  # only here, not in the child
    assert counts_in_child(folder, timeout=120)["pages"] == 1
