"""The local_approval step kind (SPEC section 9, by_target_approval), its CLI and its flow, on the
real PostgreSQL, under the Prefect test harness, with notifications received by a real SMTP server."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import zoneinfo
from pathlib import Path

import openpyxl
import pytest

from campflow.errors import CampflowError
from campflow.network.accounts import portal_url
from tests.conftest import rows, scalar
from tests.test_emailing import add_smtp

PARIS = zoneinfo.ZoneInfo("Europe/Paris")

PARTIES = """FICHE;TIERS;NOM;VILLE;EMAIL;TEL
PRO;P01;Boulangerie Lefèvre;Lyon;p01@example.com;0401
PRO;P02;=HYPERLIEN("x");Lyon;p02@example.com;0402
PRO;P03;Café des Arts;lyon ;;0403
PRO;P04;Menuiserie Gaëlle;Lyon;;
PRO;P05;Fromagerie Noël;Lyon;;
CLI;P06;Société Générale d'Équipements;Paris;p06@example.com;
CLI;P07;Ébénisterie Roux;Paris;;
CLI;P08;Garage Martin;Paris;;
PRO;P09;Librairie Nantaise;Nantes;;
PRO;P10;Crêperie du Port;Nantes;;
PRO;P11;Bar de la Marine;Brest;;
"""
CONTACTS = """TIERS;CONTACT;NOM;PRENOM;FONCTION;EMAIL
P01;C1;Lefèvre;Hélène;DIRECTION;helene@p01.example
P03;C1;Durand;Paul;ACHATS;paul@p03.example
P03;C2;Morel;Claire;DIRECTION;claire@p03.example
"""
NETWORK = """kind: Entity
code: HQ
label: Siège
type: central
operators: [hq1]
---
kind: Entity
code: LYON
label: Magasin de Lyon
parent: HQ
operators: [lyon1]
emails: [lyon@stores.example]
---
kind: Entity
code: PARIS
label: Magasin de Paris
parent: HQ
operators: [paris1]
emails: [paris@stores.example]
---
kind: Entity
code: NANTES
label: Magasin de Nantes
parent: HQ
operators: [nantes1]
emails: [nantes@stores.example]
---
kind: Distribution
code: STORES
label: Stores by city
field: PCFIDX.VILLE
rules:
  - {value: Lyon, entity: LYON, limit: 3}
  - {value: Paris, entity: PARIS}
  - {value: Nantes, entity: NANTES}
---
kind: Distribution
code: SOUTH
label: Southern stores
field: VILLE
rules:
  - {value: Marseille, entity: LYON}
  - {value: Nice, entity: PARIS}
"""
OPERATION = """kind: Operation
code: LOCAL
label: Mailing local
timezone: Europe/Paris
starts_at: 2027-01-01T09:00
party_kinds: [prospect, client]
steps:
  - code: A1
    label: Validation par les magasins
    kind: local_approval
    local_approval: {{distribution: {distribution}, deadline: 2027-01-10T18:00, remind_before_hours: [48, 24]}}
  - code: EXPORT
    label: Liste des tiers retenus
    kind: spreadsheet_export
    columns: [PCFIDX.TIERS, PCFIDX.NOM]
  - code: R1
    label: Rapport aux magasins
    kind: local_approval
    local_approval: {{distribution: STORES, deadline: 2027-01-10T18:00, report: true}}
"""
MAILING = """kind: Operation
code: LOCALMAIL
label: Invitation aux contacts validés
timezone: Europe/Paris
party_kinds: [prospect, client]
steps:
  - code: A1
    label: Validation par les magasins
    kind: local_approval
    local_approval: {distribution: STORES, deadline: 2027-01-10T18:00}
  - code: E1
    label: Invitation
    kind: emailing
    email: {subject: "Invitation", body: invite.j2, channel: notifications, contacts: {functions: [ACHATS, DIRECTION]}}
