"""Compressed members: streaming zstd/gzip with checksums, tar of folders, safe extraction.

Each member is written in one pass that hashes the raw bytes and the stored
bytes, then fsynced and renamed into place, so a crash leaves no half member.
Members are standard ``.zst``/``.gz`` (and ``.tar.zst``) files: ``zstd -d`` and
``tar`` restore them by hand. Extraction accepts only regular files and folders
under safe relative names, within size and count limits.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import zstandard

from refserver.storage.files import fsync_dir

CHUNK = 1 << 20
# zstd -2, not the CLI's -3: 27% less CPU for 2.5% bigger database members on the
# backup bench library (docs/benchmarks.md) — a full backup is CPU-bound on small
# servers, and it shares them with ingest and search.
ZSTD_LEVEL = 2
GZIP_LEVEL = 6
DEFAULT_LEVEL = {"zstd": ZSTD_LEVEL, "gzip": GZIP_LEVEL}
SUFFIX = {"zstd": ".zst", "gzip": ".gz", "none": ""}
MAX_MEMBERS = 200_000
THREADED_MIN = 16 << 20
MAX_MEMBER_BYTES = 64 << 30

Progress = Callable[[int], None]  # bytes done since the last call


class UnsafeArchive(ValueError):
    """An archive entry is a link, escapes its folder, or breaks a limit."""


@dataclass
class Written:
    size_raw: int
    sha256: str
    size_compressed: int
    sha256_stored: str
    # read back from the disk (after an fsync and a cache drop) while it was
    # written, hashed and decoded: a fresh verification has nothing to re-read
    read_back: bool = False


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through to ``out``."""

    def __init__(self, out: IO[bytes], hashing: bool = True) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.hashing = hashing
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        mv = memoryview(b)
        if self.hashing:
            self.h.update(mv)
        self.n += len(mv)
        self.out.write(mv)
        return len(mv)


def zstd_threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _compressing_writer(
    sink: IO[bytes], compression: str, size_hint: int = -1, level: int | None = None
) -> Any:
    if compression == "zstd":
        # Worker threads pay off on big members only; a PDF is compressed inline.
        threads = zstd_threads() if size_hint < 0 or size_hint > THREADED_MIN else 0
        # The frame checksum (XXH64 of the content) lets a fresh verification
        # prove decompression without a second SHA-256 pass (see read_member).
        cctx = zstandard.ZstdCompressor(
            level=level or ZSTD_LEVEL, threads=threads, write_checksum=True
        )
        return cctx.stream_writer(sink, closefd=False)
    if compression == "gzip":
        return gzip.GzipFile(
            fileobj=sink, mode="wb", compresslevel=min(level or GZIP_LEVEL, 9), mtime=0
        )
    if compression == "none":
        return _NoClose(sink)
    raise ValueError(f"unknown compression {compression!r}")


class _NoClose(io.RawIOBase):
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self.out.write(b)


def open_reader(path: Path, compression: str) -> IO[bytes]:
    """A stream of the raw bytes of a stored member."""
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True, read_across_frames=True)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if compression == "none":
        return f
    f.close()
    raise ValueError(f"unknown compression {compression!r}")


DROP_EVERY = 32 << 20  # bytes of a backup member made durable and read back at a time


def drop_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """Let the kernel drop these (clean) pages of a backup member from the page cache.

    Backups are cold data: kept cached they would push the server's working set
    (database pages, Chroma files) out — rsync's ``--drop-cache`` and borg's
    ``SyncFile`` idea. It also saves CPU where new page-cache pages are dear:
    on this VM writing 1 GB through the cache cost 2.4-2.6 CPU-s, 0.4 when its
    pages were written back and dropped every 64 MiB (measured, docs/benchmarks.md).
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """``os.preadv`` where the platform has it (Linux), else ``os.pread``."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


def _read_range(fd: int, view: memoryview, start: int, end: int | None) -> Iterator[memoryview]:
    """The bytes of ``fd`` from ``start`` to ``end`` (``None``: to its end), a buffer at a time."""
    off = start
    while end is None or off < end:
        want = len(view) if end is None else min(len(view), end - off)
        k = _pread_into(fd, view[:want], off)
        if k <= 0:
            if end is None:
                return
            raise OSError(f"ends at {off} of {end} bytes written")
        yield view[:k]
        off += k


