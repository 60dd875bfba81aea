"""Deployments from one source: `campflow serve` builds prefect.yaml's deployments, and neither a
`prefect deploy --all` nor a serve restart removes the operations' schedules (a real Prefect
test server)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest
import yaml

from campflow.errors import CampflowError
from campflow.orchestration import schedules
from campflow.serving import PREFECT_YAML, PROJECT_DIR, WORK_POOL, _schedule, definitions, deployments, prefect_bin
from tests.served import base_env
from tests.test_served import DEPLOYMENTS

SCHEDULED = """kind: Operation
code: KEEP
label: Scheduled operation
timezone: Europe/Paris
starts_at: 2030-01-07T09:00
ends_at: 2030-01-31T18:00
cadence: daily
steps:
  - {code: X1, label: Export, kind: spreadsheet_export, event: EXPORT, columns: [PCFIDX.CODE]}
"""


class TestOneSource:
    def test_serve_builds_the_deployments_prefect_yaml_defines(self):
        entries = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))["deployments"]
        built = deployments()
        assert sorted(f"{d.flow_name}/{d.name}" for d in built) == sorted(DEPLOYMENTS)
        for entry, deployment in zip(entries, built, strict=True):
            assert deployment.entrypoint == entry["entrypoint"]
            assert deployment.description == entry["description"]
            assert deployment.tags == entry["tags"] and "campflow" in deployment.tags
            assert deployment.parameters == entry["parameters"]
            assert entry["work_pool"]["name"] == WORK_POOL

    def test_only_sync_schedules_carries_a_schedule(self):
        by_flow = {d.flow_name: d for d in deployments()}
        [every] = by_flow.pop("sync-schedules").schedules
        assert every.slug == "campflow-sync" and every.schedule.interval == dt.timedelta(minutes=15)
        for deployment in by_flow.values():  # sent without schedules: the server keeps its own
            assert "schedules" not in deployment.model_fields_set

    def test_a_schedule_the_file_cannot_express_is_refused(self):
        assert _schedule({"cron": "0 9 * * 1", "slug": "monday", "timezone": "Europe/Paris"}).slug == "monday"
        with pytest.raises(CampflowError, match="needs one of"):
            _schedule({"interval": 60, "cron": "* * * * *"})
        with pytest.raises(CampflowError, match="got {'interval': 60, 'anchor': 1}"):
            _schedule({"interval": 60, "anchor": 1})

    def test_definitions_read_the_file_given(self, tmp_path):
        path = tmp_path / "prefect.yaml"
        path.write_text("""deployments:
  - name: other
    entrypoint: flows/sync_schedules.py:sync_schedules
    work_pool: {name: pool}
""", encoding="utf-8")
        [only] = definitions(path)
        assert (only.name, only.tags, only.schedules, only.work_queue) == ("other", (), (), "default")
        assert only.load_flow().name == "sync-schedules"


@pytest.fixture
def deployed(prefect, database):
    """The work pool and prefect.yaml's deployments on the test server, removed afterwards."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url  # the `cli` fixture's commands, as a user's shell
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"), overwrite=True)
    try:
        yield url
    finally:
        with get_client(sync_client=True) as client:
            for name in DEPLOYMENTS:
                try:
                    client.delete_deployment(client.read_deployment_by_name(name).id)
                except Exception:  # noqa: BLE001 - a deploy that failed midway left fewer
                    pass
            client.delete_work_pool(WORK_POOL)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def prefect_deploy(url: str, tmp_path) -> None:
    """`prefect deploy --all` from the project folder, as a user runs it (no sync after)."""
    env = base_env(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "home"), CAMPFLOW_PROJECT_DIR=str(PROJECT_DIR))
    done = subprocess.run([prefect_bin(), "--no-prompt", "deploy", "--all"], env=env, cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def serve_registers() -> None:
    """What `campflow serve` does before it syncs: each deployment added to a Runner."""
    from prefect.runner import Runner

    runner = Runner(name="campflow-serve", pause_on_shutdown=False)
    for deployment in deployments():
        runner.add_deployment(deployment)


def state(name: str) -> dict:
    """What a deployment looks like on the server, its schedules by id."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(name)
    return {"tags": sorted(found.tags), "description": found.description, "parameters": found.parameters,
            "schedules": {s.id: (s.slug, s.active, s.parameters) for s in found.schedules}}


def test_a_redeploy_or_a_serve_restart_keeps_the_operations_schedules(deployed, cli, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule

    serve_registers()  # creates the deployments
    (tmp_path / "op.yaml").write_text(SCHEDULED, encoding="utf-8")
    assert cli("apply", tmp_path / "op.yaml").code == 0  # syncs: PREFECT_API_URL is set
    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(schedules.DEPLOYMENT).id
        client.create_deployment_schedules(deployment_id, [DeploymentScheduleCreate(  # no slug, as made by hand
            schedule=IntervalSchedule(interval=dt.timedelta(days=1)), active=False)])
    before = {name: state(name) for name in DEPLOYMENTS}
    kept = before[schedules.DEPLOYMENT]["schedules"]
    assert sorted(slug or "" for slug, _, _ in kept.values()) == ["", "operation-KEEP"]
    assert before["run-operation/campflow"]["tags"] == ["campflow", "operation"]

    prefect_deploy(deployed, tmp_path)  # the same definitions: nothing differs from what serve left
    assert {name: state(name) for name in DEPLOYMENTS} == before

    serve_registers()  # a serve restart
    assert {name: state(name) for name in DEPLOYMENTS} == before
    assert [c.action for c in schedules.sync()] == ["unchanged"]
