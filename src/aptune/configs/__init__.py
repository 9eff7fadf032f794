"""The configs that ship with aptune: run configs (``minilm/sst2``) and ablation plans (``ablations/apt_plan``).

A config is named by its path below this folder without the ``.yaml`` suffix, so that ``aptune train --config
minilm/sst2`` works from any directory once aptune is installed; a path to a file keeps working and wins.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
SUFFIX = ".yaml"


def shipped() -> dict[str, Path]:
    """Name -> file of every shipped YAML config, sorted by name."""
    files = sorted(ROOT.rglob(f"*{SUFFIX}"))
    return {path.relative_to(ROOT).with_suffix("").as_posix(): path for path in files}


def summary(path: Path) -> str:
    """The first line of a config's leading comment: what it is."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#"):
            return text.lstrip("# ").strip()
        if text:
            break
    return ""


def resolve(name_or_path: str | Path) -> Path:
    """The file a ``--config`` value means: an existing file as given, else the shipped config of that name.

    Raises:
        FileNotFoundError: neither exists; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path).removesuffix(SUFFIX)
    found = shipped().get(name)
    if found is not None:
        return found
    raise FileNotFoundError(f"config {str(name_or_path)!r} is neither a file nor a shipped config; shipped configs: "
                            f"{', '.join(shipped())} (`aptune configs` lists them)")
