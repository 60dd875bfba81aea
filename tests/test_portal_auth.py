"""The portal's door: logging in and out, lockout, one-time links, CSRF, rate limits, the audit trail.

Real PostgreSQL and argon2 hashes; the pages are served by the FastAPI app in process (httpx)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from campflow.store import accounts, db
from tests.conftest import rows, scalar
from tests.portal import PASSWORD, Portal, make_account
from tests.test_packages import mail, network  # noqa: F401


@pytest.fixture
def lyon_account(network):
    make_account("lyon.op", "local_operator", entity="LYON")
    return network


class TestLogin:
    def test_a_right_password_opens_a_session_and_is_audited(self, lyon_account):
        portal = Portal()
        assert portal.get("/").headers["location"] == "/login?next=/"
        portal.login("lyon.op")
        page = portal.get("/")
        assert page.status_code == 200 and "You act for LYON" in page.text
        assert rows("select login, action, outcome from audit_event order by id") == [("lyon.op", "login", "ok")]
        stored = scalar("select password_hash from account where login = 'lyon.op'")
        assert stored.startswith("$argon2id$") and PASSWORD not in stored

    def test_the_cookie_is_http_only_and_same_site_lax(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        response = portal.post("/login", {"login": "lyon.op", "password": PASSWORD})
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie

    def test_wrong_password_and_unknown_login_get_one_generic_message(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        wrong = portal.post("/login", {"login": "lyon.op", "password": "not the one"})
        unknown = portal.post("/login", {"login": "nobody", "password": "not the one"})
        assert wrong.status_code == unknown.status_code == 401
        for page in (wrong, unknown):
            assert "wrong login or password" in page.text
        assert portal.get("/").status_code == 303  # still outside

    def test_five_wrong_passwords_lock_the_login_for_fifteen_minutes(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        for _ in range(5):
            assert portal.post("/login", {"login": "lyon.op", "password": "guess"}).status_code == 401
        locked = portal.post("/login", {"login": "lyon.op", "password": PASSWORD})
        assert locked.status_code == 401
        assert re.search(r"locked after 5 wrong passwords; try again in 1[45] minutes", locked.text)
        until = scalar("select locked_until - now() from account where login = 'lyon.op'")
        assert dt.timedelta(minutes=14) < until <= dt.timedelta(minutes=15)
        # once the 15 minutes are over, the right password opens
        with db.engine().begin() as conn:
            conn.exec_driver_sql("update account set locked_until = now() - interval '1 second'")
        assert portal.post("/login", {"login": "lyon.op", "password": PASSWORD}).status_code == 303

    def test_a_disabled_account_is_refused_and_its_sessions_end(self, lyon_account, cli):
        portal = Portal()
        portal.login("lyon.op")
        result = cli("users", "disable", "lyon.op")
        assert result.code == 0, result.err
        assert portal.get("/").status_code == 303
        portal.get("/login")
        assert "this account is disabled" in portal.post("/login", {"login": "lyon.op",
                                                                     "password": PASSWORD}).text

    def test_logout_ends_the_session(self, lyon_account):
        portal = Portal()
        portal.login("lyon.op")
        assert portal.post("/logout").status_code == 303
        assert portal.get("/").status_code == 303
        assert [a for (a,) in rows("select action from audit_event order by id")] == ["login", "logout"]

    def test_next_never_leaves_the_portal(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        response = portal.post("/login", {"login": "lyon.op", "password": PASSWORD,
                                          "next": "//evil.example/steal"})
        assert response.headers["location"] == "/"


class TestCsrf:
    def test_a_form_without_or_with_a_stale_token_is_refused(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        stale = portal.token
        missing = portal.post("/login", {"login": "lyon.op", "password": PASSWORD}, csrf=False)
        assert missing.status_code == 403 and "This form has expired" in missing.text
        portal.login("lyon.op")  # a new session: a new token
        assert portal.token != stale
        assert portal.post("/logout", csrf=stale).status_code == 403
        assert portal.get("/").status_code == 200  # still logged in: nothing was done
        assert scalar("select count(*) from audit_event where action = 'csrf_refused'") == 2


class TestLinks:
    def test_an_invitation_sets_the_password_once(self, network, cli, mail):
        result = cli("users", "add", "paris.op", "--email", "paris.op@store.test", "--role", "local_operator",
                     "--entity", "PARIS")
        assert result.code == 0, result.err
        [message] = mail.messages().values()
        assert message["To"] == "paris.op@store.test"
        link = re.search(r"http://127.0.0.1:8080(/password/\S+)", message.get_content()).group(1)
        portal = Portal()
        assert "Set the password of paris.op" in portal.get(link).text
        short = portal.post(link, {"password": "short", "again": "short"})
        assert short.status_code == 400 and "at least 10 characters" in short.text
        done = portal.post(link, {"password": "a long secret", "again": "a long secret"})
        assert done.status_code == 303
        assert "You act for PARIS" in portal.get("/").text
        again = Portal().get(link)
        assert again.status_code == 400 and "already used" in again.text

    def test_an_expired_or_forged_link_is_refused(self, network):
        make_account("nantes.op", "local_operator", entity="NANTES", password=None)
        with db.session() as session:
            account = accounts.find(session, "nantes.op")
            token = accounts.link_token("test-key-" + "x" * 40, account)
            with pytest.raises(accounts.LinkRefused, match="expired"):
                accounts.account_of_link(session, "test-key-" + "x" * 40, token, -1)
        forged = Portal().get(f"/password/{token[:-3]}abc")
        assert forged.status_code == 400 and "not valid" in forged.text

    def test_forgot_password_answers_the_same_for_any_address(self, lyon_account, mail):
        portal = Portal()
        portal.get("/forgot")
        for address in ("lyon.op@people.test", "nobody@people.test"):
            response = portal.post("/forgot", {"email": address})
            assert response.status_code == 303
            assert "If an account uses this address" in portal.get("/login").text
        [message] = mail.messages().values()
        assert message["To"] == "lyon.op@people.test" and "/password/" in message.get_content()


class TestRateLimit:
    def test_a_flood_of_logins_from_one_address_gets_429(self, lyon_account):
        portal = Portal()
        portal.get("/login")
        codes = [portal.post("/login", {"login": "x", "password": "y"}).status_code for _ in range(31)]
        assert codes[:30] == [401] * 30 and codes[30] == 429


class TestBounds:
    def test_a_request_body_over_the_bound_is_refused_before_it_is_read(self, lyon_account):
        portal = Portal()
        portal.login("lyon.op")
        response = portal.client.post("/logout", content=b"x" * (12 * 1024 * 1024 + 1),
                                      headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413 and "too large" in response.text
        assert portal.get("/").status_code == 200  # the session is still there: nothing was done
