"""The texts of the network's notifications: Jinja2 templates run in the sandbox.

A default set ships in `campflow/network/notices/NAME.txt`; a package overrides any of them in
its spec (`notices: {NAME: path/to/file.txt}`, read inside the spec's folder when applied).
A template's first line is `Subject: …`, then a blank line, then the body."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError

from campflow.errors import CampflowError
from campflow.render.templates import sandbox

DEFAULTS = Path(__file__).resolve().parent / "notices"
MAX_TEMPLATE = 64_000


def names() -> list[str]:
    return sorted(p.stem for p in DEFAULTS.glob("*.txt"))


def default_text(name: str) -> str:
    path = DEFAULTS / f"{name}.txt"
    if not path.is_file():
        raise CampflowError(f"no notification template {name!r}; they are {', '.join(names())}")
    return path.read_text(encoding="utf-8")


def check_template(name: str, text: str, where: str) -> None:
    """Refuse a template that does not parse or lacks its `Subject:` line (at apply time)."""
    if name not in names():
        raise CampflowError(f"{where}: no notification {name!r}; the notifications are {', '.join(names())}")
    if len(text) > MAX_TEMPLATE:
        raise CampflowError(f"{where}: a notification template holds at most {MAX_TEMPLATE} characters")
    if not text.startswith("Subject:"):
        raise CampflowError(f"{where}: a notification template starts with a `Subject: …` line")
    try:
        sandbox().parse(text)
    except TemplateError as exc:
        raise CampflowError(f"{where} line {getattr(exc, 'lineno', '?')}: {exc}") from None


def render_notice(notice: str, overrides: Mapping[str, str] | None, **values: Any) -> tuple[str, str]:
    """(subject, body) of notification `notice`, from the package's override or the default."""
    text = (overrides or {}).get(notice) or default_text(notice)
    env = sandbox()
    env.undefined = StrictUndefined
    try:
        rendered = env.from_string(text).render(**values)
    except TemplateError as exc:
        raise CampflowError(f"notification template {notice!r} cannot be rendered: {exc}") from None
    head, _, body = rendered.partition("\n")
    subject = head.removeprefix("Subject:").strip()
    return " ".join(subject.split())[:200], body.lstrip("\n")