_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has only fsync


def _decoder(compression: str) -> Any:
    """A streaming decoder that checks the stream's own content checksum at its end."""
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj()  # the frame's XXH64
    if compression == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)  # the member's CRC-32
    return None


class _ReadBack:
    """Reads a member back from the disk while it is being written, and decodes it.

    Every :data:`DROP_EVERY` bytes the writer hands a range over; this thread makes
    it durable (``fdatasync``), drops it from the page cache, reads it back —
    from the disk, then — hashing the stored bytes and decoding them, so the
    stream's checksum proves the content. When the write ends the member has
    been verified as the disk returns it: a fresh verification has nothing left
    to re-read, and the single-threaded decompression that was most of a full
    backup's tail runs beside the compression instead.
    """

    def __init__(self, fd: int, compression: str) -> None:
        self.fd = fd
        self.q: queue.Queue[tuple[int, int, bool] | None] = queue.Queue(maxsize=8)
        self.h = hashlib.sha256()
        self.stored = 0
        self.raw = 0
        self.decoder = _decoder(compression)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="member-read-back", daemon=True)
        self.thread.start()

    def hand_over(self, start: int, end: int, final: bool = False) -> None:
        self.q.put((start, end, final))

    def _run(self) -> None:
        view = memoryview(bytearray(CHUNK * 4))
        while (item := self.q.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the writer never blocks
            start, end, final = item
            try:
                (os.fsync if final else _fdatasync)(self.fd)
                drop_cache(self.fd, start, end - start)
                for piece in _read_range(self.fd, view, start, end):
                    self.h.update(piece)
                    if self.decoder is not None:
                        self.raw += len(self.decoder.decompress(piece))
                drop_cache(self.fd, start, end - start)  # the reads cached it again
                self.stored = end
            except BaseException as exc:
                self.error = exc

    def finish(self, size_stored: int, sha_stored: str | None, size_raw: int) -> str:
        """The SHA-256 of the stored bytes as read back; raises if they are not right.

        ``sha_stored=None`` (a compressed member): the decoder's checksum of the
        content proves the stored bytes, which were then not hashed on the way out.
        """
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise OSError(f"member could not be read back: {self.error}") from self.error
        digest = self.h.hexdigest()
        if self.stored != size_stored or (sha_stored is not None and digest != sha_stored):
            raise OSError("member read back from the disk differs from what was written")
        if self.decoder is not None and (not self.decoder.eof or self.raw != size_raw):
            raise OSError(f"member decodes to {self.raw} of {size_raw} bytes or is cut short")
        if sha_stored is None and self.decoder is None:
            raise ValueError("an uncompressed member needs the SHA-256 it was written with")
        return digest

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        self.q.put(None)
        self.thread.join()


class _AtomicOut:
    """A temp file next to ``dest`` that becomes ``dest`` only on success.

    ``sync_dir=False``: the caller fsyncs the folder once after many files
    (one journal commit per folder instead of one per file). ``read_back``
    (backup members): each :data:`DROP_EVERY` bytes go to a :class:`_ReadBack`
    of that compression, which leaves them durable and out of the page cache.
    """

    def __init__(self, dest: Path, sync_dir: bool = True, read_back: str | None = None) -> None:
        self.dest = dest
        self.sync_dir = sync_dir
        self.n = 0
        self.handed = 0  # bytes already given to the read-back
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        self.f = os.fdopen(fd, "wb")
        self.read_back = _ReadBack(fd, read_back) if read_back is not None else None

    def write(self, b: Any) -> int:
        n = self.f.write(b)
        self.n += n
        if self.read_back is not None and self.n - self.handed >= DROP_EVERY:
            self.f.flush()
            self.read_back.hand_over(self.handed, self.n)
            self.handed = self.n
        return n

    def sync_and_drop(self, drop: bool = True) -> None:
        """Make the temp file durable and (``drop``) forget its pages."""
        self.f.flush()
        os.fsync(self.f.fileno())
        if drop:
            drop_cache(self.f.fileno())

    def verify_read_back(self, size_stored: int, sha_stored: str | None, size_raw: int) -> str:
        """The last range read back; the stored SHA-256 unless the disk gave back
        something else than was written (see :meth:`_ReadBack.finish`)."""
        assert self.read_back is not None
        self.f.flush()
        self.read_back.hand_over(self.handed, self.n, final=True)
        self.handed = self.n
        rb, self.read_back = self.read_back, None
        return rb.finish(size_stored, sha_stored, size_raw)

    def commit(self, synced: bool = False) -> None:
        """``synced``: durable already (no second fsync, which costs a device cache
        flush on ext4 even for a clean file)."""
        if not synced:
            # a restored file is about to be served: its pages stay cached
            self.sync_and_drop(drop=False)
        self.f.close()
        os.replace(self.tmp, self.dest)
        if self.sync_dir:
            fsync_dir(self.dest.parent)

    def abort(self) -> None:
        if self.read_back is not None:
            self.read_back.abort()
            self.read_back = None
        if not self.f.closed:
            self.f.close()
        Path(self.tmp).unlink(missing_ok=True)


def write_stream(
    dest: Path,
    compression: str,
    produce: Callable[[IO[bytes]], None],
    size_hint: int = -1,
    level: int | None = None,
    sync_dir: bool = True,
) -> Written:
    """Compress whatever ``produce(writer)`` writes into ``dest`` atomically (a backup
    member: kept out of the page cache, see :func:`drop_cache`)."""
    out = _AtomicOut(dest, sync_dir, read_back=compression)
    try:
        if compression == "none":  # stored bytes are the raw bytes: hash them once
            stored = _HashingWriter(out)  # type: ignore[arg-type]
            produce(stored)  # type: ignore[arg-type]
            raw = stored
            stored_sha = out.verify_read_back(stored.n, stored.h.hexdigest(), raw.n)
        else:
            # the stored bytes are hashed as read back: decoding them proves them
            stored = _HashingWriter(out, hashing=False)  # type: ignore[arg-type]
            comp = _compressing_writer(stored, compression, size_hint, level)
            raw = _HashingWriter(comp)
            produce(raw)  # type: ignore[arg-type]
            comp.close()
            stored_sha = out.verify_read_back(stored.n, None, raw.n)
        out.commit(synced=True)
    except BaseException:
        out.abort()
        raise
    return Written(raw.n, raw.h.hexdigest(), stored.n, stored_sha, read_back=True)


PROBE_SLICES = 8
PROBE_SLICE = 8 * 1024
WORTH_RATIO = 0.95


def worth_compressing(src: Path, compression: str) -> bool:
    """Whether compressing ``src`` saves anything (borg's ``auto`` idea).

    PDFs are mostly Flate streams and JPEGs already: zstd wins a few percent on
    them at the cost of most of a full backup's CPU time. A fast zstd-1 probe
    decides; members stored raw say so in the manifest (``compression: none``)
    and restore the same way. The probe is 8 KiB from the middle of each eighth
    of the file, not its head, so a compressible first page cannot decide for a
    file of images (or the reverse), for a quarter of the CPU of a 256 KiB head.
    It errs on files zstd shrinks by 5-8% (4 of the 11 dev-corpus PDFs, stored
    raw; the head erred on 3): borderline by the 0.95 rule either way.
    """
    if compression == "none":
        return False
    size = src.stat().st_size
    if size == 0:
        return False
    cctx = zstandard.ZstdCompressor(level=1)
    probed = packed = 0
    with open(src, "rb") as f:
        if size <= PROBE_SLICES * PROBE_SLICE:
            offsets = [0]
            span = size
        else:
            # the middle of each eighth: every slice stands for an equal share
            offsets = [
                (2 * i + 1) * size // (2 * PROBE_SLICES) - PROBE_SLICE // 2
                for i in range(PROBE_SLICES)
            ]
            span = PROBE_SLICE
        for off in offsets:
            f.seek(off)
            piece = f.read(span)
            probed += len(piece)
            packed += len(cctx.compress(piece))
    return probed > 0 and packed < WORTH_RATIO * probed


def compress_file(
    src: Path,
    dest: Path,
    compression: str,
    progress: Progress | None = None,
    on_block: Callable[[bytes], None] | None = None,
    limit: int | None = None,
    level: int | None = None,
    sync_dir: bool = True,
) -> Written:
    """Compress ``src``; ``on_block`` sees every 4 MiB block (e.g. to hash pages) in the same pass.

    ``limit``: the first ``limit`` bytes only (a frozen live database file);
    a shorter file raises, so a truncated source can never pass for a whole one.
    """
    total = src.stat().st_size if limit is None else limit

    def produce(w: IO[bytes]) -> None:
        done = 0
        with open(src, "rb") as f:
            while True:
                want = CHUNK * 4 if limit is None else min(CHUNK * 4, limit - done)
                block = f.read(want) if want > 0 else b""
                if not block:
                    break
                done += len(block)
                w.write(block)
                if on_block:
                    on_block(block)
                if progress:
                    progress(len(block))
        if limit is not None and done != limit:
            raise OSError(f"{src.name} ended after {done} of {limit} bytes")

    return write_stream(dest, compression, produce, size_hint=total, level=level, sync_dir=sync_dir)


def copy_file(src: Path, dest: Path, sync_dir: bool = True) -> Written:
    """Store ``src`` uncompressed: copied in the kernel, then read back from the disk.

    One SHA-256 pass, of the copy as the disk returns it after an fsync and a
    cache drop, stands for both the source and the stored bytes (the caller
    compares it with the name of a content-addressed file); a Python
    read-hash-write loop followed by a verification re-read hashed twice.
    """
    out = _AtomicOut(dest, sync_dir)
    try:
        out.f.flush()
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            done = 0
            try:
                while done < size:
                    n = os.copy_file_range(f.fileno(), out.f.fileno(), size - done)
                    if n == 0:
                        break
                    done += n
            except (OSError, AttributeError):  # no copy_file_range here: through user space
                f.seek(0)
                os.lseek(out.f.fileno(), 0, os.SEEK_SET)
                os.ftruncate(out.f.fileno(), 0)
                shutil.copyfileobj(f, out.f, CHUNK)
        out.sync_and_drop()
        h = hashlib.sha256()
        n = 0
        fd = out.f.fileno()  # opened read-write: no second open to read it back
        for piece in _read_range(fd, memoryview(bytearray(CHUNK)), 0, None):
            h.update(piece)
            n += len(piece)
        drop_cache(fd)
        out.commit(synced=True)
    except BaseException:
        out.abort()
        raise
    digest = h.hexdigest()
    return Written(n, digest, n, digest, read_back=True)


def tar_folder(src: Path, dest: Path, compression: str, level: int | None = None) -> Written:
    """A (compressed) tar of ``src``'s contents with relative names, no owners."""

    def produce(w: IO[bytes]) -> None:
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src).as_posix()
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                elif info.isdir():
                    tar.addfile(info)
                # sockets, links and the like are not part of a Chroma folder

    return write_stream(dest, compression, produce, level=level)


