"""Users' Jinja2 templates: always rendered in a sandbox, fields checked before any run."""

from __future__ import annotations

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from campflow.core.field_catalog import FieldCatalog
from campflow.errors import FormulaError

# names a template may use as tables: `{{ party.name }}`, `{{ contact.first_name }}`…
TEMPLATE_TABLES = ("party", "contact", "operation", "target", "target_contact", "step", "event")


def sandbox() -> ImmutableSandboxedEnvironment:
    """The only environment users' templates are compiled in."""
    return ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def check_jinja(text: str, catalog: FieldCatalog) -> list[str]:
    """Problems of a `.j2` template: syntax, and every `table.field` it reads."""
    try:
        tree = sandbox().parse(text)
    except TemplateSyntaxError as exc:
        return [f"line {exc.lineno}: template syntax: {exc.message}"]
    problems = []
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in TEMPLATE_TABLES:
            try:
                catalog.resolve(f"{node.node.name}.{node.attr}")
            except FormulaError as exc:
                problems.append(f"line {node.lineno}: {node.node.name}.{node.attr}: {exc.message}")
    return problems
