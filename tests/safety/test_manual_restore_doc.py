"""docs/backup-manual-restore.md works as written: zstd, tar, sqlite3, jq, sha256sum, cp.

The shell blocks of the page are run in order against a real full backup; only
the page's placeholders (data folder, backup id, output folder) are replaced and
``systemctl`` lines dropped. The swap (step 4) runs on a copy of the data folder,
which RefServer then opens and finds consistent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from refserver.context import AppContext
from refserver.safety.backup import engine_of
from refserver.safety.consistency import check
from tests.conftest import corpus_pdf, make_settings
from tests.safety.conftest import add_direct, ingest_pdf, library_state

DOC = Path(__file__).resolve().parents[2] / "docs" / "backup-manual-restore.md"
TOOLS = ("zstd", "tar", "sqlite3", "jq", "sha256sum", "bash")


def doc_blocks() -> list[str]:
    text = DOC.read_text()
    steps = text.split("## Steps", 1)[1].split("## Incrementals", 1)[0]
    return [re.sub(r"(?m)^ {3}", "", b) for b in re.findall(r"```sh\n(.*?)```", steps, re.S)]


@pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {', '.join(TOOLS)}")
def test_manual_restore_page_restores_a_full_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ctx = AppContext(make_settings(data))
    try:
        ingest_pdf(ctx, corpus_pdf("plosone"))  # a real PDF: stored raw
        for i in range(3):
            add_direct(ctx, tmp_path, i)  # generated PDFs: text, stored compressed
        m = engine_of(ctx).create("full", unified=True)
        assert m.status == "completed", m.error
        comps = {x.compression for x in m.members if x.role == "file"}
        assert comps == {"none", "zstd"}, comps  # both kinds of PDF member are exercised
        before = library_state(ctx)
    finally:
        ctx.close()

    blocks = doc_blocks()
    assert len(blocks) >= 6, "the page's steps changed: update this test"
    out = tmp_path / "restored"
    live = tmp_path / "live-copy"
    shutil.copytree(data, live)  # step 4 swaps in a copy, not in the test's own data
    script = "\n".join(blocks[:5])
    script = (
        script.replace("/srv/refserver/data", str(data))
        .replace("/srv/refserver/restored", str(out))
        .replace("20261127T063501Z-full-3f9a", m.id)
    )
    swap = "\n".join(
        ln for ln in blocks[5].splitlines() if not ln.strip().startswith("systemctl")
    ).replace("/srv/refserver/old", str(tmp_path / "old"))
    full = f"set -euo pipefail\n{script}\ncd {live}\n{swap}\n"
    proc = subprocess.run(
        ["bash", "-c", full], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "all PDFs ok" in proc.stdout
    assert "ok" in proc.stdout.splitlines()  # PRAGMA integrity_check
    db_sha = subprocess.run(
        ["sha256sum", str(out / "refserver.db")], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert db_sha == m.sqlite["db_sha256"]

    # RefServer opens the hand-restored folder: same library, consistent
    restored = AppContext(make_settings(live))
    try:
        after = library_state(restored)
        assert after["papers"] == before["papers"]
        assert after["files"] == before["files"]
        assert after["vectors"] == before["vectors"]
        assert after["chroma"] == before["chroma"]
        result = check(restored)
        assert result.issues == [], [i.to_dict() for i in result.issues]
    finally:
        restored.close()
