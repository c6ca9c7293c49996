"""Verification of backups: checksums re-read, SQLite checked, ChromaDB opened in a child.

A backup is trusted only after its stored bytes were read back and hashed, the
database copy passed ``PRAGMA integrity_check`` (``quick_check`` above a size
threshold), and the ChromaDB copy was opened — in a separate process and a
scratch folder, because a corrupted Chroma folder can crash the process that
opens it (STACK.md) — and held the vector count the manifest records.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refserver.safety.archive import read_member
from refserver.safety.manifest import Manifest, Member

CHROMA_TIMEOUT_S = 300


@dataclass
class Check:
    name: str
    status: str  # passed | failed | skipped
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class VerifyResult:
    backup_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, "passed" if ok else "failed", detail))
        return ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "integrity_check": "passed" if self.ok else "failed",
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
        }


class VerificationFailed(RuntimeError):
    """A backup failed a check; nothing live was touched."""

    def __init__(self, result: VerifyResult) -> None:
        failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
        super().__init__("; ".join(failed) or "verification failed")
        self.result = result


def check_member(
    backups_dir: Path,
    m: Member,
    progress: Callable[[int], None] | None = None,
    *,
    fresh: bool = False,
) -> Check:
    """Re-read one stored member and compare sizes and SHA-256s with the manifest.

    ``fresh``: the member was just written from bytes whose SHA-256 this backup
    computed; the stored bytes are re-read and hashed, and decompression is
    proven by the stream's own content checksum instead of a second SHA-256
    of the content (later verifications and every restore hash it in full).
    """
    path = backups_dir / m.name
    if not path.is_file():
        return Check(f"member:{m.name}", "failed", "missing")
    try:
        r = read_member(path, m.compression, progress=progress, hash_raw=not fresh)
    except Exception as exc:  # a damaged stream raises from the decompressor
        return Check(f"member:{m.name}", "failed", f"unreadable: {exc}")
    problems = []
    if r.sha256 and r.sha256 != m.sha256:
        problems.append("content SHA-256 differs")
    if r.size_raw != m.size_raw:
        problems.append(f"size {r.size_raw} != {m.size_raw}")
    if m.sha256_stored and r.sha256_stored != m.sha256_stored:
        problems.append("stored SHA-256 differs")
    if r.size_compressed != m.size_compressed:
        problems.append(f"stored size {r.size_compressed} != {m.size_compressed}")
    if problems:
        return Check(f"member:{m.name}", "failed", ", ".join(problems))
    return Check(f"member:{m.name}", "passed", f"{m.size_raw} bytes")


def check_members(
    backups_dir: Path,
    manifest: Manifest,
    roles: tuple[str, ...] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Check]:
    """One check per non-file member, one summary check for the PDFs (they can be many)."""
    checks: list[Check] = []
    bad_files: list[str] = []
    n_files = 0
    for m in manifest.members:
        if roles is not None and m.role not in roles:
            continue
        c = check_member(backups_dir, m, progress)
        if m.role == "file":
            n_files += 1
            if not c.ok:
                bad_files.append(f"{m.sha256[:12]} {c.detail}")
        else:
            checks.append(c)
    if n_files:
        checks.append(
            Check(
                "files",
                "failed" if bad_files else "passed",
                "; ".join(bad_files[:10]) if bad_files else f"{n_files} PDF(s) re-read",
            )
        )
    return checks


def chroma_counts_in_child(
    folder: Path, timeout: float = CHROMA_TIMEOUT_S, *, in_place: bool = False
) -> dict[str, int]:
    """Open a scratch copy of a Chroma folder in a child process; return its counts.

    ``in_place``: ``folder`` is already a disposable copy (a backup's staging
    folder whose tar is written): open it there instead of copying it again.
    Raises RuntimeError when the child fails or crashes (e.g. a segfault).
    """
    with tempfile.TemporaryDirectory(prefix="chroma-verify-") as scratch:
        copy = folder if in_place else Path(scratch) / "chroma"
        if not in_place:
            shutil.copytree(folder, copy)
        from refserver.safety.chroma_probe import counts_in_child  # imports chromadb

        return counts_in_child(copy, timeout)


def check_chroma(folder: Path, expected: dict[str, int], *, in_place: bool = False) -> Check:
    try:
        counts = chroma_counts_in_child(folder, in_place=in_place)
    except Exception as exc:
        return Check("chromadb", "failed", str(exc))
    wrong = {k: (counts.get(k, 0), v) for k, v in expected.items() if counts.get(k, 0) != v}
    if wrong:
        detail = ", ".join(f"{k}: {got} != {want}" for k, (got, want) in wrong.items())
        return Check("chromadb", "failed", f"vector counts differ: {detail}")
    return Check("chromadb", "passed", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
