"""The help of every ``stratus`` command, drawn once for all of them: docstrings reflowed
into paragraphs, flags without a type label, and the options table as wide as the terminal."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.highlighter import RegexHighlighter
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.theme import Theme
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

THEME = Theme({"help.option": "bold cyan", "help.type": "bold yellow", "help.usage": "yellow",
               "help.extra": "dim", "help.required": "red"})
BOX_STYLE = "dim"


class _Options(RegexHighlighter):
    highlights = [r"(^|[\s(`])(?P<option>--?[a-zA-Z][\w-]*)"]
    base_style = "help."


_highlight = _Options()


def reflow(text: str | None) -> str:
    """A docstring or help string as paragraphs: single line breaks inside a paragraph were
    only the source's, so they become spaces. A paragraph of bullets, an indented block, or
    one marked with click's ``\\b`` keeps its lines."""
    paragraphs = inspect.cleandoc(text or "").partition("\f")[0].split("\n\n")
    kept = []
    for paragraph in paragraphs:
        lines = paragraph.strip("\n").splitlines()
        if not lines:
            continue
        if lines[0].strip() == "\b":
            kept.append("\n".join(lines[1:]))
        elif all(line.startswith(("- ", "* ", "  ")) for line in lines[1:]) and len(lines) > 1 \
                and lines[0].startswith(("- ", "* ", "  ")):
            kept.append("\n".join(lines))
        else:
            kept.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(kept)


def _first_paragraph(command: Any) -> str:
    return reflow(command.short_help or command.help).split("\n\n")[0]


def _names(param: TyperOption | TyperArgument) -> Text:
    if isinstance(param, TyperArgument):
        return Text(param._rich_display_name(), style="help.option")
    longs = sorted(param.opts, key=lambda o: (not o.startswith("--"), o))
    text = " / ".join([", ".join(longs), *param.secondary_opts])
    return _highlight(Text(text))


def _type_label(param: TyperOption | TyperArgument, ctx: Any) -> Text:
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return Text("")  # a flag takes no value: a type label only confuses
    label = param.display_type_rich(ctx=ctx) or ""
    # <list[str]> is a repeatable option of <str>, <int range> an <int> with its bounds in the
    # description: the short label keeps the column narrow.
    label = re.sub(r"^<list\[(\w+)\]>$", r"<\1>", label)
    label = re.sub(r"^<(\w+) range>$", r"<\1>", label)
    return Text(label, style="help.type")


def _extras(param: TyperOption | TyperArgument, ctx: Any) -> list[str]:
    extras = []
    envvar = getattr(param, "envvar", None)
    if envvar:
        extras.append(f"env var: {envvar if isinstance(envvar, str) else ', '.join(envvar)}")
    default = param._extract_default_help_str(ctx=ctx)
    is_text = isinstance(param.show_default, str)
    if is_text or (default is not None and (param.show_default or ctx.show_default)):
        shown = param._get_default_string(ctx=ctx, show_default_is_str=is_text,
                                          default_value=default)
        if shown:
            extras.append(f"default: {shown}")
    bounds = param._get_number_range_help_str()
    if bounds:
        extras.append(bounds)
    if param.required:
        extras.append("required")
    return extras


def _description(param: TyperOption | TyperArgument, ctx: Any) -> Text:
    text = _highlight(Text(reflow(getattr(param, "help", None))))
    extras = _extras(param, ctx)
    if extras:
        text.append((" " if text.plain else "") + "[" + "; ".join(extras) + "]", style="help.extra")
    return text


def _table() -> Table:
    # The description column takes whatever the names and types leave: the table fills the
    # terminal, so long descriptions wrap at its width, not in a narrow column.
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    return table


def _panel(title: str, table: Table) -> Panel:
    return Panel(table, title=title, title_align="left", border_style=BOX_STYLE)


def _param_panels(command: Any, ctx: Any) -> Iterator[Panel]:
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
    arguments = [p for p in params if isinstance(p, TyperArgument)]
    options = [p for p in params if isinstance(p, TyperOption)]
    for title, group in (("Arguments", arguments), ("Options", options)):
        if group:
            table = _table()
            for param in group:
                table.add_row(_names(param), _type_label(param, ctx), _description(param, ctx))
            yield _panel(title, table)


def _command_panel(command: TyperGroup, ctx: Any) -> Panel | None:
    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(no_wrap=True, style="help.option")
    table.add_column(ratio=1)
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is not None and not sub.hidden:
            table.add_row(name, _highlight(Text(_first_paragraph(sub))))
    return _panel("Commands", table) if table.row_count else None


def render(command: Any, ctx: Any, console: Console | None = None) -> None:
    """Print ``command``'s help on stdout."""
    console = console or Console(theme=THEME, highlight=False)
    parts: list[RenderableType] = [
        Padding(_highlight(Text(command.get_usage(ctx).strip(), style="help.usage")), (1, 1))]
    description = reflow(command.help)
    if description:
        first, _, rest = description.partition("\n\n")
        parts.append(Padding(_highlight(Text(first, style="bold")), (0, 1, 1, 1)))
        if rest:
            parts.append(Padding(_highlight(Text(rest)), (0, 1, 1, 1)))
    parts.extend(_param_panels(command, ctx))
    if isinstance(command, TyperGroup):
        commands = _command_panel(command, ctx)
        if commands is not None:
            parts.append(commands)
    if command.epilog:
        parts.append(Padding(Text(reflow(command.epilog)), 1))
    console.print(Group(*parts))


class HelpfulCommand(TyperCommand):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        render(self, ctx)


class HelpfulGroup(TyperGroup):
    def format_help(self, ctx: Any, formatter: Any) -> None:
        render(self, ctx)


def install(command: Any) -> None:
    """Give ``command`` and every command below it this help. Typer builds its own command
    classes; these subclasses add no state, only how help is drawn, so each built command
    takes the matching one in place."""
    if isinstance(command, TyperGroup):
        command.__class__ = HelpfulGroup
        for sub in command.commands.values():
            install(sub)
    elif isinstance(command, TyperCommand):
        command.__class__ = HelpfulCommand

