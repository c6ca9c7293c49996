"""Offsite copies of completed backups: a folder/mount, an SFTP server or S3 storage.

A backup lives in ``backups/`` as members named in its manifest
(``backups/metadata/<id>.json``, DESIGN.md §6). An offsite copy holds, per backup,
a *catalog* (``catalog/<id>.json``, or ``.json.enc`` when encrypted) and the
members as content-addressed *objects* (``objects/<sha[:2]>/<sha>``), so a PDF
shared by many backups is sent once. Every push is verified by reading the copy
back (download) and hashing it.

Optional client-side encryption: AES-256-GCM in 1 MiB chunks (a STREAM
construction: each chunk's nonce carries its index and the last chunk is flagged
in the authenticated data, so reordering, truncation and tampering all fail to
decrypt). The key is a file the user keeps away from the server; with it alone an
encrypted copy can be listed, verified and restored. Object names are then HMACs
of the checksums, so the storage provider cannot tell which known PDF is stored.

Encrypted object format (for recovery without RefServer): ``b"RSOFFENC1"`` + an
8-byte random nonce prefix, then chunks of ``u32 BE ciphertext length``, ``u8 final
flag``, ciphertext (AES-256-GCM, tag included). Chunk *i* uses nonce = prefix +
``u32 BE i`` and associated data = the 17-byte header + ``u64 BE i`` + final flag.
The AES key is HMAC-SHA256(key file bytes, ``b"refserver-offsite-encrypt"``); the
key file holds 32 random bytes, URL-safe base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import posixpath
import secrets
import shutil
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAGIC = b"RSOFFENC1"
CATALOG_FORMAT = 1
SAFE_TOPS = ("metadata", "sqlite", "chromadb", "files", "incremental", "snapshots")


class OffsiteError(RuntimeError):
    """A push, verification or pull could not be completed (the message says why)."""


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None) if settings is not None else None
    return default if value is None else value


# --- keys and encryption ----------------------------------------------------------


@dataclass(frozen=True)
class OffsiteKey:
    """The user's key file, split into independent keys for encryption and names."""

    master: bytes

    @property
    def enc(self) -> bytes:
        return hmac.new(self.master, b"refserver-offsite-encrypt", hashlib.sha256).digest()

    @property
    def names(self) -> bytes:
        return hmac.new(self.master, b"refserver-offsite-names", hashlib.sha256).digest()

    @property
    def key_id(self) -> str:
        return hmac.new(self.master, b"refserver-offsite-id", hashlib.sha256).hexdigest()[:16]


def generate_key(path: Path) -> OffsiteKey:
    """Write a new random 256-bit key file (mode 0600); refuses to overwrite one."""
    path = Path(path)
    if path.exists():
        raise OffsiteError(
            f"{path} exists: refusing to overwrite a key (copies made with it need it)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    master = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.urlsafe_b64encode(master).decode() + "\n")
    return OffsiteKey(master)


def load_key(path: Path | str) -> OffsiteKey:
    try:
        raw = Path(path).read_text().strip()
        master = base64.urlsafe_b64decode(raw)
    except (OSError, ValueError) as exc:
        raise OffsiteError(f"cannot read the offsite key file {path}: {exc}") from exc
    if len(master) != 32:
        raise OffsiteError(f"{path} is not a RefServer offsite key (expected 32 bytes, base64)")
    return OffsiteKey(master)


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">Q?", index, final)


