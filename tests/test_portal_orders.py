"""The portal's packages and orders: a local entity orders a by_form package from the generated
form (a bad value comes back beside its field), edits and cancels its order; the central reviewers
approve and reject (a rejection needs a comment); documents download; the audit log; and a local
entity never sees another's order or a package not offered to it.

Real PostgreSQL, a real SMTP server for the notifications, the portal served in process."""

from __future__ import annotations

import os
import re

import pytest

from campflow.store import db
from tests.conftest import rows, scalar
from tests.portal import Portal, make_account, signed_in
from tests.test_packages import BRIEF, mail, network, publish, snapshot  # noqa: F401

PARIS_ONLY = """\
kind: Package
code: PKG-PARIS
label: Offre parisienne
operation: REF
owner: HQ
collaboration: by_form
timezone: Europe/Paris
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
registration_deadline: 2099-06-30T18:00
audience: [PARIS]
form:
  - {code: QUARTIER, label: Quartier secret, required: true}
description: Réservé à Paris.
documents: [paris-brief.txt]
---
kind: Package
code: PKG-AUTO-NOW
label: Catalogue automatique
operation: REF
owner: HQ
collaboration: by_form
approval: automatic
visible_from: 2020-01-01T00:00
visible_until: 2099-12-31T00:00
registration_deadline: 2099-06-30T18:00
audience: [LYON]
form:
  - {code: MAGASIN, label: Nom du magasin}
"""
GOOD = {"v_MAGASIN": "Lyon <b>Bellecour</b>", "v_REMISE": "15 %", "v_NB": "12", "v_LE": "2030-03-15",
        "v_PRINT": "yes"}


@pytest.fixture
def shop(network, mail, cli):
    """PKG-FORM published to LYON and PARIS, PKG-PARIS to PARIS only; accounts for LYON, PARIS, a
    reviewer and a central operator who is not a reviewer."""
    (network / "paris-brief.txt").write_text("Le secret de Paris.\n", encoding="utf-8")
    (network / "paris.yaml").write_text(PARIS_ONLY, encoding="utf-8")
    assert cli("apply", network / "paris.yaml").code == 0
    publish("PKG-FORM")
    publish("PKG-PARIS")
    make_account("lyon.op", "local_operator", entity="LYON")
    make_account("paris.op", "local_operator", entity="PARIS")
    make_account("review", "reviewer", entity="HQ")
    make_account("central.op", "central_operator", entity="HQ")
    mail.received.clear()
    return mail


def beside(page: str, field: str) -> str:
    """The error shown right after the input of `field` (and before the next field)."""
    found = re.search(rf'name="{field}"[^>]*>(?:\s*<option[^>]*>[^<]*</option>)*\s*(?:</select>\s*)?<span class="field-error" id="{field}-error"'
                      rf'[^>]*>([^<]*)</span>', page, re.S)
    return found.group(1) if found else ""


def order_as(portal: Portal, values: dict, package: str = "PKG-FORM") -> int:
    portal.get(f"/packages/{package}")
    response = portal.post(f"/packages/{package}/order", values)
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def status(order_id: int) -> str:
    return scalar("select status from package_order where id = :id", id=order_id)


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


