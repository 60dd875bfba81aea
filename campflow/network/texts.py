"""The texts of the network's notifications: Jinja2 templates run in the sandbox.

A default set ships in `campflow/network/notices/NAME.txt`; a package overrides any of them in
its spec (`notices: {NAME: path/to/file.txt}`, read inside the spec's folder and checked when
applied, stored with the package). A template's first line is `Subject: …`, then the body. The
notices and the variables each gives are in `campflow.render.notice_texts`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from campflow.errors import CampflowError
from campflow.render import notice_texts
from campflow.render.notice_texts import MAX_TEMPLATE, NOTICES, PACKAGE_NOTICES

DEFAULTS = Path(__file__).resolve().parent / "notices"
__all__ = ["DEFAULTS", "MAX_TEMPLATE", "PACKAGE_NOTICES", "check_template", "default_text", "names",
           "render_notice"]
log = logging.getLogger(__name__)


def names() -> list[str]:
    return sorted(NOTICES)


def default_text(name: str) -> str:
    path = DEFAULTS / f"{name}.txt"
    if name not in NOTICES or not path.is_file():
        raise CampflowError(f"no notification template {name!r}; they are {', '.join(names())}")
    return path.read_text(encoding="utf-8")


def check_template(name: str, text: str, where: str) -> None:
    """Refuse a package's template that would not render (at apply time); the message names file:line."""
    problems = notice_texts.check_template(name, text, where)
    if problems:
        raise CampflowError("; ".join(problems))


def render_notice(notice: str, overrides: Mapping[str, str] | None, **values: Any) -> tuple[str, str]:
    """(subject, body) of notification `notice`, from the package's override or the default.

    An override was checked when applied; should it still fail (values the samples did not
    foresee), the default text goes out rather than no message at all.
    """
    override = (overrides or {}).get(notice)
    if override:
        try:
            return notice_texts.render_text(override, values)
        except CampflowError as exc:
            log.warning("the package's template for %s failed (%s); the default text was sent", notice, exc)
    try:
        return notice_texts.render_text(default_text(notice), values)
    except CampflowError as exc:
        raise CampflowError(f"notification template {notice!r} cannot be rendered: {exc}") from None