def encrypt_file(src: Path, dest: Path, key: OffsiteKey) -> None:
    """Encrypt ``src`` into ``dest`` chunk by chunk (memory stays ~2 MiB)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(key.enc)
    header = MAGIC + secrets.token_bytes(8)
    with open(src, "rb") as inp, open(dest, "wb") as out:
        out.write(header)
        index = 0
        block = inp.read(CHUNK)
        while True:
            nxt = inp.read(CHUNK) if block else b""
            final = not nxt
            nonce = header[len(MAGIC) :] + struct.pack(">I", index)
            ct = aes.encrypt(nonce, block, _aad(header, index, final))
            out.write(struct.pack(">I?", len(ct), final) + ct)
            if final:
                break
            block, index = nxt, index + 1
        out.flush()
        os.fsync(out.fileno())


def decrypt_file(src: Path, sink: IO[bytes], key: OffsiteKey) -> None:
    """Decrypt ``src`` into ``sink``; any tampering, reordering or truncation raises."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(key.enc)
    with open(src, "rb") as inp:
        header = inp.read(len(MAGIC) + 8)
        if len(header) != len(MAGIC) + 8 or not header.startswith(MAGIC):
            raise OffsiteError("not an encrypted RefServer offsite object (or a wrong format)")
        index = 0
        while True:
            head = inp.read(5)
            if len(head) != 5:
                raise OffsiteError("encrypted object is truncated (its last chunk is missing)")
            length, final = struct.unpack(">I?", head)
            if length > CHUNK + 16:
                raise OffsiteError("encrypted object is damaged (a chunk is too long)")
            ct = inp.read(length)
            nonce = header[len(MAGIC) :] + struct.pack(">I", index)
            try:
                sink.write(aes.decrypt(nonce, ct, _aad(header, index, final)))
            except InvalidTag:
                raise OffsiteError(
                    "decryption failed: wrong key file, or the copy was changed or damaged"
                ) from None
            if final:
                if inp.read(1):
                    raise OffsiteError("encrypted object has data after its final chunk")
                return
            index += 1


class _HashSink:
    def __init__(self, out: IO[bytes] | None = None) -> None:
        self.h = hashlib.sha256()
        self.n = 0
        self.out = out

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        if self.out is not None:
            self.out.write(b)
        return len(b)


def sha256_path(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


# --- targets ---------------------------------------------------------------------------


class Target:
    """Where offsite copies go. Keys are relative POSIX paths under the target's root."""

    description = "target"

    def put_file(self, key: str, path: Path) -> None:
        raise OffsiteError(f"{type(self).__name__} cannot store files")

    def get_file(self, key: str, path: Path) -> None:
        raise OffsiteError(f"{type(self).__name__} cannot read files")

    def exists(self, key: str) -> bool:
        raise OffsiteError(f"{type(self).__name__} cannot check files")

    def list(self, prefix: str) -> list[str]:
        raise OffsiteError(f"{type(self).__name__} cannot list files")

    def delete(self, key: str) -> None:
        raise OffsiteError(f"{type(self).__name__} cannot delete files")

    def close(self) -> None:
        return None

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_key(key: str) -> str:
    p = PurePosixPath(key)
    if p.is_absolute() or any(part in ("", "..", ".") for part in p.parts) or "\\" in key:
        raise OffsiteError(f"unsafe offsite name: {key!r}")
    return key


class LocalTarget(Target):
    """Another folder or a mounted disk (USB drive, NFS, SMB)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.description = f"folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as inp:
                shutil.copyfileobj(inp, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise OffsiteError(f"{key} is missing from {self.description}")
        shutil.copyfile(src, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root / _check_key(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root).as_posix())
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".incoming-")
        )


class SFTPTarget(Target):
    """An SSH server (paramiko); host keys are checked against a known_hosts file."""

    def __init__(
        self,
        host: str,
        root: str,
        *,
        port: int = 22,
        username: str | None = None,
        key_file: str | None = None,
        password: str | None = None,
        known_hosts: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        import paramiko

        self.root = root.rstrip("/") or "/"
        self.description = f"sftp://{username + '@' if username else ''}{host}:{port}{self.root}"
        self.ssh = paramiko.SSHClient()
        hosts = Path(known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        if hosts.exists():
            self.ssh.load_host_keys(str(hosts))
        # An unknown host key is refused: a copy must not go to an impostor.
        self.ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.ssh.connect(
                host,
                port=port,
                username=username,
                key_filename=key_file,
                password=password,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
            )
        except paramiko.SSHException as exc:
            raise OffsiteError(
                f"cannot connect to {self.description}: {exc} (is its host key in {hosts}?)"
            ) from exc
        except OSError as exc:
            raise OffsiteError(f"cannot connect to {self.description}: {exc}") from exc
        self.sftp = self.ssh.open_sftp()

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, _check_key(key))

    def _mkdirs(self, folder: str) -> None:
        parts: list[str] = []
        while folder not in ("", "/"):
            try:
                self.sftp.stat(folder)
                break
            except FileNotFoundError:
                parts.append(folder)
                folder = posixpath.dirname(folder)
        for p in reversed(parts):
            self.sftp.mkdir(p)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        self._mkdirs(posixpath.dirname(dest))
        tmp = posixpath.join(posixpath.dirname(dest), f".incoming-{secrets.token_hex(6)}")
        self.sftp.put(str(path), tmp, confirm=True)
        self.sftp.posix_rename(tmp, dest)

    def get_file(self, key: str, path: Path) -> None:
        try:
            self.sftp.get(self._path(key), str(path))
        except FileNotFoundError:
            raise OffsiteError(f"{key} is missing from {self.description}") from None

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(self.sftp.stat(self._path(key)).st_mode or 0)
        except FileNotFoundError:
            return False

    def delete(self, key: str) -> None:
        try:
            self.sftp.remove(self._path(key))
        except FileNotFoundError:
            return

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        stack = [self._path(prefix)]
        while stack:
            folder = stack.pop()
            try:
                entries = self.sftp.listdir_attr(folder)
            except FileNotFoundError:
                continue
            for e in entries:
                full = posixpath.join(folder, e.filename)
                if stat.S_ISDIR(e.st_mode or 0):
                    stack.append(full)
                elif not e.filename.startswith(".incoming-"):
                    out.append(posixpath.relpath(full, self.root))
        return sorted(out)

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.ssh.close()


class S3Target(Target):
    """S3 or any S3-compatible object storage (boto3; multipart for large objects)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.description = f"s3://{bucket}/{self.prefix}" + (
            f" at {endpoint_url}" if endpoint_url else ""
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
        )

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def get_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as exc:
            raise OffsiteError(f"{key} is missing from {self.description}: {exc}") from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        full = self._key(prefix)
        strip = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        ):
            for obj in page.get("Contents", []):
                out.append(obj["Key"][len(strip) :])
        return sorted(out)

    def close(self) -> None:
        self.client.close()


