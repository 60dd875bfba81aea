"""With no Prefect API configured, the first command that needs one starts a local Prefect server
in the background under $CAMPFLOW_HOME; the next commands reuse it; `campflow db stop` stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from campflow.errors import CampflowError
from campflow.orchestration import local_server


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A CAMPFLOW_HOME of its own; whatever server the test started is stopped at the end."""
    folder = tmp_path / "home"
    monkeypatch.setenv("CAMPFLOW_HOME", str(folder))
    yield folder
    local_server.stop()


def campflow_env(home, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "CAMPFLOW_PREFECT_SERVER"}
    env.update(CAMPFLOW_HOME=str(home), CAMPFLOW_DATABASE_URL=database_url,
               PREFECT_HOME=str(home.parent / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def flow_runs(api: str) -> list[dict]:
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def test_commands_share_one_background_server_until_stopped(examples_applied, home):
    env = campflow_env(home, examples_applied)

    def campflow(*args):
        return subprocess.run([sys.executable, "-m", "campflow", *args], env=env, capture_output=True,
                              text=True, timeout=300)

    first = campflow("run", "SALON-ERP-2026")
    assert first.returncode == 0, first.stderr
    assert "starting the local Prefect server" in first.stderr
    recorded = json.loads((home / "prefect-server.json").read_text())
    server = local_server.running()
    assert server is not None and (server.pid, server.port) == (recorded["pid"], recorded["port"])

    second = campflow("channels", "list")
    assert second.returncode == 0, second.stderr
    assert "starting" not in second.stderr and "no channel saved" in second.stdout
    assert json.loads((home / "prefect-server.json").read_text()) == recorded  # the same server, reused
    sync = campflow("schedules", "sync", "--check")  # serve, deploy, schedules: the local server too
    assert sync.returncode == 1 and f"the Prefect server at {server.api} has no deployment" in sync.stderr

    runs = [r for r in flow_runs(server.api) if r["parameters"].get("operation") == "SALON-ERP-2026"]
    assert [r["state_type"] for r in runs] == ["COMPLETED"]
    with urllib.request.urlopen(server.ui, timeout=30) as page:  # the UI is served too
        assert page.status == 200 and b"<html" in page.read().lower()

    stopped = campflow("db", "stop")
    assert f"stopped the local Prefect server ({server.ui})" in stopped.stdout, stopped.stderr
    assert not local_server.healthy(server.api) and not (home / "prefect-server.json").exists()
    assert not local_server._alive(server.pid)
    assert "no local Prefect server runs" in campflow("stop").stdout


def test_a_configured_api_is_left_alone(home, monkeypatch):
    monkeypatch.delenv("CAMPFLOW_PREFECT_SERVER", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    try:
        assert local_server.use_local_server() is None
    finally:
        monkeypatch.delenv("PREFECT_API_URL")
        refresh_global_settings_context()
    monkeypatch.setenv("CAMPFLOW_PREFECT_SERVER", "ephemeral")
    assert local_server.use_local_server() is None and local_server.running_api() is None
    assert not (home / "prefect-server.json").exists()
    monkeypatch.setenv("CAMPFLOW_PREFECT_SERVER", "always")
    with pytest.raises(CampflowError, match="CAMPFLOW_PREFECT_SERVER='always': use local"):
        local_server.use_local_server()
