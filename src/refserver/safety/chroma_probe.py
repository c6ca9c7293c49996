"""Open a ChromaDB folder in a child process and count its vectors.

A corrupted Chroma folder can crash the process that opens it (STACK.md), so a
backup's copy is opened in a child. The child is forked from multiprocessing's
fork server, which has imported this module, and with it ``chromadb``, once:
a fresh interpreter importing chromadb costs ~0.7 CPU-s, a third of the whole
check and 7% of a 1.4 GB full backup's CPU (measured). The fork server is a
clean single-threaded process (never a fork of this multi-threaded one), each
probe is its own fork, so a crash still takes only that child.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import chromadb
from chromadb.config import Settings as ChromaSettings

_MP = multiprocessing.get_context("forkserver")
_lock = threading.Lock()
_configured = False


def _configure() -> None:
    """Ask the fork server to import this module; it applies if the server is not up yet."""
    global _configured
    with _lock:
        if not _configured:
            # __main__ too: each child would otherwise re-import the main script
            # (multiprocessing's "safe main" rule), e.g. the whole CLI per probe.
            preload = ["__main__", "refserver.safety.chroma_probe"]
            _MP.set_forkserver_preload(preload)
            _configured = True


def warm_up() -> None:
    """Start the fork server (and its chromadb import) in the background; cheap to repeat."""
    _configure()
    multiprocessing.forkserver.ensure_running()


def _probe(folder: str, out: Connection) -> None:
    """In the child: open the folder, count every collection, run one query each."""
    try:
        client = chromadb.PersistentClient(
            path=folder, settings=ChromaSettings(anonymized_telemetry=False)
        )
        counts: dict[str, int] = {}
        for col in client.list_collections():
            name = col if isinstance(col, str) else col.name
            c = client.get_collection(name)
            n = c.count()
            if n:
                first = c.get(limit=1, include=["embeddings"])
                c.query(query_embeddings=[list(first["embeddings"][0])], n_results=1)
            counts[name] = n
        out.send(("ok", counts))
    except BaseException as exc:  # reported to the parent, then exit non-zero
        out.send(("error", f"{type(exc).__name__}: {exc}"[:300]))
        raise SystemExit(1) from None
    finally:
        out.close()


def counts_in_child(folder: Path, timeout: float) -> dict[str, int]:
    """Vector count per collection of ``folder``; RuntimeError if the child fails or dies."""
    _configure()
    receive, send = _MP.Pipe(duplex=False)
    proc = _MP.Process(target=_probe, args=(str(folder), send), daemon=True)
    proc.start()
    send.close()
    reply: Any = None
    timed_out = False
    try:
        if receive.poll(timeout):
            reply = receive.recv()
        else:
            timed_out = True
    except EOFError:  # the child died before it could answer (e.g. a segfault)
        reply = None
    finally:
        receive.close()
    proc.join(timeout=30 if reply is not None else 5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    code = proc.exitcode
    if reply is not None and reply[0] == "ok" and code == 0:
        return {k: int(v) for k, v in reply[1].items()}
    if timed_out:
        how = f"no answer in {timeout:.0f} s"
    elif code is not None and code < 0:
        how = f"signal {-code}"
    else:
        how = f"exit {code}"
    detail = reply[1] if reply is not None and reply[0] == "error" else ""
    raise RuntimeError(f"opening the ChromaDB copy failed ({how}): {detail}".rstrip(": "))