class TestOrdering:
    def test_the_package_list_shows_what_is_offered_with_its_dates_in_its_timezone(self, shop):
        lyon = signed_in("lyon.op")
        page = lyon.get("/packages")
        assert page.status_code == 200
        assert 'href="/packages/PKG-FORM"' in page.text and "Catalogue personnalisé" in page.text
        assert "2099-06-30 18:00" in page.text and "(Europe/Paris)" in page.text  # the deadline as written
        assert "PKG-PARIS" not in page.text and "parisienne" not in page.text

    def test_the_order_form_is_generated_from_the_package_form(self, shop):
        page = signed_in("lyon.op").get("/packages/PKG-FORM").text
        assert re.search(r'<select id="v_REMISE" name="v_REMISE" required>\s*<option value="">—</option>\s*'
                         r'<option value="10 %">10 %</option><option value="15 %">15 %</option>', page)
        assert '<input type="number" step="any" id="v_NB" name="v_NB" value="">' in page
        assert '<input type="date" id="v_LE" name="v_LE" value="">' in page
        assert '<input type="checkbox" id="v_PRINT" name="v_PRINT" value="yes">' in page
        assert re.search(r'Nom du magasin <span class="muted">\(MAGASIN\)</span> <span class="required"', page)
        assert 'href="/packages/PKG-FORM/documents/1">brief.txt</a>' in page

    def test_a_bad_value_comes_back_beside_its_field_then_a_good_one_orders(self, shop):
        lyon = signed_in("lyon.op")
        before = snapshot()
        lyon.get("/packages/PKG-FORM")
        bad = lyon.post("/packages/PKG-FORM/order", GOOD | {"v_MAGASIN": "", "v_NB": "beaucoup",
                                                             "v_REMISE": "20 %"})
        assert bad.status_code == 400
        assert beside(bad.text, "v_NB") == "must be a number such as 12 or 12.5; got &#39;beaucoup&#39;"
        assert beside(bad.text, "v_REMISE") == "must be one of &#39;10 %&#39;, &#39;15 %&#39;; got &#39;20 %&#39;"
        assert beside(bad.text, "v_MAGASIN") == "required: give a value"
        assert beside(bad.text, "v_LE") == ""
        # the values typed are kept, escaped
        assert 'name="v_NB" value="beaucoup"' in bad.text and 'name="v_LE" value="2030-03-15"' in bad.text
        assert 'name="v_PRINT" value="yes" checked' in bad.text
        assert snapshot() == before and shop.received == []  # nothing written, nobody told

        good = lyon.post("/packages/PKG-FORM/order", GOOD)
        assert good.status_code == 303
        order_id = int(good.headers["location"].removeprefix("/orders/"))
        assert rows("select status, created_by, values from package_order") == [
            ("pending", "lyon.op", {"MAGASIN": "Lyon <b>Bellecour</b>", "REMISE": "15 %", "NB": 12,
                                    "LE": "2030-03-15", "PRINT": True})]
        assert list(shop.messages()) == ["review@siege.test"]  # the reviewers are told
        assert rows("select login, action, subject, outcome from audit_event where action = 'create_order'") == [
            ("lyon.op", "create_order", f"order {order_id}", "ok")]
        page = lyon.get(f"/orders/{order_id}")
        assert page.status_code == 200 and "pending" in page.text
        assert "Lyon &lt;b&gt;Bellecour&lt;/b&gt;" in page.text and "<b>Bellecour" not in page.text
        # a live order: the package page no longer offers the form
        package = lyon.get("/packages/PKG-FORM").text
        assert 'action="/packages/PKG-FORM/order"' not in package and f'href="/orders/{order_id}"' in package
        again = lyon.post("/packages/PKG-FORM/order", GOOD)
        assert again.status_code == 400 and f"already has order {order_id} (pending)" in again.text
        assert scalar("select count(*) from package_order") == 1

    def test_an_order_posted_without_the_csrf_token_is_refused(self, shop):
        lyon = signed_in("lyon.op")
        assert lyon.post("/packages/PKG-FORM/order", GOOD, csrf=False).status_code == 403
        assert scalar("select count(*) from package_order") == 0

    def test_a_central_operator_does_not_order(self, shop):
        central = signed_in("central.op")
        page = central.get("/packages/PKG-FORM")
        assert page.status_code == 200 and 'action="/packages/PKG-FORM/order"' not in page.text
        assert central.post("/packages/PKG-FORM/order", GOOD).status_code == 404


