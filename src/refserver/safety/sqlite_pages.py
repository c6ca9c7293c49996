"""SQLite snapshots through the online backup API, and page-level deltas between them.

A snapshot is never a file copy of a live database: a separate connection opens
a read transaction (so the state it captures is fixed and a stepped backup is
never restarted by concurrent commits — STACK.md), then copies pages with
``Connection.backup``. WAL readers do not block the writer.

Faster still, and without a staging copy: under the write barrier the WAL is
checkpointed away (``TRUNCATE``) and the read transaction begins while it is
empty, so it reads the database file alone. No checkpoint can copy a frame into
the file past a reader's end mark (sqlite.org/wal.html, "checkpoint starvation"),
and in WAL mode only checkpoints write the file, so until that transaction ends
the file *is* the snapshot and is read sequentially at disk speed ("frozen").
When the checkpoint cannot finish at once (a long reader), the backup falls back
to the online backup API copy.

An incremental stores only the pages whose fingerprint differs from the parent's
image plus the new page count. The parent's page table is the base full's table
patched by every delta of the chain, so no per-incremental table is stored.
Applying base + deltas must reproduce the recorded SHA-256 of the whole image,
so a fingerprint that missed a change fails the restore loudly, never silently.

Page fingerprints are XXH3-128 (rsync 3.2's block checksum): a full hashes a
quarter of a million 4 KiB pages per gigabyte, and SHA-256 there cost 0.6 CPU-s
per GB plus a GIL hand-off per page (hashlib releases it for any buffer over
2 KiB), which stalled the threads storing the PDFs beside it. Fulls taken before
record no algorithm and keep SHA-256 for their whole chain.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import xxhash

MAGIC = b"RSDELTA1"
HEADER = struct.Struct("<8sIII")  # magic, page_size, page_count, changed
PGNO = struct.Struct("<I")
STEP_PAGES = 4096


@dataclass(frozen=True)
class PageHash:
    """How a page table fingerprints pages: recorded in the full that starts a chain."""

    name: str
    size: int  # bytes per page in the table
    digest: Callable[[Any], bytes]


PAGE_HASHES = {
    "xxh3_128": PageHash("xxh3_128", 16, xxhash.xxh3_128_digest),
    "sha256": PageHash("sha256", 32, lambda b: hashlib.sha256(b).digest()),
}
DEFAULT_PAGE_HASH = "xxh3_128"
LEGACY_PAGE_HASH = "sha256"  # fulls that record no algorithm


def page_hash(name: str | None) -> PageHash:
    """The fingerprint a manifest names (``None``: a full from before it was recorded)."""
    try:
        return PAGE_HASHES[name or LEGACY_PAGE_HASH]
    except KeyError:
        raise DeltaError(f"unknown page hash {name!r}") from None


class DeltaError(ValueError):
    """A delta does not fit the image it is applied to."""


@dataclass
class Captured:
    """What the read transaction saw: the consistent point of the backup."""

    generation: int
    counts: dict[str, int]
    file_hashes: set[str]
    schema_heads: list[str]
    page_size: int


class SourceSnapshot:
    """A connection to the live database holding one read transaction."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        # check_same_thread=False: a checker thread runs quick_check on this
        # transaction while the backup thread reads the frozen file.
        self.conn = sqlite3.connect(
            str(db_path), timeout=30, isolation_level=None, check_same_thread=False
        )
        self.conn.execute("PRAGMA busy_timeout=30000")
        self._open = False
        self.frozen = False

    def begin(self) -> int:
        """Start the read transaction; returns the library generation it sees."""
        self.conn.execute("BEGIN")
        row = self.conn.execute("SELECT generation FROM library_state WHERE id = 1").fetchone()
        self._open = True
        return int(row[0]) if row else 0

    def settle(self) -> None:
        """Checkpoint what can be, outside the barrier, so the one under it is short."""
        with suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def begin_frozen(self, wait_ms: int = 25) -> int:
        """Call with writes held: empty the WAL, then begin (see the module docstring).

        Sets ``frozen`` when the transaction reads the database file alone, which
        is then checked by the WAL file's size: every commit would have grown it.
        ``wait_ms`` bounds how long readers still in the WAL may hold the
        checkpoint (writers are held meanwhile); past it the caller copies instead.
        """
        self.frozen = False
        wal = Path(f"{self.path}-wal")
        mode = str(self.conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        busy = 1
        if mode == "wal":
            self.conn.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
            try:
                busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                busy = 1
            finally:
                self.conn.execute("PRAGMA busy_timeout=30000")
        generation = self.begin()
        if mode == "wal" and busy == 0:
            with suppress(OSError):
                self.frozen = wal.stat().st_size == 0
        return generation

    def image_size(self) -> int:
        """Bytes of the database this transaction sees (page count × page size)."""
        c = self.conn
        return int(c.execute("PRAGMA page_count").fetchone()[0]) * int(
            c.execute("PRAGMA page_size").fetchone()[0]
        )

    def quick_check(self, quick_over_bytes: int = 512 << 20) -> tuple[bool, str, str]:
        """Like :func:`check_database`, on the pages this transaction sees."""
        pragma = "quick_check" if self.image_size() > quick_over_bytes else "integrity_check"
        try:
            rows = [r[0] for r in self.conn.execute(f"PRAGMA {pragma}").fetchall()]
        except sqlite3.DatabaseError as exc:
            return False, pragma, str(exc)
        return rows == ["ok"], pragma, "; ".join(rows[:5])

    def capture(self, generation: int) -> Captured:
        c = self.conn
        counts = {
            "papers": c.execute("SELECT count(*) FROM papers").fetchone()[0],
            "pages": c.execute("SELECT count(*) FROM pages").fetchone()[0],
            "vectors": c.execute("SELECT count(*) FROM vectors").fetchone()[0],
        }
        hashes = {r[0] for r in c.execute("SELECT DISTINCT file_sha256 FROM papers")}
        counts["files"] = len(hashes)
        heads = sorted(r[0] for r in c.execute("SELECT version_num FROM alembic_version"))
        page_size = c.execute("PRAGMA page_size").fetchone()[0]
        return Captured(generation, counts, hashes, heads, page_size)

    def embedding(self) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT model, model_revision, dimension FROM vectors LIMIT 1"
        ).fetchone()
        if row is None:
            return {}
        return {"model": row[0], "revision": row[1], "dimension": row[2]}

    def backup_to(
        self,
        dest: Path,
        progress: Callable[[int, int], None] | None = None,
        step_pages: int = STEP_PAGES,
    ) -> None:
        """Copy the pages this read transaction sees into ``dest`` (a new file)."""
        assert self._open, "begin() first: the read transaction pins the snapshot"
        dest.unlink(missing_ok=True)
        target = sqlite3.connect(str(dest), isolation_level=None)
        try:

            def cb(status: int, remaining: int, total: int) -> None:
                if progress:
                    progress(total - remaining, total)

            self.conn.backup(target, pages=step_pages, progress=cb)
        finally:
            target.close()
        with open(dest, "rb+") as f:
            os.fsync(f.fileno())

    def close(self) -> None:
        if self._open:
            with suppress(sqlite3.Error):
                self.conn.execute("COMMIT")
            self._open = False
        self.conn.close()


