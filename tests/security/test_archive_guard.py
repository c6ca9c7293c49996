"""Malicious archives and folders are refused before anything is extracted."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from refserver.safety.archive_guard import (
    ArchivePolicy,
    ArchiveRejected,
    Member,
    check_members,
    check_tar,
    check_tree,
    check_zip,
    confined_path,
)

POLICY = ArchivePolicy(
    patterns=("manifest.json", "sqlite/*.db", "files/??/*.pdf"),
    required=("manifest.json",),
    max_members=50,
    max_total_bytes=20 * 1024 * 1024,
    max_ratio=100,
)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"{}") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, None


def _check_tar(path: Path) -> list[Member]:
    with tarfile.open(path) as tar:
        return check_tar(tar, POLICY, archive_bytes=path.stat().st_size)


def test_a_good_backup_archive_passes(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "ok.tar.gz",
        [
            _file("manifest.json"),
            _special("files", tarfile.DIRTYPE),
            _file("files/ab/abcdef.pdf", os.urandom(2048)),
            _file("./sqlite/refserver.db", os.urandom(4096)),
        ],
    )
    names = [m.name for m in _check_tar(path)]
    assert "sqlite/refserver.db" in names and "manifest.json" in names


MALICIOUS_TAR = {
    "symlink": [_file("manifest.json"), _special("files/ab/x.pdf", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink": [
        _file("manifest.json"),
        _special("files/ab/x.pdf", tarfile.LNKTYPE, "/etc/shadow"),
    ],
    "parent_path": [_file("manifest.json"), _file("../../etc/passwd", b"root::0:0")],
    "parent_inside": [_file("manifest.json"), _file("files/../../x.pdf")],
    "absolute_path": [_file("manifest.json"), _file("/etc/cron.d/evil", b"* * * * * root sh")],
    "device": [_file("manifest.json"), _special("files/ab/dev.pdf", tarfile.CHRTYPE)],
    "fifo": [_file("manifest.json"), _special("files/ab/fifo.pdf", tarfile.FIFOTYPE)],
    "unexpected_name": [_file("manifest.json"), _file("files/ab/run.sh", b"#!/bin/sh")],
    "duplicate": [_file("manifest.json"), _file("manifest.json", b'{"evil": 1}')],
    "missing_manifest": [_file("sqlite/refserver.db", b"x")],
    "backslash": [_file("manifest.json"), _file("files\\..\\..\\evil.pdf")],
    "too_many_members": [_file("manifest.json")]
    + [_file(f"files/{i:02d}/{i}.pdf", b"%PDF-") for i in range(60)],
}

EXPECTED_CODE = {
    "symlink": "symlink",
    "hardlink": "hardlink",
    "parent_path": "parent_path",
    "parent_inside": "parent_path",
    "absolute_path": "absolute_path",
    "device": "not_regular",
    "fifo": "not_regular",
    "unexpected_name": "unexpected_name",
    "duplicate": "duplicate",
    "missing_manifest": "missing",
    "backslash": "bad_name",
    "too_many_members": "too_many_members",
}


@pytest.mark.parametrize("case", sorted(MALICIOUS_TAR))
def test_malicious_tar_rejected(case: str, tmp_path: Path) -> None:
    path = _tar(tmp_path / f"{case}.tar.gz", MALICIOUS_TAR[case])
    with pytest.raises(ArchiveRejected) as info:
        _check_tar(path)
    assert info.value.code == EXPECTED_CODE[case], info.value.reason


def test_tar_bomb_ratio_rejected(tmp_path: Path) -> None:
    path = _tar(
        tmp_path / "bomb.tar.gz",
        [_file("manifest.json"), _file("sqlite/refserver.db", b"\0" * (8 * 1024 * 1024))],
    )
    assert path.stat().st_size < 100_000
    with pytest.raises(ArchiveRejected) as info:
        _check_tar(path)
    assert info.value.code == "ratio"


def test_zip_bomb_ratio_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("sqlite/refserver.db", b"\0" * (16 * 1024 * 1024))
    with zipfile.ZipFile(path) as zf, pytest.raises(ArchiveRejected) as info:
        check_zip(zf, POLICY)
    assert info.value.code == "ratio"


def test_zip_symlink_and_traversal_rejected(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "{}")
        link = zipfile.ZipInfo("files/ab/x.pdf")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(path) as zf, pytest.raises(ArchiveRejected) as info:
        check_zip(zf, POLICY)
    assert info.value.code == "symlink"
    path = tmp_path / "slip.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", "{}")
        zf.writestr("../../../tmp/evil.pdf", "x")
    with zipfile.ZipFile(path) as zf, pytest.raises(ArchiveRejected) as info:
        check_zip(zf, POLICY)
    assert info.value.code == "parent_path"


def test_total_size_cap(tmp_path: Path) -> None:
    members = [Member("manifest.json", "file", 2)] + [
        Member(f"files/{i:02d}/{i}.pdf", "file", 4 * 1024 * 1024, 4 * 1024 * 1024) for i in range(6)
    ]
    with pytest.raises(ArchiveRejected) as info:
        check_members(members, POLICY)
    assert info.value.code == "too_large"


def test_folder_tree_checks(tmp_path: Path) -> None:
    root = tmp_path / "restore"
    (root / "files" / "ab").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    (root / "files" / "ab" / "a.pdf").write_bytes(b"%PDF-1.7")
    assert len(check_tree(root, POLICY)) == 4
    os.symlink("/etc/passwd", root / "files" / "ab" / "b.pdf")
    with pytest.raises(ArchiveRejected) as info:
        check_tree(root, POLICY)
    assert info.value.code == "symlink"
    (root / "files" / "ab" / "b.pdf").unlink()
    os.link(root / "manifest.json", root / "files" / "ab" / "c.pdf")
    with pytest.raises(ArchiveRejected) as info:
        check_tree(root, POLICY)
    assert info.value.code == "hardlink"
    assert check_tree(root, ArchivePolicy(patterns=POLICY.patterns, allow_hardlinked_files=True))
    (root / "files" / "ab" / "c.pdf").unlink()
    os.mkfifo(root / "files" / "ab" / "d.pdf")
    with pytest.raises(ArchiveRejected) as info:
        check_tree(root, POLICY)
    assert info.value.code == "not_regular"


def test_confined_path(tmp_path: Path) -> None:
    dest = tmp_path / "restore"
    dest.mkdir()
    assert confined_path(dest, "files/ab/x.pdf") == (dest / "files/ab/x.pdf").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", "C:/windows", "a\\..\\b", ""):
        with pytest.raises(ArchiveRejected):
            confined_path(dest, bad)
    # A symlinked folder planted inside the destination cannot redirect a write.
    os.symlink(tmp_path, dest / "files")
    with pytest.raises(ArchiveRejected) as info:
        confined_path(dest, "files/evil.pdf")
    assert info.value.code == "escape"
