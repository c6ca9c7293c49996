"""Backup members: read back from the disk and decoded while written; a bad one fails."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest
import zstandard

from refserver.safety import archive
from refserver.safety.archive import DROP_EVERY, _ReadBack, read_member, write_stream


def _text(n: int) -> bytes:
    words = [b"paper", b"vector", b"backup", b"restore", b"zstd", b"page", b"index"]
    rng = random.Random(7)
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" " + str(rng.randrange(10**6)).encode() + b"\n"
    return bytes(out[:n])


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_member_is_read_back_and_decoded_while_written(
    tmp_path: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "DROP_EVERY", 1 << 20)  # several ranges, not one
    data = _text(6_000_000)
    dest = tmp_path / f"db.{compression}"
    w = write_stream(dest, compression, lambda out: out.write(data), size_hint=len(data))
    assert w.read_back and w.size_raw == len(data)
    r = read_member(dest, compression)
    assert (r.sha256, r.sha256_stored, r.size_raw) == (w.sha256, w.sha256_stored, len(data))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".part-")]


def _stream(compression: str, data: bytes) -> bytes:
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=2, write_checksum=True).compress(data)
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _read_back(tmp_path: Path, compression: str, stream: bytes, size_raw: int) -> None:
    """What the read-back concludes about ``stream`` as the disk holds it (a compressed
    member is written without a stored hash: decoding it is the proof)."""
    import hashlib

    path = tmp_path / "member"
    path.write_bytes(stream)
    fd = os.open(path, os.O_RDWR)
    try:
        rb = _ReadBack(fd, compression)
        step = max(1, len(stream) // 3)
        for start in range(0, len(stream), step):
            rb.hand_over(start, min(len(stream), start + step))
        assert rb.finish(len(stream), None, size_raw) == hashlib.sha256(stream).hexdigest()
    finally:
        os.close(fd)


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_read_back_catches_a_bad_stream(tmp_path: Path, compression: str) -> None:
    data = _text(2_000_000)
    good = _stream(compression, data)
    _read_back(tmp_path, compression, good, len(data))
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(OSError):
        _read_back(tmp_path, compression, bytes(flipped), len(data))
    with pytest.raises(OSError):
        _read_back(tmp_path, compression, good[: len(good) - 100], len(data))  # cut short
    with pytest.raises(OSError):
        _read_back(tmp_path, compression, good, len(data) + 1)  # not what went in


def test_read_back_catches_bytes_the_disk_changed(tmp_path: Path) -> None:
    """The stored hash computed on the way out must be what the disk gives back."""
    import hashlib

    data = _text(300_000)
    path = tmp_path / "member"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        rb = _ReadBack(fd, "none")
        os.pwrite(fd, b"X", 1000)  # "the disk" returns something else
        rb.hand_over(0, len(data), final=True)
        with pytest.raises(OSError, match="differs"):
            rb.finish(len(data), hashlib.sha256(data).hexdigest(), len(data))
    finally:
        os.close(fd)


def test_failed_member_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "x.zst"

    def boom(out) -> None:  # type: ignore[no-untyped-def]
        out.write(os.urandom(DROP_EVERY + 10))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_stream(dest, "zstd", boom)
    assert list(tmp_path.iterdir()) == []