# Reading a member yields the same sizes and digests as writing it did.
Read = Written


class _HashingReader(io.RawIOBase):
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.h.update(memoryview(b)[:n])
            self.n += n
        return n or 0


def _prefetched(reader: Any, depth: int = 4) -> Iterator[bytes]:
    """Blocks of ``reader`` decompressed by a helper thread while the caller hashes.

    zstd/zlib and hashlib both release the GIL, so a big member's verification
    uses two cores instead of one (it is the tail of every full backup).
    """
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                block = reader.read(CHUNK * 4)
                q.put(block if block else None)
                if not block:
                    return
        except BaseException as exc:
            q.put(exc)

    t = threading.Thread(target=produce, name="member-read", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.05)
        t.join()


def read_member(
    path: Path,
    compression: str,
    sink: IO[bytes] | None = None,
    progress: Progress | None = None,
    *,
    hash_raw: bool = True,
) -> Read:
    """Decompress ``path`` (into ``sink`` if given), hashing stored and raw bytes.

    ``hash_raw=False`` skips the SHA-256 of the decompressed bytes when the
    stream checks its own content — a zstd frame with a checksum (the
    decompressor raises on a mismatch) or gzip's CRC-32 — and returns
    ``sha256=""``; members without such a checksum are hashed anyway.
    """
    if not hash_raw and not has_content_checksum(path, compression):
        hash_raw = True
    with open(path, "rb") as f:
        stored = _HashingReader(f)
        buffered = io.BufferedReader(stored, CHUNK)
        if compression == "zstd":
            # every frame: zstd's CLI may write several (e.g. a member recompressed by hand)
            reader: Any = zstandard.ZstdDecompressor().stream_reader(
                buffered, closefd=False, read_across_frames=True
            )
        elif compression == "gzip":
            reader = gzip.GzipFile(fileobj=buffered, mode="rb")
        elif compression == "none":
            reader = buffered
        else:
            raise ValueError(f"unknown compression {compression!r}")
        # raw is stored ("none"): hash once; hash_raw=False: the stream's checksum
        h = hashlib.sha256() if compression != "none" and hash_raw else None
        n = 0
        big = compression != "none" and os.fstat(f.fileno()).st_size > THREADED_MIN
        for block in _prefetched(reader) if big else iter(lambda: reader.read(CHUNK * 4), b""):
            if h is not None:
                h.update(block)
            n += len(block)
            if sink is not None:
                sink.write(block)
            if progress:
                progress(len(block))
        # drain anything after the frame so the stored hash covers the whole file
        while buffered.read(CHUNK):
            pass
        drop_cache(f.fileno())  # a backup member: cold data
    stored_sha = stored.h.hexdigest()
    raw_sha = h.hexdigest() if h is not None else (stored_sha if compression == "none" else "")
    return Read(n, raw_sha, stored.n, stored_sha)