def open_target(spec: str, settings: Any = None) -> Target:
    """A target from ``/path``, ``file:///path``, ``sftp://user@host:port/path`` or ``s3://bucket/prefix``.

    Credentials never go in the URL: SFTP uses ``offsite_sftp_key_file`` /
    ``offsite_sftp_password`` and ``offsite_sftp_known_hosts``; S3 uses
    ``offsite_s3_endpoint_url``, ``offsite_s3_region`` and ``offsite_s3_access_key`` /
    ``offsite_s3_secret_key`` (else the usual AWS environment and config files).
    """
    spec = str(spec).strip()
    if not spec:
        raise OffsiteError("no offsite target: set REFSERVER_OFFSITE_TARGET or pass --target")
    url = urlparse(spec)
    if url.scheme in ("", "file"):
        path = unquote(url.path) if url.scheme == "file" else spec
        return LocalTarget(Path(path).expanduser())
    if url.scheme == "sftp":
        if not url.hostname:
            raise OffsiteError(f"no host in {spec!r}")
        return SFTPTarget(
            url.hostname,
            unquote(url.path) or "/",
            port=url.port or 22,
            username=url.username or None,
            key_file=_setting(settings, "offsite_sftp_key_file", None),
            password=_setting(settings, "offsite_sftp_password", None),
            known_hosts=_setting(settings, "offsite_sftp_known_hosts", None),
        )
    if url.scheme == "s3":
        if not url.hostname:
            raise OffsiteError(f"no bucket in {spec!r}")
        return S3Target(
            url.hostname,
            unquote(url.path),
            endpoint_url=_setting(settings, "offsite_s3_endpoint_url", None),
            region=_setting(settings, "offsite_s3_region", None),
            access_key=_setting(settings, "offsite_s3_access_key", None),
            secret_key=_setting(settings, "offsite_s3_secret_key", None),
        )
    raise OffsiteError(f"unsupported offsite target {spec!r} (use a path, sftp:// or s3://)")


# --- catalogs ----------------------------------------------------------------------------


def _catalog_key(backup_id: str, encrypted: bool) -> str:
    return f"catalog/{backup_id}.json" + (".enc" if encrypted else "")


def _object_key(sha256: str, key: OffsiteKey | None) -> str:
    name = (
        sha256 if key is None else hmac.new(key.names, sha256.encode(), hashlib.sha256).hexdigest()
    )
    return f"objects/{name[:2]}/{name}"


