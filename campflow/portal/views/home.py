"""The home page: what waits for the signed-in person."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from campflow.portal.pages import render
from campflow.portal.security import signed_in
from campflow.store.identity import Actor

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, who: Actor = Depends(signed_in)):
    return render(request, "home.html", who=who)
