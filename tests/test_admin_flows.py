"""The admin flows (apply-specs, import-targets, import-answers) run for real under the Prefect
test server, on the real PostgreSQL."""

from __future__ import annotations

import pytest

from campflow.errors import CampflowError, ImportRejected, SpecError
from tests.conftest import EXAMPLES, load_files, rows, scalar
from tests.test_targeting import OPERATION

OP = "SALON-ERP-2026"
PARTIES = "FICHE;TIERS;NOM\nPRO;P001;Boulangerie Lefèvre\nPRO;P002;Menuiserie Gaëlle\nCLI;C001;Client\n"
CONTACTS = "TIERS;CONTACT;NOM\nP001;C1;Lefèvre\nC001;C1;Dupré\n"
BAD_SPEC = """kind: Family
code: SALONS
---
kind: Operation
code: BAD
label: Bad
steps:
  - {code: S1, label: Appel, kind: pigeon}
"""


def artifacts_of(state) -> dict:
    """The artifacts of one flow run, by key (runs of earlier tests wrote under the same keys)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return {a.key: a for a in found}


def run_name(state) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name


def flat(text: str) -> str:
    return " ".join(text.split())


class TestApplySpecs:
    def test_applies_a_folder_read_from_the_working_directory(self, database, prefect, monkeypatch):
        from flows.apply_specs import apply_specs

        monkeypatch.chdir(EXAMPLES)
        state = apply_specs("specs", return_state=True)
        summary = state.result()
        assert sorted(summary["operations"]) == ["MODELE-SALON", "PROSPECTION-LYON-2026", "SALON-ERP-2025",
                                                 "SALON-ERP-2026"]
        assert f"Operation {OP}" in summary["created"] and "Family SALONS" in summary["created"]
        assert summary["updated"] == summary["checked"] == [] and summary["path"] == str(EXAMPLES / "specs")
        assert scalar("select count(*) from operation") == 4
        assert scalar("select count(*) from step s join operation o on o.id = s.operation_id "
                      "where o.code = :op", op=OP) > 0
        assert run_name(state) == "apply specs"
        markdown = artifacts_of(state)["apply-specs"].data
        assert f"| created | Operation | {OP} | {EXAMPLES / 'specs' / 'salon-erp-2026.yaml'}:" in markdown

        again = apply_specs(str(EXAMPLES / "specs"))
        assert again["created"] == again["updated"] == []
        assert sorted(again["operations"]) == sorted(summary["operations"])  # unchanged ones too

    def test_dry_run_checks_and_writes_nothing(self, database, prefect):
        from flows.apply_specs import apply_specs

        state = apply_specs(str(EXAMPLES / "specs"), dry_run=True, return_state=True)
        summary = state.result()
        assert f"Operation {OP}" in summary["checked"] and "Family SALONS" in summary["checked"]
        assert summary["created"] == summary["operations"] == []
        assert scalar("select count(*) from operation") == scalar("select count(*) from family") == 0
        assert (f"Dry run: {len(summary['checked'])} document(s) valid; nothing written."
                in artifacts_of(state)["apply-specs"].data)

    def test_a_bad_spec_lists_every_problem_as_the_cli_does_and_writes_nothing(self, database, prefect, cli,
                                                                              tmp_path):
        from flows.apply_specs import apply_specs

        spec = tmp_path / "bad.yaml"
        spec.write_text(BAD_SPEC, encoding="utf-8")
        with pytest.raises(SpecError) as raised:
            apply_specs(str(spec))
        message = str(raised.value)
        assert message.splitlines()[0] == f"{spec}:1: document: a required key is missing"
        assert message.splitlines()[1].startswith(f"{spec}:8: steps.0.kind: Input should be 'emailing'")
        assert message.endswith("2 problem(s); nothing was written")
        assert flat(message) in flat(cli("apply", spec).err)  # the same error as `campflow apply`
        assert scalar("select count(*) from family") == scalar("select count(*) from operation") == 0

    def test_a_missing_path_is_named(self, database, prefect, monkeypatch, tmp_path):
        from flows.apply_specs import apply_specs

        monkeypatch.chdir(tmp_path)
        with pytest.raises(CampflowError, match=f"^{tmp_path / 'nope.yaml'}: no such file or folder; check the "
                                                f"path \\(a relative path is read from {tmp_path}\\)$"):
            apply_specs("nope.yaml")


@pytest.fixture
def loaded(database, cli, tmp_path, monkeypatch):
    """Parties, contacts and operation OP; the working directory is the test's folder."""
    load_files(cli, tmp_path, PARTIES, CONTACTS, OPERATION)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class TestImportTargets:
    def test_targets_parties_and_contacts(self, loaded, prefect):
        from flows.import_targets import import_targets

        (loaded / "targets.csv").write_text("FICHE;TIERS;CONTACT\nPRO;P001;C1\nCLI;C001;\n", encoding="utf-8")
        state = import_targets("OP", "targets.csv", return_state=True)
        assert state.result() == {"rows": 2, "parties_added": 2, "contacts_added": 1, "rejected": 0, "already": 0,
                                  "left_out": 0}
        assert run_name(state) == "OP targets"
        assert rows("select p.code from operation_target t join party p on p.id = t.party_id order by 1") == [
            ("C001",), ("P001",)]
        table = artifacts_of(state)["op-targets-import"]
        assert table.type == "table"
        assert '"parties targeted"' in table.data and "targets.csv" in table.description

    def test_a_kind_the_operation_does_not_target_is_left_out(self, loaded, cli, prefect):
        from flows.import_targets import import_targets

        (loaded / "more.csv").write_text("FICHE;TIERS;NOM\nFOU;F001;Fournitures\n", encoding="utf-8")
        assert cli("parties", "import", loaded / "more.csv").code == 0
        (loaded / "targets.csv").write_text("FICHE;TIERS\nPRO;P001\nFOU;F001\n", encoding="utf-8")
        state = import_targets("OP", "targets.csv", return_state=True)
        assert state.result()["parties_added"] == 1 and state.result()["left_out"] == 1
        assert "a kind the operation does not target" in artifacts_of(state)["op-targets-import"].data

    def test_skip_bad_rows_writes_the_report(self, loaded, prefect):
        from flows.import_targets import import_targets

        (loaded / "targets.csv").write_text("FICHE;TIERS\nPRO;P001\nXYZ;P002\n", encoding="utf-8")
        counts = import_targets("OP", str(loaded / "targets.csv"), skip_bad_rows=True, report="rejets.csv")
        assert counts["parties_added"] == 1 and counts["rejected"] == 1
        assert (loaded / "rejets.csv").read_text(encoding="utf-8").splitlines()[0] == "row;reason"

    def test_bad_rows_reject_the_file_and_nothing_is_targeted(self, loaded, prefect):
        from flows.import_targets import import_targets

        (loaded / "targets.csv").write_text("FICHE;TIERS\nPRO;P001\nXYZ;P002\nPRO;X999\n", encoding="utf-8")
        with pytest.raises(ImportRejected) as raised:
            import_targets("OP", "targets.csv")
        message = flat(str(raised.value))
        assert "targets.csv row 3: unknown FICHE 'XYZ'" in message
        assert "2 of 3 row(s) rejected; nothing was imported" in message
        assert scalar("select count(*) from operation_target") == 0

    @pytest.mark.parametrize("name, problem", [("nope.csv", "no such file"), (".", "is a folder, not a file")])
    def test_a_missing_file_is_named(self, loaded, prefect, name, problem):
        from flows.import_targets import import_targets

        with pytest.raises(CampflowError) as raised:
            import_targets("OP", name)
        assert str(raised.value) == (f"{loaded / name}: {problem}; check the path "
                                     f"(a relative path is read from {loaded})")
        assert scalar("select count(*) from operation_target") == 0