"""
ADDRESSES = {"LYON": "lyon@stores.example", "PARIS": "paris@stores.example", "NANTES": "nantes@stores.example"}


class Clock:
    """The time the kind, the CLI and the flow read (campflow.store.approvals.clock)."""

    def __init__(self) -> None:
        self.now = dt.datetime(2027, 1, 5, 10, 0, tzinfo=PARIS)

    def set(self, *args: int) -> None:
        self.now = dt.datetime(*args, tzinfo=PARIS)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    from campflow.store import approvals as local_approval
    fake = Clock()
    monkeypatch.setattr(local_approval, "clock", fake)
    return fake


def setup(cli, folder: Path, distribution: str = "STORES") -> None:
    for name, content in (("parties.csv", PARTIES), ("contacts.csv", CONTACTS), ("network.yaml", NETWORK),
                          ("op.yaml", OPERATION.format(distribution=distribution))):
        (folder / name).write_text(content, encoding="utf-8")
    for args in (("parties", "import", folder / "parties.csv", "-q"),
                 ("contacts", "import", folder / "contacts.csv", "-q"),
                 ("apply", folder / "network.yaml"), ("apply", folder / "op.yaml"),
                 ("targets", "add", "LOCAL", "--where", "kind in (PRO, CLI)")):
        result = cli(*args)
        assert result.code == 0, (args, result.err)


@pytest.fixture
def network(database, cli, tmp_path, prefect, channels, smtp, clock, monkeypatch):
    """Parties in four cities, three stores, the operation; notifications to the SMTP sink."""
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
    setup(cli, tmp_path)
    add_smtp(cli, "notifications", smtp.port, "Campflow <campflow@example.com>")
    return tmp_path


@pytest.fixture
def sent(network, smtp):
    """The lists sent by the first run of A1."""
    from flows.run_operation import process_step

    report = process_step("LOCAL", "A1")
    assert report.state == "Completed", report
    return report


def statuses(step: str = "A1") -> dict[str, tuple[str, str | None]]:
    return {code: (status, reason) for code, status, reason in rows(
        """select p.code, st.status, st.reason from step_target st join party p on p.id = st.party_id
           join step s on s.id = st.step_id where s.code = :step order by 1""", step=step)}


def approvals() -> dict[str, tuple]:
    return {e: (status, reminders) for e, status, reminders in rows(
        """select e.code, la.status, la.reminders_sent from local_approval la join entity e on e.id = la.entity_id
           join step s on s.id = la.step_id where s.code = 'A1'""")}


def attachment(message) -> tuple[str, bytes]:
    [part] = [p for p in message.iter_attachments()]
    return part.get_filename(), part.get_content()


def received_list(smtp, store: str, path: Path) -> tuple[Path, openpyxl.Workbook]:
    """The list a store was mailed, saved to `path` and opened, as the store would answer in it."""
    _, content = attachment(smtp.messages()[f"{store}@stores.example"])
    path.write_bytes(content)
    return path, openpyxl.load_workbook(path)


def run_all() -> dict[str, dict]:
    from flows.run_operation import run_operation

    return {r["code"]: r for r in run_operation("LOCAL")}


def removed_flags() -> dict[str, tuple[bool, str | None]]:
    return {code: (removed, by) for code, removed, by in rows(
        "select p.code, lap.removed, lap.removed_by from local_approval_party lap join party p on p.id = lap.party_id")}


class TestLists:
    def test_first_run_splits_mails_the_lists_and_leaves_parties_waiting(self, sent, smtp, tmp_path):
        assert sent.entered == 11 and sent.processed == 3
        assert sent.after == {"to_process": 8, "excluded": 3}
        assert "lists sent to 3 entities (LYON 3, NANTES 2, PARIS 3)" in sent.reason
        assert statuses()["P04"] == ("excluded", "beyond LYON's limit of 3")
        assert statuses()["P05"] == ("excluded", "beyond LYON's limit of 3")
        assert statuses()["P11"] == ("excluded", "no local entity for PCFIDX.VILLE=Brest")
        # ' lyon ' is Lyon: values compare trimmed, in any case; the limit keeps the first codes
        assert {c for c, (s, _) in statuses().items() if s == "to_process"} == {
            "P01", "P02", "P03", "P06", "P07", "P08", "P09", "P10"}
        assert approvals() == {"LYON": ("pending", 0), "PARIS": ("pending", 0), "NANTES": ("pending", 0)}
        assert scalar("select count(*) from local_approval where sent_at is null") == 0
        assert scalar("select count(*) from step_target st join step s on s.id = st.step_id "
                      "where s.code = 'EXPORT'") == 0

        messages = smtp.messages()
        assert set(messages) == set(ADDRESSES.values())
        lyon = messages["lyon@stores.example"]
        assert "3 parties to approve for LYON before 2027-01-10 18:00 (Europe/Paris)" in lyon["Subject"]
        body = lyon.get_body(("plain",)).get_content().replace("\r\n", "\n")
        for line in (f"Your list, to review and approve:\n  {portal_url('lists/LOCAL/A1')}\n",
                     "the attached spreadsheet (LOCAL-A1-LYON.xlsx", "Parties not approved by 2027-01-10 18:00"):
            assert line in body
        assert "campflow" not in body  # a local entity answers in the portal, without a shell
        name, content = attachment(lyon)
        assert name == "LOCAL-A1-LYON.xlsx"
        (tmp_path / name).write_bytes(content)
        sheet = openpyxl.load_workbook(tmp_path / name)["Liste"]
        values = list(sheet.iter_rows(values_only=True))
        assert "before 2027-01-10 18:00 (Europe/Paris)" in values[0][0]
        assert values[1][0].endswith(f"upload the file on your list's page: {portal_url('lists/LOCAL/A1')}")
        assert values[2] == ("TIERS", "NOM", "CONTACT", "NOM DU CONTACT", "FONCTION", "ADRESSE", "CP", "VILLE",
                             "EMAIL", "TEL", "KEEP")
        # a row per contact; a party without contacts has one row
        assert [(r[0], r[2]) for r in values[3:]] == [("P01", "C1"), ("P02", None), ("P03", "C1"), ("P03", "C2")]
        assert values[3][:5] == ("P01", "Boulangerie Lefèvre", "C1", "Hélène Lefèvre", "DIRECTION")
        assert values[4][1] == "'=HYPERLIEN(\"x\")"  # formula injection made inert
        assert {r[-1] for r in values[3:]} == {"yes"}
        assert sheet.data_validations.dataValidation[0].formula1 == '"yes,no"'

    def test_a_second_run_before_any_reminder_changes_nothing(self, sent, smtp):
        from flows.run_operation import process_step

        smtp.received.clear()
        again = process_step("LOCAL", "A1")
        assert again.state == "Skipped" and again.processed == 0
        assert "waiting: 3 entities (8 parties)" in again.reason
        assert smtp.received == [] and approvals()["LYON"] == ("pending", 0)

    def test_the_whole_story_cli_spreadsheet_reminders_deadline_and_report(self, sent, cli, smtp, clock, tmp_path):
        # LYON removes a party and approves on the command line
        result = cli("approvals", "remove", "LOCAL", "A1", "P02", "--as", "lyon1")
        assert result.code == 0, result.err
        assert "P02 removed from LYON's list: 2 kept, 1 removed of 3" in result.out
        assert cli("approvals", "approve", "LOCAL", "A1", "--as", "lyon1").code == 0
        # PARIS answers with the spreadsheet it received
        path, book = received_list(smtp, "paris", tmp_path / "LOCAL-A1-PARIS.xlsx")
        book["Liste"]["K5"] = "non"  # P07
        book.save(path)
        result = cli("approvals", "import", "LOCAL", "A1", path, "--as", "paris1")
        assert result.code == 0, result.err
        assert "PARIS's list approved: 2 parties kept, 1 removed (P07)" in result.out
        assert removed_flags()["P07"] == (True, "paris1") and removed_flags()["P02"] == (True, "lyon1")
        listed = cli("approvals", "list", "LOCAL", "--as", "hq1", "--json")
        assert [(d["entity"], d["status"], d["kept"], d["removed"]) for d in json.loads(listed.out)] == [
            ("LYON", "approved", 2, 1), ("NANTES", "pending", 2, 0), ("PARIS", "approved", 2, 1)]

        # 2027-01-09 12:00: the 48-hour reminder is due for NANTES; approved lists move on
        smtp.received.clear()
        clock.set(2027, 1, 9, 12, 0)
        reports = run_all()
        a1 = reports["A1"]
        assert a1["processed"] == 6
        assert "approved: 4 parties moved on, 2 removed by their entity" in a1["reason"]
        assert "reminders sent to NANTES" in a1["reason"]
        assert statuses()["P02"] == ("excluded", "removed by LYON (lyon1)")
        assert statuses()["P07"] == ("excluded", "removed by PARIS (paris1)")
        assert statuses()["P09"] == ("to_process", None)
        assert set(statuses("EXPORT")) == {"P01", "P03", "P06", "P08"}
        assert approvals()["NANTES"] == ("pending", 1)
        # the report step mailed each store its parties' statuses in the earlier steps
        assert set(statuses("R1")) == {"P01", "P03", "P06", "P08"}
        assert {s for s, _ in statuses("R1").values()} == {"ok_continue"}
        messages = smtp.messages()
        assert set(messages) == set(ADDRESSES.values())
        assert messages["nantes@stores.example"]["Subject"].startswith("Reminder: [LOCAL] 2 parties")
        report = messages["lyon@stores.example"]
        assert "Report on your 2 parties (LYON)" in report["Subject"]
        name, content = attachment(report)
        (tmp_path / name).write_bytes(content)
        values = list(openpyxl.load_workbook(tmp_path / name)["Rapport"].iter_rows(values_only=True))
        assert values[1][:8] == ("TIERS", "NOM", "VILLE", "EMAIL", "TEL", "A1 (local_approval)", "A1 MOTIF", "A1 DATE")
        assert values[1][8] == "EXPORT (spreadsheet_export)"
        assert [(r[0], r[5], r[8]) for r in values[2:]] == [("P01", "ok_continue", "ok_continue"),
                                                             ("P03", "ok_continue", "ok_continue")]

        # the same reminder is never sent twice; the 24-hour one comes later
        smtp.received.clear()
        run_all()
        assert smtp.received == [] and approvals()["NANTES"] == ("pending", 1)
        clock.set(2027, 1, 10, 8, 0)
        run_all()
        assert list(smtp.messages()) == ["nantes@stores.example"] and approvals()["NANTES"] == ("pending", 2)

        # past the deadline: NANTES may no longer approve, and its parties are dropped
        clock.set(2027, 1, 10, 18, 30)
        late = cli("approvals", "approve", "LOCAL", "A1", "--as", "nantes1")
        assert late.code == 1
        assert "deadline of NANTES's list in LOCAL/A1 was 2027-01-10 18:00 (Europe/Paris): it has passed" in late.err
        smtp.received.clear()
        a1 = run_all()["A1"]
        assert "dropped: 2 parties not approved in time (lists expired: NANTES)" in a1["reason"]
        assert statuses()["P09"] == ("excluded", "not approved by NANTES before 2027-01-10 18:00 (Europe/Paris)")
        assert approvals()["NANTES"] == ("expired", 2)
        assert "P09" not in statuses("EXPORT") and smtp.received == []
        assert scalar("select count(*) from step_target st join step s on s.id = st.step_id "
                      "where s.code = 'A1' and st.status = 'to_process'") == 0


class TestUiForm:
    def test_a_store_answers_through_the_paused_flow_run(self, sent, clock, monkeypatch):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
        from prefect.flow_runs import resume_flow_run
        from prefect.input.actions import read_flow_run_input

        from flows import local_approval as flow_module

        monkeypatch.setattr(flow_module, "POLL_SECONDS", 1)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(
            state=flow_module.local_approval("LOCAL", "A1", "NANTES", return_state=True)))
        runner.start()

        def paused_run():
            deadline = time.monotonic() + 60
            with get_client(sync_client=True) as client:
                while time.monotonic() < deadline:
                    for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(
                            name=FlowRunFilterName(any_=["LOCAL-A1-NANTES"]))):
                        if run.state and run.state.is_paused():
                            return run
                    time.sleep(0.3)
            raise AssertionError("the local-approval flow run never paused")

        def form_description(run) -> str:
            keyset = run.state.state_details.run_input_keyset
            return read_flow_run_input(keyset["description"], flow_run_id=run.id)

        run = paused_run()
        shown = form_description(run)
        assert "NANTES's list in LOCAL/A1" in shown and "| P09 | Librairie Nantaise | Nantes |  | yes |" in shown
        assert "**Deadline: 2027-01-10 18:00 (Europe/Paris)**" in shown
        # another store's operator is refused: the run pauses again, nothing changed
        resume_flow_run(run.id, run_input={"remove": ["P09"], "approve": True, "operator": "lyon1"})
        time.sleep(1.5)
        run = paused_run()
        assert form_description(run).startswith("**Answer refused:** lyon1 acts for LYON and may not")
        assert approvals()["NANTES"] == ("pending", 0) and removed_flags()["P09"] == (False, None)
        resume_flow_run(run.id, run_input={"remove": ["P09"], "approve": True, "operator": "nantes1"})
        runner.join(60)
        assert outcome["state"].is_completed(), outcome["state"]
        result = outcome["state"].result()
        assert result == {"entity": "NANTES", "removed": ["P09"], "approved": True, "parties": 2, "kept": 1,
                          "operator": "nantes1"}
        assert approvals()["NANTES"][0] == "approved" and removed_flags()["P09"] == (True, "nantes1")

    def test_the_form_describes_the_list_and_the_deadline(self, sent):
        from campflow.store import db
        from campflow.store.approval_lists import list_rows
        from campflow.store.approvals import find_step
        from flows.local_approval import ListApproval, describe

        with db.session() as session:
            step = find_step(session, "LOCAL", "A1")
            text = describe(step, "LYON", list_rows(session, step, None, "LYON"))
        assert "**Deadline: 2027-01-10 18:00 (Europe/Paris)**" in text
        assert "| P01 | Boulangerie Lefèvre | Lyon | C1 Hélène Lefèvre | yes |" in text
        form = ListApproval.with_initial_data(description=text, remove=[], approve=True, operator="")
        assert set(form.model_json_schema()["properties"]) == {"remove", "approve", "operator"}


class TestRefusals:
    def test_a_distribution_covering_no_party_fails_the_step_and_changes_nothing(
            self, database, cli, tmp_path, prefect, channels, smtp, clock, monkeypatch):
        from flows.run_operation import process_step

        monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(tmp_path / "out"))
        setup(cli, tmp_path, distribution="SOUTH")
        add_smtp(cli, "notifications", smtp.port)
        with pytest.raises(CampflowError) as failed:
            process_step("LOCAL", "A1")
        message = str(failed.value)
        assert "distribution SOUTH covers none of the 11 parties" in message
        assert "their VILLE is Lyon (4)" in message and "its values are Marseille, Nice" in message
        assert "nothing was changed" in message
        assert scalar("select count(*) from step_target") == 0
        assert scalar("select count(*) from local_approval") == 0 and smtp.received == []

    def test_a_deadline_already_past_sends_nothing(self, network, clock, smtp):
        from flows.run_operation import process_step

        clock.set(2027, 1, 11, 9, 0)
        with pytest.raises(CampflowError, match=r"deadline 2027-01-10 18:00 \(Europe/Paris\) is past"):
            process_step("LOCAL", "A1")
        assert scalar("select count(*) from local_approval") == 0 and smtp.received == []

    def test_removing_a_party_not_in_ones_list(self, sent, cli):
        result = cli("approvals", "remove", "LOCAL", "A1", "P01", "P07", "--as", "lyon1")
        assert result.code == 1
        assert "P07 is not in LYON's list of LOCAL/A1" in result.err
        assert not any(r for r, _ in removed_flags().values())

    @pytest.mark.parametrize("args", [
        ("approve", "LOCAL", "A1", "--entity", "PARIS"),
        ("remove", "LOCAL", "A1", "P07", "--entity", "PARIS"),
        ("show", "LOCAL", "A1", "--entity", "PARIS"),
    ])
    def test_a_local_entity_may_not_act_on_anothers_list(self, sent, cli, args):
        result = cli("approvals", *args, "--as", "lyon1")
        assert result.code == 1
        assert "lyon1 acts for LYON and may not read or change PARIS's list in LOCAL/A1" in result.err
        assert approvals()["PARIS"] == ("pending", 0) and not any(r for r, _ in removed_flags().values())

    def test_a_local_entity_sees_only_its_list_the_central_sees_all(self, sent, cli):
        table = cli("approvals", "list", "LOCAL", "--as", "lyon1").out
        assert "LYON" in table and "pending" in table and "PARIS" not in table
        mine = json.loads(cli("approvals", "list", "LOCAL", "--as", "lyon1", "--json").out)
        assert [d["entity"] for d in mine] == ["LYON"]
        shown = json.loads(cli("approvals", "show", "LOCAL", "A1", "--as", "lyon1", "--json").out)
        assert [d["party"] for d in shown] == ["P01", "P02", "P03"]
        everyone = json.loads(cli("approvals", "show", "LOCAL", "A1", "--as", "hq1", "--json").out)
        assert len(everyone) == 8
        # the central entity acts for a store by naming it
        assert cli("approvals", "approve", "LOCAL", "A1", "--as", "hq1").code == 1
        assert cli("approvals", "approve", "LOCAL", "A1", "--as", "hq1", "--entity", "PARIS").code == 0
        assert approvals()["PARIS"][0] == "approved"

    def test_approving_twice_and_changing_an_approved_list(self, sent, cli):
        assert cli("approvals", "approve", "LOCAL", "A1", "--as", "lyon1").code == 0
        again = cli("approvals", "approve", "LOCAL", "A1", "--as", "lyon1")
        assert again.code == 1 and "LYON's list in LOCAL/A1 was already approved by lyon1" in again.err
        changed = cli("approvals", "remove", "LOCAL", "A1", "P01", "--as", "lyon1")
        assert changed.code == 1 and "can no longer change" in changed.err

    def test_restore_puts_a_removed_party_back(self, sent, cli):
        assert cli("approvals", "remove", "LOCAL", "A1", "P01", "P03", "--as", "lyon1").code == 0
        result = cli("approvals", "restore", "LOCAL", "A1", "P03", "--as", "lyon1")
        assert result.code == 0 and "P03 restored to LYON's list: 2 kept, 1 removed of 3" in result.out
        assert removed_flags()["P03"] == (False, None) and removed_flags()["P01"] == (True, "lyon1")

    def test_a_malformed_returned_spreadsheet_is_refused_by_row(self, sent, cli, smtp, tmp_path):
        path, book = received_list(smtp, "lyon", tmp_path / "retour.xlsx")
        sheet = book["Liste"]
        sheet["K4"] = "peut-être"  # P01, row 4
        sheet["A5"] = "P07"  # another store's party, row 5
        sheet["K6"] = "no"  # P03/C1 removed: must not be applied
        book.save(path)
        result = cli("approvals", "import", "LOCAL", "A1", path, "--as", "lyon1")
        assert result.code == 1
        assert "retour.xlsx row 4: KEEP must say yes (keep) or no (remove)" in result.err
        assert "'peut-être'" in result.err
        assert "retour.xlsx row 5: P07 is not in LYON's list of LOCAL/A1" in result.err
        assert "the rows of P02 are missing" in result.err
        assert "nothing was changed" in result.err
        assert approvals()["LYON"] == ("pending", 0) and not any(r for r, _ in removed_flags().values())

    def test_a_report_step_is_not_a_list_to_approve(self, sent, cli):
        result = cli("approvals", "approve", "LOCAL", "R1", "--as", "lyon1")
        assert result.code == 1 and "only reports to local entities" in result.err


def contacts_removed() -> dict[str, str]:
    return {f"{p}/{c}": by for p, c, by in rows(
        """select p.code, c.code, lac.removed_by from local_approval_contact lac join contact c on c.id = lac.contact_id
           join party p on p.id = lac.party_id order by 1, 2""")}


def targeted_contacts(step: str | None = None) -> set[str]:
    """The operation's targeted contacts, or the contacts entered in one step."""
    if step is None:
        return {f"{p}/{c}" for p, c in rows(
            """select p.code, c.code from operation_target_contact t join contact c on c.id = t.contact_id
               join party p on p.id = t.party_id""")}
    return {f"{p}/{c}" for p, c in rows(
        """select p.code, c.code from step_target_contact t join contact c on c.id = t.contact_id
           join party p on p.id = t.party_id join step s on s.id = t.step_id where s.code = :step""", step=step)}


