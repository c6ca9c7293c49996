"""Restore drills: prove, on a schedule, that the newest backup really restores.

A backup that was never restored is a hope, not a backup. A drill restores the
newest backup chain into a scratch folder under the restore area (through the
backup engine's restore-to-folder path, which re-reads every member), then checks
the result independently of that path: ``PRAGMA integrity_check`` on the restored
database, its SHA-256 and counts against the manifest, every restored PDF against
its name, and the ChromaDB copy opened **in a child process** (a damaged Chroma
folder can crash the process that opens it, DESIGN.md §4). In that child the
restored pair is brought to the state a real restore would leave (ChromaDB
reconciled from the restored SQLite vectors, as ``restore`` does live) and the
consistency checker runs on it. The result is recorded as ``CheckRun(kind="drill")``
and the scratch folder is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from refserver.storage.models import CheckRun

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 900
ProgressFn = Callable[[str, float], None]


def _noop(_stage: str, _fraction: float) -> None:
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _integrity_check(db: Path) -> tuple[bool, str]:
    """Always the full ``integrity_check`` (a drill has time; quick_check skips index checks)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return False, str(exc)
    if rows != ["ok"]:
        return False, "; ".join(rows[:5])
    if fk:
        return False, f"{len(fk)} foreign key violation(s)"
    return True, "integrity_check ok, foreign_key_check ok"


def choose_backup(engine: Any, backup_id: str | None = None) -> Any:
    """The backup to drill: the given one, else the newest completed chain head."""
    if backup_id:
        return engine.get(backup_id)
    head = engine.latest_head()
    if head is None:
        raise LookupError("no completed, verified full or incremental backup to drill")
    return head


