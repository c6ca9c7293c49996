"""Offsite copies: folder, encrypted folder, a real OpenSSH server and a real S3 endpoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refserver.safety import offsite
from refserver.safety.manifest import read_manifest
from tests.recovery.conftest import add_papers, full_backup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_backups(ctx: Any, tmp: Path) -> list[str]:
    first = full_backup(ctx)
    add_papers(ctx, tmp / "more", 2, seed=7)
    second = full_backup(ctx, "incremental")
    return [first.id, second.id]


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x5A
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_stream_encryption_round_trip_and_tamper_detection(tmp_path: Path) -> None:
    key = offsite.generate_key(tmp_path / "k.key")
    assert oct((tmp_path / "k.key").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(offsite.OffsiteError, match="refusing to overwrite"):
        offsite.generate_key(tmp_path / "k.key")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(3 * offsite.CHUNK + 1234))
    enc = tmp_path / "plain.enc"
    offsite.encrypt_file(plain, enc, key)
    assert plain.read_bytes()[:4096] not in enc.read_bytes()
    out = tmp_path / "back.bin"
    with open(out, "wb") as f:
        offsite.decrypt_file(enc, f, offsite.load_key(tmp_path / "k.key"))
    assert out.read_bytes() == plain.read_bytes()
    # Truncation (drop the final chunk), a flipped byte, and the wrong key all fail.
    raw = enc.read_bytes()
    cut = tmp_path / "cut.enc"
    cut.write_bytes(raw[: 17 + 3 * (offsite.CHUNK + 16 + 5)])
    for bad, pattern in ((cut, "truncated"), (None, "changed or damaged")):
        target = bad
        if target is None:
            target = tmp_path / "flip.enc"
            shutil.copy(enc, target)
            flip_byte(target)
        with pytest.raises(offsite.OffsiteError, match=pattern), open(os.devnull, "wb") as sink:
            offsite.decrypt_file(target, sink, key)
    other = offsite.generate_key(tmp_path / "other.key")
    with pytest.raises(offsite.OffsiteError, match="wrong key"), open(os.devnull, "wb") as sink:
        offsite.decrypt_file(enc, sink, other)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    offsite.encrypt_file(empty, tmp_path / "empty.enc", key)
    with open(tmp_path / "empty.out", "wb") as f:
        offsite.decrypt_file(tmp_path / "empty.enc", f, key)
    assert (tmp_path / "empty.out").read_bytes() == b""


def test_folder_copy_is_verified_and_damage_is_found(rctx: Any, tmp_path: Path) -> None:
    ids = two_backups(rctx, tmp_path)
    dest = tmp_path / "usb"
    result = offsite.push_and_record(rctx, str(dest))
    assert result["ok"] and result["verified_ids"] == ids
    assert {r["backup_id"] for r in result["backups"] if r["pushed"]} == set(ids)
    # Shared PDFs were sent once: the incremental sent only what it added.
    inc = next(r for r in result["backups"] if r["backup_id"] == ids[1])
    m = read_manifest(rctx.settings.backups_dir / "metadata", ids[1])
    assert inc["objects_sent"] <= len(m.files_added) + 3
    # A second push sends nothing (verified before: not downloaded again).
    again = offsite.push_and_record(rctx, str(dest))
    assert again["ok"] and all(r["skipped"] and r["objects_sent"] == 0 for r in again["backups"])
    with offsite.open_target(str(dest)) as target:
        assert offsite.list_remote(target) == ids
        objects = [p for p in (dest / "objects").rglob("*") if p.is_file()]
        flip_byte(max(objects, key=lambda p: p.stat().st_size))
        checks = [offsite.verify_remote(target, b) for b in ids]
    assert not all(c["ok"] for c in checks)
    assert any("checksum mismatch" in p for c in checks for p in c["problems"])
    recorded = offsite.verify_and_record(rctx, str(dest))
    assert recorded["ok"] is False
    # The damaged copy is no longer counted as verified: the next push re-checks it.
    assert set(ids) - offsite.previously_verified(rctx, recorded["target"])
    assert offsite.push_and_record(rctx, str(dest))["ok"] is False


def test_damaged_local_member_is_not_shipped(rctx: Any, tmp_path: Path) -> None:
    m = full_backup(rctx)
    member = next(x for x in m.members if x.role == "sqlite")
    flip_byte(rctx.settings.backups_dir / member.name)
    with offsite.open_target(str(tmp_path / "usb")) as target:
        with pytest.raises(offsite.OffsiteError, match="no longer matches its manifest"):
            offsite.push_backup(rctx.settings.backups_dir, m.id, target)
        assert offsite.list_remote(target) == []


def test_encrypted_copy_restores_with_only_the_key(rctx: Any, tmp_path: Path) -> None:
    ids = two_backups(rctx, tmp_path)
    key_file = tmp_path / "keep-me-elsewhere.key"
    offsite.generate_key(key_file)
    dest = tmp_path / "cloud"
    result = offsite.push_and_record(rctx, str(dest), str(key_file))
    assert result["ok"] and result["encrypted"]
    # Nothing readable on the target: no plaintext catalog, no PDF, no manifest text.
    stored = [p for p in dest.rglob("*") if p.is_file()]
    assert not list((dest / "catalog").glob("*.json"))
    assert all(not p.read_bytes().startswith((b"%PDF", b"{", b"\x28\xb5\x2f\xfd")) for p in stored)
    assert all(ids[0].encode() not in p.read_bytes() for p in stored)
    sha = read_manifest(rctx.settings.backups_dir / "metadata", ids[0]).members[0].sha256_stored
    assert not any(sha in str(p) for p in stored)  # names do not reveal checksums

    fresh = tmp_path / "new-machine" / "backups"
    with offsite.open_target(str(dest)) as target:
        assert offsite.list_remote(target) == []  # without the key: nothing to list
        with pytest.raises(offsite.OffsiteError, match="encrypted: pass the key file"):
            offsite.pull(target, fresh, None, ids[1])
        with pytest.raises(offsite.OffsiteError, match="another key|wrong key"):
            offsite.pull(target, fresh, offsite.generate_key(tmp_path / "wrong.key"), ids[1])
        out = offsite.pull(target, fresh, offsite.load_key(key_file))
    assert out["pulled"] == ids
    for bid in ids:
        original = read_manifest(rctx.settings.backups_dir / "metadata", bid)
        copy = read_manifest(fresh / "metadata", bid)  # its own checksum is verified on read
        assert copy.to_dict() == original.to_dict()
        for mem in copy.members:
            assert offsite.sha256_path(fresh / mem.name)[0] == (
                mem.sha256_stored or offsite.sha256_path(rctx.settings.backups_dir / mem.name)[0]
            )


# --- a real OpenSSH server ----------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[dict[str, Any]]:
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(binary).exists():
        pytest.skip("OpenSSH server missing: install the Debian package openssh-server")
    if os.geteuid() != 0:
        pytest.skip("sshd for the SFTP test is started as root in this environment")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / "host"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
"""
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege-separation folder sshd insists on
    proc = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    if proc.poll() is not None:
        out = proc.stdout.read().decode() if proc.stdout else ""
        pytest.fail(f"sshd did not start: {out}")
    host_pub = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    remote = tmp_path / "sftp-root"
    remote.mkdir()
    try:
        yield {
            "port": port,
            "key": str(d / "client"),
            "known_hosts": str(d / "known_hosts"),
            "root": remote,
            "user": os.environ.get("USER") or "root",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sftp_copy_against_a_real_openssh_server(rctx: Any, tmp_path: Path, sshd: dict) -> None:
    ids = two_backups(rctx, tmp_path)
    rctx.settings.offsite_sftp_key_file = sshd["key"]
    rctx.settings.offsite_sftp_known_hosts = sshd["known_hosts"]
    spec = f"sftp://{sshd['user']}@127.0.0.1:{sshd['port']}{sshd['root']}/refserver"
    key_file = tmp_path / "k.key"
    offsite.generate_key(key_file)
    result = offsite.push_and_record(rctx, spec, str(key_file))
    assert result["ok"] and result["verified_ids"] == ids, result
    assert (sshd["root"] / "refserver" / "catalog" / f"{ids[0]}.json.enc").is_file()
    fresh = tmp_path / "restored-backups"
    with offsite.open_target(spec, rctx.settings) as target:
        out = offsite.pull(target, fresh, offsite.load_key(key_file), ids[1])
    assert out["pulled"] == ids  # the incremental brought its base full along
    assert read_manifest(fresh / "metadata", ids[1]).parent == ids[0]
    # An unknown host key is refused: copies never go to an impostor.
    (Path(sshd["known_hosts"])).write_text("")
    with pytest.raises(offsite.OffsiteError, match="cannot connect"):
        offsite.open_target(spec, rctx.settings)


# --- a real S3-compatible endpoint ----------------------------------------------------------------


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_s3_copy_against_a_real_s3_endpoint(rctx: Any, tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    ids = two_backups(rctx, tmp_path)
    creds = {"offsite_s3_access_key": "test-key", "offsite_s3_secret_key": "test-secret"}
    for k, v in {
        **creds,
        "offsite_s3_endpoint_url": s3_endpoint,
        "offsite_s3_region": "us-east-1",
    }.items():
        setattr(rctx.settings, k, v)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
    )
    client.create_bucket(Bucket="library-backups")
    spec = "s3://library-backups/site-a"
    result = offsite.push_and_record(rctx, spec)
    assert result["ok"] and result["verified_ids"] == ids, result
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="library-backups")["Contents"]]
    assert f"site-a/catalog/{ids[0]}.json" in keys
    assert all(k.startswith("site-a/") for k in keys)
    # Damage one object in the bucket: verification downloads and notices.
    victim = next(k for k in keys if "/objects/" in k)
    body = bytearray(client.get_object(Bucket="library-backups", Key=victim)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket="library-backups", Key=victim, Body=bytes(body))
    with offsite.open_target(spec, rctx.settings) as target:
        checks = [offsite.verify_remote(target, b) for b in ids]
        assert any(not c["ok"] for c in checks)
        with pytest.raises(offsite.OffsiteError, match="fails its checksum"):
            offsite.pull(target, tmp_path / "fresh", None)


