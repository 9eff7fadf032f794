"""Helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent


def reload_in_new_process(export_dir: Path, auto_class: str, inputs: dict, tmp_path: Path, mode: str = "forward"):
    """Reload ``export_dir`` with ``transformers.<auto_class>`` in a new interpreter; return its result."""
    inputs_path, output_path = tmp_path / "inputs.pt", tmp_path / "outputs.pt"
    torch.save(inputs, inputs_path)
    proc = subprocess.run(
        [sys.executable, str(HERE / "reload_export.py"), str(export_dir), auto_class, str(inputs_path),
         str(output_path), mode],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"reload failed:\n{proc.stderr[-3000:]}"
    return torch.load(output_path, weights_only=True)
