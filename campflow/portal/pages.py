"""Rendering a page: the templates (autoescaped), and what every page is given."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from campflow.portal.security import csrf_token, take_flashes

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.autoescape = True  # every value, whatever the file's extension


def when(value: Any, zone: str | None = None) -> str:
    """A date and time in `zone` (the package's, the operation's; UTC when none)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return f"{value.astimezone(zoneinfo.ZoneInfo(zone or 'UTC')):%Y-%m-%d %H:%M}"
    return str(value)


TEMPLATES.env.filters["when"] = when


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page `name` with the actor, the CSRF token and the flashed messages."""
    context.setdefault("who", getattr(request.state, "actor", None))
    return TEMPLATES.TemplateResponse(request, name, {"csrf_token": csrf_token(request),
                                                      "flashes": take_flashes(request), **context},
                                      status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    """After a POST: see the page again (303: the browser GETs it)."""
    return RedirectResponse(url, status_code=303)
