"""What an approved order means (SPEC section 9): by_campaign child operations and who may touch
them, simple / by_form participation in the central operation, ORDER.FIELD personalisation.

Orders are inserted approved and `collaboration.on_approved` is called, as the approval code
does in its transaction; runs go through the run-operation flow on PostgreSQL and Prefect.
"""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from campflow.errors import CampflowError
from campflow.network.accounts import portal_url
from campflow.network.collaboration import on_approved
from campflow.store import db
from models import Entity, Operation, Order, Package
from tests.conftest import rows, scalar

PARTIES = """FICHE;TIERS;NOM;VILLE;EMAIL
PRO;P1;Boulangerie Lyonnaise;Lyon;p1@example.com
CLI;P2;Café des Terreaux;lyon ;p2@example.com
PRO;P3;Fromagerie Opéra;Paris;p3@example.com
PRO;P4;Moulin de Lille;Lille;p4@example.com
"""
NETWORK = """kind: Entity
code: HQ
label: Siège
type: central
operators: [chef]
---
kind: Entity
code: LYON
label: Magasin de Lyon
parent: HQ
operators: [marie]
---
kind: Entity
code: PARIS
label: Magasin de Paris
parent: HQ
operators: [paul]
---
kind: Entity
code: MARS
label: Magasin de Marseille
parent: HQ
operators: [luc]
---
kind: Distribution
code: VILLES
label: Par ville
field: PCFIDX.VILLE
rules:
  - {value: Lyon, entity: LYON}
  - {value: Paris, entity: PARIS}
  - {value: Marseille, entity: MARS}
"""
OPERATIONS = """kind: Operation
code: SOLDES
label: Soldes d'été
timezone: Europe/Paris
starts_at: 2027-06-20T09:00
ends_at: 2027-07-20T18:00
cadence: daily
steps:
  - code: S1
    label: Annonce
    kind: emailing
    email:
      subject: "Soldes chez [[ORDER.MAGASIN]] — [[PCFIDX.NOM]]"
      text: "Bonjour [[PCFIDX.NOM]], rendez-vous chez [[ORDER.magasin]]."
  - {code: S2, label: Relance, kind: other, next: []}
---
kind: Operation
code: TOUS
label: Journée portes ouvertes
steps:
  - {code: E1, label: Invitation, kind: other, next: []}
---
kind: Operation
code: PERSO
label: Invitations personnalisées
steps:
  - code: M1
    label: Invitation
    kind: emailing
    email:
      subject: "[[ORDER.MAGASIN]] invite [[PCFIDX.NOM]]"
      text: "Votre magasin : [[ORDER.MAGASIN]]"
    next: []
  - code: X1
    label: Liste
    kind: spreadsheet_export
    columns: [PCFIDX.TIERS, ORDER.MAGASIN]
---
kind: Package
code: PK-SOLDES
label: Kit soldes
operation: SOLDES
owner: HQ
collaboration: by_campaign
audience: [LYON, PARIS, MARS]
distribution: VILLES
form: [{code: MAGASIN, label: Nom du magasin}]
---
kind: Package
code: PK-TOUS
label: Portes ouvertes
operation: TOUS
owner: HQ
collaboration: simple
audience: [LYON, PARIS]
distribution: VILLES
---
kind: Package
code: PK-PERSO
label: Invitations
operation: PERSO
owner: HQ
collaboration: by_form
audience: [LYON, PARIS]
distribution: VILLES
form: [{code: MAGASIN, label: Nom du magasin, required: true}]
"""


@pytest.fixture
def network(database, cli, tmp_path, prefect, channels, monkeypatch):
    monkeypatch.delenv("CAMPFLOW_OPERATOR", raising=False)
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    (tmp_path / "parties.csv").write_text(PARTIES, encoding="utf-8")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "network.yaml").write_text(NETWORK, encoding="utf-8")
    (specs / "operations.yaml").write_text(OPERATIONS, encoding="utf-8")
    for args in (("parties", "import", tmp_path / "parties.csv", "-q"), ("apply", specs)):
        result = cli(*args)
        assert result.code == 0, result.err
    return tmp_path


