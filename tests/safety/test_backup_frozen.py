"""The database read in place: a read transaction begun on an empty WAL freezes the file.

The backup compresses the live database file itself instead of a staged copy;
these tests prove the bytes it stores are exactly the consistent point even
while writers keep committing, that the read transaction ends with the backup
(checkpoints resume), and that a reader pinning the WAL makes it fall back to
the online backup API copy.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from refserver.context import AppContext
from refserver.safety.archive import compress_file, write_stream
from refserver.safety.backup import engine_of
from refserver.safety.restore import restore
from refserver.safety.sqlite_pages import readonly
from refserver.storage.models import AuditEntry
from tests.safety.conftest import add_direct, assert_consistent


class Writer:
    """Commits one small row after another through the one write path."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        self.commits = 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.ctx.db.write() as s:
                    s.add(AuditEntry(action="test.write", detail={"n": self.commits}))
            except BaseException as exc:  # surfaced by the test
                self.errors.append(exc)
                return
            self.commits += 1
            time.sleep(0.002)

    def __enter__(self) -> Writer:
        self.thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["snapshot", "full"])
def test_frozen_file_is_the_consistent_point_while_writes_go_on(
    ctx: AppContext, tmp_path: Path, kind: str
) -> None:
    for i in range(4):
        add_direct(ctx, tmp_path, i)
    engine = engine_of(ctx)
    with Writer(ctx) as w:
        before = w.commits
        m = engine.create(kind)
        during = w.commits - before
    assert not w.errors, w.errors
    assert m.status == "completed", m.error
    assert m.sqlite["read"] == "frozen file"
    assert during > 0, "the writer must have committed while the file was read"

    out = restore(engine, m.id, target_path=f"frozen-{kind}")
    db = Path(out["target_path"]) / "refserver.db"
    # the stored image is byte for byte what the manifest says, and a sound database
    assert _file_sha(db) == m.sqlite["db_sha256"]
    with readonly(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        generation = c.execute("SELECT generation FROM library_state").fetchone()[0]
        audits = c.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        papers = c.execute("SELECT count(*) FROM papers").fetchone()[0]
    # ... and it is the barrier's point: the writer's later commits are not in it
    assert generation == m.generation
    assert papers == m.counts["papers"] == 4
    with ctx.db.read() as s:
        live_audits = s.query(AuditEntry).count()
    assert audits < live_audits

    # the read transaction ended with the backup: the WAL can be emptied again
    conn = sqlite3.connect(str(ctx.settings.sqlite_path), timeout=5)
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()
    assert busy == 0


def test_a_reader_pinning_the_wal_makes_the_backup_copy_instead(
    ctx: AppContext, tmp_path: Path
) -> None:
    for i in range(3):
        add_direct(ctx, tmp_path, i)
    # a reader whose snapshot lives in the WAL: the WAL cannot be emptied under it
    reader = sqlite3.connect(str(ctx.settings.sqlite_path), isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM papers").fetchone()
        add_direct(ctx, tmp_path, 3)
        m = engine_of(ctx).create("full", unified=True)
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert m.status == "completed", m.error
    assert m.sqlite["read"] == "online backup copy"
    assert m.counts["papers"] == 4

    engine = engine_of(ctx)
    out = restore(engine, m.id, target_path="fallback")
    assert _file_sha(Path(out["target_path"]) / "refserver.db") == m.sqlite["db_sha256"]
    restore(engine, m.id)
    assert_consistent(ctx)


def test_compressing_a_file_shorter_than_its_limit_fails(tmp_path: Path) -> None:
    src = tmp_path / "short.bin"
    src.write_bytes(b"x" * 10_000)
    w = compress_file(src, tmp_path / "a.zst", "zstd", limit=4096)
    assert w.size_raw == 4096  # a limit reads that much and no more
    with pytest.raises(OSError, match="ended after"):
        compress_file(src, tmp_path / "b.zst", "zstd", limit=20_000)
    assert not (tmp_path / "b.zst").exists()


def test_big_members_are_read_back_on_two_threads_and_damage_is_caught(tmp_path: Path) -> None:
    import os

    from refserver.safety.archive import THREADED_MIN, read_member

    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(THREADED_MIN + (3 << 20)))  # over the threshold once stored
    w = compress_file(src, tmp_path / "big.bin.zst", "zstd")
    assert w.size_compressed > THREADED_MIN
    r = read_member(tmp_path / "big.bin.zst", "zstd")
    assert (r.sha256, r.size_raw, r.sha256_stored) == (w.sha256, w.size_raw, w.sha256_stored)

    data = bytearray((tmp_path / "big.bin.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.zst").write_bytes(bytes(data))
    try:
        flipped = read_member(tmp_path / "flipped.zst", "zstd")
    except Exception:  # the decompressor may notice first; either way it is caught
        pass
    else:
        assert flipped.sha256 != w.sha256 and flipped.sha256_stored != w.sha256_stored

    good = (tmp_path / "big.bin.zst").read_bytes()
    (tmp_path / "short.zst").write_bytes(good[: len(good) - 100])
    try:
        short = read_member(tmp_path / "short.zst", "zstd")
    except Exception:
        pass
    else:  # a cut-off stream ends early: its size and digest give it away
        assert short.size_raw < w.size_raw and short.sha256 != w.sha256


@pytest.mark.parametrize(("compression", "level"), [("zstd", 1), ("gzip", 9)])
def test_compression_level_is_applied_recorded_and_restorable(
    tmp_path: Path, compression: str, level: int
) -> None:
    import gzip

    import zstandard

    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path / "data", backup_compression=compression, backup_compression_level=level
    )
    ctx = AppContext(settings)
    try:
        for i in range(2):
            add_direct(ctx, tmp_path, i)
        engine = engine_of(ctx)
        m = engine.create("full", unified=True)
        assert m.status == "completed", m.error
        assert (m.compression, m.compression_level) == (compression, level)
        member = m.members_by_role("sqlite")[0]
        stored = (settings.backups_dir / member.name).read_bytes()
        if compression == "zstd":
            raw = zstandard.ZstdDecompressor().stream_reader(stored).read()

            def again(lvl: int | None) -> bytes:  # the same raw bytes through the same writer
                out = tmp_path / f"again-{lvl}.zst"
                write_stream(out, "zstd", lambda w: w.write(raw), size_hint=len(raw), level=lvl)
                return out.read_bytes()

            assert stored == again(level) and stored != again(None)
        else:
            assert stored[8] == 2  # gzip header XFL: 2 = maximum compression (level 9)
            raw = gzip.decompress(stored)
        assert hashlib.sha256(raw).hexdigest() == member.sha256
        out = restore(engine, m.id, target_path="levels")
        assert _file_sha(Path(out["target_path"]) / "refserver.db") == m.sqlite["db_sha256"]
    finally:
        ctx.close()


def test_compression_level_is_validated(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from tests.conftest import make_settings

    with pytest.raises(ValidationError):
        make_settings(tmp_path / "data", backup_compression_level=0)
    with pytest.raises(ValidationError):
        make_settings(tmp_path / "data", backup_compression_level=20)


def test_fresh_verification_relies_on_the_stream_checksum_and_catches_damage(
    tmp_path: Path,
) -> None:
    import os

    import zstandard

    from refserver.safety.archive import has_content_checksum, read_member
    from refserver.safety.manifest import Member
    from refserver.safety.verify import check_member

    src = tmp_path / "db.bin"
    src.write_bytes(os.urandom(1 << 20) + b"page text " * 200_000)
    dest = tmp_path / "db.bin.zst"
    w = compress_file(src, dest, "zstd")
    assert has_content_checksum(dest, "zstd")

    def member(name: str, stored_sha: str, size: int) -> Member:
        return Member(name, "sqlite", w.size_raw, size, w.sha256, "zstd", stored_sha)

    good = member(dest.name, w.sha256_stored, w.size_compressed)
    assert check_member(tmp_path, good, fresh=True).ok
    assert read_member(dest, "zstd", hash_raw=False).sha256 == ""  # no second content hash

    # a flipped stored byte: the stored SHA-256 no longer matches
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "flip.zst").write_bytes(bytes(data))
    assert not check_member(tmp_path, member("flip.zst", w.sha256_stored, len(data)), fresh=True).ok

    # content that does not match the frame's checksum (stored hash made to agree):
    # only the decompressor's own check can catch it, and it does
    bad = bytearray(dest.read_bytes())
    bad[-1] ^= 0x01  # the last 4 bytes are the content checksum
    (tmp_path / "sum.zst").write_bytes(bytes(bad))
    forged = member("sum.zst", hashlib.sha256(bytes(bad)).hexdigest(), len(bad))
    check = check_member(tmp_path, forged, fresh=True)
    assert not check.ok and "unreadable" in check.detail

    # a frame without a checksum (older backups) is hashed in full
    plain = tmp_path / "plain.zst"
    plain.write_bytes(zstandard.ZstdCompressor(level=3).compress(src.read_bytes()))
    assert not has_content_checksum(plain, "zstd")
    assert read_member(plain, "zstd", hash_raw=False).sha256 == w.sha256


def test_the_default_level_is_recorded_explicitly(ctx: AppContext, tmp_path: Path) -> None:
    from refserver.safety.archive import ZSTD_LEVEL

    add_direct(ctx, tmp_path, 1)
    m = engine_of(ctx).create("snapshot")
    assert m.status == "completed", m.error
    assert (m.compression, m.compression_level) == ("zstd", ZSTD_LEVEL)
    plain = engine_of(ctx).create("snapshot", compress=False)
    assert (plain.compression, plain.compression_level) == ("none", None)
