"""The network's notifications as Jinja2 templates in the sandbox: which notices exist, the
variables each one gives, checking a head office's template at apply time, and rendering.

A template's first line is `Subject: …`, then the body. The catalogue below is the contract a
template is checked against: a name it reads that its notice does not give, an attribute its
values do not have, a syntax error or a reach into Python internals (`''.__class__`) is refused
with its line, before anything is written. The default texts and the values themselves are in
`campflow.network.texts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes

from campflow.errors import CampflowError
from campflow.render.templates import sandbox

MAX_TEMPLATE = 64_000  # characters of one template
SUBJECT_MAX = 200

# ---------------------------------------------------------------- sample values, shaped as the real ones

_PACKAGE = {"code": "PKG-SAMPLE", "label": "Sample package", "description": "What the package offers.",
            "timezone": "Europe/Paris", "collaboration": "by_form", "approval": "manual",
            "visible_from": "2027-03-01 09:00", "visible_until": "2027-04-30 18:00",
            "registration_deadline": "2027-03-31 18:00", "personalization_deadline": "2027-04-10 18:00",
            "documents": ["brief.pdf"], "link": "http://portal.example/packages/PKG-SAMPLE"}
_BARE_PACKAGE = _PACKAGE | {"description": None, "collaboration": "simple", "visible_from": "",
                            "visible_until": "", "registration_deadline": "", "personalization_deadline": "",
                            "documents": []}
_ENTITY = {"code": "LYON", "label": "Lyon store"}
_FORM = [{"code": "STORE", "label": "Store name", "kind": "text", "what": "text", "required": True},
         {"code": "DISCOUNT", "label": "Discount", "kind": "choice", "what": "one of '10 %', '15 %'",
          "required": False}]


def _order(**changes: Any) -> dict[str, Any]:
    order = {"id": 12, "status": "pending", "fields": [{"code": "STORE", "value": "Lyon Bellecour"}],
             "comment": None, "created_by": "lyon", "decided_by": None, "decided_at": "",
             "link": "http://portal.example/orders/12"}
    return order | changes


_OPERATION = {"code": "OP-SAMPLE", "label": "Sample operation"}
_STEP = {"code": "A1", "label": "Approval by the stores"}
_LIST = {"operation": _OPERATION, "step": _STEP, "entity": _ENTITY, "parties": 42,
         "deadline": "2027-03-31 18:00 (Europe/Paris)", "file": "OP-SAMPLE-A1-LYON.xlsx",
         "link": "http://portal.example/lists/OP-SAMPLE/A1", "logins": ["lyon"]}
_PORTAL = {"portal": "http://portal.example"}

# notice -> the variants of its values (each template is rendered with every variant at apply
# time, so a branch taken only for some packages is checked too)
NOTICES: dict[str, tuple[dict[str, Any], ...]] = {
    "package_published": (
        {"package": _PACKAGE, "entity": _ENTITY, "order": None, "form": _FORM, "consequence": None},
        {"package": _BARE_PACKAGE | {"approval": "automatic"}, "entity": _ENTITY,
         "order": _order(status="approved", decided_by="marketing"), "form": [],
         "consequence": "Child operation OP-SAMPLE-LYON is ready: http://portal.example/operations/OP-SAMPLE-LYON"},
        {"package": _BARE_PACKAGE | {"collaboration": "by_target_approval"}, "entity": _ENTITY, "order": None,
         "form": [], "consequence": None},
    ),
    "order_to_review": (
        {"package": _PACKAGE, "entity": _ENTITY, "order": _order(), "review_link": "http://portal.example/central/orders"},
        {"package": _BARE_PACKAGE, "entity": _ENTITY, "order": _order(fields=[]),
         "review_link": "http://portal.example/central/orders"},
    ),
    "order_registered": (
        {"package": _PACKAGE, "entity": _ENTITY, "order": _order(status="approved", decided_by="lyon")},
        {"package": _BARE_PACKAGE, "entity": _ENTITY, "order": _order(status="approved", fields=[])},
    ),
    "order_decided": (
        {"package": _PACKAGE, "entity": _ENTITY, "consequence": "Your part of the operation is ready.",
         "order": _order(status="approved", decided_by="marketing", decided_at="2027-03-02 10:00",
                         comment="Nice window!")},
        {"package": _BARE_PACKAGE, "entity": _ENTITY, "consequence": None,
         "order": _order(status="rejected", decided_by="marketing", comment="Not this year", fields=[])},
    ),
    "order_cancelled": (
        {"package": _PACKAGE, "entity": _ENTITY, "order": _order(status="cancelled"), "by": "lyon",
         "comment": "No budget", "unsubscribed": False},
        {"package": _BARE_PACKAGE, "entity": _ENTITY, "order": _order(status="cancelled", fields=[]),
         "by": "marketing", "comment": None, "unsubscribed": True},
    ),
    "list_to_approve": (_LIST, _LIST | {"logins": []}),
    "list_reminder": (_LIST | {"removed": 3}, _LIST | {"removed": 0, "logins": []}),
    "list_report": (
        {"operation": _OPERATION, "step": _STEP, "entity": _ENTITY, "parties": 42, "file": "OP-SAMPLE-R1-LYON.xlsx",
         "steps": ["E1 (emailing)", "P1 (phoning)"]},
        {"operation": _OPERATION, "step": _STEP, "entity": _ENTITY, "parties": 1, "file": "x.xlsx", "steps": []},
    ),
    "invitation": ({"login": "lyon", "name": "Lyon store", "hours": 72, "link": "http://portal.example/password/t"},),
    "password_reset": ({"login": "lyon", "name": "Lyon store", "hours": 2,
                        "link": "http://portal.example/password/t"},),
}
NOTICES = {name: tuple(variant | _PORTAL for variant in variants) for name, variants in NOTICES.items()}

# the notices a package may override (the account e-mails belong to no package)
PACKAGE_NOTICES = tuple(name for name in NOTICES if name not in ("invitation", "password_reset"))


def variables(notice: str) -> list[str]:
    """The names a template of `notice` may read."""
    return sorted({name for variant in NOTICES[notice] for name in variant})


def _environment() -> Any:
    env = sandbox()
    env.undefined = StrictUndefined
    return env


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line a rendering error happened on (Jinja maps its frames to them)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def check_template(name: str, text: str, where: str, allowed: tuple[str, ...] = PACKAGE_NOTICES) -> list[str]:
    """The problems of a notification template, each starting `where:LINE` (empty: it is good).

    It must be a known notice, within the size bound, start with `Subject:`, parse in the
    sandbox, read only the variables its notice gives, and render with every sample of them.
    """
    if name not in allowed:
        return [f"{where}: no notification {name!r} to override; the notifications are {', '.join(allowed)}"]
    if len(text) > MAX_TEMPLATE:
        return [f"{where}: a notification template holds at most {MAX_TEMPLATE} characters"]
    if not text.startswith("Subject:"):
        return [f"{where}:1: a notification template starts with a `Subject: …` line, then the body"]
    env = _environment()
    parts = []
    for source in _parts(text):
        try:
            parts.append((env.parse(source), source))
        except TemplateSyntaxError as exc:
            return [f"{where}:{exc.lineno}: template syntax: {exc.message}"]
    known = set(variables(name))
    for tree, _ in parts:
        unknown = sorted(meta.find_undeclared_variables(tree) - known)
        if unknown:
            lines = {n.name: n.lineno for n in reversed(list(tree.find_all(nodes.Name))) if n.name in unknown}
            return [f"{where}:{lines.get(u, 1)}: notification {name} gives no variable {u!r}; it gives "
                    f"{', '.join(sorted(known))}" for u in unknown]
    for _, source in parts:
        template = env.from_string(source)
        for values in NOTICES[name]:
            try:
                template.render(**values)
            except TemplateError as exc:
                return [f"{where}:{_template_line(exc.__traceback__) or 1}: {exc.message or exc}"]
            except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
                return [f"{where}:{_template_line(exc.__traceback__) or 1}: {type(exc).__name__}: {exc}"]
    return []


def _parts(text: str) -> tuple[str, str]:
    """The subject line and the body, each a template of its own: a value can never carry a line
    of the body into the subject, nor a header into the message. The body keeps its line numbers."""
    head, newline, body = text.partition("\n")
    return head.removeprefix("Subject:"), newline + body


def render_text(text: str, values: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of a template rendered in the sandbox with `values`.

    Raises:
        CampflowError: the template reads what the values do not hold, or fails.
    """
    env = _environment()
    try:
        head, body = (env.from_string(source).render(**values) for source in _parts(text))
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise CampflowError(f"line {_template_line(exc.__traceback__) or '?'}: {exc}") from None
    return " ".join(head.split())[:SUBJECT_MAX], body.lstrip("\n")
