"""PDF members: stored raw when compression gains nothing, restored byte for byte."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from refserver.safety.archive import worth_compressing
from refserver.safety.backup import engine_of
from refserver.safety.restore import restore
from refserver.storage.files import sha256_file
from tests.conftest import corpus_pdf
from tests.safety.conftest import ingest_pdf
from tests.safety.test_backup_roundtrip import lib, wipe_and_reopen  # noqa: F401  (fixture)


def test_probe_tells_compressible_from_compressed(tmp_path: Path) -> None:
    text = tmp_path / "plain.txt"
    text.write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 20000)
    packed = tmp_path / "packed.bin"
    packed.write_bytes(zlib.compress(os.urandom(400_000), 9))  # like Flate streams and JPEGs
    assert worth_compressing(text, "zstd")
    assert not worth_compressing(packed, "zstd")
    assert not worth_compressing(text, "none")


def test_real_pdfs_are_stored_raw_and_restore_identically(lib) -> None:  # noqa: F811
    ctx = lib["ctx"]
    src = corpus_pdf("plosone")
    ingest_pdf(ctx, src)
    m = engine_of(ctx).create("full")
    assert m.status == "completed" and m.verified, m.error
    files = [x for x in m.members if x.role == "file"]
    assert len(files) == 1 and files[0].compression == "none"
    assert files[0].name.endswith(".pdf")
    db = next(x for x in m.members if x.role == "sqlite")
    assert db.compression == "zstd" and db.size_compressed < db.size_raw
    ctx = wipe_and_reopen(lib)
    restore(engine_of(ctx), m.id)
    stored = dict(ctx.files.iter_files())
    assert sha256_file(stored[files[0].sha256]) == sha256_file(src)
