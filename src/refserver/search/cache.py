"""A query cache that can never serve results from an older library.

Entries belong to one library generation (DESIGN.md §3). The cache is emptied
by the ``Database.on_generation`` listener right after a change commits in this
process, and every lookup also compares the stored generation with SQLite's, so
a change made by another process (a CLI edit) invalidates it too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import LRUCache

from refserver.storage.db import Database


class QueryCache:
    def __init__(self, db: Database, maxsize: int = 1024) -> None:
        self.db = db
        self._lru: LRUCache = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()
        self._generation = db.generation()
        self.hits = 0
        self.misses = 0
        db.on_generation(self._on_change)

    def _on_change(self, generation: int) -> None:
        with self._lock:
            self._lru.clear()
            self._generation = generation

    def generation(self) -> int:
        """The current library generation; drops every entry if it moved."""
        current = self.db.generation()
        with self._lock:
            if current != self._generation:
                self._lru.clear()
                self._generation = current
        return current

    def get_or_compute(self, key: Hashable, compute: Callable[[int], Any]) -> Any:
        """The cached value for ``key`` at the current generation, computing it once."""
        gen = self.generation()
        with self._lock:
            if key in self._lru:
                self.hits += 1
                return self._lru[key]
        self.misses += 1
        value = compute(gen)
        with self._lock:
            if self._generation == gen:  # the library did not change meanwhile
                self._lru[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._lru),
                "hits": self.hits,
                "misses": self.misses,
                "generation": self._generation,
            }
