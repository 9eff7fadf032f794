"""``aptune configs``: the configs that ship with aptune, by name; ``aptune configs copy NAME FILE`` writes one out.

    aptune configs                              # every shipped config with its first comment line
    aptune configs copy minilm/sst2 my.yaml     # a copy to edit; then: aptune train --config my.yaml

A copy works wherever it is put: its ``base:``, if it names one, becomes the absolute path of the shipped base.
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "configs"
HELP = "list the shipped configs, or copy one to a file to edit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="{list,copy}")
    actions.add_parser("list", help="list the shipped configs (the default)")
    copy = actions.add_parser("copy", help="write a shipped config to a file")
    copy.add_argument("name", help="a shipped config's name, e.g. minilm/sst2")
    copy.add_argument("file", type=Path, help="where to write it (refused if it exists)")


def run(args: argparse.Namespace) -> int:
    from aptune import configs

    if args.action == "copy":
        return _copy(args.name, args.file)
    shipped = configs.shipped()
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {configs.summary(path)}")
    return 0


def _copy(name: str, target: Path) -> int:
    from aptune import configs

    shipped = configs.shipped()
    source = shipped.get(name.removesuffix(configs.SUFFIX))
    if source is None:
        raise ValueError(f"no shipped config is named {name!r}; shipped configs: {', '.join(shipped)}")
    if target.exists():
        raise ValueError(f"{target} exists; name a new file (aptune never overwrites one)")
    text = _standalone(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target} (from {name}); run it with: aptune train --config {target}")
    return 0


def _standalone(source: Path) -> str:
    """The config's text, its ``base:`` (if any) made the absolute path of the shipped file it names."""
    import yaml

    text = source.read_text()
    data = yaml.safe_load(text) or {}
    base = data.get("base") if isinstance(data, dict) else None
    if not base:
        return text
    return text.replace(f"base: {base}", f"base: {(source.parent / str(base)).resolve()}", 1)
