"""Content-addressed, immutable PDF store (DESIGN.md §5).

A PDF is stored once under its SHA-256 and never changed in place; writes go to
a temporary file, are fsynced and renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.pdf"

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def put(self, src: Path, sha256: str | None = None) -> str:
        """Store ``src`` (copied, not moved) and return its SHA-256."""
        sha256 = sha256 or sha256_file(src)
        dest = self.path_for(sha256)
        if dest.exists():
            return sha256
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256

    def remove(self, sha256: str) -> bool:
        path = self.path_for(sha256)
        if path.exists():
            path.unlink()
            return True
        return False

    def iter_files(self) -> Iterator[tuple[str, Path]]:
        """Every stored PDF as (sha256 from its name, path); skips temporaries."""
        for path in sorted(self.root.glob("*/*.pdf")):
            yield path.stem, path

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for _, p in self.iter_files())
