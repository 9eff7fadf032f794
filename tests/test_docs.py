"""The documentation site: the generated references cover the whole config schema and command line, and the
site builds with ``mkdocs build --strict`` (broken links, missing pages and bad API references fail it)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference():
    """docs/hooks/reference.py, the MkDocs hook that generates the reference pages."""
    spec = importlib.util.spec_from_file_location("docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass, sections walked recursively (independent of describe_keys)."""
    keys = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += _schema_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _commands(parser: argparse.ArgumentParser, prog: str):
    """``(full command, parser)`` of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prog} {name}", sub
                yield from _commands(sub, f"{prog} {name}")


def test_config_reference_names_every_key(reference):
    from aptune.config import RunConfig

    keys = _schema_keys(RunConfig)
    assert "prune.density" in keys and "output_dir" in keys
    markdown = reference.config_reference_markdown()
    missing = [key for key in keys if f"`{key}`" not in markdown]
    assert not missing, f"the generated config reference lacks {missing}"


def test_describe_keys_matches_the_schema():
    from aptune.config import RunConfig, describe_keys

    entries = describe_keys()
    described = [entry.key for entry in entries]
    assert sorted(described) == sorted(_schema_keys(RunConfig))
    assert len(described) == len(set(described)), "a key is described twice"
    no_help = [entry.key for entry in entries if not entry.help.strip()]
    assert not no_help, f"keys without a help line: {no_help}"
    for entry in entries:
        assert isinstance(entry.type, str) and entry.type, entry.key
        assert isinstance(entry.allowed, str), entry.key


def test_cli_reference_names_every_command_and_option(reference):
    from aptune.cli import build_parser

    markdown = reference.cli_reference_markdown()
    commands = list(_commands(build_parser(), "aptune"))
    assert any(name == "aptune train" for name, _ in commands)
    for name, parser in commands:
        assert f"`{name}`" in markdown, f"the CLI reference lacks {name}"
        for action in parser._actions:
            for option in action.option_strings:
                assert f"`{option}" in markdown, f"the CLI reference lacks {name} {option}"
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                assert action.dest in markdown, f"the CLI reference lacks {name}'s argument {action.dest}"


def test_site_builds_strict(tmp_path):
    # No skip when mkdocs is missing: CI installs the docs extra, and a site that is not built is not checked.
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    for page in ("index.html", "method/index.html", "reference/config/index.html", "reference/cli/index.html",
                 "reference/api/index.html"):
        assert (site / page).is_file(), page
    config_page = (site / "reference" / "config" / "index.html").read_text()
    assert "prune.density" in config_page and "aptune:config-reference" not in config_page
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    assert "aptune train" in cli_page and "aptune:cli-reference" not in cli_page
    api_page = (site / "reference" / "api" / "index.html").read_text()
    assert "after_optimizer_step" in api_page  # mkdocstrings rendered APT's members