def approve(package: str, entity: str, values: dict | None = None, status: str = "approved") -> str | None:
    """An order of `entity` for `package`, inserted with `status`; on_approved when approved."""
    with db.session() as session:
        package_id = session.scalar(select(Package.id).where(Package.code == package))
        entity_id = session.scalar(select(Entity.id).where(Entity.code == entity))
        order = Order(package_id=package_id, entity_id=entity_id, status=status, values=values or {},
                      created_by="test", decided_by="chef")
        session.add(order)
        session.flush()
        return on_approved(session, order, "chef") if status == "approved" else None


def targets(operation: str) -> list[str]:
    return [code for (code,) in rows("""select p.code from operation_target t join party p on p.id = t.party_id
                                        join operation o on o.id = t.operation_id where o.code = :op order by 1""",
                                     op=operation)]


def in_step(operation: str, step: str) -> list[str]:
    return [code for (code,) in rows("""select p.code from step_target st join party p on p.id = st.party_id
                                        join step s on s.id = st.step_id join operation o on o.id = s.operation_id
                                        where o.code = :op and s.code = :step order by 1""", op=operation, step=step)]


def messages(out: Path, operation: str) -> dict[str, email.message.EmailMessage]:
    """The .eml files the runs of `operation` wrote (no channel saved), by party code."""
    return {path.stem: email.message_from_bytes(path.read_bytes(), policy=policy.default)
            for path in sorted((out / operation).glob("*/*/messages/*.eml"))}


def run(operation: str, **kwargs) -> dict:
    from flows.run_operation import run_operation

    return {r["code"]: r for r in run_operation(operation, **kwargs)}


