"""`campflow ops …` and `campflow steps …`: the operation tree, one operation, templates."""

from __future__ import annotations

import copy
from typing import Annotated, Any

import typer
from rich.tree import Tree

from campflow.cli.common import AS_OPTION_HELP, JSON_OPTION_HELP, console, escape, print_json, print_table
from campflow.errors import CampflowError
from campflow.store import db
from campflow.store.operations import OperationView, load_tree, load_view

ops_app = typer.Typer(help="The operation tree and operations.", no_args_is_help=True)
steps_app = typer.Typer(help="Steps of operations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(ops_app, name="ops")
    app.add_typer(steps_app, name="steps")


JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]
AsOption = Annotated[str | None, typer.Option("--as", help=AS_OPTION_HELP)]


@ops_app.command("tree")
def tree(
    find: Annotated[str | None, typer.Option("--find", help="Only operations whose code or label "
                    "contains WORD (their folders are kept).")] = None,
    family: Annotated[str | None, typer.Option("--family", help="Only this family.")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only this state.")] = None,
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Folders and operations, as the CRM's operation tree (those the operator may see).

    Example: campflow ops tree --find salon --state in_preparation
    """
    from campflow.store.access import cli_actor

    with db.session() as session:
        who = cli_actor(session, as_)
        roots = load_tree(session, find=find, family=family, state=state, who=who)
    if as_json:
        print_json(roots)
        return
    if not roots:
        console.print("no operation matches" if (find or family or state) else
                      "no operation yet" if who is None else "no operation you may see")
        return
    top = Tree("[bold]Operations[/]")
    for node in roots:
        _add_node(top, node)
    console.print(top)


def _add_node(parent: Tree, node: dict[str, Any]) -> None:
    if node["type"] == "folder":
        branch = parent.add(f"[bold blue]{escape(node['label'])}[/]"
                            + (f" [dim]({node['kind']})[/]" if node.get("kind") else ""))
        for child in node["children"]:
            _add_node(branch, child)
        return
    dates = " → ".join(d[:10] for d in (node["starts_at"], node["ends_at"]) if d)
    template = " [magenta]template[/]" if node["template"] else ""
    parent.add(f"[bold]{escape(node['code'])}[/] {escape(node['label'])} [cyan]{node['state']}[/]"
               f"{template} [dim]{node['family'] or ''} {dates} {node['progress']}% "
               f"{node['targets']} targets[/]")


@ops_app.command("show")
def show(
    operation: Annotated[str, typer.Argument(help="Operation code.")],
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """An operation: header, step tree with routes, counts per status.

    Example: campflow ops show SALON-ERP-2026 --as marie
    """
    from campflow.store.access import cli_actor

    with db.session() as session:
        view = load_view(session, operation, cli_actor(session, as_))
    if as_json:
        print_json(view.as_dict())
        return
    _print_view(view)


def _print_view(view: OperationView) -> None:
    h = view.header
    rows = [(k, v) for k, v in h.items() if v not in (None, "", [])]
    print_table(f"Operation {h['code']}", ("field", "value"), rows)
    top = Tree("[bold]Steps[/]")
    nodes: dict[str | None, Tree] = {None: top}
    for step in view.steps:
        parent = nodes[step["parent"]]
        if step["kind"] is None:
            nodes[step["code"]] = parent.add(f"[bold blue]{escape(step['code'])}[/] {escape(step['label'])}")
            continue
        counts = ", ".join(f"{k} {v}" for k, v in step["counts"].items()) or "no party yet"
        extras = " ".join(x for x in (
            f"event {step['event']}" if step["event"] else "",
            f"questionnaire {step['questionnaire']}" if step["questionnaire"] else "",
            f"run_at {step['run_at']}" if step["run_at"] else "",
            "[magenta]template[/]" if step["template"] else "") if x)
        state = f" [green]{escape(step['state'])}[/]" if step["state"] else ""
        branch = parent.add(f"[bold]{escape(step['code'])}[/] {escape(step['label'])} "
                            f"[cyan]{step['kind']}[/]{state} {extras} [dim]({counts})[/]")
        nodes[step["code"]] = branch
        for route in step["routes"]:
            branch.add(f"→ {route['to']} [dim]{escape(route['rule'])}[/]")
    console.print(top)


@ops_app.command("children")
def children(
    operation: Annotated[str, typer.Argument(help="The reference operation (of a by_campaign package).")],
    as_: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """The local entities' child operations of a reference operation: entity, state, order, funnel.

    Example: campflow ops children SOLDES --as marie
    """
    from campflow.store.access import list_children

    with db.session() as session:
        found = list_children(session, operation, as_)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"{escape(operation)} has no child operation you may see")
        return
    rows = [(c["code"], c["entity"], c["state"], f"{c['order'] or '—'} {c['order_status'] or ''}".strip(),
             c["targets"], "; ".join(f"{step}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                                     for step, counts in c["funnel"].items()) or "no party in a step yet")
            for c in found]
    print_table(f"Child operations of {operation}", ("operation", "entity", "state", "order", "targets", "funnel"),
                rows)


@ops_app.command("new")
def new(
    code: Annotated[str, typer.Argument(help="Code of the new operation.")],
    template: Annotated[str, typer.Option("--from", help="Template operation to copy.")],
    label: Annotated[str | None, typer.Option("--label", help="Label (default: the template's).")] = None,
    folder: Annotated[str | None, typer.Option("--folder", help="Folder path, e.g. 'Salons/Paris'.")] = None,
) -> None:
    """Create an operation by copying a template operation and its steps.

    Example: campflow ops new SALON-LYON-2027 --from MODELE-SALON --label "Salon Lyon 2027"
    """
    from campflow.specs.apply import apply_documents, document_from_data
    from campflow.specs.export import export_operation, spec_file_of

    with db.session() as session:
        data = export_operation(session, template)
        if not data.get("template"):
            raise CampflowError(f"{template} is not a template operation; mark it `template: true` "
                                "in its spec, or choose one shown with `campflow ops tree`")
        data = copy.deepcopy(data)
        data.update(code=code, template=False, state="in_preparation", progress=0)
        if label:
            data["label"] = label
        if folder:
            data["folder"] = folder
        for step in _walk(data.get("steps", [])):
            step.pop("template", None)
        if code in {row for row in _operation_codes(session)}:
            raise CampflowError(f"operation {code} exists already; choose another code")
        results = apply_documents(session, [document_from_data(data, f"<ops new {code}>",
                                                               spec_file_of(session, template))], [])
    console.print(f"[green]{results[0].outcome}[/] operation {code} from template {template}")


def _operation_codes(session) -> list[str]:
    from sqlalchemy import select

    from models import Operation

    return list(session.scalars(select(Operation.code)))


def _walk(steps: list[dict[str, Any]]):
    for step in steps:
        yield step
        yield from _walk(step.get("steps", []))


@steps_app.command("load-template")
def load_template(
    operation: Annotated[str, typer.Argument(help="Operation that receives the step.")],
    source: Annotated[str, typer.Option("--from", help="Template step as OPERATION/STEP.")],
    as_code: Annotated[str | None, typer.Option("--as", help="Code of the copy (default: the same).")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Group to put it in.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Overwrite a step of the same code "
                   "without asking (for scripts).")] = False,
) -> None:
    """Copy a template step into an existing operation.

    Example: campflow steps load-template SALON-ERP-2026 --from MODELE-SALON/RELANCE --as S7
    """
    from campflow.render.templating import copy_step_into
    from campflow.specs.apply import apply_documents, document_from_data
    from campflow.specs.export import export_operation, spec_file_of

    source_op, _, source_step = source.partition("/")
    if not source_step:
        raise CampflowError(f"--from {source}: write OPERATION/STEP, e.g. MODELE-SALON/RELANCE")
    with db.session() as session:
        template_data = export_operation(session, source_op)
        target = export_operation(session, operation)
        result = copy_step_into(template_data, source_step, target, as_code=as_code, parent=parent)
        if result.replaces and not yes and not typer.confirm(
                f"{operation} already has a step {result.code}; overwrite it?", default=False):
            raise typer.Abort()
        # the copied step's files lie beside the template's spec; the target's own, beside its spec
        apply_documents(session, [document_from_data(result.operation, f"<load-template {source}>",
                                                     spec_file_of(session, operation),
                                                     [spec_file_of(session, source_op)])], [])
    for dropped in result.dropped_routes:
        console.print(f"[yellow]note:[/] route to {dropped} dropped ({operation} has no such step)")
    console.print(f"[green]{'replaced' if result.replaces else 'added'}[/] step {result.code} in {operation}")
