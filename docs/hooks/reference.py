"""MkDocs hook: the config and CLI references, generated from the code at build time.

``docs/reference/config.md`` and ``docs/reference/cli.md`` hold a placeholder line each; ``on_page_markdown``
replaces it with the tables that ``config_reference_markdown()`` and ``cli_reference_markdown()`` build from
``aptune.config.describe_keys()`` and ``aptune.cli.build_parser()``. Nothing generated is committed, so the
pages cannot drift from the code. ``tests/test_docs.py`` calls the two functions directly.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PLACEHOLDER = "<!-- aptune:config-reference -->"
CLI_PLACEHOLDER = "<!-- aptune:cli-reference -->"
# Sphinx roles in docstrings (":class:`APT`"), which mkdocstrings renders as text before the code span
SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|obj|exc):(?=<code>)")

# The order of the config sections on the page; a section the schema adds later goes at the end.
SECTIONS = ("model", "data", "adapter", "prune", "rank", "distill", "recover", "train", "export")
TOP_LEVEL = "top-level"


def _import_path() -> None:
    """Read aptune from this checkout when it is not installed (an installed one is used as it is)."""
    src = str(ROOT / "src")
    try:
        import aptune  # noqa: F401
    except ImportError:
        sys.path.insert(0, src)


# ------------------------------------------------------------------------------------------ markdown helpers


def _escape(text: str) -> str:
    """Plain text for a table cell: markup characters and pipes escaped, < and > as entities."""
    for char in "\\*_[]|":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    """Text for a table cell, on one line; `backticked` words stay code spans."""
    parts = re.split(r"`+([^`]+)`+", " ".join(str(text).split()))
    return "".join(_code(part) if i % 2 else _escape(part) for i, part in enumerate(parts))


def _code(text: str) -> str:
    """A code span (Python-Markdown's tables do not split a row at a pipe inside one)."""
    return f"`{' '.join(str(text).split())}`"


def _yaml_value(value) -> str:
    """A default as it would be written in a YAML config."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------------------------------ config reference


def _describe_keys():
    _import_path()
    from aptune.config import describe_keys

    return list(describe_keys())


def config_reference_markdown() -> str:
    """Every config key, grouped by section: type, default, allowed values and a one-line description."""
    groups: dict[str, list] = {}
    for entry in _describe_keys():
        section = entry.key.split(".", 1)[0] if "." in entry.key else TOP_LEVEL
        groups.setdefault(section, []).append(entry)
    order = [TOP_LEVEL, *SECTIONS]
    names = sorted(groups, key=lambda s: (order.index(s) if s in order else len(order), s))
    out = []
    for section in names:
        out.append(f"## `{section}`" if section != TOP_LEVEL else "## Top level")
        out.append("")
        out.append("| key | type | default | must | description |")
        out.append("|---|---|---|---|---|")
        for e in groups[section]:
            allowed = _cell(e.allowed) if e.allowed else "–"
            out.append(f"| {_code(e.key)} | {_code(e.type)} | {_code(_yaml_value(e.default))} | {allowed} "
                       f"| {_cell(e.help)} |")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ CLI reference


def _subcommands(parser: argparse.ArgumentParser, prog: str, depth: int = 1):
    """``(full command, parser, help, depth)`` of every subcommand, depth first, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prog} {name}", sub, helps.get(name) or sub.description or "", depth
                yield from _subcommands(sub, f"{prog} {name}", depth + 1)


def _argument_row(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.option_strings:
        takes = action.nargs != 0
        args = formatter._format_args(action, action.dest.upper()) if takes else ""
        name = ", ".join(_code(f"{o} {args}".strip()) for o in action.option_strings)
    else:
        name = _code(formatter._format_args(action, action.dest))
    if action.nargs == 0:
        default = "flag"
    elif action.default in (None, argparse.SUPPRESS) or action.default == []:
        default = "–"
    else:
        default = _code(action.default if isinstance(action.default, str) else _yaml_value(action.default))
    choices = ", ".join(_code(c) for c in action.choices) if action.choices else ""
    help_text = formatter._expand_help(action) if action.help and action.help != argparse.SUPPRESS else ""
    return f"| {name} | {default} | {choices} | {_cell(help_text)} |"


def cli_reference_markdown() -> str:
    """Every ``aptune`` subcommand with its arguments: flags, defaults, choices and help, walked from
    ``aptune.cli.build_parser()``."""
    _import_path()
    from aptune.cli import build_parser

    parser = build_parser()
    out = [f"Every command takes `-h`, `--help`. `{parser.prog} --help` lists the commands:", ""]
    commands = list(_subcommands(parser, parser.prog))
    for command, _, help_text, depth in commands:
        anchor = command.replace(" ", "-")
        out.append(f"{'    ' * (depth - 1)}- [`{command}`](#{anchor}): {_cell(help_text)}")
    out.append("")
    for command, sub, help_text, depth in commands:
        anchor = command.replace(" ", "-")
        out.append(f"{'#' * (depth + 1)} `{command}` {{ #{anchor} }}")
        out.append("")
        if help_text:
            text = _cell(help_text)
            out.append(text[:1].upper() + text[1:] + ("" if text.endswith(".") else "."))
            out.append("")
        usage = " ".join(sub.format_usage().split())
        usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
        out.append("```text")
        out.append(usage)
        out.append("```")
        out.append("")
        formatter = sub._get_formatter()
        rows = [a for a in sub._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if rows:
            out.append("| argument | default | choices | description |")
            out.append("|---|---|---|---|")
            out.extend(_argument_row(a, formatter) for a in rows)
            out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ MkDocs events


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CONFIG_PLACEHOLDER in markdown:
        markdown = markdown.replace(CONFIG_PLACEHOLDER, config_reference_markdown())
    if CLI_PLACEHOLDER in markdown:
        markdown = markdown.replace(CLI_PLACEHOLDER, cli_reference_markdown())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    """Drop the Sphinx role prefixes the docstrings carry, keeping the code span they introduce."""
    return SPHINX_ROLE.sub("", html)
