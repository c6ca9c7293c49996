"""Validate archive members (tar, zip) and folder trees before anything is extracted.

A restore reads archives that may have been tampered with. Extraction must
never follow a link, write outside the restore area, create a device, replace a
file it already checked, or fill the disk. Everything here is a pure check over
member *descriptions*: read the member list (``tar_members``, ``zip_members``,
``tree_members``), check it (``check_members``), and only then extract, writing
each file to ``confined_path(dest, name)``.

Usage::

    policy = ArchivePolicy(patterns=("manifest.json", "sqlite/*.db.zst", "files/??/*.pdf"))
    with tarfile.open(path) as tar:
        members = check_tar(tar, policy, archive_bytes=path.stat().st_size)
        for m in members:
            if m.kind == "file":
                target = confined_path(dest, m.name)
                ...  # extract tar.extractfile(m.name) to target yourself
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "ArchivePolicy",
    "ArchiveRejected",
    "Member",
    "check_members",
    "check_tar",
    "check_tree",
    "check_zip",
    "confined_path",
    "tar_members",
    "tree_members",
    "zip_members",
]

_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveRejected(ValueError):
    """An archive (or folder) that must not be extracted; ``code`` for programs."""

    def __init__(self, reason: str, code: str, member: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.member = member


@dataclass(frozen=True)
class Member:
    """One entry of an archive or folder, as the guard sees it.

    ``kind``: ``file``, ``dir``, ``symlink``, ``hardlink``, ``device``, ``fifo``,
    ``socket`` or ``other``. ``compressed_size`` is known for zip members.
    """

    name: str
    kind: str
    size: int = 0
    compressed_size: int | None = None
    link_target: str | None = None
    links: int = 1  # hard-link count of a file in a folder tree
    encrypted: bool = False


@dataclass(frozen=True)
class ArchivePolicy:
    """What an acceptable archive looks like. Defaults suit a RefServer backup."""

    patterns: Sequence[str] = ("*",)  # fnmatch patterns every file name must match
    required: Sequence[str] = ()  # names that must be present
    max_members: int = 200_000
    max_member_bytes: int = 64 * 1024**3
    max_total_bytes: int = 512 * 1024**3
    max_ratio: float = 200.0  # uncompressed / compressed, per member and overall
    ratio_floor_bytes: int = 1024 * 1024  # members smaller than this skip the ratio check
    max_depth: int = 16
    max_name_length: int = 1024
    allow_dirs: bool = True
    allow_hardlinked_files: bool = False  # folder trees only (e.g. deduplicated backups)
    case_insensitive_duplicates: bool = True
    extra: dict[str, object] = field(default_factory=dict)


def _reject(reason: str, code: str, member: str | None = None) -> ArchiveRejected:
    return ArchiveRejected(reason, code, member)


def normalise_name(name: str) -> str:
    """The checked form of a member name, or ``ArchiveRejected`` if it is unsafe.

    Refuses: empty names, NUL or control characters, backslashes (Windows
    separators that become ``..`` elsewhere), absolute paths, drive letters,
    ``..`` components. Strips one leading ``./`` and a trailing ``/``.
    """
    if not name or name in (".", "./"):
        raise _reject("an archive member has an empty name", "bad_name", name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _reject(f"member {name!r} has control characters in its name", "bad_name", name)
    if "\\" in name:
        raise _reject(f"member {name!r} uses backslashes in its path", "bad_name", name)
    if name.startswith("/") or _DRIVE.match(name):
        raise _reject(f"member {name!r} has an absolute path", "absolute_path", name)
    cleaned = name[2:] if name.startswith("./") else name
    cleaned = cleaned.rstrip("/")
    parts = cleaned.split("/")
    if any(p == ".." for p in parts):
        raise _reject(f"member {name!r} climbs out with '..'", "parent_path", name)
    if any(p in ("", ".") for p in parts):
        raise _reject(f"member {name!r} has empty or '.' path components", "bad_name", name)
    return cleaned


def check_members(
    members: Iterable[Member], policy: ArchivePolicy, *, archive_bytes: int | None = None
) -> list[Member]:
    """Check every member against ``policy``; return them with normalised names.

    Raises ``ArchiveRejected`` at the first problem. ``archive_bytes`` (the size
    of the archive file) enables the overall compression-ratio check for
    compressed tars.
    """
    checked: list[Member] = []
    seen: set[str] = set()
    total = 0
    compressed_total = 0
    for count, m in enumerate(members, start=1):
        if count > policy.max_members:
            raise _reject(
                f"the archive has more than {policy.max_members} members", "too_many_members"
            )
        if len(m.name) > policy.max_name_length:
            raise _reject("a member name is too long", "bad_name", m.name[:80])
        name = normalise_name(m.name)
        if name.count("/") + 1 > policy.max_depth:
            raise _reject(f"member {name!r} is nested too deeply", "too_deep", name)
        key = name.casefold() if policy.case_insensitive_duplicates else name
        if key in seen:
            raise _reject(f"member {name!r} appears twice", "duplicate", name)
        seen.add(key)
        if m.encrypted:
            raise _reject(f"member {name!r} is encrypted", "encrypted", name)
        if m.kind == "dir":
            if not policy.allow_dirs:
                raise _reject(f"member {name!r} is a folder", "unexpected_dir", name)
            checked.append(_with_name(m, name))
            continue
        if m.kind in ("symlink", "hardlink"):
            raise _reject(
                f"member {name!r} is a {m.kind} (to {m.link_target!r}); links are not allowed",
                m.kind,
                name,
            )
        if m.kind != "file":
            raise _reject(
                f"member {name!r} is a {m.kind}; only regular files are allowed",
                "not_regular",
                name,
            )
        if m.links > 1 and not policy.allow_hardlinked_files:
            raise _reject(f"file {name!r} is hard-linked elsewhere", "hardlink", name)
        if not any(fnmatch.fnmatchcase(name, pat) for pat in policy.patterns):
            raise _reject(f"member {name!r} is not an expected file", "unexpected_name", name)
        if m.size < 0 or m.size > policy.max_member_bytes:
            raise _reject(
                f"member {name!r} is {m.size} bytes; the limit is {policy.max_member_bytes}",
                "too_large",
                name,
            )
        total += m.size
        if total > policy.max_total_bytes:
            raise _reject(
                f"the archive unpacks to more than {policy.max_total_bytes} bytes", "too_large"
            )
        if m.compressed_size is not None:
            compressed_total += m.compressed_size
            if m.size >= policy.ratio_floor_bytes and (
                m.size > policy.max_ratio * max(1, m.compressed_size)
            ):
                raise _reject(
                    f"member {name!r} expands {m.size / max(1, m.compressed_size):.0f}×; "
                    f"the limit is {policy.max_ratio:g}× (a zip bomb?)",
                    "ratio",
                    name,
                )
        checked.append(_with_name(m, name))
    missing = [r for r in policy.required if r not in {c.name for c in checked}]
    if missing:
        raise _reject(f"the archive lacks {', '.join(missing)}", "missing")
    packed = archive_bytes if archive_bytes is not None else (compressed_total or None)
    if (
        packed is not None
        and total >= policy.ratio_floor_bytes
        and total > policy.max_ratio * max(1, packed)
    ):
        raise _reject(
            f"the archive expands {total / max(1, packed):.0f}×; the limit is "
            f"{policy.max_ratio:g}× (a decompression bomb?)",
            "ratio",
        )
    return checked


def _with_name(m: Member, name: str) -> Member:
    return Member(name, m.kind, m.size, m.compressed_size, m.link_target, m.links, m.encrypted)


# --- reading member lists (no extraction) ----------------------------------------------
def tar_members(tar: tarfile.TarFile) -> list[Member]:
    """Describe a tar's members (reads headers only)."""
    out = []
    for info in tar.getmembers():
        if info.isreg():
            kind = "file"
        elif info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.ischr() or info.isblk():
            kind = "device"
        elif info.isfifo():
            kind = "fifo"
        else:
            kind = "other"
        out.append(Member(info.name, kind, int(info.size), None, info.linkname or None))
    return out