@pytest.fixture
def phoning(examples_applied, cli, tmp_path, monkeypatch):
    """The example specs; P001, P002 and C001 in step S2 to process; the test's folder as working directory."""
    from sqlalchemy import text

    from campflow.store import db

    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    for kind in ("parties", "contacts"):
        result = cli(kind, "import", tmp_path / f"{kind}.csv", "--quiet")
        assert result.code == 0, result.err
    with db.engine().begin() as conn:
        conn.execute(text("""
            insert into step_target (step_id, party_id, operation_id, status)
            select s.id, p.id, s.operation_id, 'to_process' from step s
            join operation o on o.id = s.operation_id join party p on p.code in ('P001', 'P002', 'C001')
            where o.code = :op and s.code = 'S2'"""), {"op": OP})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def step_statuses() -> list[tuple]:
    return rows("""select p.code, st.status, st.attempts, st.callback_at is not null from step_target st
                   join party p on p.id = st.party_id order by p.code""")


class TestImportAnswers:
    def test_answers_statuses_and_callbacks(self, phoning, prefect):
        from flows.import_answers import import_answers

        (phoning / "appels.csv").write_text(
            "TIERS;STATUT;RAPPEL;CATALOGUE\nP001;ok_continue;;oui\nP002;to_process;12/03/2026 14:30;plus tard\n"
            "C001;;;non\n", encoding="utf-8")
        state = import_answers(OP, "S2", "appels.csv", return_state=True)
        assert state.result() == {"rows": 3, "answers_written": 3, "statuses_changed": 1, "callbacks": 1,
                                  "rejected": 0}
        assert rows("""select p.code, a.value from answer a join party p on p.id = a.party_id
                       order by 1""") == [("C001", "non"), ("P001", "oui"), ("P002", "plus tard")]
        assert step_statuses() == [("C001", "to_process", 0, False), ("P001", "ok_continue", 0, False),
                                   ("P002", "to_process", 1, True)]
        assert run_name(state) == f"{OP} S2 answers"
        table = artifacts_of(state)[f"{OP.lower()}-s2-answers-import"]
        assert table.type == "table" and '"answers written"' in table.data

    def test_a_bad_row_rejects_the_sheet_and_nothing_is_written(self, phoning, prefect):
        from flows.import_answers import import_answers

        (phoning / "appels.csv").write_text("TIERS;STATUT;CATALOGUE\nP001;ok_continue;oui\nX999;failed;non\n",
                                            encoding="utf-8")
        with pytest.raises(ImportRejected, match="appels.csv row 3: unknown party X999"):
            import_answers(OP, "S2", "appels.csv")
        assert scalar("select count(*) from answer") == 0
        assert {s for _, s, _, _ in step_statuses()} == {"to_process"}

    def test_a_missing_file_is_named(self, phoning, prefect):
        from flows.import_answers import import_answers

        with pytest.raises(CampflowError, match="appels-S2.xlsx: no such file; check the path"):
            import_answers(OP, "S2", "appels-S2.xlsx")
        assert scalar("select count(*) from answer") == 0


class TestRunForm:
    """What the Prefect UI's "Custom run" form shows."""

    @pytest.mark.parametrize("module, name, params", [
        ("apply_specs", "apply-specs", ["path", "dry_run"]),
        ("import_targets", "import-targets", ["operation", "path", "skip_bad_rows", "report"]),
        ("import_answers", "import-answers", ["operation", "step", "path", "skip_bad_rows", "report"]),
    ])
    def test_every_parameter_is_described(self, module, name, params):
        import importlib

        from prefect.utilities.callables import parameter_schema

        flow = getattr(importlib.import_module(f"flows.{module}"), module)
        assert flow.name == name
        properties = parameter_schema(flow.fn).properties
        assert list(properties) == params
        assert all(len(p.get("description", "")) > 10 for p in properties.values()), properties
