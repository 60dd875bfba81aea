"""Write docs/cli.md, the reference of every `campflow` command, from the command's own help.

Run `python docs/gen_cli.py` after changing a command, an option or a help text;
tests/test_docs.py fails while docs/cli.md differs from what this script writes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CLI_MD = Path(__file__).resolve().parent / "cli.md"

HEADER = """# CLI reference

Every `campflow` command with its usage, its help and its arguments and options, as
`campflow COMMAND --help` prints them. Every command also takes `--help`. This page is generated
by `python docs/gen_cli.py` from the command itself: do not edit it by hand. How the commands fit
together: [getting-started.md](getting-started.md).
"""


def _escape(text: str) -> str:
    """Markdown-safe text: `<` and `*` outside code spans are shown as they are."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace("*", r"\*")
    return "`".join(parts)


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", path.lower()).replace(" ", "-")


def _commands(command, ctx):
    """The command and its sub-commands, depth first, in the order `--help` lists them."""
    yield command, ctx
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _commands(sub, sub.context_class(sub, info_name=name, parent=ctx))


def _section(command, ctx) -> str:
    out = [f"## `{ctx.command_path}`", "", "```", command.get_usage(ctx), "```", ""]
    if command.help:
        out += [_escape(command.help.strip()), ""]
    records: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
    for param in command.get_params(ctx):
        if param.hidden or param.name == "help":
            continue
        record = param.get_help_record(ctx)
        if record is None:
            record = (param.name, "")
        kind = "Arguments" if param.param_type_name == "argument" else "Options"
        records[kind].append(record)
    for kind, rows in records.items():
        if rows:
            out += [f"{kind}:", ""]
            out += [f"- `{name}`" + (f": {_escape(text)}" if text else "") for name, text in rows]
            out.append("")
    if hasattr(command, "list_commands"):
        subs = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
        subs = [(name, sub) for name, sub in subs if sub is not None and not sub.hidden]
        if subs:
            out += ["Commands:", ""]
            out += [f"- [`{name}`](#{_anchor(f'{ctx.command_path} {name}')}): "
                    f"{_escape(sub.get_short_help_str(limit=200))}" for name, sub in subs]
            out.append("")
    return "\n".join(out)


def render() -> str:
    """docs/cli.md as the current `campflow` command describes itself."""
    import typer

    from campflow.cli import app

    root = typer.main.get_command(app)
    # wide contexts, so that usage lines never wrap with the terminal
    ctx = root.context_class(root, info_name="campflow", terminal_width=10_000, max_content_width=10_000)
    sections = [_section(command, command_ctx) for command, command_ctx in _commands(root, ctx)]
    return HEADER + "\n" + "\n".join(sections).rstrip("\n") + "\n"


def main() -> None:
    text = render()
    if CLI_MD.exists() and CLI_MD.read_text(encoding="utf-8") == text:
        print(f"{CLI_MD.name} is up to date")
        return
    CLI_MD.write_text(text, encoding="utf-8")
    print(f"wrote {CLI_MD}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
