"""The service files in contrib/: systemd units that `systemd-analyze verify` accepts with
no warning, an example node config that `sqlrepl config check` accepts, a Dockerfile
whose stop signal is the handover's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers.daemons import sqlrepl

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
UNITS = sorted((CONTRIB / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_units_verify_cleanly(tmp_path: Path, unit: Path) -> None:
    """Each unit passes `systemd-analyze verify` without a warning, stops with SIGTERM
    and gives the handover time (TimeoutStopSec ≥ the 10 s switchover timeout + margin)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not available here")
    text = unit.read_text()
    assert "KillSignal=SIGTERM" in text and "Restart=on-failure" in text
    stop = int(text.split("TimeoutStopSec=")[1].split()[0])
    assert stop >= 20
    here = Path(sys.executable).with_name("sqlrepl")  # the unit names /usr/local/bin's
    copy = tmp_path / unit.name
    copy.write_text(text.replace("/usr/local/bin/sqlrepl", str(here)))
    target = copy if "@" not in unit.name else tmp_path / unit.name.replace("@", "@app")
    result = subprocess.run(
        ["systemd-analyze", "verify", str(target)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    command = text.split("ExecStart=")[1].split("\n")[0].split()[1:]
    helped = sqlrepl(*[c for c in command if not c.startswith("/etc/")][:-1], "--help")
    assert helped.returncode == 0, helped.stderr


def test_the_example_config_and_container_files() -> None:
    """contrib/node.toml passes `sqlrepl config check`; the Dockerfile stops with SIGTERM
    and the compose file gives every node a grace period for the handover."""
    checked = sqlrepl("config", "check", str(CONTRIB / "node.toml"))
    assert checked.returncode == 0, checked.stderr
    assert "STOPSIGNAL SIGTERM" in (CONTRIB / "Dockerfile").read_text()
    compose = (CONTRIB / "docker-compose.yml").read_text()
    assert "stop_grace_period: 30s" in compose and compose.count("SQLREPL_ADVERTISE") == 3
