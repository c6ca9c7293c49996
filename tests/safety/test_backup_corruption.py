"""Damaged backups are detected before anything live is touched."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refserver.context import AppContext
from refserver.safety.archive import UnsafeArchive, extract_tar, safe_name
from refserver.safety.backup import ChainGap, engine_of
from refserver.safety.manifest import list_manifests, write_manifest
from refserver.safety.restore import NotFound, restore
from refserver.safety.verify import VerificationFailed, check_chroma
from tests.safety.conftest import add_direct, library_state


@pytest.fixture
def chain(ctx: AppContext, tmp_path: Path) -> Iterator[dict[str, Any]]:
    for i in range(3):
        add_direct(ctx, tmp_path, i)
    engine = engine_of(ctx)
    full = engine.create("full", unified=True)
    add_direct(ctx, tmp_path, 7)
    inc = engine.create("incremental")
    assert full.status == inc.status == "completed"
    ctx.library.update_metadata(next(iter(library_state(ctx)["papers"])), {"title": "live edit"})
    yield {"ctx": ctx, "engine": engine, "full": full, "inc": inc}


def _live(ctx: AppContext) -> dict[str, Any]:
    state = library_state(ctx)
    state["backups"] = sorted(m.id for m in engine_of(ctx).manifests())
    return state


def _refused(env: dict[str, Any], backup_id: str, exc: type[Exception]) -> Exception:
    ctx = env["ctx"]
    before = _live(ctx)
    with pytest.raises(exc) as info:
        restore(env["engine"], backup_id)
    assert _live(ctx) == before  # same papers, files, vectors, generation; no safety backup
    assert not list((ctx.settings.data_dir).glob(".restore-staging-*"))
    return info.value


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_flipped_byte_in_the_base_database(chain) -> None:
    member = chain["full"].members_by_role("sqlite")[0]
    _flip(chain["engine"].layout.root / member.name)
    err = _refused(chain, chain["inc"].id, VerificationFailed)
    assert member.name in str(err)
    result = chain["engine"].verify(chain["full"].id)
    assert not result.ok and result.to_dict()["integrity_check"] == "failed"
    assert chain["engine"].get(chain["full"].id).status == "damaged"


def test_truncated_delta(chain) -> None:
    member = chain["inc"].members_by_role("sqlite_delta")[0]
    path = chain["engine"].layout.root / member.name
    path.write_bytes(path.read_bytes()[: member.size_compressed // 2])
    err = _refused(chain, chain["inc"].id, VerificationFailed)
    assert member.name in str(err)


def test_flipped_byte_in_a_stored_pdf(chain) -> None:
    sha = chain["inc"].files_added[0]
    blob = chain["engine"].layout.root / chain["engine"].layout.existing_blob(sha)[0]
    _flip(blob, offset=len(blob.read_bytes()) - 8)
    err = _refused(chain, chain["inc"].id, VerificationFailed)
    assert "files" in str(err)


def test_missing_member(chain) -> None:
    member = chain["full"].members_by_role("chromadb")[0]
    (chain["engine"].layout.root / member.name).unlink()
    err = _refused(chain, chain["full"].id, VerificationFailed)
    assert "missing" in str(err)
    sha = chain["inc"].files_added[0]
    (chain["engine"].layout.root / chain["engine"].layout.existing_blob(sha)[0]).unlink()
    _refused(chain, chain["inc"].id, VerificationFailed)


def test_chain_gap(chain) -> None:
    (chain["engine"].layout.metadata / f"{chain['full'].id}.json").unlink()
    err = _refused(chain, chain["inc"].id, ChainGap)
    assert "gap" in str(err)


def test_manifest_for_another_schema_revision(chain) -> None:
    m = chain["full"]
    m.schema_heads = ["9999_future"]
    m.schema_revision = "9999_future"
    write_manifest(chain["engine"].layout.metadata, m)  # a well-formed manifest, other schema
    err = _refused(chain, m.id, VerificationFailed)
    assert "schema" in str(err)


def test_edited_manifest_is_not_trusted(chain) -> None:
    path = chain["engine"].layout.metadata / f"{chain['full'].id}.json"
    data = json.loads(path.read_text())
    data["generation"] += 1
    path.write_text(json.dumps(data))
    _refused(chain, chain["full"].id, NotFound)
    _manifests, bad = list_manifests(chain["engine"].layout.metadata)
    assert bad == [chain["full"].id]


def test_corrupted_chroma_copy_is_caught_in_a_child_process(tmp_path: Path) -> None:
    folder = tmp_path / "chroma"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    check = check_chroma(folder, {"pages": 3})
    assert check.status == "failed" and "ChromaDB" in check.detail


def _tar(entries: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info in entries:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda: tarfile.TarInfo("../escape"),
        lambda: tarfile.TarInfo("/etc/passwd-copy"),
        lambda: tarfile.TarInfo("a/../../escape"),
        lambda: _link("link", tarfile.SYMTYPE),
        lambda: _link("hard", tarfile.LNKTYPE),
        lambda: _link("fifo", tarfile.FIFOTYPE),
    ],
)
def test_unsafe_archive_entries_are_refused(tmp_path: Path, make) -> None:
    src = tmp_path / "bad.tar"
    src.write_bytes(_tar([make()]))
    with pytest.raises(UnsafeArchive):
        extract_tar(src, tmp_path / "out", "none")
    assert not (tmp_path / "escape").exists()


def _link(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd"
    return info


def test_archive_limits(tmp_path: Path) -> None:
    src = tmp_path / "many.tar"
    src.write_bytes(_tar([tarfile.TarInfo(f"f{i}") for i in range(5)]))
    with pytest.raises(UnsafeArchive):
        extract_tar(src, tmp_path / "a", "none", max_members=3)
    with pytest.raises(UnsafeArchive):
        extract_tar(src, tmp_path / "b", "none", max_bytes=2)
    with pytest.raises(UnsafeArchive):
        extract_tar(src, tmp_path / "c", "none", allowed_top=("chroma.sqlite3",))
    assert str(safe_name("a/b.bin")) == "a/b.bin"


def test_a_member_of_several_zstd_frames_is_read_whole(tmp_path: Path) -> None:
    """zstd's CLI may write several frames (e.g. a member recompressed by hand)."""
    import hashlib

    import zstandard

    from refserver.safety.archive import open_reader, read_member

    parts = [os.urandom(1000) * 50, b"second frame " * 3000]
    member = tmp_path / "m.zst"
    member.write_bytes(
        b"".join(zstandard.ZstdCompressor(write_checksum=True).compress(p) for p in parts)
    )
    whole = b"".join(parts)
    r = read_member(member, "zstd")
    assert (r.size_raw, r.sha256) == (len(whole), hashlib.sha256(whole).hexdigest())
    with open_reader(member, "zstd") as stream:
        assert stream.read() == whole