def run_drill(
    ctx: Any,
    backup_id: str | None = None,
    *,
    progress: ProgressFn | None = None,
    keep_scratch: bool = False,
) -> dict[str, Any]:
    """Run one drill and record it; never raises for a failed drill (see ``passed``)."""
    progress = progress or _noop
    settings = ctx.settings
    started = datetime.now(UTC)
    t0 = time.monotonic()
    with ctx.db.write(bump=False) as s:
        row = CheckRun(kind="drill", status="running", started_at=started, result={})
        s.add(row)
        s.flush()
        run_id = row.id
    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"check_run_id": run_id, "backup_id": backup_id, "steps": steps}
    scratch = Path(settings.restore_dir) / f"drill-{started:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"

    def step(name: str, ok: bool, detail: str) -> bool:
        steps.append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            log.warning("drill step %s failed: %s", name, detail)
        return ok

    try:
        from refserver.safety.scheduler import EngineMissing, backup_engine

        try:
            from refserver.safety.restore import restore as restore_to
            from refserver.safety.verify import VerificationFailed
        except ImportError as exc:
            raise EngineMissing(f"the restore engine is not available: {exc}") from exc
        engine = backup_engine(ctx)
        m = choose_backup(engine, backup_id)
        out["backup_id"] = m.id
        out["backup_type"] = m.kind
        progress("restore", 0.05)
        Path(settings.restore_dir).mkdir(parents=True, exist_ok=True)
        try:
            restored = restore_to(engine, m.id, target_path=str(scratch))
        except VerificationFailed as exc:
            for c in exc.result.checks:
                step(f"restore:{c.name}", c.ok, c.detail)
            raise DrillFailed(f"the backup did not restore: {exc}") from None
        out["chain"] = restored.get("chain", [m.id])
        step("restore", True, f"chain {' → '.join(out['chain'])} restored into {scratch.name}")
        db = scratch / "refserver.db"
        progress("integrity", 0.5)
        ok, detail = _integrity_check(db)
        step("sqlite_integrity", ok, detail)
        want_sha = (m.sqlite or {}).get("db_sha256")
        got_sha = _sha256(db)
        step(
            "sqlite_checksum",
            bool(want_sha) and got_sha == want_sha,
            "restored database matches the manifest's SHA-256"
            if got_sha == want_sha
            else f"restored {got_sha[:16]}… != manifest {str(want_sha)[:16]}…",
        )
        from refserver.safety.sqlite_pages import describe

        info = describe(db)
        wrong = {
            k: (info["counts"].get(k), v) for k, v in m.counts.items() if info["counts"].get(k) != v
        }
        step(
            "counts",
            not wrong and info["generation"] == m.generation,
            ", ".join(f"{k}={v}" for k, v in sorted(info["counts"].items()))
            + f", generation {info['generation']}"
            if not wrong and info["generation"] == m.generation
            else f"differ from the manifest: {wrong}, generation {info['generation']} vs {m.generation}",
        )
        progress("files", 0.6)
        step("files", *_check_files(scratch / "files", info["file_hashes"]))
        chroma = scratch / "chroma"
        reconcile = False
        if not chroma.is_dir():
            # An incremental carries no Chroma copy: a real restore rebuilds it from the
            # base full's copy plus the restored SQLite vectors; the drill does the same.
            base = engine.get(out["chain"][0])
            _extract_chroma(engine, base, chroma)
            reconcile = True
            step("chroma_base", True, f"ChromaDB copy of {base.id} extracted for reconciliation")
        progress("child", 0.7)
        child = _run_child(db, chroma, reconcile)
        if "error" in child:
            step("chroma_child", False, child["error"])
        else:
            counts = child.get("chroma_counts", {})
            expected = dict((m.chroma or {}).get("counts", {})) if not reconcile else {}
            if reconcile:
                expected = {
                    "pages": child["sqlite_vectors"]["page"],
                    "papers": child["sqlite_vectors"]["paper"],
                }
            bad = {k: (counts.get(k, 0), v) for k, v in expected.items() if counts.get(k, 0) != v}
            step(
                "chroma_child",
                not bad,
                f"opened in a child process: {counts}"
                + (f" after reconciling {child.get('reconciled')}" if reconcile else "")
                if not bad
                else f"vector counts differ: {bad}",
            )
            cons = child.get("consistency") or {}
            if "error" in cons:
                step("consistency", False, cons["error"])
            else:
                issues = int(cons.get("total_issues", -1))
                step(
                    "consistency",
                    issues == 0,
                    "restored SQLite and ChromaDB agree (0 issues)"
                    if issues == 0
                    else f"{issues} issue(s): {cons.get('issues_by_type')}",
                )
        out["passed"] = all(s_["ok"] for s_ in steps)
        if not out["passed"]:
            failed = [f"{s_['name']}: {s_['detail']}" for s_ in steps if not s_["ok"]]
            out["error"] = "; ".join(failed)
    except DrillFailed as exc:
        out["passed"] = False
        out["error"] = str(exc)
    except Exception as exc:
        log.exception("restore drill failed")
        out["passed"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        step("drill", False, out["error"])
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(scratch.parent / f".partial-{scratch.name}", ignore_errors=True)
        out["scratch_removed"] = not scratch.exists()
        out["duration_seconds"] = round(time.monotonic() - t0, 3)
        with ctx.db.write(bump=False) as s:
            row = s.get(CheckRun, run_id)
            if row is not None:
                row.status = "passed" if out.get("passed") else "failed"
                row.finished_at = datetime.now(UTC)
                row.total_issues = sum(1 for s_ in steps if not s_["ok"])
                row.result = json.loads(json.dumps(out, default=str))
        progress("done", 1.0)
    return out


class DrillFailed(RuntimeError):
    """The backup could not be restored at all (its checks are in the steps)."""


def _check_files(files_dir: Path, needed: set[str]) -> tuple[bool, str]:
    have: dict[str, Path] = (
        {p.stem: p for p in files_dir.glob("*/*.pdf")} if files_dir.is_dir() else {}
    )
    missing = sorted(needed - set(have))
    bad = [sha for sha in sorted(needed & set(have)) if _sha256(have[sha]) != sha]
    if missing or bad:
        return False, f"{len(missing)} PDF(s) missing, {len(bad)} with a wrong SHA-256"
    return True, f"{len(needed)} PDF(s) restored with their SHA-256"


def _extract_chroma(engine: Any, base: Any, dest: Path) -> None:
    from refserver.safety.archive import extract_tar

    members = base.members_by_role("chromadb")
    if not members:
        raise DrillFailed(f"base full {base.id} holds no ChromaDB copy")
    mem = members[0]
    r = extract_tar(engine.layout.root / mem.name, dest, mem.compression)
    if r.sha256 != mem.sha256:
        raise DrillFailed(f"ChromaDB copy {mem.name} fails its checksum")


def _run_child(db: Path, chroma: Path, reconcile: bool) -> dict[str, Any]:
    """Open the restored pair in a separate process; a crash there is a failed check."""
    cmd = [sys.executable, "-m", "refserver.safety.drill", "--child", str(db), str(chroma)]
    if reconcile:
        cmd.append("--reconcile")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"the child opening the restored copy timed out after {CHILD_TIMEOUT_S}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        return {"error": f"opening the restored ChromaDB copy failed ({how}): {tail[0][:300]}"}
    return json.loads(lines[-1])


def consistency_on_parts(db: Any, vectors: Any, files: Any) -> dict[str, Any]:
    """The consistency checker on explicit stores (the restored copy, not the live context)."""
    from refserver.safety.scheduler import EngineMissing

    try:
        from refserver.safety.consistency import check_parts
    except ImportError as exc:
        raise EngineMissing(f"the consistency checker is not available: {exc}") from exc
    data = check_parts(db, vectors, files).to_dict()
    return {
        "overall_status": data.get("overall_status"),
        "total_issues": data.get("total_issues"),
        "issues_by_type": data.get("issues_by_type", {}),
        "issues": data.get("issues", [])[:20],
    }


def _child(db_path: str, chroma_path: str, reconcile: bool) -> None:
    """Child entry point: open the restored copy, reconcile if asked, count, check."""
    from types import SimpleNamespace

    from sqlalchemy import func, select

    from refserver.storage.db import Database
    from refserver.storage.files import FileStore
    from refserver.storage.models import Vector
    from refserver.storage.vectors import COLLECTIONS, VectorIndex

    db = Database(f"sqlite:///{db_path}")
    vectors = VectorIndex(Path(chroma_path))
    try:
        out: dict[str, Any] = {}
        if reconcile:
            from refserver.safety.restore import reconcile_chroma

            out["reconciled"] = reconcile_chroma(SimpleNamespace(db=db, vectors=vectors))
        out["chroma_counts"] = {c: vectors.count(c) for c in COLLECTIONS}
        with db.read() as s:
            out["sqlite_vectors"] = {
                k: int(v)
                for k, v in s.execute(select(Vector.kind, func.count()).group_by(Vector.kind)).all()
            }
        out["sqlite_vectors"].setdefault("page", 0)
        out["sqlite_vectors"].setdefault("paper", 0)
        try:
            files = FileStore(Path(db_path).parent / "files")
            out["consistency"] = consistency_on_parts(db, vectors, files)
        except Exception as exc:
            out["consistency"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out, default=str), flush=True)
    finally:
        vectors.close()
        db.dispose()


if __name__ == "__main__":  # pragma: no cover - run as the drill's child process
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], "--reconcile" in sys.argv[4:])
    else:
        print(
            "usage: python -m refserver.safety.drill --child DB CHROMA [--reconcile]",
            file=sys.stderr,
        )
        sys.exit(2)