@dataclass
class PushResult:
    backup_id: str
    pushed: bool = False
    skipped: bool = False
    verified: bool = False
    objects_sent: int = 0
    bytes_sent: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read_catalog(
    target: Target, backup_id: str, key: OffsiteKey | None, scratch: Path
) -> dict[str, Any]:
    encrypted = key is not None
    ck = _catalog_key(backup_id, encrypted)
    if not target.exists(ck):
        other = _catalog_key(backup_id, not encrypted)
        if target.exists(other):
            raise OffsiteError(
                f"backup {backup_id} on {target.description} is "
                + (
                    "encrypted: pass the key file (--key)"
                    if not encrypted
                    else "not encrypted: omit --key"
                )
            )
        raise OffsiteError(f"backup {backup_id} is not on {target.description}")
    raw = scratch / f"{backup_id}.catalog"
    target.get_file(ck, raw)
    if key is not None:
        plain = scratch / f"{backup_id}.catalog.json"
        with open(plain, "wb") as out:
            decrypt_file(raw, out, key)
        raw = plain
    data = json.loads(raw.read_text())
    if data.get("backup_id") != backup_id:
        raise OffsiteError(f"catalog {ck} names another backup ({data.get('backup_id')})")
    if key is not None and data.get("key_id") != key.key_id:
        raise OffsiteError(
            f"backup {backup_id} was encrypted with another key ({data.get('key_id')})"
        )
    return data


def list_remote(target: Target, key: OffsiteKey | None = None) -> list[str]:
    """Backup ids with a catalog on the target (encrypted ones only with ``key``)."""
    suffix = ".json.enc" if key is not None else ".json"
    ids = set()
    for name in target.list("catalog"):
        base = posixpath.basename(name)
        if base.endswith(suffix):
            ids.add(base[: -len(suffix)])
    return sorted(ids)


def _put_object(target: Target, src: Path, obj: str, key: OffsiteKey | None, scratch: Path) -> int:
    if key is None:
        target.put_file(obj, src)
        return src.stat().st_size
    enc = scratch / "upload.enc"
    encrypt_file(src, enc, key)
    try:
        target.put_file(obj, enc)
        return enc.stat().st_size
    finally:
        enc.unlink(missing_ok=True)


def _fetch_object(
    target: Target, obj: str, key: OffsiteKey | None, scratch: Path, out: IO[bytes] | None
) -> tuple[str, int]:
    """Download ``obj``; returns the sha256 and size of its (decrypted) bytes."""
    raw = scratch / "download.obj"
    target.get_file(obj, raw)
    try:
        sink = _HashSink(out)
        if key is None:
            with open(raw, "rb") as f:
                while block := f.read(CHUNK):
                    sink.write(block)
        else:
            decrypt_file(raw, sink, key)  # type: ignore[arg-type]
        return sink.h.hexdigest(), sink.n
    finally:
        raw.unlink(missing_ok=True)


def _members_of(backups_dir: Path, backup_id: str) -> tuple[Any, list[dict[str, Any]]]:
    """The manifest and every file (manifest included) a backup consists of."""
    from refserver.safety.manifest import read_manifest

    manifest = read_manifest(backups_dir / "metadata", backup_id)
    items = [
        {"name": f"metadata/{backup_id}.json", "role": "manifest", "sha256": None, "size": None}
    ]
    for m in manifest.members:
        items.append(
            {"name": m.name, "role": m.role, "sha256": m.sha256_stored, "size": m.size_compressed}
        )
    return manifest, items