class TestEditAndCancel:
    def test_edit_prefills_the_form_and_keeps_the_history(self, shop):
        lyon = signed_in("lyon.op")
        order_id = order_as(lyon, GOOD)
        page = lyon.get(f"/orders/{order_id}").text
        assert 'name="v_NB" value="12"' in page and '<option value="15 %" selected>' in page
        assert 'name="v_PRINT" value="yes" checked' in page

        bad = lyon.post(f"/orders/{order_id}/edit", GOOD | {"v_LE": "15/03/2030"})
        assert bad.status_code == 400
        assert beside(bad.text, "v_LE") == "must be a date YYYY-MM-DD such as 2027-03-15; got &#39;15/03/2030&#39;"
        assert scalar("select values->>'LE' from package_order where id = :id", id=order_id) == "2030-03-15"

        edited = lyon.post(f"/orders/{order_id}/edit", {k: v for k, v in GOOD.items() if k != "v_PRINT"}
                           | {"v_NB": "20", "v_LE": ""})
        assert edited.status_code == 303
        assert scalar("select values from package_order where id = :id", id=order_id) == {
            "MAGASIN": "Lyon <b>Bellecour</b>", "REMISE": "15 %", "NB": 20, "PRINT": False}
        history = lyon.get(f"/orders/{order_id}").text
        assert re.search(r"<td>lyon\.op</td><td>created</td>.*<td>lyon\.op</td><td>edited</td>", history, re.S)
        assert rows("select action from order_event where order_id = :id order by id", id=order_id) == [
            ("created",), ("edited",)]

    def test_cancel_with_a_comment_then_order_again(self, shop):
        lyon = signed_in("lyon.op")
        order_id = order_as(lyon, GOOD)
        shop.received.clear()
        lyon.get(f"/orders/{order_id}")
        assert lyon.post(f"/orders/{order_id}/cancel", {"comment": "plus besoin"}).status_code == 303
        assert status(order_id) == "cancelled"
        assert rows("select action, actor, comment from order_event where order_id = :id order by id", id=order_id) \
            == [("created", "lyon.op", None), ("cancelled", "lyon.op", "plus besoin")]
        assert "Comment: plus besoin" in body(shop.messages()["review@siege.test"])
        page = lyon.get(f"/orders/{order_id}").text
        assert "plus besoin" in page and 'action="/orders/' not in page  # nothing left to do on it
        assert 'action="/packages/PKG-FORM/order"' in lyon.get("/packages/PKG-FORM").text
        assert order_as(lyon, GOOD) != order_id

    def test_automatic_registration_changes_and_unsubscribes_without_approval(self, shop):
        publish("PKG-AUTO-NOW")
        order_id = scalar("select id from package_order where status = 'approved'")
        lyon = signed_in("lyon.op")
        page = lyon.get(f"/orders/{order_id}").text
        assert f'action="/orders/{order_id}/edit"' in page and "Unsubscribe</button>" in page
        assert lyon.post(f"/orders/{order_id}/edit", {"v_MAGASIN": "Lyon Part-Dieu"}).status_code == 303
        assert rows("select status, values from package_order where id = :id", id=order_id) == [
            ("approved", {"MAGASIN": "Lyon Part-Dieu"})]
        lyon.get(f"/orders/{order_id}")
        assert lyon.post(f"/orders/{order_id}/cancel").status_code == 303
        assert rows("select action from order_event where order_id = :id order by id", id=order_id) == [
            ("created",), ("approved",), ("edited",), ("unsubscribed",)]

    def test_an_approved_order_of_a_manual_package_is_not_changed_by_the_store(self, shop):
        lyon = signed_in("lyon.op")
        order_id = order_as(lyon, GOOD)
        review = signed_in("review")
        review.get("/central/orders")
        assert review.post(f"/central/orders/{order_id}/approve").status_code == 303
        page = lyon.get(f"/orders/{order_id}").text
        assert "approved" in page and f'action="/orders/{order_id}/cancel"' not in page
        refused = lyon.post(f"/orders/{order_id}/cancel", {"comment": ""})
        assert refused.status_code == 400 and "can&#39;t be cancelled by the local entity" in refused.text
        assert status(order_id) == "approved"


