"""The local Prefect server: started in the background under $CAMPFLOW_HOME when no Prefect API
is configured, and reused by the commands that follow, as the embedded PostgreSQL is.

Without it each command that runs a flow or reads a block would start Prefect's ephemeral server
(5-20 s each time, timing out under load), and the flow runs would vanish with it. The server
keeps its state in SQLite (`$CAMPFLOW_HOME/prefect.db`: the embedded PostgreSQL lacks the pg_trgm
extension the Prefect server needs), listens on 127.0.0.1 (port 4200, or a free one when 4200 is
taken) and its address and process id are recorded in `$CAMPFLOW_HOME/prefect-server.json`.
`CAMPFLOW_PREFECT_SERVER=ephemeral` keeps Prefect's ephemeral server (the test suite does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from campflow.errors import CampflowError
from campflow.store import db

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
START_TIMEOUT = 180  # seconds: the first start creates the SQLite database (~15 s; more on a busy machine)


@dataclass(frozen=True)
class Recorded:
    pid: int
    port: int

    @property
    def ui(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.ui}/api"


def prefect_bin() -> str:
    """The `prefect` command of this environment."""
    return str(Path(sys.executable).with_name("prefect"))


def state_file() -> Path:
    return db.campflow_home() / "prefect-server.json"


def log_file() -> Path:
    return db.campflow_home() / "prefect-server.log"


def use_local_server() -> str | None:
    """Point this process at the local server (started if needed) unless a Prefect API is
    configured; returns the API URL it set, None when it left the configuration alone."""
    if _ephemeral():
        return None
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():  # PREFECT_API_URL, a Prefect profile or a test harness
        return None
    server = ensure_running()
    os.environ["PREFECT_API_URL"] = server.api
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()  # prefect read the environment when it was imported
    return server.api


def _ephemeral() -> bool:
    mode = os.environ.get("CAMPFLOW_PREFECT_SERVER", "local")
    if mode not in ("local", "ephemeral"):
        raise CampflowError(f"CAMPFLOW_PREFECT_SERVER={mode!r}: use local (a background server under "
                            "$CAMPFLOW_HOME, the default) or ephemeral (a temporary server per command)")
    return mode == "ephemeral"


def ensure_running() -> Recorded:
    """The recorded server when it answers; otherwise a new one, started and answering."""
    with _lock():
        found = running()
        if found:
            return found
        return _start()


def running() -> Recorded | None:
    """The recorded server, when its address answers /api/health."""
    recorded = _read()
    return recorded if recorded and healthy(recorded.api) else None


def running_api() -> str | None:
    """The local server's API URL when it runs (never in ephemeral mode); starts nothing."""
    if _ephemeral():
        return None
    found = running()
    return found.api if found else None


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def stop() -> Recorded | None:
    """Stop the recorded server; returns it, or None when none was running."""
    with _lock():
        recorded = _read()
        if recorded is None:
            return None
        state_file().unlink()
        if not _is_our_server(recorded.pid):
            return None  # it died and its process id may belong to another program now
        _terminate(recorded.pid)
        return recorded


def _start() -> Recorded:
    home = db.campflow_home()
    home.mkdir(parents=True, exist_ok=True)
    port = DEFAULT_PORT if _free(DEFAULT_PORT) else _any_free_port()
    command = [prefect_bin(), "server", "start", "--host", HOST, "--port", str(port)]
    with log_file().open("ab") as log:
        # a session of its own: the server outlives this command and Ctrl-C in the terminal
        process = subprocess.Popen(command, env=_server_env(port), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True, cwd=home)
    recorded = Recorded(process.pid, port)
    # on stderr: a command's --json output stays clean
    print(f"starting the local Prefect server (UI {recorded.ui}, state in {home / 'prefect.db'}); "
          "`campflow stop` stops it", file=sys.stderr, flush=True)
    _wait_healthy(process, recorded)
    state_file().write_text(json.dumps(asdict(recorded)))
    return recorded


def _server_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{db.campflow_home() / 'prefect.db'}",
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://{HOST}:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
    )
    return env


def _wait_healthy(process: subprocess.Popen, recorded: Recorded) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy(recorded.api):
        if process.poll() is not None:
            raise CampflowError(f"the local Prefect server stopped while starting (exit {process.returncode}); "
                                f"see {log_file()}, or set PREFECT_API_URL to use another server")
        if time.monotonic() > deadline:
            _terminate(process.pid)
            raise CampflowError(f"the local Prefect server did not answer on {recorded.api} within "
                                f"{START_TIMEOUT} s; see {log_file()}, or set PREFECT_API_URL")
        time.sleep(0.5)


def _terminate(pid: int, grace: float = 20) -> None:
    """SIGTERM to the server's process group (uvicorn and its services), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running, not a zombie (its parent ended; a container's init may never reap it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _is_our_server(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server" in command and any(part.endswith(b"prefect") for part in command)


def _read() -> Recorded | None:
    try:
        return Recorded(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One command at a time starts or stops the server (the others wait, then reuse it)."""
    home = db.campflow_home()
    home.mkdir(parents=True, exist_ok=True)
    with (home / "prefect-server.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
