"""Engine, sessions and the single write path (DESIGN.md §2, §3).

Readers open short sessions and never wait on the writer (SQLite WAL). Every
change goes through :meth:`Database.write`, which serialises writers with one
lock in this process and ``BEGIN IMMEDIATE`` across processes, bumps the
library generation in the same transaction, and is the barrier a unified backup
holds for its consistent point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from refserver.storage.models import LibraryState, utcnow

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's "begin" event issues BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    mode = "BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN"
    conn.exec_driver_sql(mode)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """Owns the engine and the write path."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        self._paused = threading.Event()  # set while a restore swaps files in
        self._listeners: list[Callable[[int], None]] = []
        self.stats = {"writes": 0, "max_write_wait_s": 0.0}

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    # --- schema -------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url)
        cfg.attributes["connection_engine"] = self.engine
        command.upgrade(cfg, "heads")

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:
                return None

    # --- sessions -------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[Session]:
        """A short read-only session; never blocked by the writer."""
        session = self._sessions()
        try:
            yield session
        finally:
            session.close()  # ends the read transaction; loaded objects stay usable

    @contextmanager
    def write(self, *, bump: bool = True) -> Iterator[Session]:
        """The one write path: serialised, short, generation-bumping."""
        if self._paused.is_set():
            raise WritesPaused("the library is being restored; try again shortly")
        started = time.monotonic()
        with self._write_lock:
            waited = time.monotonic() - started
            self.stats["max_write_wait_s"] = max(self.stats["max_write_wait_s"], waited)
            session = self._sessions()
            try:
                session.connection(execution_options={"immediate": True})
                new_gen: int | None = None
                if bump:
                    current = session.execute(
                        select(LibraryState.generation).where(LibraryState.id == 1)
                    ).scalar_one_or_none()
                    new_gen = (current or 0) + 1
                    session.info["generation"] = new_gen
                yield session
                if bump:
                    session.flush()
                    session.execute(
                        update(LibraryState)
                        .where(LibraryState.id == 1)
                        .values(generation=new_gen, updated_at=utcnow())
                    )
                session.commit()
                self.stats["writes"] += 1
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        if bump and new_gen is not None:
            for listener in list(self._listeners):
                try:
                    listener(new_gen)
                except Exception:  # a cache listener must never break a write
                    log.exception("generation listener failed")

    @contextmanager
    def barrier(self) -> Iterator[int]:
        """Hold the write path (not readers); yields the generation at this point."""
        with self._write_lock:
            yield self.generation()

    @contextmanager
    def paused_writes(self) -> Iterator[None]:
        """Refuse writes (503) while files are swapped; waits for the writer to finish."""
        with self._write_lock:
            self._paused.set()
        try:
            yield
        finally:
            self._paused.clear()

    @property
    def writes_paused(self) -> bool:
        return self._paused.is_set()

    def on_generation(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(generation)`` after every committed library change."""
        self._listeners.append(listener)

    def generation(self) -> int:
        with self.read() as s:
            return (
                s.execute(
                    select(LibraryState.generation).where(LibraryState.id == 1)
                ).scalar_one_or_none()
                or 0
            )

    def dispose(self) -> None:
        self.engine.dispose()


class WritesPaused(RuntimeError):
    """Raised while a restore swaps the stores; the API answers 503."""
