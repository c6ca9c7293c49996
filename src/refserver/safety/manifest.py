"""The self-describing backup manifest (DESIGN.md §6).

Every backup writes ``backups/metadata/<id>.json``. The folder of manifests is the
authority on what backups exist: listing, verifying and restoring work with the
live database gone. The ``backups`` table is only an index rebuilt from here.

A manifest carries its own SHA-256 (over the canonical JSON of every other field),
so an edited or truncated manifest is refused instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from refserver.storage.files import fsync_dir

FORMAT = 1
KINDS = ("snapshot", "full", "incremental")
ID_RE = re.compile(r"^\d{8}T\d{6}Z-(snapshot|full|incremental)-[0-9a-f]{4,8}$")


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or fails its own checksum."""


@dataclass
class Member:
    """One stored object of a backup, relative to the backups folder."""

    name: str
    role: str  # sqlite | sqlite_delta | page_hashes | chromadb | file
    size_raw: int
    size_compressed: int
    sha256: str  # of the raw (decompressed) bytes
    compression: str
    sha256_stored: str | None = None  # of the stored (compressed) bytes, when known


@dataclass
class Manifest:
    id: str
    kind: str
    created: str
    created_ts: float
    parent: str | None = None
    base: str | None = None
    chain_depth: int = 0
    unified: bool = False
    tier: str = "snapshots"
    generation: int = 0
    duration_seconds: float = 0.0
    app_version: str = ""
    schema_revision: str | None = None
    schema_heads: list[str] = field(default_factory=list)
    embedding: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    sqlite: dict[str, Any] = field(default_factory=dict)
    chroma: dict[str, Any] = field(default_factory=dict)
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    # PDFs the database referenced that the live store had lost when this backup
    # was taken: the restore reports them instead of refusing the whole library.
    files_missing: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    compression: str = "zstd"
    compression_level: int | None = None  # absent in manifests before it was recorded (zstd 3)
    description: str = ""
    retention_days: int | None = None
    status: str = "running"  # running | verifying | completed | failed
    verified: bool = False
    verified_at: str | None = None
    error: str | None = None
    barrier_ms: float = 0.0
    safety_for: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    format: int = FORMAT

    # --- derived ---------------------------------------------------------------
    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created_ts, UTC)

    @property
    def size_raw(self) -> int:
        return sum(m.size_raw for m in self.members if not self._shared(m))

    @property
    def size_compressed(self) -> int:
        return sum(m.size_compressed for m in self.members if not self._shared(m))

    def _shared(self, m: Member) -> bool:
        # A full lists every file it needs; only the ones it added count as its size.
        return m.role == "file" and m.sha256 not in self.files_added

    @property
    def checksum(self) -> str | None:
        """The SHA-256 of the main SQLite member: the one checksum an API record shows."""
        for m in self.members:
            if m.role in ("sqlite", "sqlite_delta"):
                return m.sha256_stored or m.sha256
        return None

    def members_by_role(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["manifest_sha256"] = _digest(data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check: bool = True) -> Manifest:
        data = dict(data)
        claimed = data.pop("manifest_sha256", None)
        if check and claimed != _digest(data):
            raise ManifestError(
                f"manifest {data.get('id')!r} fails its checksum (edited or damaged)"
            )
        members = [Member(**m) for m in data.pop("members", [])]
        known = set(cls.__dataclass_fields__)
        extra = {k: v for k, v in data.items() if k not in known}
        if extra:
            raise ManifestError(f"manifest has unknown fields: {', '.join(sorted(extra))}")
        return cls(members=members, **data)


def _digest(data: dict[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def new_id(kind: str, metadata_dir: Path, now: datetime | None = None) -> str:
    """``20261127T063501Z-full-3f9a``: sortable by time, unique within a second."""
    if kind not in KINDS:
        raise ValueError(f"backup kind must be one of {', '.join(KINDS)}")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    while True:
        candidate = f"{stamp}-{kind}-{secrets.token_hex(2)}"
        if not (metadata_dir / f"{candidate}.json").exists():
            return candidate


def valid_id(backup_id: str) -> bool:
    return bool(ID_RE.match(backup_id))


def manifest_path(metadata_dir: Path, backup_id: str) -> Path:
    if not valid_id(backup_id):
        raise ManifestError(f"not a backup id: {backup_id!r}")
    return metadata_dir / f"{backup_id}.json"


def write_manifest(metadata_dir: Path, manifest: Manifest) -> Path:
    """Write atomically (temp file, fsync, rename, fsync folder)."""
    metadata_dir.mkdir(parents=True, exist_ok=True)
    dest = manifest_path(metadata_dir, manifest.id)
    fd, tmp = tempfile.mkstemp(dir=metadata_dir, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest.to_dict(), f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(metadata_dir)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def read_manifest(metadata_dir: Path, backup_id: str) -> Manifest:
    path = manifest_path(metadata_dir, backup_id)
    if not path.exists():
        raise ManifestError(f"no manifest for backup {backup_id}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest {backup_id} is unreadable: {exc}") from exc
    m = Manifest.from_dict(data)
    if m.id != backup_id:
        raise ManifestError(f"manifest {path.name} names another backup ({m.id})")
    return m


def list_manifests(metadata_dir: Path) -> tuple[list[Manifest], list[str]]:
    """Every readable manifest, oldest first, plus the names that failed to load."""
    out: list[Manifest] = []
    bad: list[str] = []
    if not metadata_dir.exists():
        return out, bad
    for path in sorted(metadata_dir.glob("*.json")):
        if not valid_id(path.stem):
            continue
        try:
            out.append(read_manifest(metadata_dir, path.stem))
        except ManifestError:
            bad.append(path.stem)
    out.sort(key=lambda m: (m.created_ts, m.id))
    return out, bad


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
