"""Restore drills: a good chain passes, a damaged backup is caught, every drill is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from refserver.safety import drill
from refserver.storage.models import CheckRun
from tests.recovery.conftest import add_papers, full_backup


def drill_rows(ctx: Any) -> list[CheckRun]:
    with ctx.db.read() as s:
        return list(
            s.execute(
                select(CheckRun).where(CheckRun.kind == "drill").order_by(CheckRun.id)
            ).scalars()
        )


def steps(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in result["steps"]}


def test_drill_passes_on_the_newest_chain(rctx: Any, tmp_path: Path) -> None:
    base = full_backup(rctx)
    add_papers(rctx, tmp_path / "more", 2, seed=3)
    head = full_backup(rctx, "incremental")
    result = drill.run_drill(rctx)
    assert result["passed"], result
    assert result["backup_id"] == head.id and result["chain"] == [base.id, head.id]
    st = steps(result)
    for name in (
        "restore",
        "sqlite_integrity",
        "sqlite_checksum",
        "counts",
        "files",
        "chroma_child",
        "consistency",
    ):
        assert st[name]["ok"], st[name]
    assert "papers=6" in st["counts"]["detail"]
    # The incremental carries no Chroma copy: the drill reconciled the base's copy.
    assert "after reconciling" in st["chroma_child"]["detail"]
    assert "(0 issues)" in st["consistency"]["detail"]
    assert result["scratch_removed"] and not any(rctx.settings.restore_dir.iterdir())
    rows = drill_rows(rctx)
    assert len(rows) == 1 and rows[0].status == "passed"
    assert rows[0].result["backup_id"] == head.id and rows[0].finished_at is not None


def test_drill_of_a_full_then_of_its_damaged_chroma_copy(rctx: Any) -> None:
    m = full_backup(rctx)
    result = drill.run_drill(rctx, m.id)
    assert result["passed"], result
    st = steps(result)
    assert "after reconciling" not in st["chroma_child"]["detail"]  # compared with the manifest
    assert "'pages': 8" in st["chroma_child"]["detail"]
    member = m.members_by_role("chromadb")[0]
    path = rctx.settings.backups_dir / member.name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    result = drill.run_drill(rctx, m.id)
    assert result["passed"] is False
    assert member.name in result["error"]
    assert [r.status for r in drill_rows(rctx)] == ["passed", "failed"]


def test_drill_catches_a_flipped_byte_in_a_backup_member(rctx: Any, tmp_path: Path) -> None:
    full_backup(rctx)
    add_papers(rctx, tmp_path / "more", 1, seed=4)
    head = full_backup(rctx, "incremental")
    delta = head.members_by_role("sqlite_delta")[0]
    path = rctx.settings.backups_dir / delta.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    result = drill.run_drill(rctx)
    assert result["passed"] is False
    assert delta.name in result["error"] or "checksum" in result["error"]
    assert any(not s["ok"] for s in result["steps"])
    rows = drill_rows(rctx)
    assert rows[-1].status == "failed" and rows[-1].total_issues >= 1
    assert result["scratch_removed"]
    assert not [p for p in rctx.settings.restore_dir.iterdir() if p.name.startswith("drill-")]


def test_drill_without_any_backup_fails_clearly(rctx: Any) -> None:
    result = drill.run_drill(rctx)
    assert result["passed"] is False
    assert "no completed, verified" in result["error"]
    assert drill_rows(rctx)[-1].status == "failed"