def page_size_of(path: Path) -> int:
    """The page size from the database header (bytes 16-17; 1 means 65536)."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise DeltaError(f"{path.name} is not a SQLite database")
    size = struct.unpack(">H", header[16:18])[0]
    return 65536 if size == 1 else size


def hash_pages(
    path: Path, page_size: int, algo: PageHash, limit: int | None = None
) -> tuple[bytes, str, int]:
    """(page table of ``path``, SHA-256 of the file, file size).

    ``limit``: read only the first ``limit`` bytes (a frozen live file).
    """
    whole = hashlib.sha256()
    table = bytearray()
    size = 0
    with open(path, "rb") as f:
        while True:
            want = page_size * 1024 if limit is None else min(page_size * 1024, limit - size)
            block = f.read(want) if want > 0 else b""
            if not block:
                break
            whole.update(block)
            size += len(block)
            hash_block(block, page_size, table, algo)
    if size % page_size:
        raise DeltaError("database size is not a multiple of its page size")
    if limit is not None and size != limit:
        raise DeltaError("database file is shorter than its page count")
    return bytes(table), whole.hexdigest(), size


def hash_block(block: bytes, page_size: int, table: bytearray, algo: PageHash) -> None:
    """Append the fingerprint of every page of ``block`` (a whole number of pages)."""
    mv = memoryview(block)
    digest = algo.digest
    for off in range(0, len(block), page_size):
        table += digest(mv[off : off + page_size])


def write_delta(
    image: Path,
    page_size: int,
    parent_table: bytes,
    table: bytes,
    out: IO[bytes],
    algo: PageHash,
) -> int:
    """Write the pages of ``image`` that differ from the parent; returns how many."""
    n = algo.size
    n_pages = len(table) // n
    n_parent = len(parent_table) // n
    changed = [
        i
        for i in range(n_pages)
        if i >= n_parent or table[i * n : (i + 1) * n] != parent_table[i * n : (i + 1) * n]
    ]
    out.write(HEADER.pack(MAGIC, page_size, n_pages, len(changed)))
    with open(image, "rb") as f:
        for i in changed:
            f.seek(i * page_size)
            page = f.read(page_size)
            out.write(PGNO.pack(i))
            out.write(page)
    return len(changed)


def read_delta(stream: IO[bytes]) -> tuple[int, int, Iterator[tuple[int, bytes]]]:
    """(page_size, page_count, iterator of (page index, page bytes))."""
    head = stream.read(HEADER.size)
    if len(head) != HEADER.size:
        raise DeltaError("delta header is truncated")
    magic, page_size, page_count, changed = HEADER.unpack(head)
    if magic != MAGIC:
        raise DeltaError("not a RefServer page delta")

    def pages() -> Iterator[tuple[int, bytes]]:
        for _ in range(changed):
            raw = stream.read(PGNO.size)
            page = stream.read(page_size)
            if len(raw) != PGNO.size or len(page) != page_size:
                raise DeltaError("delta is truncated")
            (idx,) = PGNO.unpack(raw)
            if idx >= page_count:
                raise DeltaError("delta page lies beyond the new page count")
            yield idx, page

    return page_size, page_count, pages()


def apply_delta(image: Path, stream: IO[bytes]) -> None:
    """Patch ``image`` in place with one delta."""
    page_size, page_count, pages = read_delta(stream)
    with open(image, "rb+") as f:
        current = os.fstat(f.fileno()).st_size
        if current % page_size:
            raise DeltaError("delta page size does not match the image")
        for idx, page in pages:
            f.seek(idx * page_size)
            f.write(page)
        f.truncate(page_count * page_size)
        f.flush()
        os.fsync(f.fileno())


def patch_table(table: bytearray, stream: IO[bytes], algo: PageHash) -> None:
    """Update a page table with a delta without an image (to diff the next backup)."""
    _page_size, page_count, pages = read_delta(stream)
    n = algo.size
    for idx, page in pages:
        start = idx * n
        if len(table) < start:
            table.extend(b"\x00" * (start - len(table)))
        table[start : start + n] = algo.digest(page)
    del table[page_count * n :]
    if len(table) < page_count * n:
        raise DeltaError("page table has a hole: the delta chain is inconsistent")


def check_database(path: Path, quick_over_bytes: int = 512 << 20) -> tuple[bool, str, str]:
    """(ok, pragma used, first message) of integrity_check, or quick_check if large.

    Opened read-only and immutable so the checked copy is never changed.
    """
    pragma = "quick_check" if path.stat().st_size > quick_over_bytes else "integrity_check"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return False, pragma, str(exc)
    return rows == ["ok"], pragma, "; ".join(rows[:5])


@contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def describe(path: Path) -> dict[str, Any]:
    """Generation, counts, schema heads and file hashes of a (restored) database copy."""
    with readonly(path) as c:
        row = c.execute("SELECT generation FROM library_state WHERE id = 1").fetchone()
        hashes = {r[0] for r in c.execute("SELECT DISTINCT file_sha256 FROM papers")}
        return {
            "generation": int(row[0]) if row else 0,
            "counts": {
                "papers": c.execute("SELECT count(*) FROM papers").fetchone()[0],
                "pages": c.execute("SELECT count(*) FROM pages").fetchone()[0],
                "vectors": c.execute("SELECT count(*) FROM vectors").fetchone()[0],
                "files": len(hashes),
            },
            "schema_heads": sorted(
                r[0] for r in c.execute("SELECT version_num FROM alembic_version")
            ),
            "file_hashes": hashes,
        }
