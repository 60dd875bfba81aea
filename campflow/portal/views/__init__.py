"""The portal's pages, one module per area; each module that has a `router` is served."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import FastAPI


def register(app: FastAPI) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "router"):
            app.include_router(module.router)
