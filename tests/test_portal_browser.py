"""A store's day in the portal, in a real browser: Debian's Chromium driven by Playwright against the
portal served by uvicorn, on the real PostgreSQL, with e-mails received by a real SMTP server.

The store's operator is invited by e-mail, sets a password, logs in, orders a by_form package
with a bad value then a good one; a reviewer approves the order; the store removes one contact
from its list and approves the list. Screenshots go to test-output/screenshots/portal-*.png.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import rows, scalar
from tests.portal import LivePortal, make_account
from tests.test_local_approval import approvals, clock, network, sent  # noqa: F401

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
PACKAGE = """kind: Operation
code: REF
label: Catalogue de référence
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
description: Un catalogue à votre nom.
form:
  - {code: MAGASIN, label: Nom du magasin, required: true}
  - {code: REMISE, label: Remise, type: choice, choices: ["10 %", "15 %"], required: true}
  - {code: NB, label: Exemplaires, type: number}
"""


@pytest.fixture
def store_world(sent, cli, tmp_path):
    """The lists sent to the stores (LOCAL/A1), a by_form package published, a reviewer."""
    (tmp_path / "package.yaml").write_text(PACKAGE, encoding="utf-8")
    for args in (("apply", tmp_path / "package.yaml"), ("packages", "publish", "PKG-FORM", "--as", "hq1")):
        result = cli(*args)
        assert result.code == 0, (args, result.err)
    make_account("claire", "reviewer", entity="HQ")
    return tmp_path


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"portal-{name}.png"), full_page=True)


def test_a_store_does_its_work_in_the_browser(store_world, cli, smtp):
    from tests import browser

    result = cli("users", "add", "lyon.op", "--email", "lyon.op@stores.example", "--role", "local_operator",
                 "--entity", "LYON", "--name", "Léa Martin")
    assert result.code == 0, result.err
    invitation = smtp.messages()["lyon.op@stores.example"]
    link = re.search(r"http://127\.0\.0\.1:8080(/password/\S+)", invitation.get_content()).group(1)

    with LivePortal() as portal, browser.launch() as page:
        # the invitation: set a password, which logs in
        page.goto(portal.url + link)
        page.fill("#password", "un mot de passe sûr")
        page.fill("#again", "un mot de passe sûr")
        shot(page, "1-set-password")
        page.click("button:has-text('Set my password')")
        page.wait_for_url(portal.url + "/")
        assert "You act for LYON" in page.content()
        # log out, and in again through the login form
        page.click("button:has-text('Log out')")
        page.wait_for_url(re.compile(r".*/login"))
        page.fill("#login", "lyon.op")
        page.fill("#password", "un mot de passe sûr")
        page.click("button:has-text('Log in')")
        page.wait_for_url(portal.url + "/")

        # the package, ordered with a bad value first: the error beside its field, nothing written
        page.click("a:has-text('Packages')")
        page.click("a:has-text('Catalogue personnalisé')")
        page.fill("#v_MAGASIN", "   ")
        page.select_option("#v_REMISE", "15 %")
        page.fill("#v_NB", "500")
        page.click("button:has-text('Order PKG-FORM')")
        error = page.locator("#v_MAGASIN-error")
        error.wait_for()
        assert "required" in error.inner_text()
        assert page.input_value("#v_NB") == "500"  # what was typed is kept
        shot(page, "2-order-refused")
        assert scalar("select count(*) from package_order") == 0
        page.fill("#v_MAGASIN", "Lyon Bellecour")
        page.click("button:has-text('Order PKG-FORM')")
        page.wait_for_url(re.compile(r".*/orders/\d+$"))
        order_id = int(page.url.rsplit("/", 1)[1])
        assert "pending" in page.content()
        shot(page, "3-order-placed")

        # the reviewer approves it, in its own browser session
        reviewer = page.context.browser.new_page()
        reviewer.goto(portal.url + "/login")
        reviewer.fill("#login", "claire")
        reviewer.fill("#password", "correct horse 42")
        reviewer.click("button:has-text('Log in')")
        reviewer.wait_for_url(portal.url + "/")
        reviewer.click("a:has-text('Orders to decide')")
        reviewer.fill(f"#approve-{order_id}", "Bonne campagne")
        shot(reviewer, "4-orders-to-decide")
        reviewer.click(f"form[action='/central/orders/{order_id}/approve'] button")
        reviewer.wait_for_load_state()
        assert scalar("select status from package_order where id = :id", id=order_id) == "approved"
        assert scalar("select decided_by from package_order where id = :id", id=order_id) == "claire"

        # the store removes one contact from its list and approves the list
        page.click("a:has-text('My lists')")
        page.click("a[href='/lists/LOCAL/A1']")
        page.click("form:has(input[name='item'][value='P03/C2']) button")
        page.wait_for_load_state()
        assert page.locator("span.removed", has_text="C2 Claire Morel").count() == 1
        shot(page, "5-contact-removed")
        page.click("button:has-text('Approve the list as it stands')")
        page.wait_for_load_state()
        assert "This list can no longer change" in page.content()
        shot(page, "6-list-approved")
    assert approvals()["LYON"] == ("approved", 0)
    assert scalar("""select count(*) from local_approval_contact lac join contact c on c.id = lac.contact_id
                     join party p on p.id = lac.party_id where p.code = 'P03' and c.code = 'C2'""") == 1
    actions = [a for (a,) in rows(
        "select action from audit_event where login in ('lyon.op', 'claire') order by id")]
    for expected in ("password_set", "logout", "login", "create_order", "approve_order", "list_remove",
                     "list_approve"):
        assert expected in actions, actions