def zip_members(zf: zipfile.ZipFile) -> list[Member]:
    """Describe a zip's members, using the Unix mode bits when the zip carries them."""
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if info.is_dir():
            kind = "dir"
        elif fmt == 0 or stat.S_ISREG(mode):
            kind = "file"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = "device"
        elif stat.S_ISFIFO(mode):
            kind = "fifo"
        elif stat.S_ISSOCK(mode):
            kind = "socket"
        else:
            kind = "other"
        out.append(
            Member(
                info.filename,
                kind,
                int(info.file_size),
                int(info.compress_size),
                None,
                1,
                bool(info.flag_bits & 0x1),
            )
        )
    return out


def tree_members(root: Path) -> list[Member]:
    """Describe a folder tree without following any link (``lstat`` only)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for entry in sorted(dirnames) + sorted(filenames):
            full = Path(dirpath) / entry
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                out.append(Member(rel, "symlink", 0, None, os.readlink(full)))
            elif stat.S_ISDIR(mode):
                out.append(Member(rel, "dir"))
            elif stat.S_ISREG(mode):
                out.append(Member(rel, "file", st.st_size, None, None, st.st_nlink))
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                out.append(Member(rel, "device"))
            elif stat.S_ISFIFO(mode):
                out.append(Member(rel, "fifo"))
            elif stat.S_ISSOCK(mode):
                out.append(Member(rel, "socket"))
            else:
                out.append(Member(rel, "other"))
    return out


def check_tar(
    tar: tarfile.TarFile, policy: ArchivePolicy, *, archive_bytes: int | None = None
) -> list[Member]:
    return check_members(tar_members(tar), policy, archive_bytes=archive_bytes)


def check_zip(zf: zipfile.ZipFile, policy: ArchivePolicy) -> list[Member]:
    return check_members(zip_members(zf), policy)


def check_tree(root: Path, policy: ArchivePolicy) -> list[Member]:
    return check_members(tree_members(root), policy)


def confined_path(root: Path, name: str) -> Path:
    """Where member ``name`` goes under ``root``; refuses anything that would leave it.

    Checks the name again and resolves the result (so a symlinked parent folder
    created earlier cannot redirect the write).
    """
    clean = normalise_name(name)
    base = Path(root).resolve()
    target = (base / PurePosixPath(clean)).resolve()
    if target != base and base not in target.parents:
        raise _reject(f"member {name!r} would be written outside {base}", "escape", name)
    return target
