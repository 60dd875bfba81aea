"""A real Prefect server (`campflow server`, state in PostgreSQL) and `campflow serve`, started
as processes for the tests that need deployments, schedules and the UI."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from campflow.orchestration.local_server import healthy

CAMPFLOW = str(Path(sys.executable).with_name("campflow"))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Process:
    popen: subprocess.Popen
    log: Path
    handle: object

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self.handle.close()


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Process:
    handle = log.open("w")
    popen = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=cwd)
    return Process(popen, log, handle)


def wait_for(check: Callable[[], object], timeout: float, what: str, process: Process | None = None,
             every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process and process.popen.poll() is not None:
            raise AssertionError(f"{what}: the process ended\n{process.output()[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f"\n{process.output()[-3000:]}" if process else ""))


@dataclass
class Server:
    url: str  # the UI
    api: str
    process: Process

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """In-process Prefect calls (and `campflow` commands run by the `cli` fixture) use it."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        previous = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = self.api
        try:
            with temporary_settings(updates={PREFECT_API_URL: self.api}):
                yield
        finally:
            if previous is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = previous


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def start_server(database_url: str, folder: Path, port: int) -> tuple[Server, str]:
    """`campflow server` on `port`, its state in a database beside the test database."""
    name = f"{make_url(database_url).database}_prefect"
    env = base_env(CAMPFLOW_DATABASE_URL=database_url, PREFECT_HOME=str(folder / "prefect-home"),
                   PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="3")
    process = start([CAMPFLOW, "server", "--port", str(port), "--database", name], env, folder / "server.log")
    server = Server(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api", process)
    try:
        wait_for(lambda: healthy(server.api), 180, "the Prefect server", process)
    except AssertionError:
        process.stop()
        raise
    return server, name


def drop_database(database_url: str, name: str) -> None:
    admin = create_engine(make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'drop database if exists "{name}" with (force)'))
    admin.dispose()


def start_serve(server: Server, database_url: str, folder: Path, limit: int | None = None) -> Process:
    """`campflow serve` against the server (`--limit`: most flow runs at once); returns once its
    deployments are registered."""
    env = base_env(CAMPFLOW_DATABASE_URL=database_url, PREFECT_API_URL=server.api,
                   PREFECT_RUNNER_POLL_FREQUENCY="2", PREFECT_HOME=str(folder / "serve-home"))
    command = [CAMPFLOW, "serve"] + (["--limit", str(limit)] if limit else [])
    process = start(command, env, folder / "serve.log")
    try:
        wait_for(lambda: "Ctrl-C stops" in " ".join(process.output().split()), 120, "campflow serve", process)
    except AssertionError:
        process.stop()
        raise
    return process


def final_state(server: Server, flow_run_id, timeout: float = 180):
    """The flow run once it reached a final state (the served process runs it)."""
    from prefect import get_client

    def reached():
        with server.settings(), get_client(sync_client=True) as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state and run.state.type.value in FINAL else None

    return wait_for(reached, timeout, f"flow run {flow_run_id} to end", every=1)
