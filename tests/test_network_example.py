"""The distributed marketing walkthrough (`make demo-network`) end to end: a head office and three
stores, one package of each collaboration type, from publishing to the runs, through the same CLI
commands, on PostgreSQL and Prefect, its notifications sent to a real SMTP server."""

from __future__ import annotations

import datetime as dt
import email
import importlib.util
from email import policy

import pytest

from campflow.network.accounts import portal_url
from tests.conftest import EXAMPLES, rows, scalar
from tests.test_emailing import add_smtp


def load_walkthrough():
    spec = importlib.util.spec_from_file_location("demo_network", EXAMPLES / "demo_network.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def walked(database, prefect, channels, smtp, cli, capsys, tmp_path, monkeypatch):
    """The walkthrough run once against the test database; (SMTP sink, output folder)."""
    out = tmp_path / "out"
    monkeypatch.setenv("CAMPFLOW_OUTPUT_DIR", str(out))
    monkeypatch.delenv("CAMPFLOW_OPERATOR", raising=False)
    add_smtp(cli, "notifications", smtp.port, "Siège <marketing@siege.example.com>")
    walkthrough = load_walkthrough()

    def campflow(args: list[str], shown: bool) -> tuple[int, str]:
        capsys.readouterr()  # the walkthrough's own titles are not the command's output
        result = cli(*args)
        return result.code, result.out

    assert walkthrough.walk(walkthrough.dated_specs(tmp_path / "specs"), campflow) == 0
    return smtp, out


def received(sink) -> list[tuple[str, str, email.message.EmailMessage]]:
    """(recipient, subject, message) of every message the SMTP server accepted, in order."""
    found = []
    for _, recipients, content in sink.received:
        message = email.message_from_bytes(content, policy=policy.default)
        found += [(to, message["Subject"], message) for to in recipients]
    return found


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def orders() -> dict[tuple[str, str], str]:
    """(package, entity) → status of the latest order."""
    return {(package, entity): status for package, entity, status in rows(
        """select p.code, e.code, o.status from package_order o join package p on p.id = o.package_id
           join entity e on e.id = o.entity_id order by o.id""")}


def step_parties(operation: str, step: str, status: str) -> list[tuple[str, str]]:
    """(party code, city) of the parties with `status` in the step."""
    return rows("""select p.code, p.city from step_target st join party p on p.id = st.party_id
                   join step s on s.id = st.step_id join operation o on o.id = s.operation_id
                   where o.code = :op and s.code = :step and st.status = :status order by p.code""",
                op=operation, step=step, status=status)


def test_the_walkthrough_goes_from_publishing_to_the_runs(walked):
    sink, out = walked
    mails = received(sink)
    subjects = {(to, subject) for to, subject, _ in mails}

    # publishing: each store is told of the three packages offered to it, the brief attached
    for store in ("lyon", "paris", "marseille"):
        address = f"{store}@magasins.example.com"
        for package in ("PKG-SOLDES", "PKG-CATALOGUE", "PKG-PORTES-OUVERTES"):
            assert any(to == address and subject.startswith(f"Package {package} — ") for to, subject in subjects)
    soldes = next(m for to, s, m in mails if to == "lyon@magasins.example.com" and s.startswith("Package PKG-SOLDES"))
    assert [part.get_filename() for part in soldes.iter_attachments()] == ["soldes-brief.txt"]
    assert portal_url("packages/PKG-SOLDES") in text_of(soldes)

    # simple, manual: the reviewers are told of each order; LYON and PARIS approved, MARSEILLE rejected
    assert orders()[("PKG-SOLDES", "LYON")] == "approved" and orders()[("PKG-SOLDES", "PARIS")] == "approved"
    assert orders()[("PKG-SOLDES", "MARSEILLE")] == "rejected"
    to_reviewers = [s for to, s, _ in mails if to == "validation@siege.example.com"]
    assert sum(1 for s in to_reviewers if s.endswith("orders PKG-SOLDES")) == 3
    rejected = next(m for to, s, m in mails if to == "marseille@magasins.example.com" and s.endswith(": rejected"))
    assert "Comment: Budget de janvier épuisé pour Marseille" in text_of(rejected)
    # only the customers of the approved stores are e-mailed, never MARSEILLE's nor those of no store
    mailed = step_parties("SOLDES-HIVER-2027", "E1", "ok_continue")
    assert mailed and {city.strip().lower() for _, city in mailed} == {"lyon", "paris"}
    assert scalar("select count(*) from party where kind = 'client' and lower(btrim(city)) = 'marseille'") > 0

    # by_form, automatic: registered at publishing; MARSEILLE unsubscribed; subjects per store
    assert orders()[("PKG-CATALOGUE", "MARSEILLE")] == "cancelled"
    assert scalar("""select o.values->>'MAGASIN' from package_order o join entity e on e.id = o.entity_id
                     join package p on p.id = o.package_id where p.code = 'PKG-CATALOGUE' and e.code = 'LYON'
                     """) == "Lyon Bellecour"
    catalogue = {email.message_from_bytes(path.read_bytes(), policy=policy.default)["Subject"]
                 for path in out.glob("CATALOGUE-PRINTEMPS-2027/*/*/messages/*.eml")}
    assert catalogue == {"Le catalogue de printemps de Lyon Bellecour", "Le catalogue de printemps de Paris Opéra"}

    # by_campaign: LYON's child operation, owned by it, targeted with its customers, run by it
    child = rows("""select o.code, e.code from operation o join entity e on e.id = o.owner_entity_id
                    where o.parent_operation_id = (select id from operation where code = 'PORTES-OUVERTES-2027')""")
    assert child == [("PORTES-OUVERTES-2027-LYON", "LYON")]
    invited = step_parties("PORTES-OUVERTES-2027-LYON", "E1", "ok_continue")
    assert invited and {city.strip().lower() for _, city in invited} == {"lyon"}
    approved = next(m for to, s, m in mails
                    if to == "lyon@magasins.example.com" and s.startswith("Order ") and "PKG-PORTES-OUVERTES" in s)
    assert "child operation PORTES-OUVERTES-2027-LYON created with" in text_of(approved)

    # by_target_approval: each store received its list; LYON and PARIS approved, MARSEILLE did not
    lists = {to: m for to, s, m in mails if "FIDELITE-2027" in s and not s.startswith("[FIDELITE-2027] Report")}
    assert set(lists) == {f"{store}@magasins.example.com" for store in ("lyon", "paris", "marseille")}
    assert [p.get_filename() for p in lists["paris@magasins.example.com"].iter_attachments()] == [
        "FIDELITE-2027-A1-PARIS.xlsx"]
    # PKG-FIDELITE words its lists itself (notices: in its spec), with the link to the list's page
    paris = next(m for to, s, m in mails if to == "paris@magasins.example.com" and s.startswith("[FIDELITE-2027]"))
    assert paris["Subject"].startswith("[FIDELITE-2027] Votre liste de ")
    assert f"Votre liste :\r\n  {portal_url('lists/FIDELITE-2027/A1')}\r\n" in text_of(paris)
    assert dict(rows("""select e.code, a.status from local_approval a join entity e on e.id = a.entity_id
                        join step s on s.id = a.step_id where s.code = 'A1'""")) == {
        "LYON": "approved", "PARIS": "approved", "MARSEILLE": "pending"}
    removed = rows("select removed_by from local_approval_party where removed order by 1")
    assert removed == [("lyon",), ("lyon",), ("paris",)]
    # and each took one contact off a customer it kept (LYON on the CLI, PARIS in its spreadsheet)
    assert rows("""select lac.removed_by from local_approval_contact lac join local_approval_party lp
                   on lp.step_id = lac.step_id and lp.party_id = lac.party_id where not lp.removed
                   order by 1""") == [("lyon",), ("paris",)]
    loyal = step_parties("FIDELITE-2027", "E1", "ok_continue")
    kept = scalar("""select count(*) from local_approval_party lp join local_approval a
                     on a.step_id = lp.step_id and a.entity_id = lp.entity_id
                     where a.status = 'approved' and not lp.removed""")
    assert len(loyal) == kept > 0 and all(city.strip().lower() in ("lyon", "paris") for _, city in loyal)
    reports = {to for to, s, _ in mails if s.startswith("[FIDELITE-2027] Report")}
    assert reports == {"lyon@magasins.example.com", "paris@magasins.example.com"}


def test_the_specs_are_dated_for_today(tmp_path):
    walkthrough = load_walkthrough()
    written = (walkthrough.NETWORK / "packages.yaml").read_text(encoding="utf-8")
    assert "registration_deadline: 2027-01-10T18:00" in written
    later = walkthrough.dated_specs(tmp_path / "specs", walkthrough.WRITTEN_FOR + dt.timedelta(days=400))
    moved = (later / "packages.yaml").read_text(encoding="utf-8")
    assert "registration_deadline: 2028-02-14T18:00" in moved and "visible_from: 2027-12-20T00:00" in moved
    assert (later / "docs" / "soldes-brief.txt").is_file()  # what the specs point at comes along