class TestDecisions:
    def test_the_reviewer_approves_and_the_entity_is_mailed(self, shop):
        order_id = order_as(signed_in("lyon.op"), GOOD)
        shop.received.clear()
        review = signed_in("review")
        assert f'action="/central/orders/{order_id}/reject"' in review.get(f"/orders/{order_id}").text
        page = review.get("/central/orders")
        assert page.status_code == 200 and f'action="/central/orders/{order_id}/approve"' in page.text
        assert review.post(f"/central/orders/{order_id}/approve", {"comment": "Parfait"}).status_code == 303
        assert rows("select status, decided_by, comment from package_order") == [("approved", "review", "Parfait")]
        message = shop.messages()["lyon@store.test"]
        assert message["subject"] == f"Order {order_id} for PKG-FORM: approved"
        assert "Comment: Parfait" in body(message)
        assert rows("select login, action, subject, outcome, detail from audit_event "
                    "where action like '%_order' and login = 'review'") == [
            ("review", "approve_order", f"order {order_id}", "ok", {"comment": "Parfait"})]
        assert f"Order {order_id}" not in review.get("/central/orders").text  # no longer pending

    def test_a_rejection_without_a_comment_is_refused_then_one_with_a_comment_is_mailed(self, shop):
        order_id = order_as(signed_in("lyon.op"), GOOD)
        shop.received.clear()
        review = signed_in("review")
        review.get("/central/orders")
        before = snapshot()
        refused = review.post(f"/central/orders/{order_id}/reject", {"comment": "   "})
        assert refused.status_code == 400
        assert re.search(rf'name="comment"[^>]*>[^<]*</textarea>\s*<span class="field-error" '
                         rf'id="reject-{order_id}-error"[^>]*>A rejection needs a comment', refused.text)
        assert snapshot() == before and shop.received == []
        assert rows("select action, outcome from audit_event where login = 'review' and action = 'reject_order'") \
            == [("reject_order", "refused")]

        assert review.post(f"/central/orders/{order_id}/reject",
                           {"comment": "Remise trop forte"}).status_code == 303
        assert rows("select status, decided_by, comment from package_order") == [
            ("rejected", "review", "Remise trop forte")]
        message = shop.messages()["lyon@store.test"]
        assert message["subject"] == f"Order {order_id} for PKG-FORM: rejected"
        assert "Comment: Remise trop forte" in body(message)
        assert rows("select action, outcome from audit_event where login = 'review' and action = 'reject_order' "
                    "order by id") == [("reject_order", "refused"), ("reject_order", "ok")]

    def test_a_central_operator_without_the_reviewer_role_sees_no_buttons_and_may_not_decide(self, shop):
        order_id = order_as(signed_in("lyon.op"), GOOD)
        central = signed_in("central.op")
        page = central.get("/central/orders")
        assert page.status_code == 200 and f"Order {order_id}" in page.text
        assert "/approve" not in page.text and "/reject" not in page.text
        assert f'action="/central/orders/{order_id}/approve"' not in central.get(f"/orders/{order_id}").text
        assert central.post(f"/central/orders/{order_id}/approve").status_code == 404
        assert central.post(f"/central/orders/{order_id}/reject", {"comment": "non"}).status_code == 404
        assert status(order_id) == "pending"

    def test_a_local_operator_has_no_central_pages(self, shop):
        order_id = order_as(signed_in("lyon.op"), GOOD)
        lyon = signed_in("lyon.op")
        for path in ("/central/orders", "/central/packages", "/central/audit"):
            assert lyon.get(path).status_code == 404, path
        assert lyon.post(f"/central/orders/{order_id}/approve").status_code == 404
        assert status(order_id) == "pending"

    def test_each_package_lists_its_orders_per_entity(self, shop):
        order_id = order_as(signed_in("lyon.op"), GOOD)
        paris_id = order_as(signed_in("paris.op"), {"v_QUARTIER": "Marais"}, "PKG-PARIS")
        page = signed_in("central.op").get("/central/packages").text
        form_part, paris_part = page.split("Offre parisienne")[0], page.split("Offre parisienne")[1]
        assert f'Magasin de Lyon (LYON)</td><td><a href="/orders/{order_id}">' in form_part
        assert f'Magasin de Paris (PARIS)</td><td><a href="/orders/{paris_id}">' in paris_part
        assert "QUARTIER: Marais" in paris_part

    def test_central_filters_all_orders_by_package_and_status(self, shop):
        lyon_id = order_as(signed_in("lyon.op"), GOOD)
        paris_id = order_as(signed_in("paris.op"), {"v_QUARTIER": "Marais"}, "PKG-PARIS")
        central = signed_in("central.op")
        every = central.get("/orders").text
        assert f'href="/orders/{lyon_id}"' in every and f'href="/orders/{paris_id}"' in every
        only = central.get("/orders", params={"package": "PKG-PARIS", "status": "pending"}).text
        assert f'href="/orders/{lyon_id}"' not in only and f'href="/orders/{paris_id}"' in only
        assert f'href="/orders/{paris_id}"' not in central.get("/orders", params={"status": "approved"}).text


