"""The portal's child operations: a local entity's own with their funnel, the central entity's
by reference, and "Run", which creates a run-operation flow run of the deployment on a real
Prefect server (the test harness's), as the Prefect UI would show it."""

from __future__ import annotations

import html

import pytest

from tests.conftest import free_port, rows, scalar
from tests.portal import make_account, signed_in
from tests.test_collaboration import approve, network, run  # noqa: F401

PARIS_DATA = ("PARIS", "SOLDES-PARIS", "Magasin de Paris", "Opéra")


def shown(response) -> str:
    return html.unescape(response.text)


@pytest.fixture
def children(network):
    approve("PK-SOLDES", "LYON", {"MAGASIN": "Part-Dieu"})
    approve("PK-SOLDES", "PARIS", {"MAGASIN": "Opéra"})
    make_account("lyon.op", "local_operator", entity="LYON")
    make_account("paris.op", "local_operator", entity="PARIS")
    make_account("hq.op", "central_operator", entity="HQ")
    return network


@pytest.fixture
def deployment(prefect):
    """The run-operation deployment of prefect.yaml on the test server, as `campflow serve`
    registers it; removed afterwards with its flow runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from campflow.serving import deployments

    [built] = [d for d in deployments() if d.flow_name == "run-operation"]
    deployment_id = built.apply()
    yield deployment_id
    with get_client(sync_client=True) as client:
        for flow_run in client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                any_=[deployment_id]))):
            client.delete_flow_run(flow_run.id)
        client.delete_deployment(deployment_id)


def flow_runs(deployment_id) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


class TestPages:
    def test_a_local_entity_sees_its_own_child_with_its_funnel(self, children):
        run("SOLDES-LYON")
        lyon = signed_in("lyon.op")
        page = lyon.get("/operations")
        assert page.status_code == 200
        assert "SOLDES-LYON" in shown(page) and "Soldes d'été — Magasin de Lyon" in shown(page)
        assert "S1</strong>: ok_continue 2" in shown(page) and "S2</strong>: to_process 2" in shown(page)
        assert not any(foreign in shown(page) for foreign in PARIS_DATA)
        detail = lyon.get("/operations/SOLDES-LYON")
        assert detail.status_code == 200
        text = shown(detail)
        assert "State: in_progress · LYON · from SOLDES" in text
        assert text.count('<tr class="step"') == 2 and "<th>ok_continue</th>" in text and "<th>to_process</th>" in text
        assert "<td>S1</td><td>Annonce</td><td>emailing</td>" in text and ">Run</button>" in text

    def test_the_central_entity_sees_the_children_by_reference(self, children):
        hq = signed_in("hq.op")
        page = shown(hq.get("/operations"))
        assert "<h2>SOLDES <span" in page
        assert page.index("SOLDES-LYON") < page.index("SOLDES-PARIS")
        assert "no party in a step yet" in page
        assert hq.get("/operations/SOLDES-PARIS").status_code == 200

    def test_another_entitys_operation_is_not_found(self, children):
        lyon = signed_in("lyon.op")
        lyon.get("/operations")
        token = lyon.token
        for answer in (lyon.get("/operations/SOLDES-PARIS"), lyon.get("/operations/SOLDES"),
                       lyon.post("/operations/SOLDES-PARIS/run", csrf=token), lyon.get("/operations/NOPE")):
            assert answer.status_code == 404, answer.request.url
            assert not any(foreign in shown(answer) for foreign in PARIS_DATA), answer.request.url
        assert scalar("select count(*) from audit_event where action = 'operation_run'") == 0


class TestRun:
    def test_run_creates_a_flow_run_of_the_deployment(self, children, deployment):
        from prefect.settings import PREFECT_API_URL

        lyon = signed_in("lyon.op")
        lyon.get("/operations/SOLDES-LYON")
        started = lyon.post("/operations/SOLDES-LYON/run")
        assert started.status_code == 303 and started.headers["location"] == "/operations/SOLDES-LYON"
        [flow_run] = flow_runs(deployment)
        assert flow_run.parameters == {"operation": "SOLDES-LYON"}
        assert flow_run.deployment_id == deployment and flow_run.state.is_scheduled()
        page = shown(lyon.get("/operations/SOLDES-LYON"))
        ui = PREFECT_API_URL.value().removesuffix("/api")
        assert f"Flow run <strong>{flow_run.name}</strong> started through the deployment run-operation " \
               f"(id {flow_run.id})" in page
        assert f'href="{ui}/runs/flow-run/{flow_run.id}"' in page
        assert "Flow run" not in shown(lyon.get("/operations/SOLDES-LYON"))  # said once
        assert rows("select login, action, subject, outcome, detail ->> 'flow_run' from audit_event "
                    "where action = 'operation_run'") == [("lyon.op", "operation_run", "SOLDES-LYON", "ok",
                                                            str(flow_run.id))]
        # the central entity may run it too; another local entity may not (404, nothing started)
        hq = signed_in("hq.op")
        hq.get("/operations/SOLDES-LYON")
        assert hq.post("/operations/SOLDES-LYON/run").status_code == 303
        paris = signed_in("paris.op")
        paris.get("/operations")
        assert paris.post("/operations/SOLDES-LYON/run").status_code == 404
        assert len(flow_runs(deployment)) == 2

    def test_without_the_deployment_nothing_starts(self, children, prefect):
        lyon = signed_in("lyon.op")
        lyon.get("/operations/SOLDES-LYON")
        lyon.post("/operations/SOLDES-LYON/run")
        page = shown(lyon.get("/operations/SOLDES-LYON"))
        assert "the deployment run-operation/campflow is not on the Prefect server" in page
        assert "run was not started" in page and "Flow run <strong>" not in page
        assert rows("select outcome from audit_event where action = 'operation_run'") == [("refused",)]

    def test_without_a_prefect_server_nothing_starts(self, children, monkeypatch):
        from campflow.orchestration import schedules

        dead = f"http://127.0.0.1:{free_port()}/api"
        monkeypatch.setattr(schedules, "api_url", lambda: dead)
        lyon = signed_in("lyon.op")
        lyon.get("/operations/SOLDES-LYON")
        lyon.post("/operations/SOLDES-LYON/run")
        page = shown(lyon.get("/operations/SOLDES-LYON"))
        assert f"the Prefect server at {dead} does not answer, so the run was not started" in page
        assert scalar("select state from operation where code = 'SOLDES-LYON'") == "in_preparation"
        assert rows("select outcome from audit_event where action = 'operation_run'") == [("refused",)]
