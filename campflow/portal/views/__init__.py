"""The portal's pages, one module per area; each module has a `router`."""

from __future__ import annotations

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    from campflow.portal.views import auth, home

    for module in (auth, home):
        app.include_router(module.router)