class TestDocuments:
    def test_a_document_downloads_with_its_bytes(self, shop):
        response = signed_in("lyon.op").get("/packages/PKG-FORM/documents/1")
        assert response.status_code == 200 and response.content == BRIEF.encode()
        assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''brief.txt"
        assert signed_in("central.op").get("/packages/PKG-PARIS/documents/1").content == b"Le secret de Paris.\n"

    def test_no_such_document_is_a_404(self, shop):
        lyon = signed_in("lyon.op")
        assert lyon.get("/packages/PKG-FORM/documents/2").status_code == 404
        assert lyon.get("/packages/PKG-FORM/documents/0").status_code == 404

    def test_a_missing_file_is_said_without_its_path(self, shop):
        os.remove(scalar("select documents[1] from package where code = 'PKG-FORM'"))
        response = signed_in("lyon.op").get("/packages/PKG-FORM/documents/1")
        assert response.status_code == 404 and "Document 1 of package PKG-FORM cannot be read now" in response.text
        assert "brief.txt" not in response.text and "/tmp" not in response.text
        assert rows("select login, action, outcome from audit_event where action = 'document_unreadable'") == [
            ("lyon.op", "document_unreadable", "failed")]


class TestIsolation:
    def test_lyon_gets_404_on_the_order_of_paris_and_nothing_changes(self, shop):
        paris_id = order_as(signed_in("paris.op"), GOOD | {"v_MAGASIN": "Paris Opéra"})
        lyon = signed_in("lyon.op")
        before = snapshot()
        answers = [lyon.get(f"/orders/{paris_id}"),
                   lyon.post(f"/orders/{paris_id}/edit", GOOD),
                   lyon.post(f"/orders/{paris_id}/cancel", {"comment": "x"})]
        for answer in answers:
            assert answer.status_code == 404
            for foreign in ("PARIS", "Paris", "paris.op"):
                assert foreign not in answer.text
        assert snapshot() == before
        assert f'href="/orders/{paris_id}"' not in lyon.get("/orders").text
        assert rows("select login, action, outcome from audit_event where action = 'refused' order by id") == [
            ("lyon.op", "refused", "refused")] * 3

    def test_lyon_gets_404_on_a_package_not_offered_to_it(self, shop):
        lyon = signed_in("lyon.op")
        lyon.get("/packages")
        answers = [lyon.get("/packages/PKG-PARIS"), lyon.get("/packages/PKG-PARIS/documents/1"),
                   lyon.post("/packages/PKG-PARIS/order", {"v_QUARTIER": "Croix-Rousse"}),
                   lyon.get("/packages/PKG-NOSUCH")]
        for answer in answers:
            assert answer.status_code == 404
            for foreign in ("PARIS", "Paris", "parisienne", "secret"):
                assert foreign not in answer.text
        assert scalar("select count(*) from package_order") == 0

    def test_anonymous_is_sent_to_the_login(self, shop):
        anonymous = Portal()
        for path in ("/packages", "/packages/PKG-FORM", "/packages/PKG-FORM/documents/1", "/orders",
                     "/orders/1", "/central/orders", "/central/audit"):
            response = anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/login"), path


class TestAudit:
    def test_the_log_is_newest_first_paged_and_filtered(self, shop):
        with db.engine().begin() as conn:
            conn.exec_driver_sql("insert into audit_event (at, login, action, subject) select "
                                 "now() - make_interval(mins => n), 'someone', 'test_event', 'event ' || n "
                                 "from generate_series(1, 60) n")
        review = signed_in("review")  # its login is the newest event
        first = review.get("/central/audit")
        assert first.status_code == 200 and "61 events · page 1 of 2" in first.text
        assert first.text.count("<td>test_event</td>") == 49
        assert first.text.index("<td>login</td>") < first.text.index(">event 1<")
        assert first.text.index(">event 1<") < first.text.index(">event 2<")
        assert 'href="/central/audit?page=2"' in first.text
        second = review.get("/central/audit", params={"page": 2})
        assert second.text.count("<td>test_event</td>") == 11 and ">event 60<" in second.text
        only = review.get("/central/audit", params={"login": "review", "action": "login"})
        assert "1 event · page 1 of 1" in only.text and "test_event" not in only.text

    def test_only_admins_central_operators_and_reviewers_read_it(self, shop):
        make_account("clerk", "collaborator", entity="HQ")
        make_account("boss", "admin")
        assert signed_in("boss").get("/central/audit").status_code == 200
        assert signed_in("central.op").get("/central/audit").status_code == 200
        assert signed_in("clerk").get("/central/audit").status_code == 404
