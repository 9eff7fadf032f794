"""The ``aptune`` command line: one entry point, one module per subcommand in ``aptune.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("train", "export", "prune", "eval", "bench", "plan", "ablate", "report", "configs")


def _load_commands():
    # strict: a listed command whose module is missing is a broken install, not an optional extra
    return [importlib.import_module(f"aptune.commands.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aptune", description=__doc__.splitlines()[0])
    # --debug is one option of every command: written after the command, where a user adds it on a rerun
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true",
                       help="on an error, print the full traceback instead of the one-line message")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _load_commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[debug])
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def parse_command_line(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None):
    """The parsed arguments, with ``key=value`` overrides accepted anywhere after the subcommand.

    argparse hands a trailing positional list only the words before the first flag, so in
    ``train --config X --no-latency prune.density=0.5`` the override would be "unrecognized". Words left over
    that look like ``key=value`` join ``args.overrides`` (in command-line order) for a command that takes
    overrides; anything else left over is still an error.
    """
    parser = parser or build_parser()
    args, leftover = parser.parse_known_args(argv)
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    overrides = [word for word in leftover if takes_overrides and _is_override(word)]
    unknown = [word for word in leftover if word not in overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _is_override(word: str) -> bool:
    """``prune.density=0.5``: a key (no leading dash) and a value."""
    key, sep, _ = word.partition("=")
    return bool(sep) and bool(key.strip()) and not word.startswith("-")


def _quiet_transformers() -> None:
    """Keep transformers' load reports and per-file progress bars out of the command's output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# What bad input raises: a value the user gave (ValueError) or a path they named (OSError: missing, busy,
# unwritable, a run folder another run holds). aptune's messages name the input and what would be right.
USER_ERRORS = (ValueError, OSError)


def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(argv)
    _quiet_transformers()
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            raise
        # Bad input: say what was wrong, without a traceback (--debug shows it).
        print(f"aptune {args.command}: error: {err}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``aptune`` command (and ``python -m aptune``): under the allocator that returns freed memory
    (``aptune.allocator``), then :func:`main`."""
    from aptune.allocator import run_under_chosen_allocator

    try:
        run_under_chosen_allocator(sys.argv[1:])
    except ValueError as err:
        print(f"aptune: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