def push_backup(
    backups_dir: Path,
    backup_id: str,
    target: Target,
    key: OffsiteKey | None = None,
    *,
    verify: bool = True,
    verify_existing: bool = True,
    force: bool = False,
) -> PushResult:
    """Copy one completed backup to ``target``, then read it back and check its checksums.

    Objects already on the target (a PDF an earlier backup sent) are neither hashed
    again locally nor downloaded: they were verified when they were sent, so an
    hourly push costs what changed. ``verify_remote`` without ``fresh`` (the
    ``refserver offsite verify`` command) downloads everything.
    """
    res = PushResult(backup_id)
    encrypted = key is not None
    if not force and target.exists(_catalog_key(backup_id, encrypted)):
        res.skipped = True
        if verify and verify_existing:
            check = verify_remote(target, backup_id, key)
            res.verified, res.problems = check["ok"], check["problems"]
        return res
    manifest, items = _members_of(backups_dir, backup_id)
    if manifest.status != "completed":
        raise OffsiteError(
            f"backup {backup_id} is {manifest.status}, not completed: not copied offsite"
        )
    with tempfile.TemporaryDirectory(prefix="offsite-") as tmp:
        scratch = Path(tmp)
        entries = []
        sent: set[str] = set()
        for item in items:
            src = backups_dir / _check_key(item["name"])
            if item["sha256"] and item["size"] is not None and not force:
                known = _object_key(item["sha256"], key)
                if target.exists(known):
                    entries.append({**item, "object": known})
                    continue
            if not src.is_file():
                raise OffsiteError(
                    f"backup {backup_id} lacks its member {item['name']}: not copied"
                )
            sha, size = sha256_path(src)
            if item["sha256"] and item["sha256"] != sha:
                raise OffsiteError(
                    f"member {item['name']} of {backup_id} no longer matches its manifest "
                    "checksum (local copy damaged): not copied offsite"
                )
            obj = _object_key(sha, key)
            if force or not target.exists(obj):
                res.bytes_sent += _put_object(target, src, obj, key, scratch)
                res.objects_sent += 1
                sent.add(obj)
            entries.append({**item, "sha256": sha, "size": size, "object": obj})
        catalog = {
            "format": CATALOG_FORMAT,
            "backup_id": backup_id,
            "kind": manifest.kind,
            "parent": manifest.parent,
            "created": manifest.created,
            "generation": manifest.generation,
            "encrypted": encrypted,
            "key_id": key.key_id if key else None,
            "pushed_at": datetime.now(UTC).isoformat(),
            "members": entries,
        }
        plain = scratch / "catalog.json"
        plain.write_text(json.dumps(catalog, indent=1, sort_keys=True))
        # The catalog goes last: a backup is listed offsite only once all its members are.
        _put_object(target, plain, _catalog_key(backup_id, encrypted), key, scratch)
    res.pushed = True
    if verify:
        check = verify_remote(target, backup_id, key, fresh=sent)
        res.verified, res.problems = check["ok"], check["problems"]
    return res


def verify_remote(
    target: Target, backup_id: str, key: OffsiteKey | None = None, fresh: set[str] | None = None
) -> dict[str, Any]:
    """Download the objects of a backup's offsite copy and compare their checksums.

    With ``fresh`` (the objects a push just sent), the other objects are only
    checked to exist (they were verified when sent); without it, all are downloaded.
    """
    problems: list[str] = []
    checked = 0
    with tempfile.TemporaryDirectory(prefix="offsite-verify-") as tmp:
        scratch = Path(tmp)
        try:
            catalog = _read_catalog(target, backup_id, key, scratch)
        except OffsiteError as exc:
            return {"backup_id": backup_id, "ok": False, "checked": 0, "problems": [str(exc)]}
        for entry in catalog["members"]:
            if fresh is not None and entry["object"] not in fresh:
                if not target.exists(entry["object"]):
                    problems.append(f"{entry['name']}: missing from the offsite copy")
                continue
            try:
                sha, size = _fetch_object(target, entry["object"], key, scratch, None)
            except OffsiteError as exc:
                problems.append(f"{entry['name']}: {exc}")
                continue
            checked += 1
            if sha != entry["sha256"] or size != entry["size"]:
                problems.append(f"{entry['name']}: checksum mismatch in the offsite copy")
    return {"backup_id": backup_id, "ok": not problems, "checked": checked, "problems": problems}


def _chain(
    target: Target, backup_id: str, key: OffsiteKey | None, scratch: Path
) -> list[dict[str, Any]]:
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = backup_id
    while current:
        if current in seen:
            raise OffsiteError(f"backup chain of {backup_id} loops at {current}")
        seen.add(current)
        catalog = _read_catalog(target, current, key, scratch)
        chain.append(catalog)
        current = catalog.get("parent")
    return list(reversed(chain))