def test_offsite_retention_keeps_what_a_restore_needs(rctx: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    ids = two_backups(rctx, tmp_path)  # full, incremental on it
    add_papers(rctx, tmp_path / "third", 1, seed=9)
    newer_full = full_backup(rctx).id
    dest = tmp_path / "usb"
    key_file = tmp_path / "k.key"
    key = offsite.generate_key(key_file)
    assert offsite.push_and_record(rctx, str(dest), str(key_file))["ok"]
    with offsite.open_target(str(dest)) as target:
        before = len(target.list("objects"))
        # Ten days later, keeping 5 days: everything is old, the newest full stays.
        later = datetime.now(UTC) + timedelta(days=10)
        plan = offsite.prune_remote(target, key, 5, dry_run=True, now=later)
        assert plan["kept"] == [newer_full] and plan["removed"] == ids
        assert len(target.list("objects")) == before  # dry run
        out = offsite.prune_remote(target, key, 5, now=later)
        assert out["removed"] == ids and out["objects_removed"] > 0
        assert offsite.list_remote(target, key) == [newer_full]
        assert offsite.verify_remote(target, newer_full, key)["ok"]  # shared PDFs kept
        # An incremental younger than the cutoff keeps its whole chain.
    fresh = tmp_path / "pulled"
    with offsite.open_target(str(dest)) as target:
        assert offsite.pull(target, fresh, key)["pulled"] == [newer_full]
        # A plaintext copy next to the encrypted ones: prune refuses rather than guess.
        assert offsite.push_and_record(rctx, str(dest))["ok"]
        with pytest.raises(offsite.OffsiteError, match="prune refused"):
            offsite.prune_remote(target, key, 5, now=later)


def test_scheduled_backup_is_copied_offsite_and_pruned(rctx: Any, tmp_path: Path) -> None:
    from refserver.safety.scheduler import execute

    key_file = tmp_path / "k.key"
    offsite.generate_key(key_file)
    rctx.settings.offsite_target = str(tmp_path / "nas")
    rctx.settings.offsite_key_file = str(key_file)
    rctx.settings.offsite_keep_days = 30
    first = execute(rctx, "backup_full_daily")
    assert first["offsite"]["ok"] and first["offsite"]["verified_ids"] == [
        first["backup"]["backup_id"]
    ]
    assert first["offsite"]["pruned"] == []
    second = execute(rctx, "backup_incremental")
    assert second["offsite"]["verified_ids"] == [
        first["backup"]["backup_id"],
        second["backup"]["backup_id"],
    ]
    # A target that cannot be reached fails the job (recorded), after the local backup.
    rctx.settings.offsite_target = "sftp://nobody@127.0.0.1:1/x"
    with pytest.raises(offsite.OffsiteError, match="cannot connect to sftp"):
        execute(rctx, "backup_incremental")
    from refserver.safety.scheduler import recent_runs

    last = recent_runs(rctx.db, 1)[0]
    assert last["outcome"] == "failed" and "cannot connect" in last["error"]
