"""Helpers for the portal's tests (not a test module): accounts, and a browser-like client that
keeps its cookies and sends each form with the CSRF token of the page it came from."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.testclient import TestClient

from campflow.store import accounts, db

PASSWORD = "correct horse 42"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def make_account(login: str, *roles: str, entity: str | None = None, collaborator: str | None = None,
                 email: str | None = None, password: str | None = PASSWORD) -> int:
    """An account with its password already set (None: invited, no password yet); its id."""
    with db.session() as session:
        account = accounts.create(session, login, email or f"{login}@people.test", list(roles), entity=entity,
                                  collaborator=collaborator)
        if password is not None:
            accounts.set_password(session, account, password)
        return account.id


class Portal:
    """A browser on the portal: cookies kept, redirects not followed (tests look at them)."""

    def __init__(self, app: Any | None = None) -> None:
        from campflow.portal.app import create_app
        from campflow.portal.security import public_limit

        public_limit.reset()
        self.client = TestClient(app or create_app(), follow_redirects=False)
        self.token: str | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.get(path, **kwargs)
        if found := CSRF.search(response.text):
            self.token = found.group(1)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool | str = True,
             **kwargs: Any) -> httpx.Response:
        """POST a form; with the CSRF token of the last page seen (csrf=False: none; a str: that one)."""
        if csrf is True and self.token is None:
            self.get("/login")
        form = dict(data or {})
        if csrf is True:
            form["csrf_token"] = self.token
        elif isinstance(csrf, str):
            form["csrf_token"] = csrf
        response = self.client.post(path, data=form, **kwargs)
        if found := CSRF.search(response.text):
            self.token = found.group(1)
        return response

    def login(self, login: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        response = self.post("/login", {"login": login, "password": password, "next": "/"})
        assert response.status_code == 303, response.text
        self.get("/")
        return response

    def close(self) -> None:
        self.client.close()


def signed_in(login: str, app: Any | None = None) -> Portal:
    portal = Portal(app)
    portal.login(login)
    return portal


class LivePortal:
    """The portal served by uvicorn in a thread on a free port (for the browser)."""

    def __init__(self) -> None:
        import threading

        import uvicorn

        from campflow.portal.app import create_app
        from campflow.portal.security import public_limit
        from tests.conftest import free_port

        public_limit.reset()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LivePortal:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
