"""The command line against real stores, including a kill -9 in the middle of an import."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ADMIN_PASSWORD, CORPUS, corpus_manifest

REFSERVER = [sys.executable, "-m", "refserver.cli"]


def env_for(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"REFSERVER_DATA_DIR": str(data), "REFSERVER_ADMIN_PASSWORD": ADMIN_PASSWORD})
    # one paper per save, so a kill lands between stored papers (4 files would
    # otherwise be saved as one group)
    env["REFSERVER_BULK_SAVE_GROUP"] = "1"
    return env


def paper_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM papers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_kill_9_during_import_loses_nothing_and_resumes(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    chosen = [e for e in corpus_manifest() if e["pages"] <= 16][:4]
    for e in chosen:
        shutil.copy(CORPUS / e["file"], src)
    data = tmp_path / "data"
    db = data / "refserver.db"
    proc = subprocess.Popen(
        [*REFSERVER, "import", str(src)],
        env=env_for(data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and paper_count(db) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "import finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_before = paper_count(db)
    assert 2 <= stored_before < len(chosen)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()

    report = tmp_path / "report.json"
    out = subprocess.run(
        [*REFSERVER, "import", str(src), "--report", str(report)],
        env=env_for(data),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rep = json.loads(report.read_text())
    assert len(rep["skipped"]) >= stored_before  # finished files are not redone
    assert not rep["failed"]
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM papers").fetchone()[0] == len(chosen)
    assert con.execute("SELECT count(DISTINCT file_sha256) FROM papers").fetchone()[0] == len(
        chosen
    )
    assert (
        con.execute("SELECT count(*) FROM jobs WHERE status IN ('queued','processing')").fetchone()[
            0
        ]
        == 0
    )
    # every paper has its vectors in SQLite
    missing = con.execute(
        "SELECT count(*) FROM papers p WHERE NOT EXISTS "
        "(SELECT 1 FROM vectors v WHERE v.paper_id=p.id AND v.kind='paper')"
    ).fetchone()[0]
    assert missing == 0
    con.close()
    # ...and in ChromaDB (a third run opens it and counts)
    code = (
        "from refserver.config import Settings; from refserver.context import AppContext\n"
        "c = AppContext(Settings()); print(c.vectors.count('papers')); c.close()"
    )
    n = subprocess.run(
        [sys.executable, "-c", code], env=env_for(data), capture_output=True, text=True, timeout=120
    )
    assert n.stdout.strip().splitlines()[-1] == str(len(chosen)), n.stderr[-2000:]


def test_user_commands_and_paper_show(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = env_for(data)
    r = subprocess.run(
        [*REFSERVER, "user", "create", "bob", "--role", "editor", "--password", "bob-password-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [*REFSERVER, "user", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "bob" in r.stdout and "editor" in r.stdout
    pdf = CORPUS / next(e["file"] for e in corpus_manifest() if "jacow" in e["file"])
    report = tmp_path / "r.json"
    r = subprocess.run(
        [*REFSERVER, "import", str(pdf), "--report", str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    doc_id = json.loads(report.read_text())["imported"][0]["doc_id"]
    r = subprocess.run(
        [*REFSERVER, "paper", "show", doc_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    shown = json.loads(r.stdout)
    assert shown["doi"].lower() == "10.18429/jacow-ipac2018-wepml008"


def test_configuration_docs_are_generated_from_the_settings() -> None:
    from refserver.config import settings_markdown

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    assert doc == settings_markdown(), "run `refserver config docs --output docs/configuration.md`"