def has_content_checksum(path: Path, compression: str) -> bool:
    """Whether decompressing ``path`` verifies its content by itself."""
    if compression == "gzip":
        return True  # every gzip member ends with the CRC-32 of its content
    if compression != "zstd":
        return False
    with open(path, "rb") as f:
        head = f.read(32)
    try:
        return bool(zstandard.get_frame_parameters(head).has_checksum)
    except zstandard.ZstdError:
        return False


def decompress_file(path: Path, dest: Path, compression: str) -> Read:
    out = _AtomicOut(dest)
    try:
        r = read_member(path, compression, out.f)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return r


def safe_name(name: str, allowed_top: tuple[str, ...] | None = None) -> PurePosixPath:
    """A relative, normalised archive name or :class:`UnsafeArchive`."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or name.startswith(("/", "\\")) or "\\" in name:
        raise UnsafeArchive(f"absolute or odd name in archive: {name!r}")
    if any(part in ("..", "") for part in p.parts) or "\x00" in name:
        raise UnsafeArchive(f"path escapes the archive folder: {name!r}")
    if allowed_top is not None and p.parts[0] not in allowed_top:
        raise UnsafeArchive(f"unexpected name in archive: {name!r}")
    return p


def extract_tar(
    path: Path,
    dest: Path,
    compression: str,
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_MEMBER_BYTES,
    allowed_top: tuple[str, ...] | None = None,
) -> Read:
    """Extract a member tar into ``dest`` accepting only regular files and folders."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with open(path, "rb") as f:
        stored = _HashingReader(f)
        buffered = io.BufferedReader(stored, CHUNK)
        if compression == "zstd":
            # every frame: zstd's CLI may write several (e.g. a member recompressed by hand)
            reader: Any = zstandard.ZstdDecompressor().stream_reader(
                buffered, closefd=False, read_across_frames=True
            )
        elif compression == "gzip":
            reader = gzip.GzipFile(fileobj=buffered, mode="rb")
        else:
            reader = buffered
        raw = _HashingReader(reader)
        rawbuf = io.BufferedReader(raw, CHUNK)
        count = 0
        total = 0
        with tarfile.open(fileobj=rawbuf, mode="r|") as tar:
            for info in tar:
                count += 1
                if count > max_members:
                    raise UnsafeArchive(f"archive has more than {max_members} entries")
                rel = safe_name(info.name, allowed_top)
                target = (root / rel).resolve()
                if root != target and root not in target.parents:
                    raise UnsafeArchive(f"path escapes the archive folder: {info.name!r}")
                if info.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not info.isreg():
                    raise UnsafeArchive(f"not a regular file in archive: {info.name!r}")
                total += info.size
                if total > max_bytes:
                    raise UnsafeArchive("archive is larger than the extraction limit")
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(info)
                assert src is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    while block := src.read(CHUNK):
                        out.write(block)
        # read to the end so both hashes cover the whole member
        while rawbuf.read(CHUNK):
            pass
        while buffered.read(CHUNK):
            pass
        drop_cache(f.fileno())
    return Read(raw.n, raw.h.hexdigest(), stored.n, stored.h.hexdigest())
