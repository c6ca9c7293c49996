"""The CLI commands the runbook names, and the check script's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.recovery.conftest import full_backup

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(rctx: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run ``refserver`` in-process against the data folder of ``rctx``."""
    from refserver.cli import app
    from refserver.config import get_settings

    monkeypatch.setenv("REFSERVER_DATA_DIR", str(rctx.settings.data_dir))
    get_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})

    yield invoke
    get_settings.cache_clear()


def test_dr_status_check_and_scheduler_list(rctx: Any, cli: Any, tmp_path: Path) -> None:
    r = cli("dr", "status", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["readiness_score"] == "1/10"
    r = cli("dr", "check")
    assert r.exit_code == 1 and "no completed, verified backup" in r.output
    full_backup(rctx)
    r = cli("dr", "check", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["verify"]["integrity_check"] == "passed" and body["problems"] == []
    r = cli("dr", "check", "--no-verify", "--min-score", "9")
    assert r.exit_code == 1 and "below 9" in r.output
    r = cli("scheduler", "list", "--json")
    assert r.exit_code == 0, r.output
    jobs = {j["id"]: j for j in json.loads(r.output)["jobs"]}
    assert (
        jobs["backup_full_weekly"]["schedule"] == "0 4 * * sun"
        and jobs["restore_drill"]["next_run"]
    )
    r = cli("scheduler", "run", "health_check")
    assert r.exit_code == 0 and "health_check succeeded" in r.output
    r = cli("scheduler", "run", "nope")
    assert r.exit_code == 2


def test_offsite_push_verify_and_keygen(rctx: Any, cli: Any, tmp_path: Path) -> None:
    full_backup(rctx)
    key = tmp_path / "k.key"
    assert cli("offsite", "keygen", str(key)).exit_code == 0
    assert cli("offsite", "keygen", str(key)).exit_code == 1  # never overwrites a key
    target = str(tmp_path / "usb")
    r = cli("offsite", "push", "--target", target, "--key", str(key))
    assert r.exit_code == 0 and "verified" in r.output, r.output
    r = cli("offsite", "verify", "--target", target, "--key", str(key))
    assert r.exit_code == 0, r.output
    r = cli("offsite", "verify", "--target", target)  # without the key nothing is listed
    assert r.exit_code == 1


def test_check_backups_script_wraps_dr_check(rctx: Any) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
        "REFSERVER_DATA_DIR": str(rctx.settings.data_dir),
        "REFSERVER": str(Path(sys.executable).parent / "refserver"),
    }
    script = ROOT / "scripts" / "check_backups.sh"
    full_backup(rctx)
    proc = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verification of" in proc.stdout and "passed" in proc.stdout
