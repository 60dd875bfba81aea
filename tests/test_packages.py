"""Publishing packages (SPEC §9): refusals, the audience's e-mails, automatic registration.

Real PostgreSQL, the session's Prefect harness (the `notifications` channel block) and a real SMTP
server; the `now` argument stands for the clock where dates matter.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from campflow.errors import CampflowError
from campflow.network import collaboration, orders, packages
from campflow.network.accounts import portal_url
from tests.conftest import rows, scalar
from tests.test_emailing import add_smtp

UTC = dt.UTC
BRIEF = "Le brief des soldes.\n"
NETWORK = """\
kind: Entity
code: HQ
label: Siège
type: central
operators: [marketing]
reviewers: [review@siege.test]
emails: [hq@siege.test]
---
kind: Entity
code: LYON
label: Magasin de Lyon
parent: HQ
operators: [lyon]
emails: [lyon@store.test]
---
kind: Entity
code: PARIS
label: Magasin de Paris
parent: HQ
operators: [paris]
emails: [paris@store.test]
---
kind: Entity
code: NANTES
label: Magasin de Nantes
parent: HQ
operators: [nantes]
emails: [nantes@store.test]
---
kind: Operation
code: REF
label: Opération de référence
---
kind: Package
code: PKG-FORM
label: Catalogue personnalisé
operation: REF
owner: HQ
collaboration: by_form
timezone: Europe/Paris
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
registration_deadline: 2099-06-30T18:00
audience: [LYON, PARIS]
form:
  - {code: MAGASIN, label: Nom du magasin, required: true}
  - {code: REMISE, label: Remise, type: choice, choices: ["10 %", "15 %"], required: true}
  - {code: NB, label: Exemplaires, type: number}
  - {code: LE, label: Date, type: date}
  - {code: PRINT, label: Imprimé, type: bool}
description: Un catalogue à votre nom.
documents: [brief.txt]
---
kind: Package
code: PKG-WINDOW
label: Soldes d'hiver
operation: REF
owner: HQ
collaboration: simple
timezone: Europe/Paris
visible_from: 2030-01-01T00:00
visible_until: 2030-06-30T00:00
registration_deadline: 2030-05-31T18:00
audience: [LYON, PARIS]
---
kind: Package
code: PKG-AUTO
label: Catalogue de printemps
operation: REF
owner: HQ
collaboration: by_form
approval: automatic
visible_from: 2030-01-01T00:00
visible_until: 2030-06-30T00:00
registration_deadline: 2030-05-31T18:00
audience: [LYON, PARIS, NANTES]
form:
  - {code: MAGASIN, label: Nom du magasin, required: true}
---
kind: Package
code: PKG-CAMPAIGN
label: Portes ouvertes
operation: REF
owner: HQ
collaboration: by_campaign
visible_from: 2030-01-01T00:00
visible_until: 2030-06-30T00:00
audience: [LYON]
form:
  - {code: MAGASIN, label: Nom du magasin}
