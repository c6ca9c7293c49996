"""The bulk CLI end to end in subprocesses: bulk import with a report, export, metadata import, watch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bibtexparser

from tests.bulk.synth import make_paper_pdf
from tests.conftest import ADMIN_PASSWORD

REFSERVER = [sys.executable, "-m", "refserver.cli"]


def run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "REFSERVER_DATA_DIR": str(data),
            "REFSERVER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "COLUMNS": "200",
        }  # fmt: skip
    )
    return subprocess.run([*REFSERVER, *args], env=env, capture_output=True, text=True, timeout=300)


def test_bulk_cli_import_export_metadata_watch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    src = tmp_path / "in"
    for i in range(3):
        make_paper_pdf(src / f"p{i}.pdf", 900 + i, pages=2, words_per_page=100,
                       doi=f"10.7777/cli.{i}")  # fmt: skip
    (src / "junk.pdf").write_text("junk")
    report = tmp_path / "report.json"
    r = run(data, "bulk", "import", str(src), "--workers", "2", "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert "files/s" in r.stderr and "pages/s" in r.stderr and "ETA" in r.stderr
    rep = json.loads(report.read_text())
    assert rep["summary"]["imported"] == 3 and rep["summary"]["failed"] == 1
    assert rep["failed"][0]["file"].endswith("junk.pdf")

    out = tmp_path / "lib.bib"
    r = run(data, "export", "--format", "bibtex", "--output", str(out))
    assert r.returncode == 0, r.stderr
    entries = bibtexparser.parse_string(out.read_text()).entries
    assert sorted(e["doi"] for e in entries) == ["10.7777/cli.0", "10.7777/cli.1", "10.7777/cli.2"]

    bib = tmp_path / "fix.bib"
    bib.write_text(
        "@article{x, title = {A Corrected Title}, doi = {10.7777/CLI.1}, year = {2003}}\n"
    )
    r = run(data, "metadata", "import", str(bib), "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["source"] == "bibtex:fix.bib" and m["updated"] == 1
    r = run(data, "export", "-f", "csljson", "-q", "corrected")  # to stdout
    items = json.loads(r.stdout)
    assert [i["title"] for i in items] == ["A Corrected Title"]
    assert items[0]["issued"] == {"date-parts": [[2003]]}

    consume = data / "consume"
    make_paper_pdf(consume / "dropped.pdf", 990, pages=1, words_per_page=80)
    r = run(data, "watch", "--once", "--interval", "0.2")
    assert r.returncode == 0, r.stderr
    assert (consume / "done" / "dropped.pdf").exists()
