"""The embedded PostgreSQL used when no database is configured."""

from __future__ import annotations

import os
import subprocess
import sys


def test_embedded_database_starts_serves_and_stops(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CAMPFLOW_DATABASE_URL"}
    env["CAMPFLOW_HOME"] = str(tmp_path / "home")

    def campflow(*args):
        return subprocess.run([sys.executable, "-m", "campflow", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    upgraded = campflow("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()
    assert "host=" in campflow("db", "url").stdout
    assert campflow("ops", "tree").stdout.strip() == "no operation yet"
    stopped = campflow("db", "stop")
    assert "stopped the embedded PostgreSQL" in stopped.stdout, stopped.stderr
    assert "Warning" not in stopped.stderr and "Warning" not in upgraded.stderr
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()
    assert "no embedded PostgreSQL runs" in campflow("db", "stop").stdout