class TestContacts:
    """A local entity removes single contacts of the parties it keeps (SPEC: "removes contacts")."""

    def test_a_contact_removed_on_the_cli_leaves_the_target_its_party_goes_on(self, sent, cli, clock):
        result = cli("approvals", "remove", "LOCAL", "A1", "P03/C1", "--as", "lyon1")
        assert result.code == 0, result.err
        assert "P03/C1 removed from LYON's list: 3 kept, 0 removed of 3; 1 contact removed" in result.out
        assert contacts_removed() == {"P03/C1": "lyon1"} and removed_flags()["P03"] == (False, None)
        shown = {d["party"]: d for d in json.loads(cli("approvals", "show", "LOCAL", "A1", "--as", "lyon1",
                                                       "--json").out)}
        assert shown["P03"]["contacts"] == [
            {"code": "C1", "name": "Paul Durand", "function": "ACHATS", "removed": True},
            {"code": "C2", "name": "Claire Morel", "function": "DIRECTION", "removed": False}]
        assert "C1 Paul Durand (ACHATS) — removed" in cli("approvals", "show", "LOCAL", "A1", "--as", "lyon1").out
        listed = json.loads(cli("approvals", "list", "LOCAL", "--as", "lyon1", "--json").out)
        assert [(d["kept"], d["contacts_removed"]) for d in listed] == [(3, 1)]
        approved = cli("approvals", "approve", "LOCAL", "A1", "--as", "lyon1")
        assert "3 parties kept, 0 removed, 1 contact removed from kept parties" in approved.out
        assert targeted_contacts() == set()  # the operation targeted parties only, so far

        a1 = run_all()["A1"]
        assert "approved: 3 parties moved on (1 of their contacts removed), 0 removed" in a1["reason"]
        assert statuses()["P03"] == ("ok_continue", None)
        # P03's targeted contacts are now its others: the later steps reach only Claire Morel
        assert targeted_contacts() == {"P03/C2"}
        assert {"P01", "P02", "P03"} <= set(statuses("EXPORT")) and targeted_contacts("EXPORT") == {"P03/C2"}

    def test_removing_a_partys_last_contact_removes_the_party_and_restore_puts_all_back(self, sent, cli):
        result = cli("approvals", "remove", "LOCAL", "A1", "P01/C1", "P03/C2", "--as", "lyon1")
        assert result.code == 0, result.err
        assert "P01: no contact left, so the party is removed" in result.out
        assert removed_flags()["P01"] == (True, "lyon1") and removed_flags()["P03"] == (False, None)
        assert cli("approvals", "remove", "LOCAL", "A1", "P03/C1", "--as", "lyon1").code == 0
        assert removed_flags()["P03"] == (True, "lyon1")
        # restoring one contact brings its party back; restoring a party brings all its contacts
        assert cli("approvals", "restore", "LOCAL", "A1", "P03/C2", "--as", "lyon1").code == 0
        assert removed_flags()["P03"] == (False, None) and set(contacts_removed()) == {"P01/C1", "P03/C1"}
        assert cli("approvals", "restore", "LOCAL", "A1", "P01", "--as", "lyon1").code == 0
        assert removed_flags()["P01"] == (False, None) and set(contacts_removed()) == {"P03/C1"}

    def test_an_unknown_contact_or_another_stores_is_refused_and_nothing_changes(self, sent, cli):
        result = cli("approvals", "remove", "LOCAL", "A1", "P03/C1", "P03/C9", "P07/C1", "--as", "lyon1")
        assert result.code == 1
        assert "P07/C1 is not in LYON's list of LOCAL/A1" in result.err
        assert "P03/C9: P03 has no such contact in the list (its contacts: C1, C2)" in result.err
        assert contacts_removed() == {}

    def test_the_returned_spreadsheet_removes_contacts_and_parties(self, sent, cli, smtp, tmp_path):
        path, book = received_list(smtp, "lyon", tmp_path / "LOCAL-A1-LYON.xlsx")
        book["Liste"]["K7"] = "non"  # P03/C2
        book["Liste"]["K4"] = "no"  # P01/C1, P01's only contact: P01 goes
        book.save(path)
        result = cli("approvals", "import", "LOCAL", "A1", path, "--as", "lyon1")
        assert result.code == 0, result.err
        assert ("LYON's list approved: 2 parties kept, 1 removed, 1 contact removed from kept parties "
                "(P01, P03/C2)") in result.out
        assert removed_flags()["P01"] == (True, "lyon1") and contacts_removed() == {"P03/C2": "lyon1"}

    def test_a_returned_spreadsheet_missing_a_contacts_row_is_refused(self, sent, cli, smtp, tmp_path):
        path, book = received_list(smtp, "lyon", tmp_path / "retour.xlsx")
        sheet = book["Liste"]
        sheet.delete_rows(7)  # P03/C2
        sheet["C6"] = "C7"  # P03's C1 renamed
        book.save(path)
        result = cli("approvals", "import", "LOCAL", "A1", path, "--as", "lyon1")
        assert result.code == 1
        assert "retour.xlsx row 6: P03/C7: P03 has no such contact in the list (its contacts: C1, C2)" in result.err
        assert "the rows of P03/C1, P03/C2 are missing" in result.err
        assert approvals()["LYON"] == ("pending", 0) and contacts_removed() == {}

    def test_the_ui_form_answer_removes_a_contact(self, sent):
        from flows.local_approval import ListApproval, apply_answer

        answer = ListApproval(remove=["P03/C1"], approve=True, operator="lyon1")
        result = apply_answer("LOCAL", "A1", "LYON", answer)
        assert result == {"entity": "LYON", "removed": ["P03/C1"], "approved": True, "parties": 3, "kept": 3,
                          "operator": "lyon1"}
        assert contacts_removed() == {"P03/C1": "lyon1"} and approvals()["LYON"][0] == "approved"

    def test_the_later_e_mail_step_reaches_only_the_contacts_kept(self, network, cli, smtp, clock):
        from flows.run_operation import run_operation

        (network / "invite.j2").write_text("Bonjour {{ contact.first_name }},\n", encoding="utf-8")
        (network / "mailing.yaml").write_text(MAILING, encoding="utf-8")
        for args in (("apply", network / "mailing.yaml"), ("targets", "add", "LOCALMAIL", "--where", "kind in (PRO, CLI)")):
            assert cli(*args).code == 0
        run_operation("LOCALMAIL")
        assert cli("approvals", "remove", "LOCALMAIL", "A1", "P03/C1", "--as", "lyon1").code == 0
        assert cli("approvals", "approve", "LOCALMAIL", "A1", "--as", "lyon1").code == 0
        smtp.received.clear()
        run_operation("LOCALMAIL")
        # LYON's kept parties are mailed: P01's director, and of P03 only Claire Morel (P02 has no contact)
        assert sorted(to for _, tos, _ in smtp.received for to in tos) == ["claire@p03.example", "helene@p01.example"]
        mailed = {f"{p}/{c}": status for p, c, status in rows(
            """select p.code, c.code, stc.status from step_target_contact stc join contact c on c.id = stc.contact_id
               join party p on p.id = stc.party_id join step s on s.id = stc.step_id
               join operation o on o.id = s.operation_id where o.code = 'LOCALMAIL' and s.code = 'E1'""")}
        assert mailed == {"P01/C1": "ok_continue", "P03/C2": "ok_continue"}
