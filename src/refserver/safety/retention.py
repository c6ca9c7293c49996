"""Retention with restic's semantics, plus a per-backup ``retention_days``.

For each kind of backup separately (snapshots, fulls, incrementals), a backup is
kept when any rule keeps it: the ``last`` newest, and the newest backup of each
of the ``hourly``/``daily``/``weekly``/``monthly`` most recent periods that have
a backup (restic ``--keep-*``). A backup whose own ``retention_days`` has not yet
run out is kept; once it has run out the count rules no longer keep it.

Two rules override everything: the newest verified full backup is never removed,
nor any backup a kept incremental depends on (its chain up to the full). Failed
backups are removed. PDFs no remaining backup references are removed last.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from refserver.safety.backup import BackupEngine, ChainGap, engine_of
from refserver.safety.manifest import Manifest

STALE_RUNNING_S = 24 * 3600


@dataclass
class Policy:
    last: int = 7
    hourly: int = 0
    daily: int = 7
    weekly: int = 4
    monthly: int = 6

    def rules(self) -> list[tuple[str, int]]:
        return [
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
        ]


@dataclass
class Decision:
    backup_id: str
    type: str
    created: str
    keep: bool
    reasons: list[str] = field(default_factory=list)
    size_bytes: int = 0


@dataclass
class Plan:
    decisions: list[Decision]
    dry_run: bool
    removed_files: list[str] = field(default_factory=list)
    freed_bytes: int = 0

    @property
    def removed(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "kept": [asdict(d) for d in self.kept],
            "removed": [asdict(d) for d in self.removed],
            "would_remove" if self.dry_run else "deleted": [d.backup_id for d in self.removed],
            "removed_count": len(self.removed),
            "kept_count": len(self.kept),
            "removed_files": list(self.removed_files),
            "freed_bytes": self.freed_bytes,
        }


def _bucket(rule: str, ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    if rule == "hourly":
        return dt.strftime("%Y-%m-%d %H")
    if rule == "daily":
        return dt.strftime("%Y-%m-%d")
    if rule == "weekly":
        year, week, _ = dt.isocalendar()
        return f"{year}-W{week:02d}"
    return dt.strftime("%Y-%m")


def plan(engine: BackupEngine, policy: Policy, now: float | None = None) -> dict[str, Decision]:
    """Decide, without changing anything, what each backup's fate is and why."""
    now = time.time() if now is None else now
    manifests = engine.manifests()
    decisions = {
        m.id: Decision(m.id, m.kind, m.created, False, [], m.size_compressed) for m in manifests
    }
    by_kind: dict[str, list[Manifest]] = defaultdict(list)
    for m in manifests:
        d = decisions[m.id]
        if m.status in ("running", "verifying", "queued"):
            if now - m.created_ts < STALE_RUNNING_S:
                d.keep = True
                d.reasons.append("in progress")
            else:
                d.reasons.append("stale: never finished")
            continue
        if m.status != "completed":
            d.reasons.append(f"status {m.status}")
            continue
        if m.retention_days is not None:
            if now - m.created_ts <= m.retention_days * 86400:
                d.keep = True
                d.reasons.append(f"within its retention_days ({m.retention_days})")
            else:
                d.reasons.append(f"retention_days ({m.retention_days}) ran out")
                continue
        by_kind[m.kind].append(m)

    for group in by_kind.values():
        newest_first = sorted(group, key=lambda m: (m.created_ts, m.id), reverse=True)
        for m in newest_first[: max(policy.last, 0)]:
            decisions[m.id].keep = True
            decisions[m.id].reasons.append(f"last {policy.last}")
        for rule, count in policy.rules():
            seen: list[str] = []
            for m in newest_first:
                if len(seen) >= count:
                    break
                b = _bucket(rule, m.created_ts)
                if b in seen:
                    continue
                seen.append(b)
                decisions[m.id].keep = True
                decisions[m.id].reasons.append(f"{rule} {b}")

    by_id = {m.id: m for m in manifests}
    fulls = [m for m in manifests if m.kind == "full" and m.status == "completed" and m.verified]
    if fulls:
        newest = max(fulls, key=lambda m: (m.created_ts, m.id))
        decisions[newest.id].keep = True
        decisions[newest.id].reasons.append("newest verified full")
    for m in manifests:
        if m.kind != "incremental" or not decisions[m.id].keep:
            continue
        try:
            chain = engine.chain(m)
        except ChainGap:
            parent = by_id.get(m.parent or "")
            chain = [parent] if parent else []
        for dep in chain:
            if dep.id != m.id and dep.id in decisions:
                decisions[dep.id].keep = True
                decisions[dep.id].reasons.append(f"needed by {m.id}")
    return decisions


def apply(engine: BackupEngine, policy: Policy | None = None, *, dry_run: bool = False) -> Plan:
    """Plan, then (unless ``dry_run``) delete what no rule keeps and unreferenced PDFs."""
    policy = policy or Policy()
    with engine.lock:
        decisions = plan(engine, policy)
        result = Plan(sorted(decisions.values(), key=lambda d: d.created), dry_run)
        if dry_run:
            removing = {d.backup_id for d in result.removed}
            keep_names = set()
            for m in engine.manifests():
                if m.id in removing:
                    continue
                keep_names |= _names(engine, m)
            blobs = sorted(
                p.relative_to(engine.layout.root).as_posix()
                for p in engine.layout.files.glob("*/*")
                if not p.name.startswith(".part-")
            )
            result.removed_files = [b for b in blobs if b not in keep_names]
            result.freed_bytes = sum(d.size_bytes for d in result.removed) + sum(
                (engine.layout.root / b).stat().st_size for b in result.removed_files
            )
            return result
        freed = 0
        for d in result.removed:
            freed += engine.delete(d.backup_id)
        gone, files_freed = engine.gc_files()
        result.removed_files = gone
        result.freed_bytes = freed + files_freed
        return result


def _names(engine: BackupEngine, m: Manifest) -> set[str]:
    if m.kind == "full":
        return {x.name for x in m.members_by_role("file")}
    if m.kind == "incremental":
        try:
            return {x.name for x in engine.file_set(engine.chain(m)).values()}
        except ChainGap:
            return {x.name for x in m.members_by_role("file")}
    return set()


def prune(ctx: Any, *, dry_run: bool = False, policy: Policy | None = None) -> dict[str, Any]:
    """Apply retention to the backups of ``ctx`` (used by the API, CLI and scheduler)."""
    return apply(engine_of(ctx), policy, dry_run=dry_run).to_dict()
