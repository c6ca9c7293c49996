"""PDF members: stored raw when compression gains nothing, restored byte for byte."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from refserver.safety.archive import copy_file, worth_compressing
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


def test_a_damaged_pdf_in_the_file_store_fails_the_backup(lib) -> None:  # noqa: F811
    """The one hash of a PDF stored raw (its copy read back from the disk) catches bit rot
    in the live file store: the backup fails and keeps no blob under the wrong name."""
    ctx = lib["ctx"]
    src = corpus_pdf("vespa")
    ingest_pdf(ctx, src)
    sha = sha256_file(src)
    path = ctx.files.path_for(sha)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    engine = engine_of(ctx)
    m = engine.create("full")
    assert m.status == "failed" and not m.verified
    assert "does not match its name" in (m.error or "")
    assert not list(engine.layout.files.glob(f"*/{sha}*"))


def test_copy_file_reads_the_copy_back(tmp_path: Path) -> None:
    src = tmp_path / "a.pdf"
    src.write_bytes(os.urandom(3_000_000))
    w = copy_file(src, tmp_path / "store" / "a.pdf")
    assert (tmp_path / "store" / "a.pdf").read_bytes() == src.read_bytes()
    assert w.sha256 == w.sha256_stored == sha256_file(src)
    assert w.size_raw == w.size_compressed == 3_000_000
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".part-")]


def test_stored_blobs_scan_agrees_with_existing_blob(lib) -> None:  # noqa: F811
    ctx = lib["ctx"]
    for name in ("vespa",):
        ingest_pdf(ctx, corpus_pdf(name))
    engine = engine_of(ctx)
    assert engine.create("full").status == "completed"
    layout = engine.layout
    (layout.files / "ab").mkdir(exist_ok=True)
    (layout.files / "ab" / ".part-xyz").write_bytes(b"half written")
    (layout.files / "ab" / ("ab" + "0" * 62 + ".pdf.gz")).write_bytes(b"x")
    (layout.files / "ab" / ("ab" + "0" * 62 + ".pdf")).write_bytes(b"x")
    scanned = layout.stored_blobs()
    assert scanned, "the full stored its PDF"
    for sha, found in scanned.items():
        assert layout.existing_blob(sha) == found
    assert scanned["ab" + "0" * 62][1] == "gzip"  # preferred over the raw copy
    assert not any(".part-" in name for name, _ in scanned.values())


def test_copy_file_without_copy_file_range_or_preadv(tmp_path: Path, monkeypatch) -> None:
    """Other file systems (EXDEV) and platforms (no preadv): the same copy, read back."""
    import errno

    def refuse(*_a: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    monkeypatch.delattr(os, "preadv")
    src = tmp_path / "b.pdf"
    src.write_bytes(os.urandom(5_000_001))
    w = copy_file(src, tmp_path / "store" / "b.pdf")
    assert (tmp_path / "store" / "b.pdf").read_bytes() == src.read_bytes()
    assert w.sha256 == sha256_file(src) and w.size_raw == 5_000_001


def test_a_pdf_lost_before_the_backup_does_not_make_the_library_unrestorable(
    lib,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The backup records the PDF it could not find; a restore brings back everything else."""
    from refserver.safety.consistency import check
    from tests.safety.conftest import add_direct

    ctx = lib["ctx"]
    kept = [add_direct(ctx, tmp_path, i) for i in range(3)]
    with ctx.db.read() as s:
        lost_sha = ctx.library.get(s, kept[1]).file_sha256
    ctx.files.path_for(lost_sha).unlink()  # the live store lost it before any backup
    engine = engine_of(ctx)
    m = engine.create("full")
    assert m.status == "completed" and m.verified, m.error
    assert m.files_missing == [lost_sha]
    verified = engine.verify(m.id)
    assert verified.ok, [c for c in verified.checks if not c.ok]
    files_check = next(c for c in verified.checks if c.name == "files")
    assert "1 PDF(s) were already missing" in files_check.detail

    ctx = wipe_and_reopen(lib)
    restore(engine_of(ctx), m.id)
    with ctx.db.read() as s:
        assert {p for p in kept if ctx.library.get(s, p) is not None} == set(kept)
    stored = dict(ctx.files.iter_files())
    assert lost_sha not in stored and len(stored) == 2
    issues = check(ctx).issues
    assert [(i.type, i.detail.get("sha256")) for i in issues] == [("pdf_missing", lost_sha)]