class TestByCampaign:
    def test_approval_creates_the_child_with_the_entitys_parties(self, network):
        line = approve("PK-SOLDES", "LYON", {"MAGASIN": "Lyon Part-Dieu"})
        assert line == ("child operation SOLDES-LYON created with 2 targets (distribution VILLES): "
                        + portal_url("operations/SOLDES-LYON"))
        child = rows("""select c.label, c.state, e.code, p.code, c.timezone, c.cadence,
                               to_char(c.starts_at at time zone 'Europe/Paris', 'YYYY-MM-DD HH24:MI')
                        from operation c join entity e on e.id = c.owner_entity_id
                        join operation p on p.id = c.parent_operation_id where c.code = 'SOLDES-LYON'""")
        assert child == [("Soldes d'été — Magasin de Lyon", "in_preparation", "LYON", "SOLDES", "Europe/Paris",
                          "daily", "2027-06-20 09:00")]
        assert targets("SOLDES-LYON") == ["P1", "P2"]  # "lyon " matches Lyon: trimmed, any case
        assert scalar("""select o.code from package_order po join operation o on o.id = po.child_operation_id""") \
            == "SOLDES-LYON"
        # steps, routes and settings are the reference's
        assert rows("""select s.code, s.kind, s.settings::text, s.default_route from step s
                       join operation o on o.id = s.operation_id where o.code = 'SOLDES-LYON' order by s.position""") \
            == rows("""select s.code, s.kind, s.settings::text, s.default_route from step s
                       join operation o on o.id = s.operation_id where o.code = 'SOLDES' order by s.position""")

    def test_ops_children_lists_what_each_operator_may_see(self, network, cli):
        approve("PK-SOLDES", "LYON", {"MAGASIN": "Part-Dieu"})
        approve("PK-SOLDES", "PARIS", {"MAGASIN": "Opéra"})
        central = cli("ops", "children", "SOLDES", "--as", "chef", "--json")
        assert central.code == 0, central.err
        found = json.loads(central.out)
        assert [(c["code"], c["entity"], c["state"], c["order_status"], c["targets"]) for c in found] == [
            ("SOLDES-LYON", "LYON", "in_preparation", "approved", 2),
            ("SOLDES-PARIS", "PARIS", "in_preparation", "approved", 1)]
        lyon = json.loads(cli("ops", "children", "SOLDES", "--as", "marie", "--json").out)
        assert [c["code"] for c in lyon] == ["SOLDES-LYON"]
        table = cli("ops", "children", "SOLDES", "--as", "paul")
        assert "SOLDES-PARIS" in table.out and "SOLDES-LYON" not in table.out
        assert "no party in a step yet" in table.out
        nobody = cli("ops", "children", "SOLDES", "--as", "inconnu")
        assert nobody.code == 1 and "operator 'inconnu' acts for no entity" in nobody.err

    def test_the_local_operator_changes_and_runs_its_child(self, network, cli):
        approve("PK-SOLDES", "LYON", {"MAGASIN": "Lyon Part-Dieu"})
        exported = cli("export", "SOLDES-LYON", "--as", "marie", "-o", network / "child.yaml")
        assert exported.code == 0, exported.err
        data = yaml.safe_load((network / "child.yaml").read_text(encoding="utf-8"))
        data["steps"][0]["email"]["subject"] = "[[ORDER.MAGASIN]] : -30 % pour [[PCFIDX.NOM]]"
        data["steps"][1]["label"] = "Relance locale"
        (network / "child.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        applied = cli("apply", network / "child.yaml", "--as", "marie")
        assert applied.code == 0, applied.err
        assert "updated" in applied.out
        assert scalar("""select e.code from operation o join entity e on e.id = o.owner_entity_id
                         where o.code = 'SOLDES-LYON'""") == "LYON"  # an apply keeps the owner
        ran = cli("run", "SOLDES-LYON", "--as", "marie", "--json")
        assert ran.code == 0, ran.err
        sent = messages(network / "out", "SOLDES-LYON")
        assert {code: m["Subject"] for code, m in sent.items()} == {
            "P1": "Lyon Part-Dieu : -30 % pour Boulangerie Lyonnaise",
            "P2": "Lyon Part-Dieu : -30 % pour Café des Terreaux"}
        assert "rendez-vous chez Lyon Part-Dieu" in sent["P1"].get_body(("plain",)).get_content()
        assert scalar("select state from operation where code = 'SOLDES-LYON'") == "in_progress"
        funnel = json.loads(cli("ops", "children", "SOLDES", "--as", "chef", "--json").out)[0]["funnel"]
        assert funnel == {"S1": {"ok_continue": 2}, "S2": {"to_process": 2}}

    def test_another_local_operator_may_neither_read_nor_change_nor_run_it(self, network, cli):
        approve("PK-SOLDES", "LYON", {"MAGASIN": "Part-Dieu"})
        assert cli("export", "SOLDES-LYON", "--as", "marie", "-o", network / "child.yaml").code == 0
        refused = {
            "export": cli("export", "SOLDES-LYON", "--as", "paul"),
            "apply": cli("apply", network / "child.yaml", "--as", "paul"),
            "run": cli("run", "SOLDES-LYON", "--as", "paul"),
        }
        for doing, result in refused.items():  # as if it did not exist: PARIS does not see LYON's operations
            assert result.code == 1, doing
            assert "no operation SOLDES-LYON; none you may see" in result.err.replace("\n", " "), result.err
            assert "LYON" not in result.err.replace("SOLDES-LYON", ""), result.err
        assert "child.yaml:1:" in refused["apply"].err  # the document named, file:line
        # nothing changed, nothing ran
        assert scalar("select state from operation where code = 'SOLDES-LYON'") == "in_preparation"
        # naming nobody is not enough for a local entity's operation (the system user is no operator)
        anonymous = cli("run", "SOLDES-LYON")
        assert anonymous.code == 1 and "acts for no entity" in anonymous.err
        # a local operator may not change the central entity's reference either; the central may
        assert cli("export", "SOLDES", "-o", network / "ref.yaml").code == 0
        local = cli("apply", network / "ref.yaml", "--as", "marie")
        assert local.code == 1 and "no operation SOLDES;" in local.err
        assert cli("apply", network / "child.yaml", "--as", "chef").code == 0

    def test_a_distribution_covering_none_of_the_entitys_parties(self, network):
        line = approve("PK-SOLDES", "MARS", {"MAGASIN": "Vieux-Port"})
        assert line.startswith("child operation SOLDES-MARS created with no target: no party has "
                               "PCFIDX.VILLE = Marseille (distribution VILLES's values for MARS)")
        assert line.endswith(f"its page: {portal_url('operations/SOLDES-MARS')}")
        assert targets("SOLDES-MARS") == []

    def test_a_taken_code_is_refused_and_nothing_changes(self, network, cli):
        assert cli("export", "SOLDES", "-o", network / "ref.yaml").code == 0
        data = yaml.safe_load((network / "ref.yaml").read_text(encoding="utf-8"))
        data["code"] = "SOLDES-PARIS"
        (network / "taken.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        assert cli("apply", network / "taken.yaml").code == 0
        with pytest.raises(CampflowError, match="operation SOLDES-PARIS exists already and is not its child"):
            approve("PK-SOLDES", "PARIS")
        assert scalar("select count(*) from package_order") == 0  # the approval's transaction rolled back


class TestSimple:
    def test_only_parties_of_approved_entities_enter(self, network, cli):
        assert cli("targets", "add", "TOUS", "--where", "kind in (PRO, CLI)").code == 0
        line = approve("PK-TOUS", "LYON")
        assert line.startswith("LYON takes part in TOUS")
        approve("PK-TOUS", "PARIS", status="pending")
        reports = run("TOUS")
        assert reports["E1"]["entered"] == 2
        assert in_step("TOUS", "E1") == ["P1", "P2"]  # not P3 (PARIS pending) nor P4 (no entity)

    def test_an_entity_approved_later_comes_in_at_the_next_run(self, network, cli):
        assert cli("targets", "add", "TOUS", "--where", "kind in (PRO, CLI)").code == 0
        assert run("TOUS")["E1"]["entered"] == 0
        approve("PK-TOUS", "PARIS")
        assert run("TOUS")["E1"]["entered"] == 1
        assert in_step("TOUS", "E1") == ["P3"]

    def test_a_rules_limit_keeps_its_first_parties(self, network, cli):
        assert cli("targets", "add", "TOUS", "--where", "kind in (PRO, CLI)").code == 0
        with db.engine().begin() as conn:
            conn.exec_driver_sql("update distribution_rule set limit_count = 1 where value = 'Lyon'")
        approve("PK-TOUS", "LYON")
        run("TOUS")
        assert in_step("TOUS", "E1") == ["P1"]  # by party code

    def test_a_package_without_distribution_is_refused_at_run(self, network, cli):
        with db.session() as session:
            session.scalars(select(Package).where(Package.code == "PK-TOUS")).one().distribution_id = None
        from flows.run_operation import process_step

        with pytest.raises(CampflowError, match="package PK-TOUS .simple. has no distribution"):
            process_step("TOUS", "E1")


class TestByForm:
    def test_each_party_reads_its_entitys_values(self, network, cli):
        assert cli("targets", "add", "PERSO", "--where", "kind in (PRO, CLI)").code == 0
        approve("PK-PERSO", "LYON", {"MAGASIN": "Lyon Part-Dieu"})
        approve("PK-PERSO", "PARIS", {"MAGASIN": "Paris Opéra"})
        reports = run("PERSO")
        assert reports["M1"]["processed"] == 3
        sent = messages(network / "out", "PERSO")
        assert {code: m["Subject"] for code, m in sent.items()} == {
            "P1": "Lyon Part-Dieu invite Boulangerie Lyonnaise",
            "P2": "Lyon Part-Dieu invite Café des Terreaux",
            "P3": "Paris Opéra invite Fromagerie Opéra"}
        from openpyxl import load_workbook

        sheet = load_workbook(reports["X1"]["outputs"][0], read_only=True).active
        assert [tuple(r) for r in sheet.iter_rows(values_only=True)] == [
            ("PCFIDX.TIERS", "ORDER.MAGASIN"), ("P1", "Lyon Part-Dieu"), ("P2", "Lyon Part-Dieu"),
            ("P3", "Paris Opéra")]

    def test_word_merge_fields_read_the_values(self, network, cli):
        import docx
        from docx.oxml import OxmlElement
        from docx.oxml.ns import qn

        letter = docx.Document()
        paragraph = letter.add_paragraph("Magasin : ")
        for name in ("ORDER__MAGASIN", "PCFIDX__NOM"):
            field = OxmlElement("w:fldSimple")
            field.set(qn("w:instr"), f" MERGEFIELD {name} ")
            shown, text = OxmlElement("w:r"), OxmlElement("w:t")
            text.text = f"«{name}»"  # the placeholder Word shows
            shown.append(text)
            field.append(shown)
            paragraph._p.append(field)
        letter.save(network / "lettre.docx")
        assert cli("export", "PERSO", "-o", network / "perso.yaml").code == 0
        data = yaml.safe_load((network / "perso.yaml").read_text(encoding="utf-8"))
        data["steps"].append({"code": "D1", "label": "Lettre", "kind": "document_mailing",
                              "document": {"template": "lettre.docx"}})
        (network / "perso.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        assert cli("apply", network / "perso.yaml").code == 0
        assert cli("targets", "add", "PERSO", "--where", "kind in (PRO, CLI)").code == 0
        approve("PK-PERSO", "LYON", {"MAGASIN": "Part-Dieu"})
        reports = run("PERSO")
        body = docx.Document(reports["D1"]["outputs"][0]).element.body
        texts = ["".join(t.text or "" for t in p.iter(qn("w:t"))) for p in body.iter(qn("w:p"))]
        assert [t for t in texts if t] == [
            "Magasin : Part-DieuBoulangerie Lyonnaise", "Magasin : Part-DieuCafé des Terreaux"]

    def test_an_unknown_form_field_is_refused_at_run(self, network, cli):
        with db.session() as session:
            step = session.execute(select(Operation.id).where(Operation.code == "PERSO")).scalar_one()
            from models import Step

            row = session.scalars(select(Step).where(Step.operation_id == step, Step.code == "X1")).one()
            row.settings = {"columns": ["PCFIDX.TIERS", "ORDER.ENSEIGNE"]}
        assert cli("targets", "add", "PERSO", "--where", "kind in (PRO, CLI)").code == 0
        approve("PK-PERSO", "LYON", {"MAGASIN": "Part-Dieu"})
        from flows.run_operation import process_step

        with pytest.raises(CampflowError, match=r"operation PERSO reads order.ENSEIGNE, which the form of package "
                                                r"PK-PERSO does not have \(its fields: MAGASIN\)"):
            process_step("PERSO", "X1")
        assert in_step("PERSO", "X1") == []  # the step's transaction rolled back

    def test_order_fields_outside_any_package_are_refused(self, network, cli, tmp_path):
        spec = tmp_path / "alone.yaml"
        spec.write_text("""kind: Operation
code: SEULE
label: Sans kit
steps:
  - {code: X, label: Liste, kind: spreadsheet_export, columns: [ORDER.MAGASIN]}
""", encoding="utf-8")
        assert cli("apply", spec).code == 0  # apply cannot know yet which package will use it
        assert cli("targets", "add", "SEULE", "--where", "kind in (PRO, CLI)").code == 0
        from flows.run_operation import process_step

        with pytest.raises(CampflowError, match="neither the reference operation of a package nor a local "
                                                "entity's child operation"):
            process_step("SEULE", "X")

    def test_a_bad_order_reference_is_refused_at_apply(self, network, cli, tmp_path):
        spec = tmp_path / "bad.yaml"
        spec.write_text("""kind: Operation
code: MAUVAISE
label: Mauvaise
steps:
  - {code: X, label: Liste, kind: spreadsheet_export, columns: [ORDER.MAGASIN.NOM, "ORDER.MAGASIN(2)"]}
""", encoding="utf-8")
        result = cli("apply", spec)
        assert result.code == 1
        assert "'ORDER.MAGASIN.NOM' is not an order field; write ORDER.FIELD" in result.err
        assert "order fields are not indexed; remove '(2)'" in result.err
