"""Several machines: `campflow deploy` puts prefect.yaml's deployments on the `campflow`
process work pool, and a `campflow worker` started elsewhere runs an operation from it."""

from __future__ import annotations

import pytest

from campflow.serving import PROJECT_DIR
from tests.conftest import free_port, scalar
from tests.served import CAMPFLOW, base_env, drop_database, final_state, start, start_server, wait_for
from tests.test_served import DEPLOYMENTS, apply, load_parties

SPEC = """kind: Operation
code: POOL
label: Export on a worker
steps:
  - {code: X1, label: Export, kind: spreadsheet_export, event: EXPORT, columns: [PCFIDX.CODE, PCFIDX.NOM]}
"""


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool-server")
    server, name = start_server(database_url, folder, free_port())
    yield server
    server.process.stop()
    drop_database(database_url, name)


def test_deploy_then_a_worker_runs_the_operation(server, database, database_url, cli, tmp_path):
    import subprocess

    from prefect import get_client
    from prefect.deployments import run_deployment

    env = base_env(CAMPFLOW_DATABASE_URL=database_url, PREFECT_API_URL=server.api,
                   PREFECT_HOME=str(tmp_path / "home"))
    deployed = subprocess.run([CAMPFLOW, "deploy"], env=env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with server.settings(), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("run-operation/campflow")
        assert deployment.work_pool_name == "campflow"
        assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory":
                                          {"directory": str(PROJECT_DIR)}}]
        assert client.read_work_pool("campflow").type == "process"
        for name in DEPLOYMENTS:
            assert client.read_deployment_by_name(name).work_pool_name == "campflow"

    with server.settings():
        load_parties(cli, tmp_path)
        apply(cli, tmp_path, SPEC)
        assert cli("targets", "add", "POOL", "--where", "kind in (PRO, CLI)").code == 0
    elsewhere = tmp_path / "elsewhere"  # the worker's own folder: the pull step moves the run
    elsewhere.mkdir()
    worker = start([CAMPFLOW, "worker", "--limit", "2"], env | {"PREFECT_WORKER_QUERY_SECONDS": "2"},
                   tmp_path / "worker.log", cwd=elsewhere)
    try:
        wait_for(lambda: "started" in worker.output(), 60, "campflow worker", worker)
        with server.settings():
            run = run_deployment("run-operation/campflow", parameters={"operation": "POOL"}, timeout=0)
        done = final_state(server, run.id)
        assert done.state.type.value == "COMPLETED", worker.output()[-3000:]
        assert scalar("select count(*) from event where code = 'EXPORT'") == 3
        assert "set_working_directory" in worker.output()
    finally:
        worker.stop()
