"""The consume folder: PDFs dropped there are imported once complete, then filed away.

A file is taken only when it is *complete*: its size and modification time were
the same on consecutive polls (``stable_polls``), it starts with a PDF header
and ends with a ``%%EOF`` trailer (a writer that pauses mid-file leaves no
trailer yet), and it can be read. It is then imported through the bulk engine
and moved to ``done/`` or, with a ``<name>.reason.txt`` saying why, to
``failed/``. Names that browsers and copy tools use for partial downloads
(``.part``, ``.crdownload``, dot-files) are never touched.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from refserver.context import AppContext

__all__ = ["ConsumeFolder", "default_consume_dir"]

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".!ut")
HEAD = 1024
TAIL = 2048


def default_consume_dir(ctx: AppContext) -> Path:
    """``settings.consume_dir`` when the setting exists, else ``<data_dir>/consume``."""
    configured = getattr(ctx.settings, "consume_dir", None)
    return Path(configured) if configured else ctx.settings.data_dir / "consume"


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    stable: int  # consecutive polls with this same signature
    complete_wait_since: float | None = None


class ConsumeFolder:
    """Polls a folder and imports complete PDFs; ``poll_once`` is the whole algorithm."""

    def __init__(
        self,
        ctx: AppContext,
        folder: Path | None = None,
        *,
        interval: float = 5.0,
        stable_polls: int = 2,
        incomplete_timeout: float = 600.0,
        workers: int | None = None,
    ) -> None:
        self.ctx = ctx
        self.folder = Path(folder) if folder else default_consume_dir(ctx)
        self.interval = interval
        self.stable_polls = max(2, stable_polls)
        self.incomplete_timeout = incomplete_timeout
        self.workers = workers
        self.done_dir = self.folder / "done"
        self.failed_dir = self.folder / "failed"
        self._seen: dict[Path, _Seen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed: list[dict[str, Any]] = []

    # --- one poll -------------------------------------------------------------------
    def _candidates(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        out = []
        for p in sorted(self.folder.rglob("*")):
            rel = p.relative_to(self.folder)
            if rel.parts[0] in ("done", "failed") or any(x.startswith(".") for x in rel.parts):
                continue
            if not p.is_file() or p.name.lower().endswith(PARTIAL_SUFFIXES):
                continue
            if p.name.endswith(".reason.txt"):
                continue
            out.append(p)
        return out

    def _completeness(self, path: Path) -> str | None:
        """None when the file looks complete; otherwise why not ("not_pdf" or "incomplete")."""
        try:
            size = path.stat().st_size
            with path.open("rb") as fh:
                head = fh.read(HEAD)
                fh.seek(max(0, size - TAIL))
                tail = fh.read(TAIL)
        except OSError:
            return "incomplete"
        if size == 0:
            return "incomplete"
        if b"%PDF-" not in head:
            return "not_pdf"
        if b"%%EOF" not in tail:
            return "incomplete"
        return None

    def poll_once(self) -> list[dict[str, Any]]:
        """Look once; import what is complete; return what was filed this time."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.monotonic()
        ready: list[Path] = []
        rejected: list[tuple[Path, str]] = []
        present = set()
        for path in self._candidates():
            present.add(path)
            try:
                st = path.stat()
            except OSError:
                continue
            prev = self._seen.get(path)
            if prev and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                prev.stable += 1
            else:
                self._seen[path] = prev = _Seen(st.st_size, st.st_mtime_ns, 1)
            if prev.stable < self.stable_polls:
                continue
            why = self._completeness(path)
            if why is None:
                ready.append(path)
            elif why == "not_pdf":
                rejected.append((path, "The file is not a PDF (no %PDF- header)."))
            else:
                prev.complete_wait_since = prev.complete_wait_since or now
                if now - prev.complete_wait_since >= self.incomplete_timeout:
                    rejected.append(
                        (path, "The PDF never completed (no %%EOF trailer); re-copy it.")
                    )
        for gone in set(self._seen) - present:
            self._seen.pop(gone, None)

        filed: list[dict[str, Any]] = []
        for path, reason in rejected:
            filed.append(self._file(path, "failed", reason))
        if ready:
            filed.extend(self._import(ready))
        self.processed.extend(filed)
        return filed

    def _import(self, ready: list[Path]) -> list[dict[str, Any]]:
        from refserver.ingest.bulk import bulk_import

        workers = self.workers
        if workers is None:
            workers = 0 if len(ready) == 1 else None  # one file: no process pool to start
        rep = bulk_import(self.ctx, ready, workers=workers)
        by_file = {o.file: o for o in rep.outcomes}
        filed = []
        for path in ready:
            o = by_file.get(str(path.resolve()))
            if o is None or o.status == "cancelled":
                continue  # left in place for the next poll
            if o.status == "failed":
                filed.append(self._file(path, "failed", o.reason or "import failed", o.job_id))
            else:
                filed.append(self._file(path, "done", None, o.job_id, o.doc_id, o.status))
        return filed

    def _file(
        self,
        path: Path,
        where: str,
        reason: str | None,
        job_id: str | None = None,
        doc_id: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        dest_dir = self.done_dir if where == "done" else self.failed_dir
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / path.name
        n = 1
        while dest.exists():
            dest = dest_dir / f"{path.stem}-{n}{path.suffix}"
            n += 1
        shutil.move(str(path), dest)
        self._seen.pop(path, None)
        if reason:
            dest.with_name(dest.name + ".reason.txt").write_text(reason.strip() + "\n")
        log.info("consume: %s → %s%s", path.name, where, f" ({reason})" if reason else "")
        return {
            "file": path.name,
            "moved_to": str(dest),
            "outcome": where,
            "status": status or ("failed" if where == "failed" else "imported"),
            "reason": reason,
            "job_id": job_id,
            "doc_id": doc_id,
        }

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        """Poll until ``stop()``; an error in one poll is logged and the loop goes on."""
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("consume folder poll failed")
            self._stop.wait(self.interval)

    def start(self) -> threading.Thread:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self.run, name="consume-folder", daemon=True)
            self._thread.start()
        return self._thread

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
