"""The portal's application: `create_app()` (served by `campflow portal`, tested with httpx)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from campflow.errors import NotFound
from campflow.portal import pages
from campflow.portal.security import CsrfRefused, LoginRequired, client_address, optional_actor
from campflow.store.accounts import audit_now
from campflow.store.identity import AccessDenied

SESSION_HOURS = 12
MAX_BODY = 12 * 1024 * 1024  # a request body (an uploaded list is at most 10 MB)
# what the browser may load: our own pages and styles, nothing inline but the styles of the templates
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a password link never leaves in a Referer header
    "Cache-Control": "no-store",
}


def create_app(secret_key: str | None = None, *, https: bool = False) -> FastAPI:
    """The portal. `secret_key` signs sessions (default: campflow.network.accounts.secret_key());
    `https` marks the session cookie Secure (set it when the portal is served over HTTPS)."""
    from campflow.network.accounts import secret_key as stored_key
    from campflow.portal.views import register

    app = FastAPI(title="campflow portal", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(SessionMiddleware, secret_key=secret_key or stored_key(), session_cookie="campflow_session",
                       max_age=SESSION_HOURS * 3600, same_site="lax", https_only=https)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> HTMLResponse:
        audit_now(None, "csrf_refused", request.url.path, outcome="refused", address=client_address(request))
        return pages.render(request, "error.html", status_code=403, title="Form expired",
                            message="This form has expired or did not come from this portal. Go back, reload the "
                                    "page and send it again; nothing was changed.")

    @app.exception_handler(AccessDenied)
    @app.exception_handler(NotFound)
    async def not_yours(request: Request, exc: Exception) -> HTMLResponse:
        # not found and not allowed look the same: a 404 confirms nothing about another entity's things
        who = getattr(request.state, "actor", None)
        if isinstance(exc, AccessDenied):
            audit_now(who.login if who else None, "refused", request.url.path, outcome="refused",
                      entity_id=who.entity_id if who else None, address=client_address(request))
        return not_found(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return not_found(request)
        if exc.status_code == 429:
            return PlainTextResponse(str(exc.detail), status_code=429, headers=exc.headers)
        return pages.render(request, "error.html", status_code=exc.status_code, title="Error",
                            message=str(exc.detail))

    app.mount("/static", StaticFiles(directory=str(pages.HERE / "static")), name="static")
    register(app)
    app.state.optional_actor = optional_actor
    return app


def not_found(request: Request) -> HTMLResponse:
    return pages.render(request, "error.html", status_code=404, title="Not found",
                        message="There is no such page, or it is not yours to see.")


class BodyLimit:
    """Refuse a request body over `limit` bytes (413) before anything reads it to disk: by its
    Content-Length, or while it streams in when it has none."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await PlainTextResponse("The request is too large (at most 12 MB).", status_code=413)(
                scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except TooLarge:
            await PlainTextResponse("The request is too large (at most 12 MB).", status_code=413)(
                scope, receive, send)


class TooLarge(Exception):
    pass