def pull(
    target: Target,
    dest_backups_dir: Path,
    key: OffsiteKey | None = None,
    backup_id: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Restore offsite copies into a (new) backups folder, verifying every byte.

    ``backup_id`` pulls that backup and the chain it depends on; without it, every
    backup on the target. Existing identical files are kept; nothing outside
    ``dest_backups_dir`` is written (names are checked).
    """
    dest_backups_dir = Path(dest_backups_dir)
    ids = [backup_id] if backup_id else list_remote(target, key)
    if not ids:
        raise OffsiteError(
            f"no backups on {target.description}"
            + ("" if key else " (encrypted copies are listed only with --key)")
        )
    pulled: list[str] = []
    files = 0
    with tempfile.TemporaryDirectory(prefix="offsite-pull-") as tmp:
        scratch = Path(tmp)
        catalogs: dict[str, dict[str, Any]] = {}
        for bid in ids:
            for cat in _chain(target, bid, key, scratch):
                catalogs.setdefault(cat["backup_id"], cat)
        for bid, cat in sorted(catalogs.items()):
            # Members first, the manifest last: a manifest appears only with its members.
            entries = sorted(cat["members"], key=lambda e: e["role"] == "manifest")
            for entry in entries:
                from refserver.safety.archive import safe_name

                rel = safe_name(entry["name"])
                dest = dest_backups_dir / Path(*rel.parts)
                if dest.is_file() and sha256_path(dest)[0] == entry["sha256"]:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, part = tempfile.mkstemp(dir=dest.parent, prefix=".offsite-")
                try:
                    with os.fdopen(fd, "wb") as out:
                        sha, size = _fetch_object(target, entry["object"], key, scratch, out)
                        out.flush()
                        os.fsync(out.fileno())
                    if sha != entry["sha256"] or size != entry["size"]:
                        raise OffsiteError(
                            f"{entry['name']} of {bid}: the offsite copy fails its checksum"
                        )
                    os.replace(part, dest)
                except BaseException:
                    Path(part).unlink(missing_ok=True)
                    raise
                files += 1
            pulled.append(bid)
            if progress:
                progress(bid)
    return {"pulled": pulled, "files_written": files, "target": target.description}


def prune_remote(
    target: Target,
    key: OffsiteKey | None,
    keep_days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Offsite retention: drop backups older than ``keep_days``, then unreferenced objects.

    Judged from the offsite catalogs alone (never from the local folder, which may be
    the thing that was lost). Always kept: the newest full, every backup younger than
    ``keep_days`` and every backup a kept incremental needs. Any unreadable catalog
    stops the prune before anything is deleted.
    """
    now = now or datetime.now(UTC)
    cutoff = now.timestamp() - keep_days * 86400
    other = ".json" if key is not None else ".json.enc"
    if any(posixpath.basename(n).endswith(other) for n in target.list("catalog")):
        raise OffsiteError(
            f"{target.description} holds both encrypted and unencrypted copies: prune refused "
            "(it could not tell which objects the other kind needs)"
        )
    with tempfile.TemporaryDirectory(prefix="offsite-prune-") as tmp:
        scratch = Path(tmp)
        catalogs = {
            bid: _read_catalog(target, bid, key, scratch) for bid in list_remote(target, key)
        }
    if not catalogs:
        return {"removed": [], "kept": [], "objects_removed": 0, "dry_run": dry_run}

    def ts(cat: dict[str, Any]) -> float:
        return datetime.fromisoformat(str(cat["created"]).replace("Z", "+00:00")).timestamp()

    keep = {bid for bid, cat in catalogs.items() if ts(cat) >= cutoff}
    fulls = sorted(
        (b for b, c in catalogs.items() if c.get("kind") == "full"), key=lambda b: ts(catalogs[b])
    )
    if fulls:
        keep.add(fulls[-1])
    for bid in list(keep):
        parent = catalogs[bid].get("parent")
        while parent and parent in catalogs and parent not in keep:
            keep.add(parent)
            parent = catalogs[parent].get("parent")
    removed = sorted(set(catalogs) - keep)
    needed = {e["object"] for bid in keep for e in catalogs[bid]["members"]}
    encrypted = key is not None
    objects = [o for o in target.list("objects") if o not in needed]
    if not dry_run:
        for bid in removed:  # catalogs first: a half-pruned backup is simply not listed
            target.delete(_catalog_key(bid, encrypted))
        for obj in objects:
            target.delete(obj)
    return {
        "removed": removed,
        "kept": sorted(keep),
        "objects_removed": len(objects),
        "dry_run": dry_run,
    }


# --- what the scheduler and the CLI call ---------------------------------------------------


def completed_backups(backups_dir: Path) -> list[str]:
    """Ids of completed, verified backups, oldest first (the only ones copied offsite)."""
    from refserver.safety.manifest import list_manifests

    manifests, _bad = list_manifests(backups_dir / "metadata")
    return [m.id for m in manifests if m.status == "completed" and m.verified]


def configured(settings: Any) -> tuple[Target, OffsiteKey | None]:
    target = open_target(str(_setting(settings, "offsite_target", "") or ""), settings)
    key_file = _setting(settings, "offsite_key_file", None)
    return target, (load_key(key_file) if key_file else None)


def push_and_record(
    ctx: Any, target_spec: str | None = None, key_file: str | None = None
) -> dict[str, Any]:
    """Push every completed backup not yet offsite, verify, and record a CheckRun(kind="offsite")."""
    from refserver.storage.models import CheckRun

    settings = ctx.settings
    started = datetime.now(UTC)
    spec = target_spec or str(_setting(settings, "offsite_target", "") or "")
    kf = key_file or _setting(settings, "offsite_key_file", None)
    results: list[dict[str, Any]] = []
    error: str | None = None
    description = spec
    try:
        key = load_key(kf) if kf else None
        with open_target(spec, settings) as target:
            description = target.description
            known = previously_verified(ctx, description)
            for bid in completed_backups(settings.backups_dir):
                r = push_backup(
                    settings.backups_dir, bid, target, key, verify_existing=bid not in known
                )
                if r.skipped and bid in known:
                    r.verified = True  # verified by an earlier push or `offsite verify`
                results.append(r.as_dict())
    except Exception as exc:  # recorded: readiness and alerts read this run
        error = f"{type(exc).__name__}: {exc}"
        log.error("offsite push failed: %s", error)
    ok = error is None and bool(results) and all(r["verified"] for r in results)
    summary = {
        "target": description,
        "encrypted": bool(kf),
        "backups": results,
        "verified_ids": [r["backup_id"] for r in results if r["verified"]],
        "error": error or (None if results else "no completed backup to copy"),
    }
    with ctx.db.write(bump=False) as s:
        s.add(
            CheckRun(
                kind="offsite",
                status="passed" if ok else "failed",
                started_at=started,
                finished_at=datetime.now(UTC),
                total_issues=sum(len(r["problems"]) for r in results) + (1 if error else 0),
                result=summary,
            )
        )
    if error:
        raise OffsiteError(error.split(": ", 1)[-1])
    return {"ok": ok, **summary}


def previously_verified(ctx: Any, description: str) -> set[str]:
    """Backup ids whose most recent recorded check on this same target verified them."""
    from sqlalchemy import select

    from refserver.storage.models import CheckRun

    decided: dict[str, bool] = {}
    with ctx.db.read() as s:
        rows = s.execute(
            select(CheckRun.result).where(CheckRun.kind == "offsite").order_by(CheckRun.id.desc())
        ).scalars()
        for result in rows:
            if (result or {}).get("target") != description:
                continue
            for b in result.get("backups") or []:
                bid = b.get("backup_id")
                if bid and bid not in decided:
                    decided[bid] = bool(b.get("verified", b.get("ok")))
    return {bid for bid, ok in decided.items() if ok}


def verify_and_record(
    ctx: Any, target_spec: str | None = None, key_file: str | None = None
) -> dict[str, Any]:
    """Re-verify every backup on the target (full download) and record the result."""
    from refserver.storage.models import CheckRun

    settings = ctx.settings
    started = datetime.now(UTC)
    spec = target_spec or str(_setting(settings, "offsite_target", "") or "")
    kf = key_file or _setting(settings, "offsite_key_file", None)
    key = load_key(kf) if kf else None
    with open_target(spec, settings) as target:
        checks = [verify_remote(target, bid, key) for bid in list_remote(target, key)]
        description = target.description
    ok = bool(checks) and all(c["ok"] for c in checks)
    summary = {
        "target": description,
        "encrypted": key is not None,
        "backups": checks,
        "verified_ids": [c["backup_id"] for c in checks if c["ok"]],
        "error": None if checks else "no backups on the target",
    }
    with ctx.db.write(bump=False) as s:
        s.add(
            CheckRun(
                kind="offsite",
                status="passed" if ok else "failed",
                started_at=started,
                finished_at=datetime.now(UTC),
                total_issues=sum(len(c["problems"]) for c in checks),
                result=summary,
            )
        )
    return {"ok": ok, **summary}
