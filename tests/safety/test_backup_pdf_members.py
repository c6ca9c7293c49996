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


def test_probe_samples_the_whole_file_not_its_head(tmp_path: Path) -> None:
    """A PDF's first pages say little about the rest: the probe reads slices throughout."""
    text = b"the quick brown fox jumps over the lazy dog\n" * 2000  # ~88 KB, packs ~100x
    noise = zlib.compress(os.urandom(2_000_000), 9)
    head_only = tmp_path / "head.pdf"  # compressible head, incompressible body
    head_only.write_bytes(text + noise)
    body = tmp_path / "body.pdf"  # incompressible head, compressible body
    body.write_bytes(noise[:200_000] + text * 20)
    assert not worth_compressing(head_only, "zstd")
    assert worth_compressing(body, "zstd")
    tiny = tmp_path / "tiny.pdf"
    tiny.write_bytes(text[:5000])
    assert worth_compressing(tiny, "zstd")
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    assert not worth_compressing(empty, "zstd")


def test_real_pdfs_are_stored_raw_and_restore_identically(lib) -> None:  # noqa: F811
    ctx = lib["ctx"]
    src = corpus_pdf("vespa")  # zstd saves under 5% of it
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