---
kind: Package
code: PKG-NOBODY
label: Sans audience
operation: REF
owner: HQ
collaboration: simple
---
kind: Package
code: PKG-TARGET
label: Validation des listes
operation: REF
owner: HQ
collaboration: by_target_approval
---
kind: Package
code: PKG-DATES
label: Dates incohérentes
operation: REF
owner: HQ
collaboration: simple
visible_from: 2030-06-01T00:00
visible_until: 2030-01-01T00:00
registration_deadline: 2030-07-01T00:00
personalization_deadline: 2030-06-15T00:00
audience: [LYON]
"""
PUBLISHED_AT = dt.datetime(2029, 12, 1, tzinfo=UTC)
OPEN = dt.datetime(2030, 3, 1, tzinfo=UTC)  # PKG-WINDOW, PKG-AUTO and PKG-CAMPAIGN are open


@pytest.fixture
def network(database, prefect, cli, tmp_path):
    """The network spec applied: HQ (central) and LYON, PARIS, NANTES (local), packages."""
    (tmp_path / "brief.txt").write_text(BRIEF, encoding="utf-8")
    (tmp_path / "network.yaml").write_text(NETWORK, encoding="utf-8")
    result = cli("apply", tmp_path / "network.yaml")
    assert result.code == 0, result.err
    return tmp_path


@pytest.fixture
def mail(smtp, channels, cli):
    """Notifications go through the `notifications` SMTP channel block to a real SMTP server."""
    add_smtp(cli, "notifications", smtp.port, "Siège <siege@siege.test>")
    return smtp


@pytest.fixture
def approvals(monkeypatch):
    """collaboration.on_approved stands in for a recorder here (its effects are tested in test_collaboration):
    (order id, status, login)."""
    calls = []

    def on_approved(session, order, login):
        calls.append((order.id, order.status, login))
        return f"Your part of the operation is ready (order {order.id})."

    monkeypatch.setattr(collaboration, "on_approved", on_approved)
    return calls


def publish(code: str, as_: str = "marketing", now: dt.datetime = PUBLISHED_AT) -> packages.Outcome:
    return packages.act(orders.publish, code, as_=as_, now=now)


def published_at(code: str):
    return scalar("select published_at from package where code = :code", code=code)


def snapshot() -> list:
    """Every order and history row, to show that a refused action changed nothing."""
    return (rows("select * from package_order order by id") + rows("select * from order_event order by id")
            + rows("select code, published_at from package order by code"))


class TestPublishRefusals:
    def test_a_package_without_audience_is_refused(self, network):
        with pytest.raises(CampflowError, match=r"package PKG-NOBODY cannot be published: it has no audience: "
                                                r"add `audience: \[LOCAL, …\]`"):
            publish("PKG-NOBODY")
        assert published_at("PKG-NOBODY") is None

    def test_by_target_approval_goes_without_audience(self, network):
        outcome = publish("PKG-TARGET")
        assert outcome.summary == "package PKG-TARGET published to 0 entities"
        assert published_at("PKG-TARGET") == PUBLISHED_AT

    def test_incoherent_dates_are_each_named(self, network):
        before = snapshot()
        with pytest.raises(CampflowError) as caught:
            publish("PKG-DATES")
        message = str(caught.value)
        assert "visible_from 2030-06-01 00:00 is after visible_until 2030-01-01 00:00" in message
        assert "registration_deadline 2030-07-01 00:00 is after visible_until 2030-01-01 00:00" in message
        assert "personalization_deadline 2030-06-15 00:00 is before registration_deadline" in message
        assert message.endswith("fix the Package spec and `campflow apply` it, then publish again")
        assert snapshot() == before

    def test_past_visibility_is_refused(self, network):
        with pytest.raises(CampflowError, match="visible_until 2030-06-30 00:00 has passed"):
            publish("PKG-WINDOW", now=dt.datetime(2031, 1, 1, tzinfo=UTC))

    def test_a_missing_document_is_named(self, network):
        (network / "brief.txt").unlink()
        with pytest.raises(CampflowError, match=f"document {network / 'brief.txt'} is missing"):
            publish("PKG-FORM")
        assert published_at("PKG-FORM") is None

    def test_only_a_central_operator_publishes(self, network):
        with pytest.raises(CampflowError, match="only the central entity's operators publish packages; "
                                                "lyon acts for LYON"):
            publish("PKG-WINDOW", as_="lyon")
        assert published_at("PKG-WINDOW") is None

    def test_publishing_twice_is_refused_and_changes_nothing(self, network, mail):
        publish("PKG-WINDOW")
        sent = len(mail.received)
        before = snapshot()
        with pytest.raises(CampflowError, match="package PKG-WINDOW was already published on 2029-12-01 01:00"):
            publish("PKG-WINDOW", now=OPEN)
        assert snapshot() == before and len(mail.received) == sent

    def test_an_unknown_package_is_named(self, network, cli):
        result = cli("packages", "publish", "PKG-WINDOWS", "--as", "marketing")
        assert result.code == 1
        assert "no package PKG-WINDOWS; did you mean PKG-WINDOW" in result.err


class TestPublishNotifies:
    def test_the_audience_is_mailed_how_to_order_with_the_documents(self, network, mail, cli):
        result = cli("packages", "publish", "PKG-FORM", "--as", "marketing")
        assert result.code == 0, result.err
        assert "package PKG-FORM published to 2 entities" in result.out
        received = mail.messages()
        assert sorted(received) == ["lyon@store.test", "paris@store.test"]
        lyon = received["lyon@store.test"]
        assert lyon["Subject"] == "Package PKG-FORM — Catalogue personnalisé"
        body = lyon.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body.startswith("Hello Magasin de Lyon,\n")
        assert "Un catalogue à votre nom." in body
        assert f"Order it on the package's page:\n  {portal_url('packages/PKG-FORM')}\n" in body
        assert "campflow" not in body  # a local entity works in the portal, without a shell
        assert "REMISE: Remise — one of '10 %', '15 %', required" in body
        assert "registration deadline: 2099-06-30 18:00" in body
        attachment, = lyon.iter_attachments()
        assert attachment.get_filename() == "brief.txt"
        assert attachment.get_content() == BRIEF
        assert portal_url("packages/PKG-FORM") in received["paris@store.test"].get_body(("plain",)).get_content()
        assert published_at("PKG-FORM") is not None

    def test_a_failed_e_mail_says_the_publication_is_recorded(self, network, mail):
        mail.refuse["paris@store.test"] = "550 5.1.1 <paris@store.test>: user unknown"
        with pytest.raises(CampflowError, match=r"package PKG-WINDOW published to 2 entities — this is recorded, "
                                                r"but notifying failed for paris@store.test"):
            publish("PKG-WINDOW")
        assert published_at("PKG-WINDOW") == PUBLISHED_AT
        assert list(mail.messages()) == ["lyon@store.test"]


class TestAutomaticRegistration:
    def test_every_audience_entity_gets_an_approved_order(self, network, mail, approvals):
        outcome = publish("PKG-AUTO")
        assert outcome.summary == "package PKG-AUTO published to 3 entities; 3 entities registered (approved)"
        orders = rows("""select e.code, o.status, o.created_by, o.decided_by from package_order o
                         join entity e on e.id = o.entity_id order by e.code""")
        assert orders == [("LYON", "approved", "marketing", "marketing"),
                          ("NANTES", "approved", "marketing", "marketing"),
                          ("PARIS", "approved", "marketing", "marketing")]
        assert rows("select action, actor from order_event order by id") == [
            ("created", "marketing"), ("approved", "marketing")] * 3
        assert sorted(approvals) == [(order_id, "approved", "marketing") for order_id in outcome.order_ids]
        lyon_order = scalar("select o.id from package_order o join entity e on e.id = o.entity_id "
                            "where e.code = 'LYON'")
        body = mail.messages()["lyon@store.test"].get_body(("plain",)).get_content()
        assert f"LYON is registered: order {lyon_order}, approved." in body
        assert f"unsubscribe on its page:\r\n  {portal_url(f'orders/{lyon_order}')}\r\n" in body
        assert f"Your part of the operation is ready (order {lyon_order})." in body


class TestPackageLists:
    def test_a_local_entity_sees_only_what_is_offered_to_it_now(self, network, cli):
        publish("PKG-FORM")
        publish("PKG-TARGET")
        result = cli("packages", "list", "--as", "lyon", "--json")
        assert result.code == 0, result.err
        assert [p["code"] for p in json.loads(result.out)] == ["PKG-FORM"]  # PKG-WINDOW: not published
        central = {p["code"]: p["state"] for p in json.loads(cli("packages", "list", "--as", "marketing",
                                                                     "--json").out)}
        assert central == {"PKG-AUTO": "draft", "PKG-CAMPAIGN": "draft", "PKG-DATES": "draft", "PKG-FORM": "open",
                           "PKG-NOBODY": "draft", "PKG-TARGET": "open", "PKG-WINDOW": "draft"}
        table = cli("packages", "list", "--as", "marketing")
        assert table.code == 0 and "PKG-TARGET" in table.out
        assert "PKG-FORM" in cli("packages", "list", "--as", "lyon").out

    def test_a_local_entity_cannot_show_a_package_not_offered_to_it(self, network, cli):
        publish("PKG-FORM")
        result = cli("packages", "show", "PKG-FORM", "--as", "nantes")
        assert result.code == 1
        assert "package PKG-FORM is not offered to NANTES now" in result.err
        shown = cli("packages", "show", "PKG-FORM", "--as", "lyon")
        assert shown.code == 0, shown.err
        assert "campflow orders create PKG-FORM --as lyon" in shown.out

    def test_entities_list(self, network, cli):
        result = cli("entities", "list", "--json")
        assert result.code == 0, result.err
        entities = {e["code"]: e for e in json.loads(result.out)}
        assert entities["HQ"]["type"] == "central" and entities["HQ"]["reviewers"] == ["review@siege.test"]
        assert entities["LYON"]["parent"] == "HQ" and entities["LYON"]["operators"] == ["lyon"]
        tree = cli("entities", "list")
        assert "HQ" in tree.out and "operators lyon" in tree.out


class TestPublishFlow:
    def test_the_flow_publishes_as_the_operator_given(self, network, mail):
        from flows.network import publish_package

        summary = publish_package("PKG-FORM", as_operator="marketing")
        assert summary == {"summary": "package PKG-FORM published to 2 entities", "orders": [], "warnings": []}
        assert sorted(mail.messages()) == ["lyon@store.test", "paris@store.test"]

    @pytest.mark.parametrize("name, params", [("publish_package", ["package", "as_operator"]),
                                              ("approve_order", ["order", "timeout_hours"])])
    def test_every_parameter_is_described(self, name, params):
        from prefect.utilities.callables import parameter_schema

        import flows.network

        properties = parameter_schema(getattr(flows.network, name).fn).properties
        assert list(properties) == params
        assert all(len(p.get("description", "")) > 10 for p in properties.values()), properties


def test_the_cli_loads_prefect_only_for_commands_that_need_it():
    """Listing packages or orders starts no Prefect: the notifications' block loads when one is sent."""
    probe = "import sys, campflow.cli, campflow.network.packages; print(sorted(m for m in sys.modules if m.startswith('prefect')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
